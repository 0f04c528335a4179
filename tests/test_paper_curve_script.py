"""scripts/paper_curve.py: the paper's figure and the means over the shipped levels, from docs/paper_curve.csv."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sweep_folders import make_job

from rtc_sweep.sweep.config import register_configs

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


def test_every_shipped_level_has_its_whole_curve_for_every_method():
    cells = pd.read_csv(CELLS)
    shipped = {
        (p.parent.parent.name, p.parent.name) for p in SHIPPED.glob("*/*/policy.pkl") if p.parent.name != "small_tt"
    }
    assert set(zip(cells["level"], cells["model"], strict=True)) == shipped
    for method in ("naive", "realtime", "bid"):
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
    # Naive over the six shipped levels loses half its d = 0 rate by d = 4 (the model card's numbers).
    naive = row(out.stdout, "mean over 6 levels", "naive")
    assert naive[0].startswith("0.885 [") and naive[4].startswith("0.442 [")
    # The record is complete (the test above), so no cell is named as lacking and bid is averaged at every d; a
    # record with gaps is the next test's.
    assert "lack the cell" not in out.stdout
    assert "–" not in row(out.stdout, "mean over 6 levels", "bid")
    assert row(out.stdout, "cartpole_thrust / small", "bid")[0] == "0.540 [0.509, 0.570]"


def test_levels_restrict_the_mean_so_that_a_method_missing_elsewhere_is_averaged(tmp_path):
    out = run("--levels", "grasp_easy", "cartpole_thrust", "--figure", str(tmp_path / "two.png"))
    assert out.returncode == 0, out.stderr[-3000:]
    bid = row(out.stdout, "mean over 2 levels", "bid")
    assert bid[0] == "0.761 [0.745, 0.777]"  # the model card's session-7 table over the same two levels
    # A record where catapult has no bid at d = 0, 1 (the real one fills in over sessions): those means stay empty.
    gaps = ["--cells", str(without_bid(tmp_path / "gaps.csv", "catapult", "default", [0, 1]))]
    out = run(*gaps, "--levels", "catapult", "grasp_easy", "--figure", str(tmp_path / "3.png"))
    assert out.returncode == 0, out.stderr[-3000:]
    bid = row(out.stdout, "mean over 2 levels", "bid")
    assert bid[:2] == ["–", "–"] and bid[2] != "–"
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


def without_bid(path: Path, level: str, model: str, delays: list[int]) -> Path:
    """A copy of the record at ``path`` without ``level``'s bid cells at ``delays`` (by their lines; every other line
    as it is)."""
    lines = CELLS.read_text().splitlines(keepends=True)
    drop = tuple(f"{level},{model},bid,{d}," for d in delays)
    kept = [line for line in lines if not line.startswith(drop)]
    assert len(kept) == len(lines) - len(delays)
    path.write_text("".join(kept))
    return path


def bid_gaps(record: Path = CELLS) -> list[tuple[str, str, int]]:
    """(level, model, d) where the record has no bid cell."""
    cells = pd.read_csv(record)
    have = set(zip(cells.loc[cells["method"] == "bid", "level"], cells.loc[cells["method"] == "bid", "d"], strict=True))
    levels = cells[["level", "model"]].drop_duplicates().itertuples(index=False)
    return [(level, model, d) for level, model in levels for d in range(5) if (level, d) not in have]


# A bid cell the tests below take out of a copy of the record (by its line, the others as they are), so that they
# do not depend on how far the real record has been filled.
GAP = ("catapult", "default", 1)


@pytest.fixture
def gapped(tmp_path: Path) -> Path:
    """A copy of the record without GAP's bid cell."""
    level, model, d = GAP
    return without_bid(tmp_path / "gapped.csv", level, model, [d])


def test_missing_prints_the_sweep_that_measures_each_gap(gapped):
    out = run("--cells", str(gapped), "--missing")
    assert out.returncode == 0, out.stderr[-3000:]
    gaps = bid_gaps(gapped)
    assert GAP in gaps
    assert out.stdout.count("python -m rtc_sweep +experiment=paper_delay_curve") == len(gaps)
    for level, model, d in gaps:  # bid beside naive, the pair measured in one sweep
        folder = f"runs/levels/{level}/paper_curve_d{d}_bid"
        assert (f"level={level} model={model} delay_profile.fixed_delay={d} method=naive,bid "
                f"hydra.sweep.dir={folder}\n") in out.stdout  # fmt: skip
        assert f"python scripts/paper_curve.py --add {folder}" in out.stdout
    out = run("--missing", "--levels", "grasp_easy")
    assert out.stdout.strip() == "every level has every cell of the preset"


def curve_job(sweep: Path, level: str, model: str, d: int, method: str, solved: float, *extra: str) -> None:
    overrides = ["+experiment=paper_delay_curve", f"level={level}", f"model={model}", f"delay_profile.fixed_delay={d}",
                 f"method={method}", "checkpoint=shipped", *extra]  # fmt: skip
    make_job(sweep, overrides, extras={"model": model}, returned_episode_solved=solved)


