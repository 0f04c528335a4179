"""The rollout against timeline.md: worked example, reference equivalence, common random numbers, starvation,
micro-batch and device invariance, one compile per sweep. Tiny shapes: 4 environments, a few dozen ticks."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rtc_sweep.core import timeline
from rtc_sweep.core.delays import PRESETS, DelayProfile
from rtc_sweep.core.policy import MODEL_PRESETS
from rtc_sweep.core.run_config import ExecutePolicy, RunConfig
from rtc_sweep.core.samplers import MethodConfig, sample_chunk
from rtc_sweep.report.results import METRIC_COLUMNS, PARTIAL_DIR
from rtc_sweep.sweep.evaluate import evaluate, job_folder, prepare, run_rollouts

H = 8
TICKS = 24


def config(**kw) -> RunConfig:
    base = RunConfig(
        level="grasp_easy",
        seed=3,
        num_evals=4,
        num_flow_steps=2,
        checkpoint="random",
        delay=PRESETS["long_tail"],
        method=MethodConfig(name="realtime"),
        execute=ExecutePolicy(execute_horizon=2),
        model=MODEL_PRESETS["small"],
        micro_batch=4,
        max_timesteps=TICKS,
    )
    return dataclasses.replace(base, **kw)


def rollout(cfg: RunConfig, injected=None, record=True):
    if injected is not None:  # one shape for every injected test: one compile
        injected = np.pad(injected, ((0, 0), (0, 12 - injected.shape[1])))
    return run_rollouts(prepare(cfg, record_actions=record), progress=False, injected_delays=injected)


def test_worked_example_tick_by_tick():
    """timeline.md's worked example: H = 8, s = 3, oracle, delays 1, 6, 0."""
    cfg = config(execute=ExecutePolicy(execute_horizon=3), max_timesteps=12)
    out = rollout(cfg, injected=np.array([[1, 6, 0, 0, 0, 0]]))
    src = out.source[0].tolist()
    init, c0, c2 = -1, 0, 2
    expected = (
        [[init, 0], [c0, 1], [c0, 2]]  # cycle 0 (d=1): cur[0], then new[1], new[2]
        + [[c0, 3 + i] for i in range(5)]  # cycle 1 (d=6): ticks 3..7 run cur[0..4] = new_0[3..7]
        + [[-2, -2]]  # tick 8: cur ran dry (valid = 5), the fallback runs
        + [[c2, 0], [c2, 1], [c2, 2]]  # cycle 2 (d=0): new[0..2]
    )
    assert src == expected
    assert out.starved[0].tolist() == [False] * 8 + [True] + [False] * 3
    assert np.all(out.actions[0, 8] == 0.0)  # the zero fallback
    # cycles start at ticks 0, 3, 9 with delays 1, 6, 0
    assert out.cycle_delay[0].tolist() == [1, -1, -1, 6, -1, -1, -1, -1, -1, 0, -1, -1]
    assert int(out.n_cycles[0]) == 3
    assert int(out.n_late[0]) == 1 and int(out.n_violate[0]) == 1 and int(out.starved_ticks[0]) == 1
    assert int(out.sum_cycle_length[0]) == 3 + 6 + 3


def test_hold_fallback_repeats_last_action():
    cfg = config(execute=ExecutePolicy(execute_horizon=3, starvation="hold"), max_timesteps=12)
    out = rollout(cfg, injected=np.array([[1, 6, 0, 0, 0, 0]]))
    assert out.starved[0, 8]
    np.testing.assert_array_equal(out.actions[0, 8], out.actions[0, 7])


