"""How a finished feedback search's controller solves with its gains changed: scaled, its last directions dropped, or
each gain clipped to a multiple of its direction's spread.

    python scripts/controller_gains.py runs/levels/hard_lunar_lander/fb8_g272 --scales 1 0.75 0.5 --keep 7 6 --caps 6

The folder is a ``task=plan`` run with ``feedback_dims`` > 0 (``controllers/`` holds finished ones); its
``config.json`` gives the level and the program's shapes. Every variant is played on the same ``--envs`` noise draws,
the ones ``task=plan`` measures its controller on (so scale 1 reproduces ``stats.json``'s solve rate when
``--envs`` is its ``eval_envs``), through one compiled program. ``task.gain_scale`` then records the chosen scale.
A diagnostic for choosing a controller that a policy can imitate: the smaller the gains per unit of observation
(``gain_per_obs``, the Frobenius norm of the gains over the spreads), the gentler the feedback.

Measured (session 23, 2 CPU cores beside a sweep, ~65 s a variant): the lander's ``fb8_g272`` solves 0.844 / 0.877 /
0.852 / 0.820 / 0.793 of 512 at scales 1 / 0.75 / 0.67 / 0.6 / 0.5; 0.859 / 0.758 keeping its first 7 / 6 directions;
0.896 / 0.826 with each gain clipped to 6 / 4 times its spread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from rtc_sweep.runtime import configure_host_devices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a finished task=plan folder with feedback (config.json, state.npz, basis.npz)")
    parser.add_argument("--envs", type=int, default=512)
    parser.add_argument("--scales", type=float, nargs="*", default=[1.0, 0.75, 0.5])
    parser.add_argument("--keep", type=int, nargs="*", default=[], help="keep only the first N directions' gains")
    parser.add_argument("--caps", type=float, nargs="*", default=[], help="clip |gain| to this times its spread")
    args = parser.parse_args()
    run = Path(args.run_dir)
    for name in ("config.json", "state.npz", "basis.npz"):
        if not (run / name).is_file():
            parser.error(f"run_dir: {run / name} not found (a finished task=plan search with task.feedback_dims > 0)")

    configure_host_devices()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rtc_sweep.train.plan import PlanConfig, _programs, eval_keys

    fields = {f.name for f in dataclasses.fields(PlanConfig)}
    settings = {k: v for k, v in json.loads((run / "config.json").read_text()).items() if k in fields}
    cfg = PlanConfig(**{**settings, "run_dir": str(run)})
    if cfg.feedback_dims < 1:
        parser.error(f"run_dir: {run} is an open-loop search (feedback_dims = 0): it has no gains")
    _, _, score_fn, _ = _programs(cfg)
    with np.load(run / "state.npz") as s, np.load(run / "basis.npz") as b:
        mean, gains = s["mean"], s["gain_mean"]
        spread = b["spread"]
        basis = tuple(jnp.asarray(b[k]) for k in ("obs_bar", "directions", "spread"))
    n = -(-args.envs // jax.device_count()) * jax.device_count()
    keys = eval_keys(cfg.seed, n)  # task=plan's own eval draws

    variants: list[tuple[str, np.ndarray]] = [(f"scale {s:g}", gains * s) for s in args.scales]
    for k in args.keep:
        kept = gains.copy()
        kept[k:] = 0.0
        variants.append((f"first {k} directions", kept))
    for cap in args.caps:
        limit = cap * spread[:, None]
        variants.append((f"clipped to {cap:g} x spread", np.clip(gains, -limit, limit)))
    for name, w in variants:
        t0 = time.time()
        plans = jnp.broadcast_to(jnp.asarray(mean), (n, *mean.shape))
        each = jnp.broadcast_to(jnp.asarray(w, jnp.float32), (n, *w.shape))
        solved, length, _, _ = score_fn(plans, each, keys, basis)
        solved = np.asarray(solved, np.float64)
        print(json.dumps({
            "variant": name,
            "solved": float(solved.mean()),
            "solved_stderr": float(solved.std() / np.sqrt(n)),
            "mean_length": float(np.asarray(length).mean()),
            "gain_norm": float(np.linalg.norm(w)),
            "gain_per_obs": float(np.linalg.norm(w / spread[:, None])),
            "wall_s": round(time.time() - t0, 1),
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
