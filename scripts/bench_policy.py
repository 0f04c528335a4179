"""The policy network's cost, the nnx mixer against the pure functions it replaced, in one run.

    python scripts/bench_policy.py                              # batch 256, 5 flow steps, small and default models
    python scripts/bench_policy.py --batch 2048 --reps 20 --methods naive realtime
    python scripts/bench_policy.py --rollout-envs 0             # the velocity and the samplers only

Three levels, each timed for both implementations with the repetitions interleaved (a machine shared with other
work slows both alike, so the ratio survives it even when the absolute times do not), median reported:

- the jitted velocity (one network evaluation of a batch);
- one chunk of every sampler (``sample_chunk``: naive, realtime's vjp, bid's n samples, training_time's prefix);
- a short rollout on a Kinetix level (``timeline.make_rollout``, random small policy, realtime, long_tail delays).

"pure" is the mixer as rtc_sweep computed it before it became an nnx module: the pure JAX functions over the
benchmark's params dict, copied below unchanged and plugged in through the same interface (``PureMixerConfig``,
a ``network.ModelSpec``), so that both go through the same samplers and rollout and differ only in the network.
Each row also says whether the two gave bit-identical outputs and whether the optimised XLA programs are the same
(compared with instruction names and source metadata canonicalised).

Measured (issue 12 item 7; 2 CPU cores shared with other jobs, jax 0.9.0, flax 0.12.6, batch 256, 5 flow steps,
median of 15 interleaved rounds; the rollout: realtime, long_tail, s = 2, median of 5):

    | model   | what                       | pure ms | nnx ms | nnx / pure | bit-identical | same XLA program |
    | small   | velocity                   |    7.56 |   7.38 |      0.977 | yes           | yes              |
    | small   | naive                      |   28.86 |  28.44 |      0.985 | yes           | yes              |
    | small   | realtime                   |   80.65 |  75.94 |      0.942 | yes           | yes              |
    | small   | bid-16                     |  579.97 | 609.74 |      1.051 | yes           | yes              |
    | small   | training_time              |   35.76 |  36.08 |      1.009 | yes           | yes              |
    | default | velocity                   |  212.04 | 215.78 |      1.018 | yes           | yes              |
    | default | naive                      |  810.48 | 859.17 |      1.060 | yes           | yes              |
    | default | realtime                   | 2347.95 |2194.94 |      0.935 | yes           | yes              |
    | default | bid-16                     | 6920.19 |6974.69 |      1.008 | yes           | yes              |
    | default | training_time              |  411.86 | 409.35 |      0.994 | yes           | yes              |
    | small   | rollout 32 envs x 64 ticks | 2111.65 |2116.51 |      1.002 | yes           | n/a              |

The two compile to the same optimised program, so the ratios scatter around 1 by the machine's noise alone (both
signs, up to 6 % on this shared machine). Tracing costs nnx 4-8 ms more per sampler (the merge), against the tens of
seconds a Kinetix rollout takes to compile.

Inputs are random (obs 679 and action 6, as on the benchmark's levels); the policy is a fresh one with every leaf
random (a fresh policy's zero adaLN would skip work that a trained one does not).
"""

from __future__ import annotations

from rtc_sweep.runtime import configure_host_devices, enable_compilation_cache

configure_host_devices()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from rtc_sweep.core.policy import MODEL_PRESETS, ModelConfig, Params, init_params, posemb_sincos  # noqa: E402
from rtc_sweep.core.samplers import MethodConfig, nfe_per_chunk, noise_shape, sample_chunk  # noqa: E402

OBS_DIM, ACTION_DIM = 679, 6

METHOD_CONFIGS = {
    "naive": MethodConfig("naive"),
    "realtime": MethodConfig("realtime"),
    "hard_masking": MethodConfig("hard_masking"),
    "bid": MethodConfig("bid", n_samples=16),
    "training_time": MethodConfig("training_time"),
}

# ---------------------------------------------------------------------------------------------------------------
# The baseline: rtc_sweep/core/policy.py's network before the nnx module (git 9282036), verbatim but for names

_LN_EPS = 1e-6
_Spread = Callable[[jax.Array], jax.Array]


def _linear(p: dict[str, jax.Array | None], x: jax.Array) -> jax.Array:
    # flax layout: kernel is [in, out]; contract x's last axis with the kernel's first.
    y = jax.lax.dot_general(x, p["kernel"], (((x.ndim - 1,), (0,)), ((), ())))
    return y if p["bias"] is None else y + p["bias"]


