"""Aggregation over synthetic sweep folders (real configs, made-up metrics): tables, verdict, pairs, figures."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from sweep_folders import compose_config, make_job

from rtc_sweep.report.aggregate import AggregateCallback, aggregate, collect, main, summarize
from rtc_sweep.report.figures import FIXED_DELAY_FIGURE, FigureInfo, build_figures
from rtc_sweep.report.results import PARTIAL_DIR, RESULTS_FILE, SKIPPED_FILE
from rtc_sweep.report.stats import mean_over_strata, t_ppf
from rtc_sweep.sweep.config import register_configs


@pytest.fixture(scope="module", autouse=True)
def _registered() -> None:
    register_configs()


SOLVED = {  # (profile, method) -> solved per seed 0, 1, 2
    ("long_tail", "naive"): [0.4, 0.5, 0.6],
    ("long_tail", "realtime"): [0.5, 0.6, 0.7],
    ("tail_controlled", "naive"): [0.1, 0.2, 0.3],
    ("tail_controlled", "realtime"): [0.55, 0.6, 0.65],
}


@pytest.fixture
def tail_sweep(tmp_path: Path) -> Path:
    for (profile, method), solved in SOLVED.items():
        for seed, s in enumerate(solved):
            make_job(
                tmp_path, [f"delay_profile={profile}", f"method={method}", f"seed={seed}"],
                returned_episode_solved=s, d_p99=4.0 if profile == "long_tail" else 2.0,
                p_violate=0.04 if profile == "long_tail" else 0.0, max_ddelta_action=4.5 if method == "naive" else 3.7,
            )  # fmt: skip
    return tmp_path


def read(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tables_verdict_and_pairs(tail_sweep: Path) -> None:
    report = aggregate(tail_sweep)
    assert report.headline() == "12 jobs: 12 complete, 0 incomplete"

    rows = read(tail_sweep / "results_all.csv")
    assert len(rows) == 12 and "job" in rows[0] and "delay_profile.tail_cap" in rows[0]

    summary = {(r["profile"], r["method"]): r for r in read(tail_sweep / "summary.csv")}
    assert set(summary) == set(SOLVED)
    rt = summary["long_tail", "realtime"]
    assert rt["n_seeds"] == "3"
    assert float(rt["returned_episode_solved_mean"]) == pytest.approx(0.6)
    assert float(rt["returned_episode_solved_std"]) == pytest.approx(0.1)
    lo, hi = float(rt["returned_episode_solved_ci_low"]), float(rt["returned_episode_solved_ci_high"])
    assert 0.5 <= lo <= 0.6 <= hi <= 0.7

    md = (tail_sweep / "summary.md").read_text()
    assert "**exp-delta verdict (realtime): PASS**" in md
    # naive loses 0.3 of its solve rate under tail control, more than one std: that row fails.
    naive_line = next(line for line in md.splitlines() if line.startswith("| naive") and "→" in line)
    assert "FAIL" in naive_line
    # Paired (same profile and seed): realtime − naive is +0.1 on long_tail for every seed, so std 0.
    assert "| long_tail | fixed | grasp_easy | 4 | 256 | realtime | 3 | 0.100 ± 0.000" in md
    for png in ("solved.png", "jerk.png", "delay_distribution.png"):
        assert (tail_sweep / png).stat().st_size > 1000, png


def test_incomplete_jobs_are_reported_not_averaged(tmp_path: Path) -> None:
    make_job(tmp_path, ["seed=0"], returned_episode_solved=0.5)
    killed = make_job(tmp_path, ["seed=1"], results=False)
    for name in ("envs_0000000-0000256.npz", "envs_0000256-0000512.npz"):  # two micro-batches kept (names only)
        (killed / PARTIAL_DIR / "0123456789abcdef").mkdir(parents=True, exist_ok=True)
        (killed / PARTIAL_DIR / "0123456789abcdef" / name).write_bytes(b"")
    partial = make_job(tmp_path, ["seed=2"], returned_episode_solved=0.9)
    (partial / RESULTS_FILE).write_text((partial / RESULTS_FILE).read_text()[:120])
    stale = make_job(tmp_path, ["seed=3"], returned_episode_solved=0.9)
    OmegaConf.save(compose_config(["seed=4"]), stale / ".hydra" / "config.yaml")  # rerun started with a new config
    skipped = make_job(tmp_path, ["seed=5"], results=False)
    (skipped / SKIPPED_FILE).write_text("skipped: outside the grid\n")

    report = aggregate(tmp_path, make_figures=False)
    assert (report.count("complete"), report.count("incomplete"), report.count("skipped")) == (1, 3, 1)
    assert [r["seed"] for r in read(tmp_path / "results_all.csv")] == ["0"]
    summary = read(tmp_path / "summary.csv")
    assert len(summary) == 1 and summary[0]["n_seeds"] == "1"
    assert float(summary[0]["returned_episode_solved_mean"]) == 0.5
    md = (tmp_path / "summary.md").read_text()
    assert "## Incomplete jobs" in md
    for reason in ("no results.csv", "partial or unreadable", "another config"):
        assert reason in md, reason
    assert "512 environments done in partial/ (a rerun resumes there)" in md
    assert "skipped by design" in md


def test_expected_jobs_count_the_ones_never_started(tmp_path: Path) -> None:
    make_job(tmp_path, ["method=naive", "seed=0"], returned_episode_solved=0.5)
    OmegaConf.save(
        OmegaConf.create({"hydra": {"sweeper": {"params": {"method": "naive,realtime"}},
                                    "overrides": {"task": ["seed=range(0,3)", "num_evals=256"]}}}),
        tmp_path / "multirun.yaml",
    )  # fmt: skip
    report = aggregate(tmp_path, make_figures=False)
    assert report.expected == 6 and report.not_started == 5
    assert "6 jobs: 1 complete, 0 incomplete, 5 not started" in (tmp_path / "summary.md").read_text()

    # Launched again into the same folder with a smaller sweep: the jobs on disk, not the last launch, are the total.
    for seed in range(1, 8):
        make_job(tmp_path, ["method=naive", f"seed={seed}"], returned_episode_solved=0.5)
    report = aggregate(tmp_path, make_figures=False)
    assert report.headline() == "8 jobs: 8 complete, 0 incomplete (the last launch defined 6)"


def test_batch_scope_is_flagged(tmp_path: Path) -> None:
    for seed in range(2):
        make_job(tmp_path, ["delay_profile.scope=batch", f"seed={seed}"], returned_episode_solved=0.5)
    aggregate(tmp_path, make_figures=False)
    assert "delay_scope = batch" in (tmp_path / "summary.md").read_text()


def test_fixed_delay_sweep_groups_by_the_swept_delay(tmp_path: Path) -> None:
    for method in ("naive", "realtime"):
        for d in range(3):
            for s in sorted({max(d, 1), 4}):
                make_job(
                    tmp_path,
                    ["+experiment=fixed_delay_sweep", f"method={method}", f"delay_profile.fixed_delay={d}",
                     f"execute_policy.execute_horizon={s}"],
                    returned_episode_solved=0.9 - 0.1 * d - (0.2 if method == "naive" else 0.0),
                )  # fmt: skip
    aggregate(tmp_path)
    summary = read(tmp_path / "summary.csv")
    assert "delay_profile.fixed_delay" in summary[0]
    naive_d2 = [r for r in summary if r["method"] == "naive" and r["delay_profile.fixed_delay"] == "2"]
    assert len(naive_d2) == 2  # one group per execute horizon
    assert all(float(r["returned_episode_solved_mean"]) == pytest.approx(0.5) for r in naive_d2)
    assert (tmp_path / "fixed_delay_solved.png").stat().st_size > 1000


def test_a_methods_swept_setting_is_paired_per_variant(tmp_path: Path) -> None:
    """realtime at two guidance weights against naive: two rows of 3 pairs each, not one of 6."""
    for seed in range(3):
        make_job(tmp_path, ["method=naive", f"seed={seed}"], returned_episode_solved=0.5)
        for w, gain in ((1.0, 0.1), (5.0, 0.3)):
            make_job(tmp_path, ["method=realtime", f"method.max_guidance_weight={w}", f"seed={seed}"],
                     returned_episode_solved=0.5 + gain)  # fmt: skip
    aggregate(tmp_path)
    rows = {r["method.max_guidance_weight"]: r for r in read(tmp_path / "paired.csv")}
    assert set(rows) == {"1.0", "5.0"}
    assert [rows[w]["n_pairs"] for w in ("1.0", "5.0")] == ["3", "3"]
    assert float(rows["1.0"]["returned_episode_solved_diff_mean"]) == pytest.approx(0.1)
    assert float(rows["5.0"]["returned_episode_solved_diff_mean"]) == pytest.approx(0.3)


def test_cli_and_callback_are_rerunnable(tail_sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tail_sweep), "--no-figures"]) == 0
    first = (tail_sweep / "summary.csv").read_text()
    AggregateCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tail_sweep)}}}))
    assert (tail_sweep / "summary.csv").read_text() == first  # same CIs: the bootstrap is seeded
    assert "12 jobs: 12 complete" in capsys.readouterr().out
    assert main([str(tail_sweep / "nope")]) == 2
    (tail_sweep / "empty").mkdir()
    assert main([str(tail_sweep / "empty")]) == 1


def test_power_line_says_so_when_every_episode_had_the_same_outcome():
    from rtc_sweep.report.aggregate import Power

    nan = float("nan")
    line = Power(seeds=1, episodes=16, sigma_paired=nan, sigma_independent=0.0, source="measured",
                mde_paired=nan, mde_pooled=0.0).line()  # fmt: skip
    assert "same outcome" in line and "0.000" not in line
    ok = Power(seeds=1, episodes=256, sigma_paired=nan, sigma_independent=0.3, source="measured",
              mde_paired=nan, mde_pooled=0.07).line()  # fmt: skip
    assert "detects a solve-rate difference" in ok


# ---------------------------------------------------------------------------------------------------------------
# Averaged over levels: a parent folder of per-level paper_delay_curve sweeps, as runs/curves/<level>/ holds them

CURVES = {  # level -> (checkpoint, num_evals, {method: solved at d = 0, 1, 2})
    "grasp_easy": ("random", 100, {"naive": [0.9, 0.8, 0.7], "realtime": [0.9, 0.85, 0.8]}),
    "catapult": ("policies_catapult.pkl", 200, {"naive": [0.5, 0.4, 0.3], "realtime": [0.5, 0.45, 0.4]}),
}
Z = 1.959963984540054


def curve_job(root: Path, level: str, method: str, d: int, solved: float, seed: int = 0) -> None:
    checkpoint, n, _ = CURVES[level]
    make_job(
        root / level, ["+experiment=paper_delay_curve", f"level={level}", f"method={method}",
                       f"delay_profile.fixed_delay={d}", f"checkpoint={checkpoint}", f"num_evals={n}", f"seed={seed}"],
        returned_episode_solved=solved,
    )  # fmt: skip


@pytest.fixture(scope="module")
def curves(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two levels (each its own sweep, checkpoint and episode count) x naive, realtime x d = 0..2, one seed; and
    bid at d = 0 on grasp_easy only."""
    root = tmp_path_factory.mktemp("curves")
    for level, (_, _, solved) in CURVES.items():
        for method, rates in solved.items():
            for d, s in enumerate(rates):
                curve_job(root, level, method, d, s)
    curve_job(root, "grasp_easy", "bid", 0, 0.6)
    aggregate(root)
    return root


