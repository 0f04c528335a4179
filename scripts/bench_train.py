"""Env steps per second of the trainers' rollouts, and what the one rollout engine costs against the loop it replaced.

    python scripts/bench_train.py                          # 512 envs x 256 ticks (self-imitation's collection)
    python scripts/bench_train.py --devices 2 --no-ppo     # only the engine-vs-legacy ratio on 2 host devices

Each device count runs in its own process (the host device count is fixed when JAX starts). Rows: ``engine`` is
self-imitation's collection as it runs now, on the evaluation's timeline (train/rollout.py on core/timeline.py:
small flow policy, naive sampler with 5 Euler steps, d = 0, s = 1, exploration, transitions recorded); ``legacy``
the same collection on the synchronous chunk loop training used before (kept below, verbatim but for names, as
the reference); ``ratio`` is legacy time / engine time in the same process (above 1: the engine is faster),
interleaved, best of ``--reps``; ``ppo`` one PPO update (rollout and learning) of 2 seeds. The first call of each
compiles and is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any


def naive_chunk_fn(model: Any, num_flow_steps: int) -> Callable[..., Any]:
    """The old self-imitation's sampler: ``chunk(params, obs [B, O], noise [B, H, A]) -> [B, H, A]``, naive."""
    import jax
    import jax.numpy as jnp

    from rtc_sweep.core.samplers import MethodConfig, sample_chunk

    def chunk(params: Any, obs: jax.Array, noise: jax.Array) -> jax.Array:
        H = model.action_chunk_size
        naive = MethodConfig(name="naive")
        return sample_chunk(naive, params, model, obs, noise, jnp.zeros_like(noise), jnp.int32(0), jnp.int32(H),
                            num_flow_steps)  # fmt: skip

    return chunk