@pytest.fixture(scope="module", autouse=True)
def _configs() -> None:
    register_configs()


def test_add_records_the_cells_a_finished_sweep_has_and_the_record_lacks(tmp_path, gapped):
    level, model, d = GAP
    record = tmp_path / "cells.csv"
    shutil.copy(gapped, record)
    sweep = tmp_path / "sweep"
    curve_job(sweep, level, model, d, "naive", 0.5)
    curve_job(sweep, level, model, d, "bid", 0.25)
    out = run("--cells", str(record), "--add", str(sweep), "--figure", str(tmp_path / "x.png"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"added: {level} bid d = {d}: 0.250 (256 of 1024)" in out.stdout
    cells = pd.read_csv(CELLS)
    kept = cells[(cells["level"] == level) & (cells["method"] == "naive") & (cells["d"] == d)]["solved"].item()
    assert f"kept: {level} naive d = {d} at {kept:.3f} from the record (sweep: 0.500)" in out.stdout
    # One line more, the level's section; every other line as it was, in the record's order.
    section = cells.loc[cells["level"] == level, "model_card_section"].iloc[0]
    new_line = f"{level},{model},bid,{d},{max(d, 1)},1024,256,0.250,{section}"
    before, after = gapped.read_text().splitlines(), record.read_text().splitlines()
    assert [line for line in after if line != new_line] == before and len(after) == len(before) + 1
    bid_rows = [i for i, line in enumerate(after) if line.startswith(f"{level},{model},bid,")]
    assert after.index(new_line) in bid_rows and bid_rows == list(range(bid_rows[0], bid_rows[-1] + 1))
    assert row(out.stdout, f"{level} / {model}", "bid")[d].startswith("0.250 [")
    # Again: nothing new, the file unchanged.
    text = record.read_text()
    out = run("--cells", str(record), "--add", str(sweep), "--figure", str(tmp_path / "x.png"))
    assert out.returncode == 0 and "added" not in out.stdout and record.read_text() == text


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["seed=1"], "seed is 1; the record's cells have seed=0"),
        (["checkpoint=random"], "checkpoint is random; the record's cells have checkpoint=shipped"),
        (["execute_policy.estimator=max"], "execute_policy.estimator is max; the record's cells"),
        (["execute_policy.s_min=2"], "execute_policy.s_min is 2; the record's cells have execute_policy.s_min=1"),
    ],
)
def test_add_refuses_a_sweep_of_anything_else(tmp_path, gapped, extra, says):
    level, model, d = GAP
    record = tmp_path / "cells.csv"
    shutil.copy(gapped, record)
    sweep = tmp_path / "sweep"
    curve_job(sweep, level, model, d, "bid", 0.25, *extra)
    out = run("--cells", str(record), "--add", str(sweep), "--figure", str(tmp_path / "x.png"))
    assert out.returncode == 2 and says in out.stderr, out.stderr[-2000:]
    assert record.read_bytes() == gapped.read_bytes() and not (tmp_path / "x.png").exists()


def test_add_refuses_another_model_than_the_levels(tmp_path, gapped):
    level, model, d = GAP
    other = "small" if model == "default" else "default"
    sweep = tmp_path / "sweep"
    curve_job(sweep, level, other, d, "bid", 0.25)
    out = run("--cells", str(gapped), "--add", str(sweep), "--figure", str(tmp_path / "x.png"))
    assert out.returncode == 2 and f"the record's {level} is model={model}" in out.stderr
    out = run("--cells", str(gapped), "--add", str(tmp_path / "nowhere"), "--figure", str(tmp_path / "x.png"))
    assert out.returncode == 2 and "is not a folder" in out.stderr


@pytest.mark.parametrize("same", [True, False])
def test_add_takes_a_copy_of_the_shipped_policy_as_the_shipped_checkpoint(tmp_path, gapped, same):
    """A candidate's curve is measured from its own file before the file moves into the package: the same bytes count
    as the shipped checkpoint, another policy's do not."""
    level, model, d = GAP
    other = next(p for p in SHIPPED.glob(f"*/{model}/policy.pkl") if p.parent.parent.name != level)
    candidate = tmp_path / "candidate.pkl"
    shutil.copy(SHIPPED / level / model / "policy.pkl" if same else other, candidate)
    record = tmp_path / "cells.csv"
    shutil.copy(gapped, record)
    sweep = tmp_path / "sweep"
    curve_job(sweep, level, model, d, "bid", 0.25, f"checkpoint={candidate}")
    out = run("--cells", str(record), "--add", str(sweep), "--figure", str(tmp_path / "x.png"))
    if same:
        assert out.returncode == 0 and f"added: {level} bid d = {d}: 0.250 (256 of 1024)" in out.stdout, out.stderr
    else:
        assert out.returncode == 2 and f"checkpoint is {candidate}; the record's cells have checkpoint=shipped" in (
            out.stderr
        ), out.stderr[-2000:]
        assert record.read_bytes() == gapped.read_bytes()