def _layer_norm(x: jax.Array) -> jax.Array:
    # flax's fast variance, E[x²] - E[x]², clipped at 0, so that the numerics follow the original.
    mean = jnp.mean(x, axis=-1, keepdims=True)
    mean_sq = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    var = jnp.maximum(0.0, mean_sq - jnp.square(mean))
    return (x - mean) * jax.lax.rsqrt(var + _LN_EPS)


def _gelu(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=True)  # nnx.gelu is the tanh form


def _identity(y: jax.Array) -> jax.Array:
    return y


def _mixer_block(p: Params, x: jax.Array, cond: jax.Array, spread: _Spread) -> jax.Array:
    scale_1, shift_1, gate_1 = jnp.split(spread(_linear(p["adaln_1"], cond)), 3, axis=-1)
    scale_2, shift_2, gate_2 = jnp.split(spread(_linear(p["adaln_2"], cond)), 3, axis=-1)

    y = _layer_norm(x) * (1 + scale_1) + shift_1
    y = jnp.swapaxes(y, 1, 2)  # [B, C, H]: mix across the chunk's positions
    y = _linear(p["token_mix_out"], _gelu(_linear(p["token_mix_in"], y)))
    y = jnp.swapaxes(y, 1, 2)  # [B, H, C]
    x = x + gate_1 * y

    y = _layer_norm(x) * (1 + scale_2) + shift_2
    y = _linear(p["channel_mix_out"], _gelu(_linear(p["channel_mix_in"], y)))
    return x + gate_2 * y


def _network(
    params: Params, config: ModelConfig, obs: jax.Array, x_t: jax.Array, times: jax.Array, spread: _Spread
) -> jax.Array:
    B, H, _ = x_t.shape
    assert config.action_chunk_size == H, (x_t.shape, config.action_chunk_size)
    assert obs.shape[0] == B, (obs.shape, x_t.shape)
    emb = posemb_sincos(times, config.channel_dim)  # [B, K, C]
    layers = params["time_mlp"]["layers"]
    cond = jax.nn.swish(_linear(layers[2], jax.nn.swish(_linear(layers[0], emb))))  # [B, K, C]
    A = x_t.shape[-1]
    kernel, bias = params["in_proj"]["kernel"], params["in_proj"]["bias"]
    x = _linear({"kernel": kernel[:A], "bias": bias}, x_t)  # [B, H, C]
    x = x + _linear({"kernel": kernel[A:], "bias": None}, obs)[:, None, :]
    for i in range(len(params["mlp_stack"])):
        x = _mixer_block(params["mlp_stack"][i], x, cond, spread)

    scale, shift = jnp.split(spread(_linear(params["final_adaln"], cond)), 2, axis=-1)
    x = _layer_norm(x) * (1 + scale) + shift
    return _linear(params["out_proj"], x)  # [B, H, A]


def pure_velocity(params: Params, config: ModelConfig, obs: jax.Array, x_t: jax.Array, time: jax.Array) -> jax.Array:
    B, H, _ = x_t.shape
    time = jnp.asarray(time, jnp.float32)
    if time.ndim == 0:
        time = jnp.broadcast_to(time, (B,))
    assert time.shape in ((B,), (B, H)), (time.shape, x_t.shape)
    return _network(params, config, obs, x_t, time.reshape(B, -1), _identity)


def pure_velocity_with_prefix(
    params: Params, config: ModelConfig, obs: jax.Array, x_t: jax.Array, time: jax.Array, prefix: jax.Array
) -> jax.Array:
    B, H, _ = x_t.shape
    time = jnp.broadcast_to(jnp.asarray(time, jnp.float32), (B,))
    prefix = jnp.broadcast_to(prefix, (B, H))[:, :, None]  # [B, H, 1]
    times = jnp.stack([time, jnp.ones_like(time)], axis=1)  # [B, 2]: slot 0 = t, slot 1 = the prefix's 1
    return _network(params, config, obs, x_t, times, lambda y: jnp.where(prefix, y[:, 1:2], y[:, 0:1]))


@dataclasses.dataclass(frozen=True)
class _PureMixer:
    """The baseline as a ``network.FlowPolicy``: the pure functions over the params dict."""

    params: Params
    config: ModelConfig
    obs_dim: int
    action_dim: int

    @property
    def action_chunk_size(self) -> int:
        return self.config.action_chunk_size

    def velocity(self, obs: jax.Array, x_t: jax.Array, time: jax.Array) -> jax.Array:
        return pure_velocity(self.params, self.config, obs, x_t, time)

    def velocity_with_prefix(self, obs: jax.Array, x_t: jax.Array, time: jax.Array, prefix: jax.Array) -> jax.Array:
        return pure_velocity_with_prefix(self.params, self.config, obs, x_t, time, prefix)


