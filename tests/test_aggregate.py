"""Aggregation over synthetic sweep folders (real configs, made-up metrics): tables, verdict, pairs, figures."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from sweep_folders import compose_config, make_job

from rtc_sweep.report.aggregate import AggregateCallback, aggregate, main
from rtc_sweep.report.results import RESULTS_FILE, SKIPPED_FILE
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
    make_job(tmp_path, ["seed=1"], results=False)
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
