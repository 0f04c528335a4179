"""How closely policies reproduce their recording's first action, beside the nearest recorded state's.

At a policy's replanning rate (s = 1) only a chunk's first action is played, so its fit is the distance between the
first action it samples at a recorded state and the action recorded there. For ``--states`` states drawn from
``--episodes`` recorded episodes, this prints the mean absolute error (over states and action dimensions) of

- the nearest recorded state outside those episodes (``scripts/knn_policy.py``'s k = 1 imitator; Euclidean on the
  standardised dimensions that vary): how much the recording itself says about a state it has not seen;
- each ``--checkpoint``'s first action from the flow sampler (5 Euler steps, as the evaluations) started from zero
  noise (``mae_mean``, and over episode-tick ranges ``mae_mean_by_tick``) and from unit noise (``mae_sample``, the
  benchmark's sampler).

The checkpoints are usually trained on these very states, so their error is an optimistic one: a network whose
error on its own training states stays well above the nearest neighbour's on unseen ones under-fits.

    python scripts/fit_error.py runs/levels/hard_lunar_lander/fb8_g272_s075/data/worlds_l_hard_lunar_lander.npz \
        --checkpoint runs/levels/hard_lunar_lander/s075_bc_default/7/policies/worlds_l_hard_lunar_lander.pkl

numpy and one small jitted sampler per checkpoint: seconds after the recording has loaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nearest_demo import by_tick, episode_ticks, held_episodes, nearest  # scripts/: session 17's helpers

from rtc_sweep.runtime import configure_host_devices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recording", help="a task=plan recording (obs, action, done; env-major)")
    parser.add_argument("--model", default="default", help="a model preset: small, small_tt or default")
    parser.add_argument("--checkpoint", nargs="*", default=[], help="policy .pkl files")
    parser.add_argument("--episodes", type=int, default=200, help="episodes whose states are the queries")
    parser.add_argument("--states", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not Path(args.recording).is_file():
        parser.error(f"recording: {args.recording} not found")

    configure_host_devices()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rtc_sweep.core.checkpoint import load_policy
    from rtc_sweep.core.network import bind
    from rtc_sweep.core.policy import MODEL_PRESETS
    from rtc_sweep.core.samplers import _naive

    if args.model not in MODEL_PRESETS:
        parser.error(f"--model: {args.model}; allowed: {', '.join(MODEL_PRESETS)}")
    model = MODEL_PRESETS[args.model]
    with np.load(args.recording) as d:
        obs, action, done = d["obs"], d["action"].astype(np.float32), d["done"]
    obs = np.nan_to_num(obs.astype(np.float32), posinf=0.0, neginf=0.0)
    rng = np.random.default_rng(args.seed)
    held = held_episodes(done, args.episodes, rng)
    query = rng.choice(np.flatnonzero(held), min(args.states, int(held.sum())), replace=False)

    spread = obs.std(0)
    varying = spread > 1e-3
    z = (obs[:, varying] - obs[:, varying].mean(0)) / spread[varying]
    nn = nearest(z[query], z[~held])
    rows = [{"imitator": "nearest recorded state (other episodes)", "states": len(query),
             "mae": float(np.abs(action[~held][nn] - action[query]).mean())}]  # fmt: skip

    H, A = model.action_chunk_size, action.shape[1]

    @jax.jit  # params are an argument: one compile serves every checkpoint
    def first(params: Any, o: jax.Array, noise: jax.Array) -> jax.Array:
        return _naive(bind(model, params, o.shape[1], A), o, noise, 5)[:, 0]

    o, tick = jnp.asarray(obs[query]), episode_ticks(done)[query]
    unit = jax.random.normal(jax.random.key(args.seed), (len(query), H, A))
    for path in args.checkpoint:
        params = load_policy(path, model, obs.shape[1], A)
        mean = np.asarray(first(params, o, jnp.zeros((len(query), H, A))))
        sample = np.asarray(first(params, o, unit))
        err = np.abs(mean - action[query]).mean(1)
        rows.append({"imitator": path, "states": len(query), "mae_mean": float(err.mean()),
                     "mae_sample": float(np.abs(sample - action[query]).mean()),
                     "mae_mean_by_tick": by_tick(err, tick)})  # fmt: skip
    for row in rows:
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