@dataclasses.dataclass(frozen=True)
class PureMixerConfig(ModelConfig):
    """The mixer's spec with the pure functions behind it: a ``network.ModelSpec`` whose ``bind`` wraps the dict."""

    def bind(self, params: Params, obs_dim: int, action_dim: int) -> _PureMixer:  # type: ignore[override]
        return _PureMixer(params, ModelConfig(**dataclasses.asdict(self)), obs_dim, action_dim)


# ---------------------------------------------------------------------------------------------------------------
# Timing


def canonical_hlo(compiled: Any) -> str:
    """The optimised HLO without what differs between equal programs: source metadata, SSA names."""
    text = re.sub(r",? ?metadata=\{[^}]*\}", "", compiled.as_text())
    lines = [line for line in text.splitlines() if line.startswith(("  ", "%", "ENTRY", "}", "ROOT", "fused"))]
    names: dict[str, str] = {}
    body = re.sub(r", stack_frame_id=\d+", "", "\n".join(lines))
    return re.sub(r"%[\w.\-]+", lambda m: names.setdefault(m.group(0), f"%v{len(names)}"), body)


def random_params(model: ModelConfig, seed: int = 0) -> Params:
    """Every leaf random (numpy, on init_params's shapes), as a trained policy: no zero adaLN to skip."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: init_params(jax.random.key(0), OBS_DIM, ACTION_DIM, model))
    return jax.tree.map(
        lambda s: jnp.asarray(rng.normal(0.0, s.shape[0] ** -0.5 if len(s.shape) == 2 else 0.3, s.shape), jnp.float32),
        shapes,
    )


def interleaved(calls: dict[str, Callable[[], Any]], reps: int) -> dict[str, float]:
    """{name: median seconds} over ``reps`` rounds that call each in turn (after one warm-up call each)."""
    for call in calls.values():
        jax.block_until_ready(call())
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


@dataclasses.dataclass
class Row:
    what: str
    nfe: int | str
    pure_s: float
    nnx_s: float
    identical: bool
    same_program: bool | None

    def line(self, model: str) -> str:
        same = "n/a" if self.same_program is None else ("yes" if self.same_program else "no")
        return (
            f"| {model} | {self.what} | {self.nfe} | {self.pure_s * 1e3:.2f} | {self.nnx_s * 1e3:.2f} | "
            f"{self.nnx_s / self.pure_s:.3f} | {'yes' if self.identical else 'NO'} | {same} |"
        )


def bench_velocity(model_name: str, batch: int, reps: int) -> Row:
    nnx_model = MODEL_PRESETS[model_name]
    pure_model = PureMixerConfig(**dataclasses.asdict(nnx_model))
    params = random_params(nnx_model)
    k_obs, k_x, k_t = jax.random.split(jax.random.key(1), 3)
    H = nnx_model.action_chunk_size
    obs = jax.random.normal(k_obs, (batch, OBS_DIM))
    x_t = jax.random.normal(k_x, (batch, H, ACTION_DIM))
    t = jax.random.uniform(k_t, (batch,))
    fns = {}
    for name, spec in (("pure", pure_model), ("nnx", nnx_model)):
        fn = jax.jit(lambda p, o, x, t, spec=spec: spec.bind(p, OBS_DIM, ACTION_DIM).velocity(o, x, t))
        fns[name] = (fn, fn.lower(params, obs, x_t, t).compile())
    out = {name: np.asarray(compiled(params, obs, x_t, t)) for name, (_, compiled) in fns.items()}
    seconds = interleaved({name: lambda c=c: c(params, obs, x_t, t) for name, (_, c) in fns.items()}, reps)
    same = canonical_hlo(fns["pure"][1]) == canonical_hlo(fns["nnx"][1])
    return Row("velocity", 1, seconds["pure"], seconds["nnx"], bool(np.array_equal(out["pure"], out["nnx"])), same)


def bench_sampler(model_name: str, method_name: str, batch: int, steps: int, reps: int) -> Row:
    method = METHOD_CONFIGS[method_name]
    nnx_model = MODEL_PRESETS[model_name]
    if method_name == "training_time":
        nnx_model = dataclasses.replace(nnx_model, simulated_delay=5)
    pure_model = PureMixerConfig(**dataclasses.asdict(nnx_model))
    H = nnx_model.action_chunk_size
    params = random_params(nnx_model)
    k_obs, k_prev, k_noise = jax.random.split(jax.random.key(2), 3)
    obs = jax.random.normal(k_obs, (batch, OBS_DIM))
    prev = jax.random.normal(k_prev, (batch, H, ACTION_DIM))
    noise = jax.random.normal(k_noise, noise_shape(method, batch, H, ACTION_DIM))
    delay = jnp.arange(batch, dtype=jnp.int32) % 5  # per-environment delays, as in a sweep: data, not program
    horizon = jnp.full((batch,), H - 4, jnp.int32)
    sample = jax.jit(sample_chunk, static_argnums=(0, 2, 8))
    compiled = {
        name: sample.lower(method, params, spec, obs, noise, prev, delay, horizon, steps).compile()
        for name, spec in (("pure", pure_model), ("nnx", nnx_model))
    }
    args = (params, obs, noise, prev, delay, horizon)
    out = {name: np.asarray(c(*args)) for name, c in compiled.items()}
    seconds = interleaved({name: lambda c=c: c(*args) for name, c in compiled.items()}, reps)
    same = canonical_hlo(compiled["pure"]) == canonical_hlo(compiled["nnx"])
    label = f"bid-{method.n_samples}" if method_name == "bid" else method_name
    return Row(
        label, nfe_per_chunk(method, steps), seconds["pure"], seconds["nnx"], np.array_equal(*out.values()), same
    )


def bench_rollout(num_envs: int, num_ticks: int, reps: int) -> Row:
    from rtc_sweep.core import timeline
    from rtc_sweep.core.delays import PRESETS
    from rtc_sweep.core.run_config import ExecutePolicy, RunConfig
    from rtc_sweep.sweep.evaluate import prepare, rollout_args

    cfg = RunConfig(
        num_evals=num_envs,
        micro_batch=num_envs,
        max_timesteps=num_ticks,
        checkpoint="random",
        delay=PRESETS["long_tail"],
        method=MethodConfig("realtime"),
        model=MODEL_PRESETS["small"],
        execute=ExecutePolicy(execute_horizon=2),
    )
    prep = prepare(cfg)
    prep.params = random_params(cfg.model)
    args = rollout_args(prep, 0, num_envs)
    pure_spec = dataclasses.replace(prep.spec, model=PureMixerConfig(**dataclasses.asdict(cfg.model)))
    fns = {"pure": timeline.make_rollout(pure_spec), "nnx": timeline.make_rollout(prep.spec)}
    out = {name: jax.tree.map(np.asarray, fn(*args)) for name, fn in fns.items()}
    identical = all(jax.tree.leaves(jax.tree.map(np.array_equal, out["pure"], out["nnx"])))
    seconds = interleaved({name: lambda fn=fn: fn(*args) for name, fn in fns.items()}, reps)
    return Row(f"rollout {num_envs} envs x {num_ticks} ticks", "-", seconds["pure"], seconds["nnx"], identical, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256, help="observations per velocity / chunk call")
    parser.add_argument("--steps", type=int, default=5, help="flow (Euler) steps")
    parser.add_argument("--reps", type=int, default=20, help="timed rounds after warm-up (median reported)")
    parser.add_argument("--models", nargs="+", default=["small", "default"], choices=sorted(MODEL_PRESETS))
    parser.add_argument(
        "--methods", nargs="+", default=["naive", "realtime", "bid", "training_time"], choices=list(METHOD_CONFIGS)
    )
    parser.add_argument("--rollout-envs", type=int, default=32, help="environments of the timed rollout (0: none)")
    parser.add_argument("--rollout-ticks", type=int, default=64, help="ticks of the timed rollout")
    parser.add_argument("--rollout-reps", type=int, default=5, help="timed rounds of the rollout")
    args = parser.parse_args()
    enable_compilation_cache()

    device = jax.devices()[0]
    print(f"device: {device.platform} ({device.device_kind}), {jax.device_count()} device(s); jax {jax.__version__}")
    print(f"batch {args.batch}, {args.steps} flow steps, median of {args.reps} interleaved rounds\n")
    print("| model | what | NFE | pure ms | nnx ms | nnx / pure | bit-identical | same XLA program |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- | --- |")
    for model_name in args.models:
        print(bench_velocity(model_name, args.batch, args.reps).line(model_name), flush=True)
        for name in args.methods:
            print(bench_sampler(model_name, name, args.batch, args.steps, args.reps).line(model_name), flush=True)
    if args.rollout_envs > 0:
        row = bench_rollout(args.rollout_envs, args.rollout_ticks, args.rollout_reps)
        print(row.line("small"), flush=True)


if __name__ == "__main__":
    main()
