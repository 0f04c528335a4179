"""delay_profile=measured (timed sampler -> latency_ms.csv -> replay; resume; trace equivalence) and the deadline
(abandon a late chunk, start over). Tiny shapes: random small policy, 2-4 environments, a few ticks."""

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

from rtc_sweep.core.delays import PRESETS, DelayProfile
from rtc_sweep.core.policy import MODEL_PRESETS
from rtc_sweep.core.run_config import ExecutePolicy, RunConfig
from rtc_sweep.core.samplers import MethodConfig
from rtc_sweep.errors import ConfigError
from rtc_sweep.io import read_csv
from rtc_sweep.report.results import LATENCY_COLUMNS, LATENCY_FILE, RESULTS_FILE
from rtc_sweep.sweep import app
from rtc_sweep.sweep.config import JobConfig, validate
from rtc_sweep.sweep.evaluate import evaluate, job_folder, prepare, read_latency_file, run_rollouts

MEASURED = DelayProfile(name="measured", mode="measured", control_hz=50.0, calls=6)


def config(**kw) -> RunConfig:
    base = RunConfig(
        level="grasp_easy",
        seed=1,
        num_evals=2,
        num_flow_steps=2,
        checkpoint="random",
        delay=MEASURED,
        method=MethodConfig(name="realtime"),
        execute=ExecutePolicy(execute_horizon=2),
        model=MODEL_PRESETS["small"],
        micro_batch=2,
        max_timesteps=8,
    )
    return dataclasses.replace(base, **kw)


def metric_cells(row: dict) -> dict:
    skip = {"profile", "delay_mode", "wall_s", "env_steps_per_s", *LATENCY_COLUMNS}
    return {k: v for k, v in row.items() if k not in skip}


