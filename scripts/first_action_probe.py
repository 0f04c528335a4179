"""How well a plain MLP regresses a recording's first action from the observation, by episode tick.

A probe of the input's scaling, not a policy: an MLP (``--width``, four hidden layers, swish) is fitted by mean squared
error (or, with ``--objective flow``, by the flow-matching loss) to the recorded action at each state, on
standardised observations (each dimension's mean removed, divided by its std floored at flow BC's
``OBS_SCALE_FLOOR``) multiplied by ``--gain``, its first layer's start divided by ``--init-divide``.
``--episodes`` episodes are held out; every 2,000 steps and at the end it prints one JSON line with the held-out mean
absolute error, overall and over tick ranges. With ``--linear-ticks``, it first prints the same error
of a least-squares fit per episode tick (the action as an affine function of the observation's varying dimensions, one
fit per tick), from the observations as stored and rounded to float16: how much of the action the observation at a
known tick explains, and what half precision loses of it. Flow BC's ``task.obs_gain`` is the same change of
scale with ``--init-divide`` equal to the gain (MODEL_CARD.md, session 25: on the lander, gain 10 cuts the error over
ticks 0-7 from 0.028 to 0.0095).

    python scripts/first_action_probe.py \\
        runs/levels/hard_lunar_lander/fb8_g272_s075_f32/data/worlds_l_hard_lunar_lander.npz --gain 10 --init-divide 10

About 50 s of CPU for 6,000 steps at width 256 (the lander's 190,846 states).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

from nearest_demo import by_tick, episode_ticks, held_episodes  # scripts/: the tick per row, held-out draws

from rtc_sweep.runtime import configure_host_devices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recording", help="a task=plan recording (obs, action, done; env-major)")
    parser.add_argument("--steps", type=int, default=6001)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--gain", type=float, default=1.0, help="multiplies the standardised observation")
    parser.add_argument("--init-divide", type=float, default=1.0, help="divides the first layer's initial weights")
    parser.add_argument("--episodes", type=int, default=200, help="episodes held out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--objective",
        choices=("mse", "flow"),
        default="mse",
        help="flow: the benchmark's flow-matching loss on the first action (x_t = (1-t) noise + t a, "
        "target a - noise; the MLP reads [obs, x_t, t]), measured after 5 Euler steps from zero noise",
    )
    parser.add_argument("--draws", type=int, default=1, help="flow: (t, noise) draws per state in each batch")
    parser.add_argument(
        "--time",
        choices=("uniform", "grid"),
        default="uniform",
        help="flow: t ~ U(0, 1) (the benchmark's), or only the 5 Euler steps' times 0, 0.2, ..., 0.8",
    )
    parser.add_argument(
        "--horizon", type=int, default=1, help="flow: fit action chunks this long (flow BC masking), measure the first"
    )
    parser.add_argument(
        "--position-decay", type=float, default=1.0, help="flow: weight chunk position i by decay**i in the loss"
    )
    parser.add_argument("--linear-ticks", type=int, nargs="*", default=[], help="ticks to fit one linear map each at")
    args = parser.parse_args()
    if not Path(args.recording).is_file():
        parser.error(f"recording: {args.recording} not found")
    if min(args.steps, args.width, args.draws, args.horizon) < 1 or args.gain <= 0 or args.init_divide <= 0:
        parser.error("--steps, --width, --draws and --horizon: >= 1; --gain and --init-divide: > 0")
    if not 0 < args.position_decay <= 1:
        parser.error("--position-decay: in (0, 1]")

    configure_host_devices()
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from rtc_sweep.train.flow_bc import obs_normalizer, position_weights

    with np.load(args.recording) as d:
        obs = np.nan_to_num(d["obs"].astype(np.float32), posinf=0.0, neginf=0.0)
        action, done = d["action"].astype(np.float32), d["done"].astype(bool)
    flow = args.objective == "flow"
    tick, held = episode_ticks(done), held_episodes(done, args.episodes, np.random.default_rng(args.seed))
    varying = obs.std(0) > 1e-3
    for t in args.linear_ticks:
        fit, test = (tick == t) & ~held, (tick == t) & held
        if not (fit.any() and test.any()):
            continue
        row: dict[str, Any] = {"tick": t, "fit_states": int(fit.sum()), "held_states": int(test.sum())}
        for name, x in (("linear_mae", obs), ("linear_mae_float16", obs.astype(np.float16).astype(np.float32))):
            design = np.c_[x[:, varying].astype(np.float64), np.ones(len(x))]
            w = np.linalg.lstsq(design[fit], action[fit], rcond=None)[0]
            row[name] = float(np.abs(design[test] @ w - action[test]).mean())
        row["action_spread"] = float(np.abs(action[test] - action[test].mean(0)).mean())
        print(json.dumps(row), flush=True)
    mean, scale = obs_normalizer(obs[~held])  # flow BC's standardisation, from the fitted episodes
    z = (obs - mean) / scale * args.gain
    H = args.horizon if flow else 1
    idx = np.minimum(np.arange(len(done))[:, None] + np.arange(H), len(done) - 1)  # [N, H]
    kept = np.cumsum(np.r_[done, True][idx], axis=1) == 0  # flow BC's chunk_at: zeros from the first done on
    kept[:, 0] = True  # the first action is always the row's own
    chunks = np.where(kept[:, :, None], action[idx], 0.0).reshape(len(done), -1)  # [N, H * A]
    x_train, y_train = jnp.asarray(z[~held]), jnp.asarray(chunks[~held])
    x_held, y_held, tick_held = jnp.asarray(z[held]), action[held], tick[held]

    key = jax.random.key(args.seed)
    A = action.shape[1] * H
    weights = position_weights(H, args.position_decay)  # flow BC's (mean 1), or None
    sizes = [obs.shape[1] + (A + 1 if flow else 0), *[args.width] * 4, A]
    params = [
        (jax.random.normal(jax.random.fold_in(key, i), (a, b)) / np.sqrt(a) / (args.init_divide if i == 0 else 1.0),
         jnp.zeros(b))
        for i, (a, b) in enumerate(itertools.pairwise(sizes))
    ]  # fmt: skip

    def mlp(p: Any, x: jax.Array) -> jax.Array:
        for w, b in p[:-1]:
            x = jax.nn.swish(x @ w + b)
        return x @ p[-1][0] + p[-1][1]

    schedule = optax.warmup_cosine_decay_schedule(0.0, 3e-4, min(200, args.steps), args.steps, 3e-4 * 0.05)
    opt = optax.adamw(schedule, weight_decay=0.01)
    opt_state = opt.init(params)

    def loss_fn(p: Any, k: jax.Array) -> jax.Array:
        i = jax.random.randint(k, (512,), 0, x_train.shape[0])
        x, y = x_train[i], y_train[i]
        if not flow:
            return ((mlp(p, x) - y) ** 2).mean()
        x, y = jnp.tile(x, (args.draws, 1)), jnp.tile(y, (args.draws, 1))  # the same states, other (t, noise)
        if args.time == "grid":
            t = jax.random.randint(jax.random.fold_in(k, 1), (x.shape[0], 1), 0, 5) / 5
        else:
            t = jax.random.uniform(jax.random.fold_in(k, 1), (x.shape[0], 1))
        noise = jax.random.normal(jax.random.fold_in(k, 2), y.shape)
        v = mlp(p, jnp.concatenate([x, (1 - t) * noise + t * y, t], axis=1))
        sq = ((v - (y - noise)) ** 2).reshape(x.shape[0], H, -1).mean(2)  # [B, H]
        return (sq if weights is None else sq * weights).mean()

    @jax.jit
    def step(p: Any, s: Any, k: jax.Array) -> tuple[Any, Any, jax.Array]:
        loss, g = jax.value_and_grad(loss_fn)(p, k)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    @jax.jit
    def predict(p: Any, x: jax.Array) -> jax.Array:
        if not flow:
            return mlp(p, x)
        a = jnp.zeros((x.shape[0], A))
        for n in range(5):  # the evaluations' 5 Euler steps, from zero noise
            t = jnp.full((x.shape[0], 1), n / 5)
            a = a + 0.2 * mlp(p, jnp.concatenate([x, a, t], axis=1))
        return a

    t0 = time.time()
    for n in range(args.steps):
        params, opt_state, loss = step(params, opt_state, jax.random.fold_in(key, 10_000 + n))
        if n % 2000 == 0 or n == args.steps - 1:
            err = np.abs(np.asarray(predict(params, x_held))[:, : action.shape[1]] - y_held).mean(1)
            row = {"step": n, "loss": float(loss), "held_mae": float(err.mean()),
                   "held_mae_by_tick": by_tick(err, tick_held),
                   "wall_s": round(time.time() - t0, 1)}  # fmt: skip
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
