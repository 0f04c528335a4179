"""Issue 10 on the pure timeline (a point-mass stand-in for Kinetix, a tiny network: seconds to compile).

What the methods are told after a stretched cycle (fallback in ``prev``, no weight past the plan), the reference
grid untouched, synchronous execution and temporal ensembling against hand-counted and literal versions.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rtc_sweep.core import timeline
from rtc_sweep.core.kinetix_env import StepInfo
from rtc_sweep.core.policy import ModelConfig, Params, init_params
from rtc_sweep.core.run_config import ExecutePolicy
from rtc_sweep.core.samplers import MethodConfig, get_prefix_weights, guidance_weights, noise_shape, sample_chunk
from rtc_sweep.report.stats import wilson_interval
from rtc_sweep.sweep.evaluate import metrics

TINY = ModelConfig(channel_dim=16, channel_hidden_dim=32, token_hidden_dim=8, num_layers=1)
H, A, OBS = TINY.action_chunk_size, 2, 4
B, K = 2, 16  # environments, injected cycles (one shape for every injected rollout: one compile per method)
STEPS = 2
START = jnp.array([0.3, -0.2])


@dataclasses.dataclass(frozen=True)
class PointEnv:
    """A point pushed by the action: obs = (x, sin 3x). Deterministic; never done."""

    action_dim: int = A

    def obs_dim(self, params: Any) -> int:
        return OBS

    def _obs(self, x: jax.Array) -> jax.Array:
        return jnp.concatenate([x, jnp.sin(3 * x)])

    def reset(self, level_state: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self._obs(level_state), level_state

    def step(
        self, key: jax.Array, state: jax.Array, action: jax.Array, level_state: jax.Array, params: Any
    ) -> tuple[jax.Array, jax.Array, StepInfo]:
        x = state + 0.3 * jnp.tanh(action)
        info = StepInfo(reward=jnp.float32(0), done=jnp.bool_(False), solved=jnp.bool_(False), distance=jnp.float32(0))
        return self._obs(x), x, info


ENV = PointEnv()


@functools.cache
def _params() -> Params:
    # Every leaf random (a fresh policy's zero adaLN would make the flow time irrelevant), as in test_samplers.
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda: init_params(jax.random.key(0), OBS, A, TINY))
    return jax.tree.map(
        lambda s: jnp.asarray(rng.normal(0.0, s.shape[0] ** -0.5 if len(s.shape) == 2 else 0.3, s.shape), jnp.float32),
        shapes,
    )


def spec(method: str, ticks: int = 24, **kw: Any) -> timeline.RolloutSpec:
    return timeline.RolloutSpec(
        env=ENV, method=MethodConfig(method, **kw), model=TINY, num_flow_steps=STEPS, num_ticks=ticks, obs_dim=OBS,
        action_dim=A, record_actions=True,
    )  # fmt: skip


@functools.cache
def _jitted(s: timeline.RolloutSpec) -> Any:
    return jax.jit(functools.partial(timeline.rollout, s))


def rollout(s: timeline.RolloutSpec, execute: ExecutePolicy, delays: list[int], te_decay: float = 0.0) -> Any:
    injected = jnp.asarray(np.resize(np.pad(delays, (0, K - len(delays))), (B, K)), jnp.int32)
    out = _jitted(s)(
        _params(), None, START, None, None, timeline.ExecuteArrays.from_config(execute, te_decay), jnp.int32(0),
        jnp.arange(B, dtype=jnp.int32), injected_delays=injected,
    )  # fmt: skip
    return jax.tree.map(np.asarray, out)


# --- what the methods are told ----------------------------------------------------------------------------------


def test_guidance_inputs_worked_case() -> None:
    """timeline.md's worked case: H = 8, s = 1, a spike stretched the last cycle to 6, so valid = 2; d̂ = 3."""
    cur = jnp.zeros((2, H, A)).at[:, 0].set(1.0).at[:, 1].set(2.0)  # c0 = 1, c1 = 2, then padding
    last = jnp.full((2, A), 9.0)
    for hold, fill in ((True, 2.0), (False, 0.0)):
        prev, plan = timeline.guidance_inputs(cur, jnp.array([2, 2]), jnp.array([3, 3]), last, jnp.asarray(hold))
        np.testing.assert_array_equal(prev[:, :, 0], [[1, 2, fill, 0, 0, 0, 0, 0]] * 2)
        np.testing.assert_array_equal(plan, [3, 3])
        for name in ("realtime", "hard_masking", "bid"):
            w = guidance_weights(MethodConfig(name), jnp.array([3, 3]), jnp.array([7, 7]), H, plan)
            np.testing.assert_allclose(w[:, :3], 1.0, rtol=1e-6)  # frozen 0..2, the fallback included
            np.testing.assert_array_equal(w[:, 3:], 0.0)  # exactly nothing past the plan
    # valid = 0 (a cycle longer than H): the held action is the last executed one.
    prev, plan = timeline.guidance_inputs(cur, jnp.array([0, 0]), jnp.array([2, 2]), last, jnp.asarray(True))
    np.testing.assert_array_equal(prev[:, :2], np.full((2, 2, A), 9.0))
    np.testing.assert_array_equal(prev[:, 2:], cur[:, 2:])
    # d̂ <= valid: prev is cur and the plan covers every weighted position, bit for bit.
    prev, plan = timeline.guidance_inputs(cur, jnp.array([5, 7]), jnp.array([2, 0]), last, jnp.asarray(True))
    np.testing.assert_array_equal(prev, cur)
    for schedule in ("exp", "linear", "ones", "zeros"):
        ref = get_prefix_weights(jnp.array([2, 0]), jnp.array([5, 7]), H, schedule)
        method = MethodConfig("realtime", prefix_attention_schedule=schedule)
        np.testing.assert_array_equal(guidance_weights(method, jnp.array([2, 0]), jnp.array([5, 7]), H, plan), ref)


