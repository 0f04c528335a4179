"""Figures that follow the sweep, report.html (in a real headless chromium), and aggregation without JAX.

Sweep folders are built by hand (sweep_folders.make_job: real configs, made-up metrics), so nothing compiles.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf
from sweep_folders import make_job

from rtc_sweep.report import aggregate as agg
from rtc_sweep.report.figures import FIXED_DELAY_FIGURE, SOLVED_FIGURE, FigureInfo, build_figures
from rtc_sweep.report.page import REPORT_HTML, experiment_question, reproduce
from rtc_sweep.report.results import RESULTS_FILE, config_mismatches, hash_config_columns, read_rows
from rtc_sweep.sweep.config import config_columns, config_hash, register_configs, to_job_config

CHROMIUM = shutil.which("chromium")
# Without the background-networking flags, chromium waits on connections that a sandboxed machine refuses.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _registered() -> None:
    register_configs()


def rate(p: float, n: int = 256) -> float:
    return round(p * n) / n


def adaptive_delay_sweep(sweep: Path) -> Path:
    """The issue's shape: fixed delays d = 0..6 with the adaptive execute policy, one seed."""
    for method, slope in (("naive", 0.08), ("realtime", 0.02)):
        for d in range(7):
            make_job(
                sweep, ["delay_profile=fixed", "execute_policy=adaptive", f"method={method}",
                        f"delay_profile.fixed_delay={d}"],
                returned_episode_solved=rate(0.99 - slope * d), max_ddelta_action=3.0 + 0.1 * d,
                d_mean=d, d_p50=d, d_p95=d, d_p99=d, d_max=d,
            )  # fmt: skip
    return sweep


def seeds_sweep(sweep: Path) -> Path:
    for seed, p in enumerate((0.80, 0.84, 0.78)):
        make_job(sweep, [f"seed={seed}"], returned_episode_solved=rate(p), max_ddelta_action=3.0)
    return sweep


def level_method_sweep(sweep: Path) -> Path:
    for level, base in (("grasp_easy", 0.9), ("catapult", 0.5)):
        for method, gain in (("naive", 0.0), ("realtime", 0.1)):
            for seed in range(2):
                make_job(
                    sweep, [f"level={level}", f"method={method}", f"seed={seed}"],
                    returned_episode_solved=rate(base + gain - 0.02 * seed), max_ddelta_action=4.0 - 5 * gain,
                    d_mean=0.3, d_p50=0.0, d_p95=1.0, d_p99=4.0, d_max=4.0,
                )  # fmt: skip
    return sweep


def grid_sweep(sweep: Path) -> Path:
    """The RTC paper's d x s grid (d = 0..2, s = max(d, 1) and 4)."""
    for method in ("naive", "realtime"):
        for d in range(3):
            for s in sorted({max(d, 1), 4}):
                make_job(
                    sweep, ["+experiment=fixed_delay_sweep", f"method={method}", f"delay_profile.fixed_delay={d}",
                            f"execute_policy.execute_horizon={s}"],
                    returned_episode_solved=rate(0.9 - 0.1 * d - 0.01 * s - (0.2 if method == "naive" else 0.0)),
                )  # fmt: skip
    return sweep


def tables(sweep: Path) -> tuple[Any, list[str], Any]:
    jobs, df, groups = agg.collect(sweep)
    assert all(j.status == "complete" for j in jobs), [j.reason for j in jobs]
    return df, groups, agg.summarize(df, groups)


def figure_infos(sweep: Path) -> tuple[dict[str, FigureInfo], Any, list[str]]:
    import matplotlib.pyplot as plt

    df, groups, summary = tables(sweep)
    made = build_figures(summary, groups, df)
    for fig, _ in made:
        plt.close(fig)
    return {info.name: info for _, info in made}, summary, groups


def plotted(info: FigureInfo, groups: list[str]) -> list[tuple[Any, ...]]:
    return [tuple(p[g] for g in groups) for panel in info.panels for p in panel.points]


