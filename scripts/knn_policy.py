"""How well imitation could do at best: a recording played back in closed loop by its nearest recorded state.

A policy trained by behaviour cloning learns, at each observation, the actions recorded at similar observations. The
nearest-neighbour policy does exactly that with no fitting error: at every tick it finds the ``--k`` recorded
states nearest to the observation (Euclidean, on the dimensions that vary in the recording, each standardised) and
plays the mean of their recorded actions. Played on ``task=plan``'s own eval draws (so its numbers pair with the
controller's ``stats.json``), it separates two reasons a policy may solve less than its teacher:

- the nearest-neighbour policy solves about as well as the teacher: the teacher's behaviour is a function of the
  observation, and the network's fit is what falls short;
- it solves about as little as the network: what the recording shows at the states the imitator reaches is not
  enough (closed-loop drift, or a teacher that acts on something the observation does not carry).

``--tick-weights`` > 0 adds ``weight * (recorded tick - tick)^2`` to every distance, so the neighbours come from the
imitator's own tick: the same imitator given the clock that a tick-indexed controller reads. ``--noise`` adds
independent Gaussian noise to every played action: how much random imitation error costs. ``--checkpoint`` with
``--policy-ticks FROM TO`` (repeatable) lets a flow policy play its first action (the benchmark's sampler, unit noise,
5 Euler steps) in ticks [FROM, TO) and the nearest neighbour elsewhere: where in the episode the policy loses.

    python scripts/knn_policy.py runs/levels/hard_lunar_lander/fb8_g272_s075 --k 1 5 --tick-weights 0 100
    python scripts/knn_policy.py runs/levels/hard_lunar_lander/fb8_g272_s075 --k 1 --policy-ticks 0 40 \
        --checkpoint runs/levels/hard_lunar_lander/s075_bc_norm/7/policies/worlds_l_hard_lunar_lander.pkl

The folder is a ``task=plan`` run that recorded (``data/*.npz``); its ``config.json`` gives the level, horizon and
env noise. One compile per variant; about a minute per variant for 512 episodes against 190 k states on 2 CPU cores,
~2.5 minutes with a default-size policy in the loop.

Measured (session 24, the lander's controller at gain 0.75, which solves 0.877 on these 512 draws): k = 1 0.867,
k = 5 0.836; with the tick (weight 100) 0.854 / 0.830; k = 1 with noise 0.05 / 0.1 0.824 / 0.803; its BC policy
playing every tick 0.641, ticks 0-19 only 0.607, ticks 20-39 only 0.852, ticks 40 on only 0.861.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

from nearest_demo import episode_ticks  # scripts/: the recording's tick per row, as session 17's diagnostic reads it

from rtc_sweep.runtime import configure_host_devices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a task=plan folder with a recording (config.json, data/*.npz)")
    parser.add_argument("--envs", type=int, default=512)
    parser.add_argument("--k", type=int, nargs="*", default=[1, 5])
    parser.add_argument("--tick-weights", type=float, nargs="*", default=[0.0])
    parser.add_argument("--table", type=int, default=0, help="use only this many recorded states (0: all)")
    parser.add_argument("--min-spread", type=float, default=1e-3, help="use the dimensions whose std exceeds this")
    parser.add_argument("--raw", action="store_true", help="distances on the raw observation, not standardised")
    parser.add_argument(
        "--noise",
        type=float,
        nargs="*",
        default=[0.0],
        help="add independent Gaussian noise of this std to every played action (before clipping)",
    )
    parser.add_argument("--checkpoint", help="a flow policy that plays instead of the imitator in --policy-ticks")
    parser.add_argument("--model", default="default", help="--checkpoint's model preset")
    parser.add_argument(
        "--policy-ticks",
        type=int,
        nargs=2,
        action="append",
        metavar=("FROM", "TO"),
        help="ticks [FROM, TO) in which --checkpoint plays (repeat for several variants)",
    )
    args = parser.parse_args()
    run = Path(args.run_dir)
    data = sorted((run / "data").glob("*.npz")) if (run / "data").is_dir() else []
    if not (run / "config.json").is_file() or not data:
        parser.error(f"run_dir: {run} has no config.json or no data/*.npz (a task=plan run that recorded)")
    if any(k < 1 for k in args.k):
        parser.error("--k: allowed: integers >= 1")
    if bool(args.checkpoint) != bool(args.policy_ticks):
        parser.error("--checkpoint and --policy-ticks: give both or neither")

    configure_host_devices()
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import PartitionSpec as P

    from rtc_sweep.core import kinetix_env as ke
    from rtc_sweep.core.checkpoint import load_policy
    from rtc_sweep.core.network import bind
    from rtc_sweep.core.policy import MODEL_PRESETS
    from rtc_sweep.core.samplers import _naive
    from rtc_sweep.train.plan import PlanConfig, eval_keys
    from rtc_sweep.train.rollout import host_mesh

    fields = {f.name for f in dataclasses.fields(PlanConfig)}
    settings = {k: v for k, v in json.loads((run / "config.json").read_text()).items() if k in fields}
    cfg = PlanConfig(**{**settings, "run_dir": str(run)})
    with np.load(data[0]) as d:
        obs, action, done = d["obs"].astype(np.float32), d["action"].astype(np.float32), d["done"]
    obs = np.nan_to_num(obs, posinf=0.0, neginf=0.0)
    tick = episode_ticks(done).astype(np.float32)
    if args.table and args.table < obs.shape[0]:
        pick = np.random.default_rng(0).choice(obs.shape[0], args.table, replace=False)
        obs, action, tick = obs[pick], action[pick], tick[pick]
    spread = obs.std(0)
    varying = np.flatnonzero(spread > args.min_spread)
    mean, sd = obs[:, varying].mean(0), spread[varying]
    if args.raw:
        sd = np.ones_like(sd)
    table = jnp.asarray((obs[:, varying] - mean) / sd)
    labels, ticks = jnp.asarray(action), jnp.asarray(tick)
    norms = (table**2).sum(1)
    var_idx, mean_j, sd_j = jnp.asarray(varying), jnp.asarray(mean), jnp.asarray(sd)

    level = ke.load_level(cfg.level)
    env = ke.make_env(level.static_params, action_noise_std=cfg.env_action_noise_std)
    env_params = ke.env_params(level)
    T = cfg.segments * cfg.segment_ticks
    mesh = host_mesh()

    model = MODEL_PRESETS[args.model] if args.checkpoint else None
    params = load_policy(args.checkpoint, model, obs.shape[1], action.shape[1]) if model is not None else None

    def program(k: int, tick_weight: float, noise: float, window: tuple[int, int] | None):
        def local(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
            E = keys.shape[0]
            obs0, state0 = env.reset(level)
            state = jax.tree.map(lambda x: jnp.broadcast_to(x, (E, *x.shape)), state0)
            o = jnp.broadcast_to(obs0, (E, *obs0.shape))
            step = jax.vmap(lambda key, st, a: env.step(key, st, a, level, env_params))

            def body(carry, t):
                state, o, first = carry
                z = (jnp.nan_to_num(o.astype(jnp.float32))[:, var_idx] - mean_j) / sd_j  # [E, V]
                dist = (z**2).sum(1)[:, None] - 2.0 * z @ table.T + norms[None]  # [E, N]
                if tick_weight > 0:
                    dist = dist + tick_weight * (ticks[None] - t.astype(jnp.float32)) ** 2
                _, nn = jax.lax.top_k(-dist, k)  # [E, k]
                a = labels[nn].mean(1)
                key = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, t)
                if window is not None and model is not None:  # the flow policy's first action, unit noise
                    chunk = (model.action_chunk_size, a.shape[1])
                    x0 = jax.vmap(lambda kk: jax.random.normal(jax.random.fold_in(kk, 11), chunk))(key)
                    flow = _naive(bind(model, params, o.shape[1], a.shape[1]), o.astype(jnp.float32), x0, 5)[:, 0]
                    a = jnp.where((t >= window[0]) & (t < window[1]), flow, a)
                if noise > 0:
                    eps = jax.vmap(lambda kk: jax.random.normal(jax.random.fold_in(kk, 7), a.shape[1:]))(key)
                    a = jnp.clip(a + noise * eps, -1.0, 1.0)
                o, state, info = step(key, state, a)
                first = jax.vmap(ke.FirstEpisode.update)(first, info)
                return (state, o, first), None

            first0 = jax.vmap(lambda _: ke.FirstEpisode.init())(jnp.arange(E))
            (_, _, first), _ = jax.lax.scan(body, (state, o, first0), jnp.arange(T))
            return first.solved, first.length

        spec = P("env")
        return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(spec,), out_specs=(spec, spec), check_vma=False))

    n = -(-args.envs // jax.device_count()) * jax.device_count()
    keys = eval_keys(cfg.seed, n)  # task=plan's own eval draws
    windows = [None] if not args.policy_ticks else [tuple(w) for w in args.policy_ticks]
    for (w, nz, window), k in itertools.product(itertools.product(args.tick_weights, args.noise, windows), args.k):
        t0 = time.time()
        solved, length = program(k, w, nz, window)(keys)
        solved = np.asarray(solved, np.float64)
        print(json.dumps({
                "k": k, "tick_weight": w, "noise": nz, "policy_ticks": window, "table": int(table.shape[0]),
                "dims": int(varying.size), "raw": args.raw, "solved": float(solved.mean()),
                "solved_stderr": float(solved.std() / np.sqrt(n)), "mean_length": float(np.asarray(length).mean()),
                "wall_s": round(time.time() - t0, 1),
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
