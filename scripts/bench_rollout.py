"""Rollout throughput against the bare environment, in one run (ratios are what to read; absolute numbers
depend on the machine and its load).

    python scripts/bench_rollout.py                 # 256 envs, grasp_easy, small model
    python scripts/bench_rollout.py --rss           # also peak RSS of a 2048-env evaluation (a subprocess)

Rows: bare env (the same wrapped env stepping zero actions, sharded like the rollout), then naive and RTC
under a fixed delay (d=1, s=2) and exp-delta's long_tail (s=2, per-env and per-batch delay scope), on all
local devices and on one. Then the number of compiles a d in 0..4 x s sweep costs per method.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time

from rtc_sweep.runtime import configure_host_devices, enable_compilation_cache

configure_host_devices()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, PartitionSpec  # noqa: E402

from rtc_sweep.core import timeline  # noqa: E402
from rtc_sweep.core.delays import PRESETS, DelayProfile  # noqa: E402
from rtc_sweep.core.policy import MODEL_PRESETS  # noqa: E402
from rtc_sweep.core.run_config import ExecutePolicy, RunConfig  # noqa: E402
from rtc_sweep.core.samplers import MethodConfig  # noqa: E402
from rtc_sweep.sweep.evaluate import prepare  # noqa: E402


def timed(fn, *args, reps: int = 2) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def bare_env(cfg: RunConfig, sharded: bool) -> float:
    prep = prepare(cfg)
    env, T, B = prep.spec.env, cfg.max_timesteps, cfg.num_evals

    def run(level_state, params, idx):
        _, state = jax.vmap(lambda _: env.reset(level_state))(idx)
        keys = jax.vmap(jax.random.key)(idx)

        def body(state, t):
            k = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, t)
            _, state, info = jax.vmap(env.step, in_axes=(0, 0, 0, None, None))(
                k, state, jnp.zeros((idx.shape[0], 6)), level_state, params
            )
            return state, info.done

        return jax.lax.scan(body, state, jnp.arange(T))[1].T

    if sharded and len(jax.devices()) > 1:
        mesh = Mesh(np.array(jax.devices()), ("env",))
        rep, env_axis = PartitionSpec(), PartitionSpec("env")
        run = jax.shard_map(run, mesh=mesh, in_specs=(rep, rep, env_axis), out_specs=env_axis, check_vma=False)
    seconds = timed(jax.jit(run), prep.level.state, prep.env_params, jnp.arange(B, dtype=jnp.int32))
    return B * T / seconds


def rollout_steps_per_s(cfg: RunConfig, sharded: bool) -> float:
    prep = prepare(cfg)
    fn = timeline.make_rollout(prep.spec, cfg.delay.scope == "batch", sharded)
    args = (
        prep.params, prep.weak_params, prep.level.state, prep.env_params, prep.delay_arrays, prep.execute,
        jnp.int32(cfg.seed), jnp.arange(cfg.num_evals, dtype=jnp.int32),
    )  # fmt: skip
    return cfg.num_evals * cfg.max_timesteps / timed(fn, *args)


def compiles_for_sweep(cfg: RunConfig) -> int:
    """Compiles a d in 0..4 x s sweep costs (4 envs: the count, not the speed, is the point)."""
    cfg = dataclasses.replace(cfg, num_evals=4, micro_batch=4)
    prep = prepare(cfg)
    fn = timeline.make_rollout(prep.spec, False, True)
    before = fn._cache_size()
    for d in range(5):
        for s in range(max(1, d), 8 - d + 1):
            p = prepare(
                dataclasses.replace(
                    cfg,
                    delay=DelayProfile(name="fixed", mode="fixed", fixed_delay=d),
                    execute=ExecutePolicy(execute_horizon=s),
                )
            )
            args = (
                p.params, p.weak_params, p.level.state, p.env_params, p.delay_arrays, p.execute,
                jnp.int32(cfg.seed), jnp.arange(cfg.num_evals, dtype=jnp.int32),
            )  # fmt: skip
            jax.block_until_ready(fn(*args))
    return fn._cache_size() - before


def peak_rss_2048() -> float:
    code = (
        "from rtc_sweep.runtime import configure_host_devices; configure_host_devices();"
        "import resource; from rtc_sweep.sweep.evaluate import evaluate;"
        "from rtc_sweep.core.run_config import RunConfig;"
        "from rtc_sweep.core.delays import PRESETS; from rtc_sweep.core.policy import MODEL_PRESETS;"
        "from rtc_sweep.core.samplers import MethodConfig;"
        "evaluate(RunConfig(num_evals=2048, checkpoint='random', delay=PRESETS['long_tail'],"
        " method=MethodConfig(name='realtime'), model=MODEL_PRESETS['small']), progress=False);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024**2  # KiB -> GiB


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--num-envs", type=int, default=256)
    ap.add_argument("--level", default="grasp_easy")
    ap.add_argument("--rss", action="store_true", help="also measure peak RSS of a 2048-env evaluation")
    ap.add_argument("--json", help="write the figures here as well")
    args = ap.parse_args()
    enable_compilation_cache()

    base = RunConfig(
        level=args.level,
        num_evals=args.num_envs,
        micro_batch=args.num_envs,
        checkpoint="random",
        model=MODEL_PRESETS["small"],
        execute=ExecutePolicy(execute_horizon=2),
    )
    fixed = DelayProfile(name="fixed", mode="fixed", fixed_delay=1)
    long_env = PRESETS["long_tail"]
    long_batch = dataclasses.replace(long_env, scope="batch")
    n_dev = len(jax.devices())
    rows: list[tuple[str, float]] = []

    def add(name: str, sps: float) -> None:
        rows.append((name, sps))
        print(f"  {name:48s} {sps:10.0f} env steps/s", flush=True)

    bare = bare_env(base, sharded=True)
    add(f"bare env ({n_dev} devices)", bare)
    add("bare env (1 device)", bare_env(base, sharded=False))
    results: dict[str, float] = {}
    for method in ("naive", "realtime"):
        m = MethodConfig(name=method)
        for label, profile in (("fixed d=1", fixed), ("long_tail env", long_env), ("long_tail batch", long_batch)):
            sps = rollout_steps_per_s(dataclasses.replace(base, method=m, delay=profile), sharded=True)
            results[f"{method}/{label}"] = sps
            add(f"{method:8s} {label:16s} s=2 ({n_dev} devices)", sps)
        one = rollout_steps_per_s(dataclasses.replace(base, method=m, delay=long_env), sharded=False)
        results[f"{method}/one_device"] = one
        add(f"{method:8s} long_tail env    s=2 (1 device)", one)

    print(f"\nrollout throughput, {args.num_envs} envs x {base.max_timesteps} ticks, {args.level}, small model")
    print(f"{'configuration':48s} {'env steps/s':>12s} {'vs bare':>8s}")
    for name, sps in rows:
        print(f"{name:48s} {sps:12.0f} {sps / bare:8.2f}")
    print("\nratios (time, lower is better unless noted)")
    ratios = {}
    for method in ("naive", "realtime"):
        f = results[f"{method}/fixed d=1"]
        ratios[f"{method}: batch scope / fixed (target <= 1.1)"] = f / results[f"{method}/long_tail batch"]
        ratios[f"{method}: env scope / fixed (target <= 1.5)"] = f / results[f"{method}/long_tail env"]
        ratios[f"{method}: {n_dev} devices speed-up (target >= 1.8)"] = (
            results[f"{method}/long_tail env"] / results[f"{method}/one_device"]
        )
    ratios["naive fixed: share of bare-env steps/s (target >= 0.70)"] = results["naive/fixed d=1"] / bare
    for name, r in ratios.items():
        print(f"  {name:60s} {r:6.2f}")
    compiles = {
        m: compiles_for_sweep(dataclasses.replace(base, method=MethodConfig(name=m))) for m in ("naive", "realtime")
    }
    print(f"\ncompiles for the d in 0..4 x s sweep (24 pairs): {compiles}")
    rss = None
    if args.rss:
        rss = peak_rss_2048()
        print(f"peak RSS, 2048 envs realtime long_tail (small model): {rss:.2f} GiB (target <= 4)")
    print(f"this process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "ratios": ratios, "compiles": compiles, "rss_2048_gib": rss}, f, indent=2)


if __name__ == "__main__":
    main()