def assert_follows_the_sweep(info: FigureInfo, summary: Any, groups: list[str]) -> None:
    """Every group is one point, drawn once (nothing averaged), and every rate axis spans 0–1."""
    points = plotted(info, groups)
    assert len(points) == len(set(points)), "a group is drawn twice"
    assert set(points) == {tuple(r) for r in summary[groups].itertuples(index=False)}
    for panel in info.panels:
        assert not panel.rate or panel.ylim == (0.0, 1.0), panel


def test_delay_sweep_with_the_adaptive_policy(tmp_path: Path) -> None:
    infos, summary, groups = figure_infos(adaptive_delay_sweep(tmp_path))
    solved = infos[SOLVED_FIGURE]
    assert solved.x == "delay_profile.fixed_delay" and solved.lines == ("method",) and solved.facets == ()
    assert_follows_the_sweep(solved, summary, groups)
    # The fixed-delay figure keeps d = 2..6 with the adaptive policy (its execute_horizon column is s_min = 1).
    fixed = infos[FIXED_DELAY_FIGURE]
    assert len(fixed.panels) == 1 and fixed.panels[0].ylim == (0.0, 1.0)
    drawn = {(p["method"], p["delay_profile.fixed_delay"]) for p in fixed.panels[0].points}
    assert drawn == {(m, d) for m in ("naive", "realtime") for d in range(7)}
    assert "execute_policy" in fixed.lines


def test_seeds_only_sweep(tmp_path: Path) -> None:
    infos, summary, groups = figure_infos(seeds_sweep(tmp_path))
    assert len(summary) == 1 and summary["n_seeds"].iloc[0] == 3
    solved = infos[SOLVED_FIGURE]
    assert solved.x is None and len(solved.panels) == 1 and len(solved.panels[0].points) == 1
    assert_follows_the_sweep(solved, summary, groups)
    assert FIXED_DELAY_FIGURE not in infos


def test_a_measurement_column_never_splits_a_group(tmp_path: Path) -> None:
    """A per-job measurement that is not a metric column (a latency the job timed) is not a swept key."""
    import csv

    seeds_sweep(tmp_path)
    for i, path in enumerate(sorted(tmp_path.glob(f"*/{RESULTS_FILE}"))):
        rows = read_rows(path) or []
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, [*rows[0], "latency_ms_p50"])
            writer.writeheader()
            writer.writerows([{**r, "latency_ms_p50": 30.0 + i} for r in rows])
    _, groups, summary = tables(tmp_path)
    assert "latency_ms_p50" not in groups and len(summary) == 1 and summary["n_seeds"].iloc[0] == 3


def test_level_by_method_sweep(tmp_path: Path) -> None:
    infos, summary, groups = figure_infos(level_method_sweep(tmp_path))
    solved = infos[SOLVED_FIGURE]
    assert solved.x is None and solved.facets == ("level",) and solved.lines == ("method",)
    assert len(solved.panels) == 2 and all(len(p.points) == 2 for p in solved.panels)
    assert_follows_the_sweep(solved, summary, groups)
    assert_follows_the_sweep(infos["jerk.png"], summary, groups)


def test_delay_by_horizon_grid(tmp_path: Path) -> None:
    infos, summary, groups = figure_infos(grid_sweep(tmp_path))
    solved = infos[SOLVED_FIGURE]
    assert solved.x == "delay_profile.fixed_delay" and "execute_horizon" in solved.facets
    assert_follows_the_sweep(solved, summary, groups)
    left, right = infos[FIXED_DELAY_FIGURE].panels
    # Left: s = max(d, 1), one point per method and d; right: s at d = 1.
    assert sorted((p["method"], p["delay_profile.fixed_delay"], p["execute_horizon"]) for p in left.points) == [
        (m, d, max(d, 1)) for m in ("naive", "realtime") for d in range(3)
    ]
    assert {(p["delay_profile.fixed_delay"], p["execute_horizon"]) for p in right.points} == {(1, 1), (1, 4)}
    assert left.ylim == right.ylim == (0.0, 1.0)