def legacy_collector(envs: int, ticks: int, s: int, level: Any, env: Any, chunk_fn: Callable[..., Any]) -> Any:
    """The synchronous chunk loop of the old train/rollout.py (make_rollout with record=True): per cycle, sample a
    chunk at the current observation with scaled flow noise, add action noise, run its first ``s`` actions."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from rtc_sweep.core import kinetix_env as ke
    from rtc_sweep.train.rollout import host_mesh, solved_episode_mask

    mesh = host_mesh()
    H, A = 8, env.action_dim
    num_cycles = -(-ticks // s)

    def local(params: Any, env_params: Any, keys: jax.Array, explore: Any) -> Any:
        E = keys.shape[0]
        obs0, state0 = env.reset(level)
        state = jax.tree.map(lambda x: jnp.broadcast_to(x, (E, *x.shape)), state0)
        obs = jnp.broadcast_to(obs0, (E, *obs0.shape))
        step = jax.vmap(lambda k, st, a: env.step(k, st, a, level, env_params))

        def tick(carry: Any, x: Any) -> Any:
            state, obs, first, ret, length = carry
            action, k, t = x
            next_obs, state, info = step(k, state, action)
            active = t < ticks
            first = jax.vmap(ke.FirstEpisode.update, in_axes=(0, 0, None))(first, info, active)
            ret = ret + info.reward
            length = length + 1
            rec = (obs.astype(jnp.float16), action, info.done & active, info.solved & active, ret, length)
            ret = jnp.where(info.done, 0.0, ret)
            length = jnp.where(info.done, 0, length)
            return (state, next_obs, first, ret, length), rec

        def cycle(carry: Any, x: Any) -> Any:
            obs = carry[1]
            keys_c, c = x
            k_noise, k_act, k_env = jax.vmap(lambda k: jax.random.split(k, 3), out_axes=1)(keys_c)
            noise = jax.vmap(lambda k: jax.random.normal(k, (H, A)))(k_noise) * explore[0]
            chunk = chunk_fn(params, obs, noise)
            chunk = chunk + jax.vmap(lambda k: jax.random.normal(k, (H, A)))(k_act) * explore[1]
            env_keys = jax.vmap(lambda k: jax.random.split(k, s), out_axes=1)(k_env)
            return jax.lax.scan(tick, carry, (jnp.swapaxes(chunk[:, :s], 0, 1), env_keys, c * s + jnp.arange(s)))

        first0 = jax.vmap(lambda _: ke.FirstEpisode.init())(jnp.arange(E))
        carry0 = (state, obs, first0, jnp.zeros(E, jnp.float32), jnp.zeros(E, jnp.int32))
        cycle_keys = jax.vmap(lambda k: jax.random.split(k, num_cycles), out_axes=1)(keys)
        (_, _, first, _, _), recs = jax.lax.scan(cycle, carry0, (cycle_keys, jnp.arange(num_cycles)))
        recs = jax.tree.map(lambda r: r.reshape(num_cycles * s, *r.shape[2:])[:ticks], recs)
        keep = solved_episode_mask(recs[2], recs[3])
        return (first.solved, first.returns, first.length, first.finished), (*recs, keep)

    sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P("env"), P()),
                            out_specs=((P("env"),) * 4, (P(None, "env"),) * 7), check_vma=False)  # fmt: skip

    @jax.jit
    def rollout(params: Any, env_params: Any, key: jax.Array, explore: Any) -> Any:
        keys = jax.lax.with_sharding_constraint(jax.random.split(key, envs), NamedSharding(mesh, P("env")))
        return sharded(params, env_params, keys, explore)

    return rollout


def worker(envs: int, ticks: int, reps: int, ppo: bool) -> None:
    import jax
    import jax.numpy as jnp

    from rtc_sweep.core import kinetix_env as ke
    from rtc_sweep.core.policy import MODEL_PRESETS, init_params
    from rtc_sweep.runtime import enable_compilation_cache
    from rtc_sweep.train.ppo import PPOConfig, make_init, make_update
    from rtc_sweep.train.rollout import Exploration, make_rollout, measurement, transitions

    enable_compilation_cache()
    level = ke.load_level("grasp_easy")
    env = ke.make_env(level.static_params)
    env_params = ke.env_params(level, ticks)
    model = MODEL_PRESETS["small"]
    params = init_params(jax.random.key(0), 679, 6, model)
    explore = Exploration(jnp.float32(1.2), jnp.float32(0.05))  # self-imitation's defaults

    engine_rollout = make_rollout(measurement("grasp_easy", model, envs, ticks, 5, 0.1), record=True)
    legacy_rollout = legacy_collector(envs, ticks, 1, level, env, naive_chunk_fn(model, 5))

    def engine(seed: int) -> None:  # what self-imitation does with a collection: to the host, as transitions
        out = engine_rollout.per_env(params, seed, explore)
        transitions(out)

    def legacy(seed: int) -> None:
        jax.tree.map(lambda x: x.block_until_ready(), legacy_rollout(params, env_params, jax.random.key(seed), explore))

    best = {"engine": float("inf"), "legacy": float("inf")}
    for fn in (engine, legacy):
        fn(0)  # compile (or load from the persistent cache) and warm up
    for r in range(reps):
        for name, fn in (("engine", engine), ("legacy", legacy)):
            t0 = time.perf_counter()
            fn(r + 1)
            best[name] = min(best[name], time.perf_counter() - t0)
    row: dict[str, Any] = {
        "devices": jax.device_count(),
        "engine": envs * ticks / best["engine"],
        "legacy": envs * ticks / best["legacy"],
        "ratio": best["legacy"] / best["engine"],
        "ppo": float("nan"),
    }
    if ppo:
        cfg = PPOConfig(run_dir="", num_seeds=2, num_envs=envs // 2, num_steps=min(ticks, 64), log_interval=1,
                        num_minibatches=4)  # fmt: skip
        runners = jax.jit(jax.vmap(make_init(cfg, env, level)))(jax.random.split(jax.random.key(0), cfg.num_seeds))
        update = make_update(cfg, env, level)
        runners, _ = jax.block_until_ready(update(runners, env_params))
        t0 = time.perf_counter()
        jax.block_until_ready(update(runners, env_params))
        row["ppo"] = cfg.num_seeds * cfg.num_envs * cfg.num_steps / (time.perf_counter() - t0)
    print(json.dumps(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", type=int, default=512, help="environments in the batch (even)")
    parser.add_argument("--ticks", type=int, default=256, help="steps per environment in the timed call")
    parser.add_argument("--reps", type=int, default=2, help="timed calls of each rollout (the best counts)")
    parser.add_argument("--devices", default="1,2", help="host device counts, one process each")
    parser.add_argument("--no-ppo", action="store_true", help="skip the PPO row")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.envs, args.ticks, args.reps, not args.no_ppo)
        return
    rows = []
    for n in (int(d) for d in args.devices.split(",")):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")  # host devices (CPU runs)
        cmd = [sys.executable, __file__, "--worker", "--envs", str(args.envs), "--ticks", str(args.ticks), "--reps",
               str(args.reps)] + (["--no-ppo"] if args.no_ppo else [])  # fmt: skip
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"{'devices':>7} | {'engine steps/s':>14} | {'legacy steps/s':>14} | {'legacy/engine time':>18} | "
          f"{'ppo steps/s':>11}")  # fmt: skip
    print(f"{'-' * 7}-+-{'-' * 14}-+-{'-' * 14}-+-{'-' * 18}-+-{'-' * 11}")
    for r in rows:
        print(f"{r['devices']:>7} | {r['engine']:>14.0f} | {r['legacy']:>14.0f} | {r['ratio']:>18.3f} | "
              f"{r['ppo']:>11.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
