"""Env steps per second of the trainers' rollouts on 1 vs 2 host devices, printed as a table.

    python scripts/bench_train.py [--envs 256] [--ticks 64]

Each device count runs in its own process (the host device count is fixed when JAX starts). Rows:
``collector`` is the self-imitation collection rollout (small flow policy, naive sampler with 5 Euler steps,
s = 1, transitions recorded), ``ppo`` one PPO update (rollout and learning) of 2 seeds. The first call of
each compiles and is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def worker(envs: int, ticks: int) -> None:
    import jax

    from rtc_sweep.core import kinetix_env as ke
    from rtc_sweep.core.policy import MODEL_PRESETS, init_params
    from rtc_sweep.runtime import enable_compilation_cache
    from rtc_sweep.train.ppo import PPOConfig, make_init, make_update
    from rtc_sweep.train.rollout import Exploration, RolloutSpec, make_rollout
    from rtc_sweep.train.self_imitation import naive_chunk_fn

    enable_compilation_cache()
    level = ke.load_level("grasp_easy")
    env = ke.make_env(level.static_params)
    env_params = ke.env_params(level)
    model = MODEL_PRESETS["small"]
    params = init_params(jax.random.key(0), 679, 6, model)
    rollout = make_rollout(RolloutSpec(envs, ticks, record=True), env, level, naive_chunk_fn(model, 5))
    jax.block_until_ready(rollout(params, env_params, jax.random.key(0), Exploration.none()))
    t0 = time.perf_counter()
    jax.block_until_ready(rollout(params, env_params, jax.random.key(1), Exploration.none()))
    collector = envs * ticks / (time.perf_counter() - t0)

    cfg = PPOConfig(run_dir="", num_seeds=2, num_envs=envs // 2, num_steps=ticks, log_interval=1, num_minibatches=4)
    runners = jax.jit(jax.vmap(make_init(cfg, env, level)))(jax.random.split(jax.random.key(0), cfg.num_seeds))
    update = make_update(cfg, env, level)
    runners, _ = jax.block_until_ready(update(runners, env_params))
    t0 = time.perf_counter()
    jax.block_until_ready(update(runners, env_params))
    ppo = cfg.num_seeds * cfg.num_envs * cfg.num_steps / (time.perf_counter() - t0)
    print(json.dumps({"devices": jax.device_count(), "collector": collector, "ppo": ppo}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", type=int, default=256, help="environments in the batch (even)")
    parser.add_argument("--ticks", type=int, default=64, help="steps per environment in the timed call")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.envs, args.ticks)
        return
    rows = []
    for n in (1, 2):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
        cmd = [sys.executable, __file__, "--worker", "--envs", str(args.envs), "--ticks", str(args.ticks)]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"{'devices':>7} | {'collector steps/s':>17} | {'ppo steps/s':>11}")
    print(f"{'-' * 7}-+-{'-' * 17}-+-{'-' * 11}")
    for r in rows:
        print(f"{r['devices']:>7} | {r['collector']:>17.0f} | {r['ppo']:>11.0f}")


if __name__ == "__main__":
    main()
