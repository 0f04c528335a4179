"""One rollout engine: training collects and measures through the evaluation's timeline (train/rollout.py on
core/timeline.py), so a training log's solve rate is ``evaluate``'s, bit for bit, under the delay law it trains on.

The shipped grasp_easy policy (it solves in about 57 ticks), 6 environments (not a multiple of the 2 host devices:
padded as evaluate pads), 64 ticks, exp-delta's long_tail delays and s = 2. Each distinct program compiles once
for the whole file: the evaluation's, evaluation's with its executed actions, the collection's (transitions and
exploration), one with snapshots, and self-imitation's fit.
"""

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rtc_sweep.core import kinetix_env as ke
from rtc_sweep.core.checkpoint import load_policy
from rtc_sweep.core.policy import MODEL_PRESETS
from rtc_sweep.errors import ConfigError
from rtc_sweep.sweep.evaluate import CHECKPOINTS_DIR, evaluate, prepare, run_rollouts
from rtc_sweep.train.flow_bc import OptimConfig
from rtc_sweep.train.rollout import (
    Exploration,
    make_rollout,
    measurement,
    rollout_seed,
    solved_episode_mask,
    transitions,
)
from rtc_sweep.train.self_imitation import SelfImitationConfig, eval_run, run_self_imitation

SMALL = MODEL_PRESETS["small"]
LEVEL = "grasp_easy"
POLICY = CHECKPOINTS_DIR / LEVEL / "small" / "policy.pkl"
E, T, DELAY, S = 6, 64, "long_tail", 2


def job(seed: int = 0):
    return measurement(LEVEL, SMALL, E, T, 5, 0.1, DELAY, S, seed=seed)


def evaluation(seed: int, checkpoint: Path = POLICY, **kw):
    return dataclasses.replace(job(seed), checkpoint=str(checkpoint), **kw)


@pytest.fixture(scope="module")
def params():
    return load_policy(POLICY, SMALL)


@pytest.fixture(scope="module")
def executed():
    """Evaluation's own rollout with its executed actions (record_actions), seed 1."""
    return run_rollouts(prepare(evaluation(1), record_actions=True), progress=False)


def test_the_training_measurement_is_the_evaluation(params):
    seed = 3
    stats, record = make_rollout(job())(params, seed)
    assert record is None
    row = evaluate(evaluation(seed), progress=False)
    assert row["returned_episode_solved"] == float(np.mean(stats.solved))
    assert row["returned_episode_returns"] == float(np.mean(stats.returns))
    assert row["returned_episode_lengths"] == float(np.mean(stats.length))
    per_env = run_rollouts(prepare(evaluation(seed)), progress=False)
    for ours, theirs in zip(stats, (per_env.first.solved, per_env.first.returns, per_env.first.length,
                                    per_env.first.finished), strict=True):  # fmt: skip
        np.testing.assert_array_equal(ours, theirs)
    assert row["returned_episode_solved"] > 0 and row["d_mean"] > 0  # a real measurement, under real delays
    assert stats.solved.shape == (E,)  # the padding environment is dropped, as evaluate drops it
    # A PRNG key stands for the integer seed it draws.
    key = jax.random.key(7)
    by_key, _ = make_rollout(job())(params, key)
    np.testing.assert_array_equal(by_key.length, make_rollout(job())(params, rollout_seed(key))[0].length)