class _Recorder:
    """Wraps timeline.sample_chunk: records what every guided sampler call (not the initial naive chunk) was told."""

    def __init__(self) -> None:
        self.calls: list[dict[str, np.ndarray]] = []
        self._orig = timeline.sample_chunk

    def __call__(self, method: MethodConfig, *args: Any, plan_length: Any = None) -> jax.Array:
        if method.name == "naive":  # the initial chunk, sampled before the scan
            return self._orig(method, *args, plan_length=plan_length)
        _, _, _, _, prev, d, end, *_ = args
        w = guidance_weights(method, d, end, prev.shape[1], plan_length)

        def record(*xs: Any) -> None:
            self.calls.append(dict(zip(("prev", "d", "end", "plan", "w"), (np.asarray(x) for x in xs), strict=True)))

        jax.debug.callback(record, prev, d, end, plan_length, w, ordered=True)
        return self._orig(method, *args, plan_length=plan_length)


@pytest.mark.parametrize("starvation", ["hold", "zero"])
def test_after_a_stretched_cycle_padding_gets_no_weight_and_prev_holds_the_fallback(
    starvation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(timeline, "sample_chunk", recorder)
    s = spec("realtime")
    execute = ExecutePolicy(execute_horizon=1, starvation=starvation)
    # Cycles start at 0 (d 0, L 1), 1 (d 6: L 6, valid 7 -> 2), 7 (d 3 > valid 2: 1 tick starves, L 3, valid 5),
    # 10 (d 9 > H: L 9, valid -> 0), 19 (d 2 > valid 0), 21 (d 0), ...
    injected = jnp.asarray(np.resize(np.pad([0, 6, 3, 9, 2], (0, K - 5)), (B, K)), jnp.int32)
    fn = jax.jit(functools.partial(timeline.rollout, s))  # its own trace, with the recorder inside
    out = fn(_params(), None, START, None, None, timeline.ExecuteArrays.from_config(execute), jnp.int32(0),
             jnp.arange(B, dtype=jnp.int32), injected_delays=injected)  # fmt: skip
    jax.effects_barrier()
    starts = np.flatnonzero(np.asarray(out.cycle_delay[0]) >= 0).tolist()
    assert starts[:6] == [0, 1, 7, 10, 19, 21]
    calls = recorder.calls[: len(starts)]  # cycle k's call is the k-th (every env is in phase)
    actions = np.asarray(out.actions)
    # Cycle 2 at tick 7: cur = the chunk of cycle 1 shifted by 6, valid 2, d̂ 3; tick 9 starves.
    c2 = calls[2]
    np.testing.assert_array_equal(c2["plan"], [3, 3])
    np.testing.assert_array_equal(c2["w"][:, 3:], 0.0)  # exactly zero past max(valid, d̂)
    np.testing.assert_allclose(c2["w"][:, :3], 1.0, rtol=1e-6)  # the frozen prefix, fallback included
    np.testing.assert_array_equal(c2["prev"][:, :2], actions[:, 7:9])  # the real entries, as they ran
    assert out.starved[:, 9].all()
    np.testing.assert_array_equal(c2["prev"][:, 2], actions[:, 9])  # the fallback the controller ran at tick 9
    np.testing.assert_array_equal(c2["prev"][:, 3:], 0.0)
    if starvation == "hold":
        np.testing.assert_array_equal(c2["prev"][:, 2], actions[:, 8])
        assert np.abs(actions[:, 8]).min() > 0
    # Cycle 4 at tick 19: valid 0 (the 9-tick cycle outlasted its chunk), d̂ 2: both frozen entries are the fallback.
    c4 = calls[4]
    np.testing.assert_array_equal(c4["plan"], [2, 2])
    np.testing.assert_array_equal(c4["w"][:, 2:], 0.0)
    np.testing.assert_array_equal(c4["prev"][:, 0], actions[:, 19])
    np.testing.assert_array_equal(c4["prev"][:, 1], actions[:, 20])
    assert out.starved[:, 19:21].all()
    expected = actions[:, 18] if starvation == "hold" else np.zeros((B, A))
    np.testing.assert_array_equal(c4["prev"][:, :2], np.stack([expected, expected], axis=1))


_prefix_weights = jax.jit(
    get_prefix_weights, static_argnums=(2, 3)
)  # compiled, as in the rollout (eager differs by an ulp)


def test_reference_grid_cycles_are_told_exactly_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(timeline, "sample_chunk", recorder)
    s = spec("realtime")
    fn = jax.jit(functools.partial(timeline.rollout, s))
    for d, horizon in ((1, 3), (2, 2), (2, 6)):  # d <= s <= H - d
        recorder.calls.clear()
        injected = jnp.full((B, K), d, jnp.int32)
        execute = timeline.ExecuteArrays.from_config(ExecutePolicy(execute_horizon=horizon, starvation="hold"))
        out = fn(_params(), None, START, None, None, execute, jnp.int32(0), jnp.arange(B, dtype=jnp.int32),
                 injected_delays=injected)  # fmt: skip
        jax.effects_barrier()
        assert not np.asarray(out.starved).any() and recorder.calls
        for call in recorder.calls:
            assert (call["plan"] >= call["end"]).all()
            np.testing.assert_array_equal(call["w"], _prefix_weights(call["d"], call["end"], H, "exp"))
        for k, call in enumerate(recorder.calls[1:], start=1):  # prev = the previous chunk shifted by s
            ran = slice(k * horizon, k * horizon + d)  # the ticks of cycle k that run cur
            assert (np.asarray(out.source)[:, ran, 0] == k - 1).all()
            np.testing.assert_array_equal(call["prev"][:, :d], np.asarray(out.actions)[:, ran])
            np.testing.assert_array_equal(call["prev"][:, H - horizon :], 0.0)


@functools.cache
def _inputs() -> tuple[jax.Array, jax.Array]:
    k1, k2 = jax.random.split(jax.random.key(1))
    return jax.random.normal(k1, (B, OBS)), jax.random.normal(k2, (B, H, A))


_sample = jax.jit(sample_chunk, static_argnums=(0, 2, 8))


@pytest.mark.parametrize("name", ["realtime", "hard_masking", "bid", "training_time"])
def test_sampler_plan_length(name: str) -> None:
    """A plan covering the weighted positions changes nothing, bit for bit; past a short plan prev is ignored."""
    method = MethodConfig(name, n_samples=3)
    obs, prev = _inputs()
    noise = jax.random.normal(jax.random.key(2), noise_shape(method, B, H, A))
    d, end = jnp.array([2, 1]), jnp.array([5, 6])

    def call(p: jax.Array, plan: jax.Array | None) -> np.ndarray:
        return np.asarray(_sample(method, _params(), TINY, obs, noise, p, d, end, STEPS, None, plan))

    reference = call(prev, None)
    for plan in (jnp.array([5, 6]), jnp.array([8, 8]), jnp.int32(7)):
        np.testing.assert_array_equal(call(prev, plan), reference)
    short = jnp.array([3, 2])  # >= d: the frozen prefix stays
    changed = prev.at[0, 3:].set(50.0).at[1, 2:].set(-50.0)
    np.testing.assert_array_equal(call(changed, short), call(prev, short))
    if name == "realtime":  # it did weight those positions (hard masking and training_time only read [0, d))
        assert not np.array_equal(call(changed, None), reference)


# --- synchronous execution ---------------------------------------------------------------------------------------


def test_synchronous_blocks_for_the_delay() -> None:
    out = rollout(spec("naive", ticks=28), ExecutePolicy(mode="synchronous", execute_horizon=4), [3] * K)
    row = metrics(out)
    assert row["mean_cycle_length"] == 7
    assert row["starved_ticks"] / 28 == pytest.approx(3 / 7)
    assert row["p_violate"] == 1.0 and row["p_late"] == 0.0
    one_cycle = [[-2, -2]] * 3 + [[0, j] for j in range(4)]
    expected = [[c + k if c >= 0 else c, j] for k in range(4) for c, j in one_cycle]
    assert out.source[0].tolist() == expected  # fallback 3 ticks, then new[0..3], from every cycle
    assert (out.actions[:, :3] == 0).all()  # the zero fallback
    held = rollout(spec("naive", ticks=28), ExecutePolicy(mode="synchronous", execute_horizon=4, starvation="hold"),
                   [3] * K)  # fmt: skip
    np.testing.assert_array_equal(held.actions[:, 7:10], np.repeat(held.actions[:, 6:7], 3, axis=1))


@pytest.mark.parametrize("horizon", [1, 3])
def test_synchronous_without_delay_is_naive(horizon: int) -> None:
    s = spec("naive")
    sync = rollout(s, ExecutePolicy(mode="synchronous", execute_horizon=horizon), [0] * K)
    asynchronous = rollout(s, ExecutePolicy(execute_horizon=horizon), [0] * K)
    for x, y in zip(jax.tree.leaves(sync), jax.tree.leaves(asynchronous), strict=True):
        np.testing.assert_array_equal(x, y)


def test_one_program_for_every_execute_policy_and_decay() -> None:
    for name in ("naive", "temporal_ensembling"):
        fn = _jitted(spec(name))
        for execute in (ExecutePolicy(execute_horizon=2), ExecutePolicy(mode="synchronous", execute_horizon=3),
                        ExecutePolicy(mode="adaptive", starvation="hold")):  # fmt: skip
            for m in (0.0, 0.5):
                rollout(spec(name), execute, [1, 4, 0, 2], te_decay=m)
        assert fn._cache_size() == 1
    assert spec("temporal_ensembling", te_decay=0.5) == spec("temporal_ensembling", te_decay=0.01)


# --- temporal ensembling -----------------------------------------------------------------------------------------


def test_temporal_ensembling_without_overlap_is_naive() -> None:
    delays = [2, 0, 5, 8, 1, 9, 3, 0]
    for starvation in ("zero", "hold"):
        execute = ExecutePolicy(execute_horizon=H, starvation=starvation)
        te = rollout(spec("temporal_ensembling", ticks=40), execute, delays, te_decay=0.7)
        naive = rollout(spec("naive", ticks=40), execute, delays)
        assert te.starved.any()
        for x, y in zip(jax.tree.leaves(te), jax.tree.leaves(naive), strict=True):
            np.testing.assert_array_equal(x, y)


def literal_temporal_ensembling(
    delays: list[int], horizon: int, m: float, ticks: int, hold: bool, env: int
) -> np.ndarray:
    """One environment, tick by tick in Python: every landed chunk that covers the tick votes with exp(-m·i)."""
    s_te = spec("temporal_ensembling", ticks=ticks)
    _, flow_keys, _, init_keys = timeline.env_keys(jnp.int32(0), jnp.arange(B, dtype=jnp.int32), False)
    zeros = jnp.zeros((1,), jnp.int32)

    def sample(obs: jax.Array, key: jax.Array) -> np.ndarray:
        noise = timeline._noise(s_te, key[None])
        method = MethodConfig("naive")
        return np.asarray(_sample(method, _params(), TINY, obs[None], noise, jnp.zeros((1, H, A)), zeros, zeros,
                                  STEPS))[0]  # fmt: skip

    obs, state = ENV.reset(START)
    chunks = [{"obs": 0, "land": 0, "until": H, "chunk": sample(obs, init_keys[env])}]  # the initial chunk
    k, next_start, last, executed = 0, 0, np.zeros(A), []
    for t in range(ticks):
        if t == next_start:
            d = delays[k]
            chunk = sample(obs, jax.random.fold_in(flow_keys[env], k))
            if k == 0:
                chunks[0]["until"] = d  # cycle 0's chunk (same observation) takes over when it lands
            chunks.append({"obs": t, "land": t + d, "until": t + H, "chunk": chunk})
            next_start, k = t + max(horizon, d), k + 1
        voters = [c for c in chunks if c["land"] <= t < c["until"]]  # oldest first
        if voters:
            w = np.exp(-m * np.arange(len(voters)))
            a = sum(wi * c["chunk"][t - c["obs"]] for wi, c in zip(w, voters, strict=True)) / w.sum()
        else:
            a = last if hold else np.zeros(A)
        executed.append(a)
        obs, state, _ = ENV.step(None, state, jnp.asarray(a, jnp.float32), START, None)
        last = a
    return np.stack(executed)


@pytest.mark.parametrize(("starvation", "m"), [("zero", 0.4), ("hold", 0.0)])
def test_temporal_ensembling_equals_a_literal_implementation(starvation: str, m: float) -> None:
    delays, horizon, ticks = [1, 0, 3, 9, 2, 1, 0, 4, 1, 2, 0, 0, 1, 0, 0, 0], 2, 30
    out = rollout(spec("temporal_ensembling", ticks=ticks), ExecutePolicy(execute_horizon=horizon,
                  starvation=starvation), delays, te_decay=m)  # fmt: skip
    assert out.starved.any()  # the 9-tick cycle runs dry
    for env in range(B):
        expected = literal_temporal_ensembling(delays, horizon, m, ticks, starvation == "hold", env)
        np.testing.assert_allclose(out.actions[env], expected, atol=1e-5, rtol=0)
    # and it really averages: not the naive execution
    naive = rollout(spec("naive", ticks=ticks), ExecutePolicy(execute_horizon=horizon, starvation=starvation), delays)
    assert not np.allclose(naive.actions, out.actions, atol=1e-3)


# --- the results table -------------------------------------------------------------------------------------------


def test_wilson_interval() -> None:
    # Values of scipy.stats.binomtest(k, n).proportion_ci(method="wilson") (the Wilson score interval, z = 1.96).
    assert wilson_interval(81, 263) == pytest.approx((0.2552885198782742, 0.36620957698280004), abs=1e-12)
    assert wilson_interval(1007, 1024) == pytest.approx((0.9735742590998576, 0.9896093053536411), abs=1e-12)
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.27753279986288926, abs=1e-12))
    assert wilson_interval(10, 10) == (pytest.approx(0.7224672001371109, abs=1e-12), 1.0)
    lo, hi = wilson_interval(5, 10, z=1.0)
    assert lo < 0.5 < hi and hi - 0.5 == pytest.approx(0.5 - lo)
    assert all(np.isnan(wilson_interval(0, 0)))
    with pytest.raises(ValueError, match="outside"):
        wilson_interval(11, 10)


