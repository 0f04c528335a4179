"""How much the flow sampler's spread costs a policy: the same evaluation with the initial noise of every chunk scaled.

    python scripts/flow_noise_scale.py --level hard_lunar_lander --model default \
        --checkpoint runs/levels/hard_lunar_lander/bc8k_default/5/policies/worlds_l_hard_lunar_lander.pkl

The job is the training rollouts' evaluation (``rtc_sweep.train.rollout.measurement``: naive, d = 0, s = 1, the env's
action noise), run once per scale through one compiled program (``Exploration.noise_scale`` is traced), with the same
seed, so the delay, env-noise and flow-noise draws are the same at every scale and only their size changes. Scale 1 is
the benchmark's sampler; 0 is the deterministic flow from zero noise. A diagnostic, not an evaluation option: a policy
that solves much more at a smaller scale imitates its data's mean well and loses to the spread of its samples; one that
stays low at 0 loses in closed loop (its own states), which more offline data does not fix.

Measured (session 15, 2 CPU cores, 512 episodes, seed 0): the lander's 6-epoch policy on 388 k transitions solves
0.643 / 0.705 / 0.709 at scales 1 / 0.5 / 0, mean episode lengths 53.3 / 56.6 / 59.0; its controller solves 0.844.
"""

from __future__ import annotations

import argparse
import json
import time

from rtc_sweep.runtime import configure_host_devices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", required=True)
    parser.add_argument("--model", default="default", help="a model preset: small, small_tt or default")
    parser.add_argument("--checkpoint", required=True, help="the policy .pkl")
    parser.add_argument("--envs", type=int, default=512)
    parser.add_argument("--ticks", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 0.0])
    args = parser.parse_args()

    configure_host_devices()
    import jax.numpy as jnp
    import numpy as np

    from rtc_sweep.core.checkpoint import load_policy
    from rtc_sweep.core.policy import MODEL_PRESETS
    from rtc_sweep.core.timeline import Exploration
    from rtc_sweep.sweep.config import RtcSweepSchema
    from rtc_sweep.train.rollout import make_rollout, measurement

    if args.model not in MODEL_PRESETS:
        parser.error(f"--model: {args.model!r} is not one of {sorted(MODEL_PRESETS)}")
    model = MODEL_PRESETS[args.model]
    # the evaluation app's flow steps and env noise, as `python -m rtc_sweep` runs by default
    run = measurement(args.level, model, args.envs, args.ticks, RtcSweepSchema.num_flow_steps,
                      RtcSweepSchema.action_noise_std)  # fmt: skip
    rollout = make_rollout(run)
    params = load_policy(args.checkpoint, model)
    for scale in args.scales:
        t0 = time.time()
        stats, _ = rollout(params, args.seed, Exploration(jnp.float32(scale), jnp.float32(0.0)))
        solved = np.asarray(stats.solved, np.float64)
        print(json.dumps({
            "noise_scale": scale,
            "solved": float(solved.mean()),
            "solved_stderr": float(solved.std() / np.sqrt(len(solved))),
            "mean_length": float(np.asarray(stats.length).mean()),
            "wall_s": round(time.time() - t0, 1),
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