def fixed_delay_info(sweep: Path) -> FigureInfo:
    import matplotlib.pyplot as plt

    _, df, groups = collect(sweep)
    made = build_figures(summarize(df, groups), groups, df)
    for fig, _ in made:
        plt.close(fig)
    return next(info for _, info in made if info.name == FIXED_DELAY_FIGURE)


def by_method_and_d(rows: list[dict[str, str]]) -> dict[tuple[str, int], dict[str, str]]:
    return {(r["method"], int(r["delay_profile.fixed_delay"])): r for r in rows}


def test_rates_averaged_over_levels(curves: Path) -> None:
    levels = by_method_and_d(read(curves / "levels.csv"))
    assert set(levels) == {(m, d) for m in ("naive", "realtime") for d in range(3)}  # bid: at one level only
    row = levels["naive", 1]
    assert (row["n_levels"], row["levels"], row["n_episodes"]) == ("2", "catapult, grasp_easy", "300")
    # (0.8 + 0.4) / 2; var = (0.8 * 0.2 / 100 + 0.4 * 0.6 / 200) / 2^2 = 0.0007
    se = math.sqrt(0.0007)
    assert float(row["returned_episode_solved_level_mean"]) == pytest.approx(0.6)
    assert float(row["returned_episode_solved_level_mean_se"]) == pytest.approx(se)
    assert float(row["returned_episode_solved_level_mean_ci_low"]) == pytest.approx(0.6 - Z * se)
    assert float(row["returned_episode_solved_level_mean_ci_high"]) == pytest.approx(0.6 + Z * se)
    # num_evals differs between the levels, the checkpoint too: neither splits a group; the method and d do.
    assert "num_evals" not in row and "checkpoint" not in row
    assert float(levels["realtime", 2]["returned_episode_solved_level_mean"]) == pytest.approx(0.6)