def test_recorded_transitions_are_the_executed_ones(params, executed):
    collect = make_rollout(job(), record=True)
    out = collect.per_env(params, 1, Exploration.none())
    np.testing.assert_array_equal(out.record.action, executed.actions)  # env-major [E, T, A]
    np.testing.assert_array_equal(out.cycle_delay, executed.cycle_delay)
    np.testing.assert_array_equal(out.first.solved, executed.first.solved)
    tr = transitions(out)
    assert tr.obs.shape == (T, E, 679) and tr.obs.dtype == np.float16 and tr.action.shape == (T, E, 6)
    np.testing.assert_array_equal(tr.action, np.swapaxes(executed.actions, 0, 1))
    level = ke.load_level(LEVEL)
    reset_obs = np.asarray(ke.make_env(level.static_params).reset(level)[0]).astype(np.float16)
    np.testing.assert_array_equal(tr.obs[0], np.broadcast_to(reset_obs, (E, reset_obs.size)))
    assert not np.array_equal(tr.obs[1], tr.obs[0])
    # The first episode's done row holds what the first-episode stats report.
    first_done = np.argmax(tr.done, axis=0)
    ended = tr.done.any(axis=0)
    np.testing.assert_array_equal(ended, out.first.finished)
    cols = np.arange(E)
    np.testing.assert_array_equal(tr.length[first_done, cols][ended], out.first.length[ended])
    np.testing.assert_array_equal(tr.return_[first_done, cols][ended], out.first.returns[ended])
    np.testing.assert_array_equal(tr.solved[first_done, cols][ended], out.first.solved[ended])
    keep = solved_episode_mask(jnp.asarray(tr.done), jnp.asarray(tr.solved))  # the jitted one, plan.py's
    np.testing.assert_array_equal(tr.keep, np.asarray(keep))
    assert tr.keep.any()  # solved episodes: data
    # Exploration changes the actions, never the delay draws (common random numbers) nor the obs the rollout starts at.
    explored = collect.per_env(params, 1, Exploration(jnp.float32(1.5), jnp.float32(0.1)))
    assert not np.array_equal(explored.record.action, executed.actions)
    np.testing.assert_array_equal(explored.cycle_delay, executed.cycle_delay)
    np.testing.assert_array_equal(explored.record.obs[:, 0], out.record.obs[:, 0])


def test_snapshots_are_the_states_between_the_same_ticks(params, executed):
    every, n = 8, 3
    out = make_rollout(job(), record=True, snapshot_every=every, num_snapshots=n).per_env(params, 1)
    np.testing.assert_array_equal(out.record.action, executed.actions)  # the split scan runs the same ticks
    snaps = out.snapshots
    assert snaps.live.shape == (E, n)
    ticks = every * np.arange(1, n + 1)
    np.testing.assert_array_equal(snaps.obs, out.record.obs[:, ticks])  # the obs the next tick's action sees
    ended = out.record.done[:, : every * n].reshape(E, n, every).any(-1).cumsum(1) > 0
    np.testing.assert_array_equal(snaps.live, ~ended)  # the first episode runs until its first done
    live = snaps.live
    np.testing.assert_array_equal(snaps.tick[live], np.broadcast_to(ticks, (E, n))[live])
    np.testing.assert_array_equal(np.asarray(snaps.state.timestep)[live], snaps.tick[live])  # the episode clock


def test_self_imitation_trains_and_logs_under_the_delay_law(tmp_path):
    cfg = SelfImitationConfig(
        run_dir=str(tmp_path / "si"),
        model=SMALL,
        optim=OptimConfig(batch_size=8, warmup_steps=1),
        num_iterations=1,
        init_checkpoint=str(POLICY),
        collect_envs=E,
        eval_envs=E,
        num_ticks=T,
        grad_steps=2,
        delay_profile=DELAY,
        execute_horizon=S,
        collect_execute_horizon=S,
    )
    run_self_imitation(cfg, progress=False)
    run = Path(cfg.run_dir)
    assert eval_run(cfg) == job()
    for it in (0, 1):
        stats = json.loads((run / str(it) / "stats.json").read_text())
        policy = run / str(it) / "policies" / f"worlds_l_{LEVEL}.pkl"
        row = evaluate(evaluation(stats["eval"]["seed"], checkpoint=policy), progress=False)
        assert row["returned_episode_solved"] == stats["eval"]["returned_episode_solved"]  # the log is evaluate's
        assert row["returned_episode_lengths"] == stats["eval"]["returned_episode_lengths"]
    collected = stats["collect"]
    assert collected["d_mean"] > 0 and collected["mean_cycle_length"] >= S  # collected under long_tail
    assert collected["solved_episodes"] > 0


def test_training_rollout_settings_name_their_key(tmp_path):
    cfg = SelfImitationConfig(run_dir=str(tmp_path / "si"), model=SMALL, delay_profile="long_tale")
    with pytest.raises(ConfigError, match=r"task\.delay_profile"):
        run_self_imitation(cfg, progress=False)
    with pytest.raises(ConfigError, match=r"task\.execute_horizon"):
        run_self_imitation(dataclasses.replace(cfg, delay_profile=None, execute_horizon=9), progress=False)
    with pytest.raises(ConfigError, match=r"delay_profile"):
        measurement(LEVEL, SMALL, E, T, 5, 0.1, "measured")