def test_metrics_carry_the_wilson_interval() -> None:
    out = rollout(spec("naive"), ExecutePolicy(execute_horizon=2), [0] * K)
    solved = np.array([True, False, True, True] * 4)
    first = out.first._replace(solved=solved)
    row = metrics(out._replace(first=first))
    assert row["returned_episode_solved"] == 0.75
    assert (row["returned_episode_solved_ci_low"], row["returned_episode_solved_ci_high"]) == wilson_interval(12, 16)


def test_fixed_delay_figure_draws_the_baselines(tmp_path: Any) -> None:
    """fixed_delay_sweep's baselines each get a line of the RTC paper's figure (synchronous apart from naive)."""
    import matplotlib.pyplot as plt
    from sweep_folders import make_job

    from rtc_sweep.report import aggregate
    from rtc_sweep.report.figures import FIXED_DELAY_FIGURE, build_figures
    from rtc_sweep.sweep.config import register_configs

    register_configs()
    for policy, method in [("fixed", "naive"), ("fixed", "temporal_ensembling"), ("synchronous", "naive")]:
        for d in range(3):
            make_job(tmp_path, ["+experiment=fixed_delay_sweep", f"execute_policy={policy}", f"method={method}",
                                f"delay_profile.fixed_delay={d}", f"execute_policy.execute_horizon={max(d, 1)}"],
                     returned_episode_solved=0.9 - 0.1 * d)  # fmt: skip
    _, df, groups = aggregate.collect(tmp_path)
    made = build_figures(aggregate.summarize(df, groups), groups, df)
    for fig, _ in made:
        plt.close(fig)
    info = next(info for _, info in made if info.name == FIXED_DELAY_FIGURE)
    drawn = {(p["method"], p["execute_policy"]) for panel in info.panels for p in panel.points}
    assert drawn == {("naive", "fixed"), ("temporal_ensembling", "fixed"), ("naive", "synchronous")}
    assert "execute_policy" in info.lines
