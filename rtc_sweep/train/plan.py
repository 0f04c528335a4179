"""Demonstrations from trajectory optimisation: the cross-entropy method over open-loop action plans.

Every Kinetix level resets to the same state and the only randomness is the env's action noise, so an
open-loop plan (one action per tick) can solve a level reliably, and finding one costs only env steps:
no policy, no gradients. Measured on ``grasp_easy`` (2 CPU cores, the defaults, 30 generations): random plans
solve almost nothing, and after 13 minutes the mean plan solves 0.998 of 512 episodes under the env's noise,
where the flow policies of self-imitation had plateaued near 0.46 (they learned to fling the object and hope).

The plan has ``segments`` piecewise-constant actions of ``segment_ticks`` ticks each (zeros after its end);
only the action dimensions that drive something in the level (motor-bound joints, active thrusters) are
optimised, the others stay 0. A candidate's score, averaged over ``noise_seeds`` env-noise draws of its
first episode, is::

    2 · solved  -  distance_weight · min distance(green, blue)  -  length_weight · length · solved

the distance term (closest approach of a goal-role shape to a target-role shape during the episode) being the
shaping that lets the search start from plans that never solve. Each generation keeps the ``elite`` best of
``population`` candidates and moves the sampling mean and std towards theirs (``smoothing``).

Then the mean plan is played on ``demo_envs`` environments with the env's noise; its solved first episodes
are the demonstrations, in the self-imitation data format (``rtc_sweep.train.self_imitation``), ready for
``task=flow`` (flow BC) and then ``task=self_imitation`` (closed-loop polishing).

Layout of ``run_dir`` (resumable after any finished generation)::

    config.json                      the settings
    cem.json                         per-generation numbers (population and elite solve rates, distance, std)
    state.npz                        mean, std and the number of finished generations
    plan.npy                         the final mean plan [segments · segment_ticks, action_dim]
    stats.json                       the plan's solve rate over eval_envs noise draws, and the demonstrations'
    data/worlds_l_<level>.npz        the demonstrations (solved first episodes)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from rtc_sweep.core import kinetix_env as ke
from rtc_sweep.train.io import save_npz, write_json
from rtc_sweep.train.rollout import Transitions, host_mesh, solved_episode_mask, solved_episodes

GOAL_ROLE, TARGET_ROLE = 1, 2  # Kinetix shape roles: green (the thing to deliver) and blue (where it goes)


@dataclasses.dataclass(frozen=True)
class PlanConfig:
    run_dir: str  # where the plan, its numbers and the demonstrations go (see the module docstring)
    level: str = "grasp_easy"  # benchmark level name or path to a level JSON
    seed: int = 0  # the whole run is a function of it
    segments: int = 16  # piecewise-constant actions in a plan
    segment_ticks: int = 8  # ticks per segment (the plan lasts segments x segment_ticks ticks)
    population: int = 256  # candidate plans per generation
    noise_seeds: int = 2  # env-noise draws each candidate is scored over
    elite: int = 32  # best candidates that the next generation's mean and std come from
    generations: int = 25
    init_std: float = 0.6  # the sampling std of generation 0 (actions lie in [-1, 1])
    init_mean_std: float = 0.0  # the initial mean: 0 = all zeros, > 0 = a random plan of this std (seeded), so
    #                             that runs with different seeds start apart and can end in different solutions
    min_std: float = 0.02  # added to the std every generation, so that the search never freezes
    smoothing: float = 0.7  # weight of the elite's mean and std in each update (1 = take them as they are)
    distance_weight: float = 0.3  # shaping: minus this times the closest goal-target approach
    length_weight: float = 0.002  # among solved episodes, shorter is better
    env_action_noise_std: float = 0.1  # the env's own action noise (the evaluation's)
    eval_envs: int = 512  # noise draws the final plan is measured over
    demo_envs: int = 2048  # environments the final plan is recorded on (its solved episodes are kept)


def action_dims(level: ke.Level, action_dim: int) -> np.ndarray:
    """bool [A]: the unified action dimensions that drive something in this level (motor-bound joints of motors
    that are on, active thrusters)."""
    st = level.state
    used = np.zeros(action_dim, bool)
    motors = np.asarray(st.joint.active) & np.asarray(st.joint.motor_on)
    used[np.asarray(st.motor_bindings)[motors]] = True
    n_motor = level.static_params.num_motor_bindings
    used[n_motor + np.asarray(st.thruster_bindings)[np.asarray(st.thruster.active)]] = True
    return used


def _role_indices(level: ke.Level, role: int) -> np.ndarray:
    """Indices into [polygons, circles] of the active shapes with this role."""
    st = level.state
    roles = np.concatenate([np.asarray(st.polygon_shape_roles), np.asarray(st.circle_shape_roles)])
    active = np.concatenate([np.asarray(st.polygon.active), np.asarray(st.circle.active)])
    return np.flatnonzero((roles == role) & active)


@functools.lru_cache(maxsize=4)
def _programs(cfg: PlanConfig) -> tuple[Any, ...]:
    level = ke.load_level(cfg.level)
    env = ke.make_env(level.static_params, action_noise_std=cfg.env_action_noise_std)
    env_params = ke.env_params(level)
    goal, target = _role_indices(level, GOAL_ROLE), _role_indices(level, TARGET_ROLE)
    T, L = cfg.segments * cfg.segment_ticks, cfg.segment_ticks
    mesh = host_mesh()

    def closest(state: Any) -> jax.Array:  # [E]: the closest goal-target distance now
        if goal.size == 0 or target.size == 0:
            return jnp.zeros(state.polygon.position.shape[0])
        pos = jnp.concatenate([state.polygon.position, state.circle.position], axis=1)  # [E, N, 2]
        gap = pos[:, goal][:, :, None] - pos[:, target][:, None, :]
        return jnp.linalg.norm(gap, axis=-1).min(axis=(1, 2))

    def local(plans: jax.Array, keys: jax.Array, record: bool) -> Any:
        E = keys.shape[0]
        obs0, state0 = env.reset(level)
        state = jax.tree.map(lambda x: jnp.broadcast_to(x, (E, *x.shape)), state0)
        obs = jnp.broadcast_to(obs0, (E, *obs0.shape))
        step = jax.vmap(lambda k, st, a: env.step(k, st, a, level, env_params))
        actions = jnp.repeat(plans, L, axis=1)  # [E, T, A]

        def tick(carry: Any, t: jax.Array) -> Any:
            state, obs, first, near = carry
            k = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, t)
            action = actions[:, t]
            next_obs, state, info = step(k, state, action)
            live = ~first.finished
            near = jnp.where(live & ~info.done, jnp.minimum(near, closest(state)), near)
            first = jax.vmap(ke.FirstEpisode.update)(first, info)
            rec = None
            if record:  # the first episode only: the plan is a plan for an episode from the reset state
                done = info.done & live
                rec = (obs.astype(jnp.float16), action, done, info.solved & done, first.running_return,
                       first.running_length)  # fmt: skip
            return (state, next_obs, first, near), rec

        first0 = jax.vmap(lambda _: ke.FirstEpisode.init())(jnp.arange(E))
        carry0 = (state, obs, first0, jnp.full((E,), jnp.inf))
        (_, _, first, near), rec = jax.lax.scan(tick, carry0, jnp.arange(T))
        near = jnp.where(jnp.isfinite(near), near, 0.0)
        if not record:
            return first.solved, first.length, near
        obs_r, act_r, done_r, solved_r, ret_r, len_r = rec
        return Transitions(obs_r, act_r, done_r, solved_r, ret_r, len_r, solved_episode_mask(done_r, solved_r))

    env_first = P("env")

    def sharded(record: bool) -> Any:
        out = Transitions._make([P(None, "env")] * 7) if record else (env_first,) * 3  # shard_map's out_specs
        fn = functools.partial(local, record=record)
        return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(env_first, env_first), out_specs=out, check_vma=False))

    return level, env, sharded(False), sharded(True)


def _score(cfg: PlanConfig, solved: np.ndarray, length: np.ndarray, near: np.ndarray) -> np.ndarray:
    return 2.0 * solved - cfg.distance_weight * near - cfg.length_weight * length * solved


def run_plan(cfg: PlanConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the search, then measure the plan and record its demonstrations; returns stats.json."""
    if cfg.elite > cfg.population:
        raise ValueError(f"elite={cfg.elite} must be <= population={cfg.population}")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    level, env, score_fn, record_fn = _programs(cfg)
    A, K, M = env.action_dim, cfg.segments, cfg.noise_seeds
    used = action_dims(level, A)
    key = jax.random.key(cfg.seed)
    n_dev = jax.device_count()
    batch = -(-cfg.population * M // n_dev) * n_dev  # padded to the device count

    state_file, log_file = run_dir / "state.npz", run_dir / "cem.json"
    if state_file.is_file():
        with np.load(state_file) as f:
            mean, std, start = f["mean"], f["std"], int(f["generation"])
        history = json.loads(log_file.read_text())[:start]
    else:
        write_json(run_dir / "config.json", dataclasses.asdict(cfg))
        mean = np.zeros((K, A), np.float32)
        if cfg.init_mean_std > 0:
            z = np.asarray(jax.random.normal(jax.random.fold_in(key, 999_999), (K, A)))
            mean = (np.clip(z * cfg.init_mean_std, -1.0, 1.0) * used).astype(np.float32)
        std = np.where(used, cfg.init_std, 0.0).astype(np.float32) * np.ones((K, 1), np.float32)
        start, history = 0, []

    bar = tqdm(range(start, cfg.generations), desc="plan (CEM)", unit="gen", disable=not progress)
    for g in bar:
        t0 = time.time()
        k_g = jax.random.fold_in(key, g)
        eps = np.asarray(jax.random.normal(jax.random.fold_in(k_g, 0), (cfg.population, K, A)))
        cand = np.clip(mean + std * eps, -1.0, 1.0).astype(np.float32) * used
        cand[0] = mean  # the current mean is always scored
        plans = np.repeat(cand, M, axis=0)
        plans = np.concatenate([plans, np.zeros((batch - len(plans), K, A), np.float32)])
        keys = jax.random.split(jax.random.fold_in(k_g, 1), batch)
        solved, length, near = (np.asarray(x)[: cfg.population * M].reshape(cfg.population, M).mean(1)
                                for x in score_fn(jnp.asarray(plans), keys))  # fmt: skip
        elite = np.argsort(-_score(cfg, solved, length, near), kind="stable")[: cfg.elite]
        mean = (1 - cfg.smoothing) * mean + cfg.smoothing * cand[elite].mean(0)
        std = ((1 - cfg.smoothing) * std + cfg.smoothing * cand[elite].std(0) + cfg.min_std) * used
        history.append({
            "generation": g,
            "population_solved": float(solved.mean()),
            "elite_solved": float(solved[elite].mean()),
            "mean_plan_solved": float(solved[0]),
            "elite_closest": float(near[elite].mean()),
            "elite_length": float(length[elite].mean()),
            "std": float(std[:, used].mean()),
            "wall_s": time.time() - t0,
        })  # fmt: skip
        write_json(log_file, history)
        save_npz(state_file, {"mean": mean, "std": std, "generation": np.int64(g + 1)})
        bar.set_postfix(
            elite=f"{solved[elite].mean():.2f}", pop=f"{solved.mean():.2f}", near=f"{near[elite].mean():.2f}"
        )

    plan = np.repeat(mean, cfg.segment_ticks, axis=0)  # [T, A]
    np.save(run_dir / "plan.npy", plan)
    t0 = time.time()
    n_eval = -(-cfg.eval_envs // n_dev) * n_dev
    solved, length, _ = score_fn(jnp.broadcast_to(jnp.asarray(mean), (n_eval, K, A)),
                                 jax.random.split(jax.random.fold_in(key, 1_000_001), n_eval))  # fmt: skip
    solved = np.asarray(solved, np.float64)
    n_demo = -(-cfg.demo_envs // n_dev) * n_dev
    tr = record_fn(jnp.broadcast_to(jnp.asarray(mean), (n_demo, K, A)),
                   jax.random.split(jax.random.fold_in(key, 1_000_002), n_demo))  # fmt: skip
    data = solved_episodes(tr)
    name = ke.level_name(cfg.level)
    save_npz(run_dir / "data" / f"worlds_l_{name}.npz", data)
    stats = {
        "plan": {
            "returned_episode_solved": float(solved.mean()),
            "solved_stderr": float(solved.std() / np.sqrt(len(solved))),
            "returned_episode_lengths": float(np.asarray(length).mean()),
            "episodes": len(solved),
        },
        "demonstrations": {
            "environments": n_demo,
            "kept_episodes": int(data["done"].sum()),
            "kept_transitions": len(data["done"]),
        },
        "generations": len(history),
        "wall_s": {"search": float(sum(h["wall_s"] for h in history)), "measure_and_record": time.time() - t0},
    }
    write_json(run_dir / "stats.json", stats)
    return stats
