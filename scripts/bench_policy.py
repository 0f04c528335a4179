"""Time one action chunk per method and model size (compiled, after warm-up; median of a few repetitions).

    python scripts/bench_policy.py                    # batch 256, 5 flow steps, default and small models
    python scripts/bench_policy.py --batch 2048 --reps 10 --methods naive realtime

Inputs are random (obs 679 and action 6, as on the benchmark's levels); the policy is a fresh one, which costs
the same as a trained one. Prints a markdown table with the ratio to naive of the same model.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from rtc_sweep.core.policy import MODEL_PRESETS, init_params
from rtc_sweep.core.samplers import MethodConfig, nfe_per_chunk, noise_shape, sample_chunk
from rtc_sweep.runtime import enable_compilation_cache

OBS_DIM, ACTION_DIM = 679, 6

METHOD_CONFIGS = {
    "naive": MethodConfig("naive"),
    "realtime": MethodConfig("realtime"),
    "hard_masking": MethodConfig("hard_masking"),
    "bid": MethodConfig("bid", n_samples=16),
    "training_time": MethodConfig("training_time"),
}


def make_call(method: MethodConfig, model_name: str, batch: int, steps: int) -> Callable[[], None]:
    """A zero-argument call that samples one chunk (compiled on first use)."""
    model = MODEL_PRESETS[model_name]
    H = model.action_chunk_size
    k_params, k_obs, k_prev, k_noise = jax.random.split(jax.random.key(0), 4)
    params = jax.jit(init_params, static_argnums=(1, 2, 3))(k_params, OBS_DIM, ACTION_DIM, model)
    obs = jax.random.normal(k_obs, (batch, OBS_DIM))
    prev = jax.random.normal(k_prev, (batch, H, ACTION_DIM))
    noise = jax.random.normal(k_noise, noise_shape(method, batch, H, ACTION_DIM))
    # Per-environment delays, as in a sweep: they are data, not part of the program.
    delay = jnp.arange(batch, dtype=jnp.int32) % 5
    horizon = jnp.full((batch,), H - 4, jnp.int32)
    sample = jax.jit(sample_chunk, static_argnums=(0, 2, 8))
    return lambda: sample(method, params, model, obs, noise, prev, delay, horizon, steps).block_until_ready()


def time_model(
    model_name: str, methods: list[str], batch: int, steps: int, reps: int
) -> dict[str, tuple[float, float]]:
    """{method: (median seconds per chunk, compile seconds)} for one model size.

    The repetitions go round the methods in turn, so that a machine shared with other work slows them alike and
    the ratios stay meaningful even when the absolute times do not.
    """
    calls, compile_s = {}, {}
    for name in methods:
        calls[name] = make_call(METHOD_CONFIGS[name], model_name, batch, steps)
        start = time.perf_counter()
        calls[name]()  # compile + first run
        compile_s[name] = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(reps):
        for name in methods:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), compile_s[name]) for name in methods}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256, help="environments per chunk call")
    parser.add_argument("--steps", type=int, default=5, help="flow (Euler) steps")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions after warm-up (median reported)")
    parser.add_argument("--models", nargs="+", default=["default", "small"], choices=sorted(MODEL_PRESETS))
    parser.add_argument(
        "--methods", nargs="+", default=["naive", "realtime", "bid", "training_time"], choices=list(METHOD_CONFIGS)
    )
    args = parser.parse_args()
    enable_compilation_cache()

    device = jax.devices()[0]
    print(f"device: {device.platform} ({device.device_kind}), {jax.device_count()} device(s); jax {jax.__version__}")
    print(f"batch {args.batch}, {args.steps} flow steps, median of {args.reps} reps; bid: n_samples=16\n")
    print("| model | method | NFE/chunk | ms/chunk | vs naive | compile s |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for model_name in args.models:
        results = time_model(model_name, args.methods, args.batch, args.steps, args.reps)
        naive_s = results["naive"][0] if "naive" in results else None
        for name, (seconds, compile_s) in results.items():
            method = METHOD_CONFIGS[name]
            ratio = f"{seconds / naive_s:.2f}x" if naive_s else "n/a"
            label = f"bid-{method.n_samples}" if name == "bid" else name
            nfe = nfe_per_chunk(method, args.steps)
            print(f"| {model_name} | {label} | {nfe} | {seconds * 1e3:.2f} | {ratio} | {compile_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
