"""scripts/paper_curve.py: the paper's figure and the means over the shipped levels, from docs/paper_curve.csv."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "paper_curve.py"
CELLS = ROOT / "docs" / "paper_curve.csv"
SHIPPED = ROOT / "rtc_sweep" / "checkpoints"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def row(out: str, title: str, method: str) -> list[str]:
    """The cells of ``method``'s row in the table headed ``title``."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {title} |"))
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == method:
            return cells[1:]
    raise AssertionError(f"no {method} row under {title!r}")


def test_every_shipped_level_has_its_whole_naive_and_realtime_curve():
    cells = pd.read_csv(CELLS)
    shipped = {
        (p.parent.parent.name, p.parent.name) for p in SHIPPED.glob("*/*/policy.pkl") if p.parent.name != "small_tt"
    }
    assert set(zip(cells["level"], cells["model"], strict=True)) == shipped
    for method in ("naive", "realtime"):
        at = cells[cells["method"] == method]
        curves = {level: sorted(g["d"]) for level, g in at.groupby("level")}
        assert curves == {level: [0, 1, 2, 3, 4] for level, _ in shipped}, method
    assert (cells["s"] == cells["d"].clip(lower=1)).all()
    assert (cells["solved_episodes"] / cells["episodes"]).round(3).eq(cells["solved"]).all()


def test_the_mean_over_the_levels_and_the_figure(tmp_path):
    figure = tmp_path / "curve.png"
    out = run("--figure", str(figure))
    assert out.returncode == 0, out.stderr[-3000:]
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Naive over the five shipped levels loses more than half its d = 0 rate by d = 4 (the model card's numbers).
    naive = row(out.stdout, "mean over 5 levels", "naive")
    assert naive[0].startswith("0.903 [") and naive[4].startswith("0.422 [")
    cells = pd.read_csv(CELLS)
    at_all = cells.groupby(["method", "d"])["level"].nunique() == cells["level"].nunique()
    lacking = sorted(d for (m, d), every in at_all.items() if m == "bid" and not every)
    assert lacking, "bid is now at every level and d: this check needs a method some level lacks"
    assert f"lack the cell: bid at d = {', '.join(map(str, lacking))})" in out.stdout
    assert at_all[("bid", 4)] and row(out.stdout, "mean over 5 levels", "bid")[4] != "–"  # averaged where complete
    assert row(out.stdout, "cartpole_thrust / small", "bid")[0] == "0.540 [0.509, 0.570]"


def test_levels_restrict_the_mean_so_that_a_method_missing_elsewhere_is_averaged(tmp_path):
    out = run("--levels", "grasp_easy", "cartpole_thrust", "--figure", str(tmp_path / "two.png"))
    assert out.returncode == 0, out.stderr[-3000:]
    bid = row(out.stdout, "mean over 2 levels", "bid")
    assert bid[0] == "0.761 [0.745, 0.777]"  # the model card's session-7 table over the same two levels
    out = run("--levels", "catapult", "grasp_easy", "--figure", str(tmp_path / "three.png"))
    assert row(out.stdout, "mean over 2 levels", "bid")[:2] == ["–", "–"]  # catapult has no bid at d = 0, 1
    assert "lack the cell: bid at d = 0, 1)" in out.stdout


def test_bad_input_is_refused_naming_what_is_wrong(tmp_path):
    out = run("--levels", "moon_base", "--figure", str(tmp_path / "x.png"))
    assert out.returncode == 2 and "--levels: moon_base not in" in out.stderr and "catapult" in out.stderr
    bad = tmp_path / "cells.csv"
    cells = pd.read_csv(CELLS)
    cells.loc[3, "solved_episodes"] = 2000
    cells.to_csv(bad, index=False)
    out = run("--cells", str(bad), "--figure", str(tmp_path / "x.png"))
    assert out.returncode != 0 and "solved_episodes outside 0..episodes on lines [5]" in out.stderr
    assert not (tmp_path / "x.png").exists()