def test_paired_differences_averaged_over_levels(curves: Path) -> None:
    (row,) = [r for r in read(curves / "levels_paired.csv") if r["delay_profile.fixed_delay"] == "1"]
    assert (row["method"], row["baseline"], row["n_levels"]) == ("realtime", "naive", "2")
    # One seed: each level's se is the pooled z-test's, sqrt(pa (1 - pa) + pb (1 - pb)) / sqrt(n).
    var = (0.85 * 0.15 + 0.8 * 0.2) / 100 + (0.45 * 0.55 + 0.4 * 0.6) / 200
    se = math.sqrt(var) / 2
    assert float(row["returned_episode_solved_diff_level_mean"]) == pytest.approx(0.05)
    assert float(row["returned_episode_solved_diff_level_mean_se"]) == pytest.approx(se)
    assert float(row["returned_episode_solved_diff_level_mean_ci_low"]) == pytest.approx(0.05 - Z * se)
    assert float(row["returned_episode_solved_diff_level_mean_ci_high"]) == pytest.approx(0.05 + Z * se)
    # bid − naive exists at grasp_easy only: dropped, not averaged over one level.
    assert {r["method"] for r in read(curves / "levels_paired.csv")} == {"realtime"}


def test_summary_shows_the_average_after_the_per_level_table(curves: Path) -> None:
    md = (curves / "summary.md").read_text()
    results, averaged, power = md.index("## Results"), md.index("## Averaged over levels"), md.index("## Power")
    assert results < averaged < power
    section = md[averaged:power]
    assert "mean over the 2 levels `catapult`, `grasp_easy`" in section and "clipped to [0, 1]" in section
    assert "Averaged across `num_evals`" in section
    se = math.sqrt(0.0007)
    assert f"| 2 | 300 | 0.600 [{0.6 - Z * se:.3f}, {0.6 + Z * se:.3f}] |" in section
    assert "not averaged (1 group): `bid` · `delay_profile.fixed_delay=0` (at grasp_easy)" in section
    assert "not averaged (1 pairing): " in section and "Δ solved (mean over levels)" in section
    assert "Averaged over levels" in (curves / "report.html").read_text()