def test_one_seed_still_shows_its_uncertainty(tmp_path: Path) -> None:
    make_job(tmp_path, ["method=naive"], returned_episode_solved=255 / 256)
    make_job(tmp_path, ["method=realtime"], returned_episode_solved=250 / 256)
    report = agg.aggregate(tmp_path, make_figures=False, detect=0.05)
    md = (tmp_path / "summary.md").read_text()
    assert "0.996 [0.978, 0.999]" in md  # episodes pooled, Wilson: not "0.996 ± –"
    rows = read_rows(tmp_path / "results_all.csv")
    assert rows is not None
    assert float(rows[0]["returned_episode_solved_ci_low"]) == pytest.approx(0.978, abs=1e-3)
    # Paired on the one seed: the pooled z-test, with a p-value; and the power line with what 0.05 needs.
    assert "(pooled z)" in md
    assert "To detect a difference of 0.050" in report.power and "1 seed" in report.power


def test_paired_test_and_power_over_seeds(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for seed in range(4):
        base = rng.binomial(256, 0.7)
        make_job(tmp_path, ["method=naive", f"seed={seed}"], returned_episode_solved=base / 256)
        make_job(tmp_path, ["method=realtime", f"seed={seed}"], returned_episode_solved=(base + 20 + seed) / 256)
    agg.aggregate(tmp_path, make_figures=False)
    (row,) = read_rows(tmp_path / agg.PAIRED_CSV) or []
    assert row["returned_episode_solved_test_test"] == "paired t"
    assert float(row["returned_episode_solved_test_diff"]) == pytest.approx(21.5 / 256)
    # The seeds agree almost exactly, so the variance floor ((|d| - d^2) / episodes) sets the scale: t = 9.7, df 3.
    assert float(row["returned_episode_solved_test_p_value"]) == pytest.approx(0.0023, abs=2e-4)
    assert "the paired t-test over seeds detects" in (tmp_path / "summary.md").read_text()


# ---------------------------------------------------------------------------------------------------------------
# The results contract


def test_config_hash_and_mismatches_need_no_runtime_config(tmp_path: Path) -> None:
    job = make_job(tmp_path, ["delay_profile=long_tail", "seed=3"], returned_episode_solved=0.5)
    cfg = OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "config.yaml"))
    assert isinstance(cfg, dict)
    run = to_job_config(OmegaConf.create(cfg)).run
    assert hash_config_columns(config_columns(run)) == config_hash(run)
    (row,) = read_rows(job / RESULTS_FILE) or []
    assert config_mismatches(row, cfg) == []  # lists, floats (dt_ms), null (checkpoint shown as "shipped")
    cfg["seed"] = 4
    cfg["delay_profile"]["base_probs"] = [0.5, 0.5]
    wrong = config_mismatches(row, cfg)
    assert sorted(w.split(":")[0] for w in wrong) == ["delay_profile.base_probs", "seed"]
    assert "seed: 3 in results.csv, 4 in the config" in wrong


# ---------------------------------------------------------------------------------------------------------------
# report.html


def write_multirun(sweep: Path, task: list[str]) -> None:
    OmegaConf.save(
        OmegaConf.create({"hydra": {"sweeper": {"params": {}}, "overrides": {
            "task": task, "hydra": [f"hydra.sweep.dir={sweep}", "hydra.mode=MULTIRUN"]}}}),
        sweep / "multirun.yaml",
    )  # fmt: skip


def test_report_is_self_contained_and_says_how_to_reproduce(tmp_path: Path) -> None:
    sweep = level_method_sweep(tmp_path / "sweep")
    write_multirun(sweep, ["level=grasp_easy,catapult", "method=naive,realtime", "seed=range(0,2)"])
    report = agg.aggregate(sweep, detect=0.05)
    page = (sweep / REPORT_HTML).read_text()
    figures = [p for p in report.files if p.suffix == ".png"]
    assert len(figures) >= 3 and page.count('src="data:image/png;base64,') == len(figures)
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "the page loads something from elsewhere"
    for section in ("Question", "exp-delta pass criteria", "Paired method differences", "Results", "Power",
                    "Figures", "Reproduce"):  # fmt: skip
        assert f">{section}" in page, section
    command = "python -m rtc_sweep level=grasp_easy,catapult method=naive,realtime 'seed=range(0,2)'"
    assert html.escape(command, quote=False) in page
    assert f"hydra.sweep.dir={sweep} -m" in page
    assert "To detect a difference of 0.050" in page
    assert report.expected == 8