def reference_actions(cfg: RunConfig, d: int, s: int) -> np.ndarray:
    """The benchmark's evaluation loop (reference-benchmark.md §6.2), written the reference's way with static
    slices, using the rollout's random streams: executed = concat(A[:d], A_new[d:s]); A = concat(A_new[s:], 0)."""
    prep = prepare(cfg)
    spec, B = prep.spec, cfg.num_evals
    idx = jnp.arange(B, dtype=jnp.int32)
    _, flow_keys, action_keys, init_keys = timeline.env_keys(jnp.int32(cfg.seed), idx, False)
    naive = MethodConfig(name="naive")
    sample = jax.jit(sample_chunk, static_argnums=(0, 2, 8))
    step = jax.jit(jax.vmap(spec.env.step, in_axes=(0, 0, 0, None, None)))
    obs, state = jax.vmap(lambda _: spec.env.reset(prep.level.state))(idx)
    zeros_d = jnp.zeros((B,), jnp.int32)
    A = sample(
        naive, prep.params, cfg.model, obs, timeline._noise(dataclasses.replace(spec, method=naive), init_keys),
        jnp.zeros((B, H, 6)), zeros_d, zeros_d, cfg.num_flow_steps,
    )  # fmt: skip
    executed = []
    for j in range(-(-cfg.max_timesteps // s)):
        noise = timeline._noise(spec, jax.vmap(jax.random.fold_in, in_axes=(0, None))(flow_keys, j))
        A_new = sample(
            cfg.method, prep.params, cfg.model, obs, noise, A, jnp.full((B,), d), jnp.full((B,), H - s),
            cfg.num_flow_steps,
        )  # fmt: skip
        actions = jnp.concatenate([A[:, :d], A_new[:, d:s]], axis=1)
        for a in range(s):
            t = j * s + a
            keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(action_keys, t)
            obs, state, _ = step(keys, state, actions[:, a], prep.level.state, prep.env_params)
            executed.append(actions[:, a])
        A = jnp.concatenate([A_new[:, s:], jnp.zeros((B, s, 6))], axis=1)
    return np.stack(executed, axis=1)[:, : cfg.max_timesteps]


@pytest.mark.parametrize(("d", "s"), [(1, 3), (2, 2)])
def test_reference_equivalence_fixed_delay(d, s):
    fixed = DelayProfile(name="fixed", mode="fixed", fixed_delay=d)
    cfg = config(delay=fixed, execute=ExecutePolicy(execute_horizon=s))
    out = rollout(cfg)
    expected = reference_actions(cfg, d, s)
    np.testing.assert_allclose(out.actions, expected, atol=1e-5)
    assert not out.starved.any()
    assert int(out.n_late.sum()) == 0 and int(out.n_violate.sum()) == 0


def test_common_random_numbers_across_methods():
    a = rollout(config(method=MethodConfig(name="naive")), record=False)
    b = rollout(config(method=MethodConfig(name="realtime")), record=False)
    np.testing.assert_array_equal(a.cycle_delay, b.cycle_delay)
    assert (a.cycle_delay >= 0).sum() > 4  # several cycles, several delays
    assert not np.array_equal(a.max_ddelta, b.max_ddelta)  # the methods really differ


def test_micro_batch_and_device_count_do_not_change_results():
    cfg = config()
    whole = rollout(cfg, record=False)
    halves = rollout(dataclasses.replace(cfg, micro_batch=2), record=False)
    for x, y in zip(jax.tree.leaves(whole), jax.tree.leaves(halves), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5)
    # one device (unsharded) vs all local devices (conftest exposes 2 host devices)
    assert len(jax.devices()) == 2
    prep = prepare(cfg)
    args = (
        prep.params, prep.weak_params, prep.level.state, prep.env_params, prep.delay_arrays, prep.execute,
        jnp.int32(cfg.seed), jnp.arange(4, dtype=jnp.int32),
    )  # fmt: skip
    one = timeline.make_rollout(prep.spec, sharded=False)(*args)
    for x, y in zip(jax.tree.leaves(whole), jax.tree.leaves(one), strict=True):
        np.testing.assert_allclose(x, np.asarray(y), atol=1e-5)


def test_a_killed_job_resumes_at_its_next_micro_batch(tmp_path):
    """In a job folder, evaluate keeps each finished micro-batch (partial/): a rerun reads back the batches it
    finds and runs the others, with the same results; a damaged file is run again; another config's files are
    removed, never read."""
    cfg = config(micro_batch=2)  # 2 micro-batches of 2 environments (test_micro_batch... compiles this program)
    plain = evaluate(cfg, progress=False)
    with job_folder(tmp_path):
        row = evaluate(cfg, progress=False)
    files = sorted((tmp_path / PARTIAL_DIR).glob("*/*.npz"))
    assert [f.name for f in files] == ["envs_0000000-0000002.npz", "envs_0000002-0000004.npz"]
    assert plain["resumed_envs"] == row["resumed_envs"] == 0
    assert {c: row[c] for c in METRIC_COLUMNS} == {c: plain[c] for c in METRIC_COLUMNS}

    # A job killed after its first batch: the second never landed. The first is marked (returns + 1000) so that
    # the rerun shows it was read back, not run.
    files[1].unlink()
    with np.load(files[0]) as f:
        arrays = dict(f)
    arrays["first.returns"] = arrays["first.returns"] + 1000.0
    np.savez(files[0], **arrays)
    with job_folder(tmp_path):
        again = evaluate(cfg, progress=False)
    assert again["resumed_envs"] == 2 and files[1].is_file()
    assert again["returned_episode_returns"] == pytest.approx(row["returned_episode_returns"] + 500.0)
    assert again["returned_episode_solved"] == row["returned_episode_solved"]
    assert again["d_mean"] == row["d_mean"] and again["max_ddelta_action"] == row["max_ddelta_action"]
    assert again["wall_s"] >= float(arrays["seconds"])  # the read-back batch's time is counted

    files[1].write_bytes(b"not an npz")  # damaged: run again, as if missing
    with job_folder(tmp_path):
        assert evaluate(cfg, progress=False)["resumed_envs"] == 2
    with job_folder(tmp_path):  # another seed: another fingerprint
        other = evaluate(config(micro_batch=2, seed=4), progress=False)
    assert other["resumed_envs"] == 0 and not files[0].exists()
    assert len(list((tmp_path / PARTIAL_DIR).glob("*/*.npz"))) == 2


def test_adaptive_oracle_at_a_fixed_delay_runs_exactly_the_fixed_horizon_s_equal_d():
    # The paper-curve preset (adaptive, oracle, s_min = 1) at fixed d must execute what execute_policy=fixed
    # execute_horizon=d does, draw for draw: the same s at every inference, the same per-environment outputs.
    d = DelayProfile(name="fixed", mode="fixed", fixed_delay=3)
    oracle = ExecutePolicy(mode="adaptive", s_min=1, estimator="oracle")
    for method in ("naive", "realtime"):
        fixed = rollout(config(method=MethodConfig(name=method), delay=d, execute=ExecutePolicy(execute_horizon=3)))
        adaptive = rollout(config(method=MethodConfig(name=method), delay=d, execute=oracle))
        assert int(np.asarray(fixed.sum_execute_horizon).sum()) == 3 * int(np.asarray(fixed.n_cycles).sum())
        for name, x, y in zip(fixed._fields, fixed, adaptive, strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"{method}: {name}")


def test_one_compile_serves_a_delay_and_horizon_sweep():
    cfg = config()
    prep = prepare(cfg)
    fn = timeline.make_rollout(prep.spec)
    before = fn._cache_size()
    for d in range(0, 3):
        for s in range(max(1, d), 4):
            c = dataclasses.replace(
                cfg,
                delay=DelayProfile(name="fixed", mode="fixed", fixed_delay=d),
                execute=ExecutePolicy(execute_horizon=s),
            )
            rollout(c, record=False)
    adaptive = ExecutePolicy(mode="adaptive", estimator="max_recent", buffer_size=3)
    rollout(dataclasses.replace(cfg, execute=adaptive, delay=PRESETS["lognormal"]), record=False)
    assert fn._cache_size() - before <= 1


def test_adaptive_max_recent_metrics():
    cfg = config(
        execute=ExecutePolicy(mode="adaptive", s_min=1, estimator="max_recent", buffer_size=2, prior_delay=1),
    )
    out = rollout(dataclasses.replace(cfg, max_timesteps=12), injected=np.array([[0, 3]]))
    # cycle 0: d̂ = prior 1, s = 1, d = 0 -> L = 1; cycle 1: d̂ = max(0) = 0 -> s = 1, d = 3 -> L = 3, underestimated;
    # cycle 2: d̂ = max(0, 3) = 3 -> s = 3; cycle 3: d̂ = max(3, 0) = 3; cycle 4: d̂ = max(0, 0) = 0 -> s = 1
    starts = np.flatnonzero(out.cycle_delay[0] >= 0).tolist()
    assert starts[:6] == [0, 1, 4, 7, 10, 11]
    assert int(out.n_under[0]) == 1


def test_evaluate_returns_every_column():
    row = evaluate(config(), progress=False)
    from rtc_sweep.report.results import IDENTIFYING_COLUMNS, METRIC_COLUMNS

    for col in IDENTIFYING_COLUMNS + METRIC_COLUMNS:
        assert col in row, col
    assert 0.0 <= row["returned_episode_solved"] <= 1.0
    assert row["d_max"] <= 4 and row["nfe_per_chunk"] > 0


def test_a_micro_batch_kept_by_other_code_is_not_read(tmp_path):
    """The partial files' fingerprint covers the rollout's source: a copy of it with one byte changed gives another
    digest, and another digest another fingerprint, so a job resumed after an edit runs its batches again."""
    from rtc_sweep.sweep.evaluate import ROLLOUT_SOURCE, code_digest, partial_fingerprint

    core, this = ROLLOUT_SOURCE
    copies = {name: tmp_path / name / "core" for name in ("same", "edited")}
    for copy in copies.values():
        copy.mkdir(parents=True)
        for f in core.glob("*.py"):
            (copy / f.name).write_bytes(f.read_bytes())
    timeline_py = copies["edited"] / "timeline.py"
    timeline_py.write_text(timeline_py.read_text() + "\n# edited\n")
    assert code_digest((copies["same"], this)) == code_digest()
    edited = code_digest((copies["edited"], this))
    assert edited != code_digest()
    prep = prepare(config())
    assert partial_fingerprint(prep, 2) == partial_fingerprint(prep, 2, code=code_digest())
    assert partial_fingerprint(prep, 2, code=edited) != partial_fingerprint(prep, 2)