def test_fixed_delay_figure_has_the_mean_over_levels_on_top(curves: Path) -> None:
    info = fixed_delay_info(curves)
    mean, *per_level = info.panels
    assert mean.title.startswith("mean over 2 levels: ") and mean.ylim == (0.0, 1.0)
    assert [p.title.split(":")[0] for p in per_level] == ["catapult", "grasp_easy"]
    points = by_method_and_d([{k: str(v) for k, v in p.items()} for p in mean.points])
    assert len(mean.points) == len(points) == 6
    expected = by_method_and_d(read(curves / "levels.csv"))
    assert points == expected  # the levels.csv rows, each drawn once
    assert "bid" in {p["method"] for p in per_level[1].points} and "num_evals" not in info.lines


def test_one_level_gets_no_average(curves: Path, tmp_path: Path) -> None:
    one = tmp_path / "catapult"
    shutil.copytree(curves / "catapult", one)  # its own sweep: the outputs above are in curves/
    (one / "levels.csv").write_text("level_mean\n0.5\n")  # left by an earlier aggregation that spanned levels
    report = aggregate(one)
    assert report.count("complete") == 6
    assert not (one / "levels.csv").exists() and not (one / "levels_paired.csv").exists()
    assert "Averaged over levels" not in (one / "summary.md").read_text()
    info = fixed_delay_info(one)
    assert len(info.panels) == 1 and not info.panels[0].title.startswith("mean over")


