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

import jax
import jax.numpy as jnp

from rtc_sweep.policy import MODEL_PRESETS, init_params
from rtc_sweep.runtime import enable_compilation_cache
from rtc_sweep.samplers import MethodConfig, nfe_per_chunk, noise_shape, sample_chunk

OBS_DIM, ACTION_DIM = 679, 6

METHOD_CONFIGS = {
    "naive": MethodConfig("naive"),
    "realtime": MethodConfig("realtime"),
    "hard_masking": MethodConfig("hard_masking"),
    "bid": MethodConfig("bid", n_samples=16),
    "training_time": MethodConfig("training_time"),
}


def time_chunk(method: MethodConfig, model_name: str, batch: int, steps: int, reps: int) -> tuple[float, float]:
    """(median seconds per chunk, compile seconds)."""
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

    def run() -> None:
        sample(method, params, model, obs, noise, prev, delay, horizon, steps).block_until_ready()

    start = time.perf_counter()
    run()  # compile + first run
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), compile_s


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
        naive_s: float | None = None
        for name in args.methods:
            method = METHOD_CONFIGS[name]
            seconds, compile_s = time_chunk(method, model_name, args.batch, args.steps, args.reps)
            if name == "naive":
                naive_s = seconds
            ratio = f"{seconds / naive_s:.2f}x" if naive_s else "n/a"
            nfe = nfe_per_chunk(method, args.steps)
            label = f"bid-{method.n_samples}" if name == "bid" else name
            print(f"| {model_name} | {label} | {nfe} | {seconds * 1e3:.2f} | {ratio} | {compile_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