def test_measured_job_writes_reuses_and_replays_as_a_trace(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    job_dir = tmp_path / "job"
    cfg = config()
    assert app.run(JobConfig(run=cfg), job_dir) is not None
    row = read_csv(job_dir / RESULTS_FILE)[0]  # type: ignore[index]
    p50, p99, warm = (float(row[c]) for c in LATENCY_COLUMNS)
    assert 0 < p50 <= p99 and warm > 0
    kept = read_latency_file(job_dir / LATENCY_FILE)
    assert kept is not None and kept.ms.size == 6
    assert p50 == pytest.approx(np.percentile(kept.ms, 50), abs=1e-4)
    # The tick distribution follows from the ms at 50 Hz: d = ceil(ms / 20).
    assert float(row["d_max"]) <= np.ceil(kept.ms.max() / 20.0)

    # A resumed job (results.csv lost) reuses the file instead of timing again: same ms, same results.
    first_file = (job_dir / LATENCY_FILE).read_text()
    (job_dir / RESULTS_FILE).unlink()
    with caplog.at_level(logging.INFO, logger="rtc_sweep"):
        app.run(JobConfig(run=cfg), job_dir)
    assert "reusing the measured latencies" in caplog.text
    assert (job_dir / LATENCY_FILE).read_text() == first_file
    again = read_csv(job_dir / RESULTS_FILE)[0]  # type: ignore[index]
    assert metric_cells(again) == metric_cells(row)

    # Replaying the file as a trace at the same rate with the same seed gives the same results.
    trace = DelayProfile(name="replay", mode="trace", trace_path=str(job_dir / LATENCY_FILE), control_hz=50.0)
    replay = evaluate(dataclasses.replace(cfg, delay=trace), progress=False)
    with job_folder(job_dir):
        measured = evaluate(cfg, progress=False)
    for key, value in measured.items():
        if key in ("profile", "delay_mode", "wall_s", "env_steps_per_s", *LATENCY_COLUMNS):
            continue
        assert replay[key] == value, key


def test_measured_latency_scale_and_system_shift_the_ticks(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    with job_folder(job_dir):
        base = evaluate(config(), progress=False)
    ms = read_latency_file(job_dir / LATENCY_FILE).ms  # type: ignore[union-attr]
    slow = dataclasses.replace(MEASURED, latency_scale=50.0, system="spread_deterministic")
    with job_folder(job_dir):  # same sampler: the file is reused, only the conversion differs
        row = evaluate(config(delay=slow), progress=False)
    expected = np.minimum(np.ceil(ms * 50.0 / 20.0) + 2, 8)  # + 2 ticks of system part, capped at T
    # The few cycles of this tiny rollout draw some of the samples, not necessarily the slowest: the largest drawn
    # delay is one of the converted samples, and (same seed, same draws) at least the base's largest plus 2.
    assert row["d_max"] in set(expected.tolist())
    assert row["d_max"] >= min(base["d_max"] + 2, 8)
    assert row["d_mean"] > base["d_mean"]


def test_deadline_abandons_the_late_chunk_and_restarts() -> None:
    """H = 8, s = 2, deadline 3; delays 1, 6, 0: cycle 1 is abandoned at tick 5 and cycle 2 starts there."""
    cfg = config(delay=dataclasses.replace(PRESETS["long_tail"], deadline=3), max_timesteps=9)
    injected = np.array([[1, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    out = run_rollouts(prepare(cfg, record_actions=True), progress=False, injected_delays=injected)
    expected = [
        *[[-1, 0], [0, 1]],  # cycle 0 (d=1, L=2): cur[0], new0[1]
        *[[0, 2], [0, 3], [0, 4]],  # cycle 1 (d=6 > 3): abandoned after 3 ticks, running what it has (new0[2..4])
        *[[2, 0], [2, 1], [3, 0], [3, 1]],  # cycle 2 starts at tick 5 from o_5 (d=0), cycle 3 at 7
    ]
    assert out.source[0].tolist() == expected
    assert out.n_abandoned.tolist() == [1, 1]
    assert out.cycle_delay[0].tolist() == [1, -1, 6, -1, -1, 0, -1, 0, -1]
    # Without the deadline the same delays stretch cycle 1 to 6 ticks and the new chunk lands.
    plain = run_rollouts(
        prepare(dataclasses.replace(cfg, delay=PRESETS["long_tail"]), record_actions=True),
        progress=False,
        injected_delays=injected,
    )
    assert plain.n_abandoned.tolist() == [0, 0]
    assert plain.source[0, 5].tolist() == [0, 5]  # still the old chunk where the deadline started cycle 2


def test_deadline_runs_dry_into_the_fallback_and_a_loose_one_changes_nothing() -> None:
    cfg = config(delay=PRESETS["long_tail"], num_evals=4, micro_batch=4, max_timesteps=16)
    plain = run_rollouts(prepare(cfg, record_actions=True), progress=False)
    loose = dataclasses.replace(cfg, delay=dataclasses.replace(PRESETS["long_tail"], deadline=50))
    same = run_rollouts(prepare(loose, record_actions=True), progress=False)
    np.testing.assert_array_equal(plain.actions, same.actions)
    assert same.n_abandoned.sum() == 0
    # Every chunk (2 ticks) misses a 1-tick deadline: the controller runs cur until it runs dry, then the fallback.
    tight = dataclasses.replace(cfg, delay=DelayProfile(mode="fixed", fixed_delay=2, deadline=1))
    out = run_rollouts(prepare(tight, record_actions=True), progress=False)
    assert (out.n_abandoned == out.n_cycles).all()
    assert out.starved[:, 8:].all() and not out.starved[:, :8].any()  # the initial chunk (H = 8), then nothing


@pytest.mark.parametrize(
    ("delay", "key"),
    [
        (dataclasses.replace(MEASURED, calls=0), "delay_profile.calls"),
        (dataclasses.replace(MEASURED, system="nope"), "delay_profile.system"),
        (dataclasses.replace(PRESETS["long_tail"], latency_scale=2.0), "delay_profile.latency_scale"),
        (dataclasses.replace(PRESETS["long_tail"], deadline=0), "delay_profile.deadline"),
    ],
)
def test_new_keys_are_validated_before_any_compile(delay: DelayProfile, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: .*allowed") as err:
        validate(JobConfig(run=config(delay=delay)))
    assert err.value.key == key