def test_paired_standard_errors_over_seeds_combine_over_levels(tmp_path: Path) -> None:
    """With seeds, each level's se is its paired t-test's (half-width / t quantile); the levels add in quadrature."""
    for level, (_, n, _) in CURVES.items():
        for seed, (a, b) in enumerate([(0.50, 0.60), (0.55, 0.58), (0.40, 0.52)]):
            curve_job(tmp_path, level, "naive", 0, round(a * n) / n, seed)
            curve_job(tmp_path, level, "realtime", 0, round(b * n) / n, seed)
    aggregate(tmp_path, make_figures=False)
    paired = read(tmp_path / "paired.csv")
    t = "returned_episode_solved_test_"
    assert len(paired) == 2 and {r[f"{t}test"] for r in paired} == {"paired t"}
    se = [(float(r[f"{t}ci_high"]) - float(r[f"{t}ci_low"])) / 2 / t_ppf(0.975, 2) for r in paired]
    (row,) = read(tmp_path / "levels_paired.csv")
    diff = sum(float(r[f"{t}diff"]) for r in paired) / 2
    assert float(row["returned_episode_solved_diff_level_mean"]) == pytest.approx(diff)
    assert float(row["returned_episode_solved_diff_level_mean_se"]) == pytest.approx(math.hypot(*se) / 2)


def test_the_interval_over_levels_is_clipped() -> None:
    # (1 + 0.9) / 2 = 0.95, se = sqrt(0 + 0.09 / 10) / 2 = 0.047: 0.95 + 1.96 se > 1.
    mean, se, low, high = mean_over_strata([1.0, 0.9], [0.0, 0.9 * 0.1 / 10], (0.0, 1.0))
    assert (mean, se) == (pytest.approx(0.95), pytest.approx(math.sqrt(0.009) / 2))
    assert low == pytest.approx(0.95 - Z * se) and high == 1.0


def test_adaptive_jobs_show_the_horizon_they_executed(tmp_path: Path) -> None:
    # execute_horizon identifies an adaptive job by its floor s_min (1 here): the summary also shows the s it ran.
    for method, solved in (("naive", 0.4), ("realtime", 0.6)):
        make_job(
            tmp_path, ["delay_profile=fixed", "delay_profile.fixed_delay=3", "execute_policy=adaptive",
                       "execute_policy.s_min=1", f"method={method}"],
            returned_episode_solved=solved, mean_execute_horizon=3.0,
        )  # fmt: skip
    aggregate(tmp_path, make_figures=False)
    md = (tmp_path / "summary.md").read_text()
    results = md.split("## Results", 1)[1]
    header = next(line for line in results.splitlines() if line.startswith("| profile"))
    assert "| mean_execute_horizon |" in header
    row = next(line for line in results.splitlines() if line.startswith("| fixed | realtime"))
    assert "| 3.000 ± –" in row and "its floor s_min" in results
    other = tmp_path.parent / f"{tmp_path.name}_fixed_only"  # fixed jobs alone: no such column
    make_job(other, ["seed=0"], returned_episode_solved=0.5)
    aggregate(other, make_figures=False)
    assert "mean_execute_horizon" not in (other / "summary.md").read_text().split("## Results", 1)[1]