def test_reproduce_without_multirun_yaml_and_the_experiment_question(tmp_path: Path) -> None:
    sweep = seeds_sweep(tmp_path)
    command = reproduce(sweep, agg.job_dirs(sweep))
    assert command is not None and command.command == "python -m rtc_sweep seed=0,1,2 -m"
    assert "no multirun.yaml" in command.source
    assert command.resume == f"python -m rtc_sweep seed=0,1,2 hydra.sweep.dir={sweep} -m"
    question = experiment_question(["+experiment=tail_v1"])
    assert question is not None and question.startswith("exp-delta's tail_v1 matrix")


def _colored_pixels(png: Path) -> int:
    import matplotlib.image as mpimg

    img = mpimg.imread(png)[..., :3]
    return int(((img.max(axis=-1) - img.min(axis=-1)) > 0.35).sum())


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium: apt-get install -y chromium (.ci/run does)")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    sweep = level_method_sweep(tmp_path / "sweep")
    report = agg.aggregate(sweep)
    n_figures = sum(p.suffix == ".png" for p in report.files)
    url = (sweep / REPORT_HTML).resolve().as_uri()

    dom = _chromium(["--dump-dom", url], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<h1>Sweep summary: sweep</h1>" in dom.stdout
    assert dom.stdout.count('<img alt="') == n_figures

    shot = tmp_path / "report.png"
    out = _chromium([f"--screenshot={shot}", "--window-size=1280,6000", url], tmp_path)
    assert out.returncode == 0 and shot.is_file(), out.stderr[-2000:]
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)[..., :3]
    assert img.std() > 0.05 and (img.min(axis=-1) < 0.5).mean() > 0.01, "the screenshot is blank"
    # The figures are the only colours on the page: the same page without its images has (almost) none.
    bare = sweep / "bare.html"
    bare.write_text(re.sub(r'<img [^>]*src="data:image/png;base64,[^"]*">', "", (sweep / REPORT_HTML).read_text()))
    bare_shot = tmp_path / "bare.png"
    _chromium([f"--screenshot={bare_shot}", "--window-size=1280,6000", bare.resolve().as_uri()], tmp_path)
    with_figures, without = _colored_pixels(shot), _colored_pixels(bare_shot)
    assert with_figures > 20_000 and without < 1_000, (with_figures, without)


# ---------------------------------------------------------------------------------------------------------------
# Without JAX


def test_aggregation_and_report_need_no_jax(tmp_path: Path) -> None:
    sweep = level_method_sweep(tmp_path / "sweep")
    fake = tmp_path / "no_jax"
    marker = tmp_path / "jax_import_attempted"
    for name in ("jax", "jaxlib"):
        (fake / name).mkdir(parents=True)
        (fake / name / "__init__.py").write_text(
            f"import pathlib\npathlib.Path({str(marker)!r}).write_text({name!r})\n"
            f"raise ImportError('{name} cannot be imported in this test')\n"
        )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")]))
    probe = subprocess.run([sys.executable, "-c", "import jax"], env=env, capture_output=True, text=True, check=False)
    assert probe.returncode != 0 and "cannot be imported" in probe.stderr
    marker.unlink()

    cmd = [sys.executable, "-m", "rtc_sweep.report.aggregate", str(sweep), "--detect", "0.05"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not marker.exists(), f"aggregation tried to import {marker.read_text()}"
    assert "8 jobs: 8 complete" in out.stdout and "To detect a difference of 0.050" in out.stdout
    page = (sweep / REPORT_HTML).read_text()
    assert page.count('src="data:image/png;base64,') >= 3
