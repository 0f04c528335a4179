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
                +  survival_weight · (ticks lasted / T) · (1 - solved)

(T the plan's ticks, an episode that never ends lasting T; the survival term, 0 by default, rewards an unsolved
episode for lasting: on a level whose episodes end by a fall, e.g. a pole on a cart, it is what lets the search find
a controller that balances first)

the distance term (closest approach of a goal-role shape to a target-role shape during the episode) being the
shaping that lets the search start from plans that never solve. Each generation keeps the ``elite`` best of
``population`` candidates and moves the sampling mean and std towards theirs (``smoothing``).

**Feedback** (``feedback_dims`` k > 0): the plan becomes a time-varying controller that reacts to the state it
is in, so that its demonstrations are closed-loop (a policy imitating them must look at a fresh observation,
which is what makes an inference delay cost something). Around a nominal plan ``u`` (``init_plan``: a finished
open-loop search, continued from its mean), the action at tick t is::

    clip(u[t // segment_ticks] + tanh(W · z_t), -1, 1),    z_t = B · (obs_t - obs_bar_t) / sd

where ``obs_bar_t`` is the nominal plan's mean observation at tick t over ``basis_envs`` noisy episodes, ``B``
the ``k`` principal directions of those episodes' deviations from it and ``sd`` their spreads (``basis.npz``):
the few directions in which the env's noise actually pushes the state. The search optimises ``u`` and the
gains ``W`` [k, action_dim] together (``feedback_std``: the gains' initial sampling std). With k = 0 it is the
open-loop search, unchanged.

Then the mean plan is played on ``demo_envs`` environments with the env's noise; its solved first episodes
are the demonstrations, in the self-imitation data format (``rtc_sweep.train.self_imitation``), ready for
``task=flow`` (flow BC) and then ``task=self_imitation`` (closed-loop polishing).

Layout of ``run_dir`` (resumable after any finished generation)::

    config.json                      the settings of the latest start; resumed_with_changes lists what each resume
                                     changed and at which generation (a longer search and a copied folder are
                                     expected; any other change is warned about)
    cem.json                         per-generation numbers (population and elite solve rates, distance, std)
    state.npz                        mean, std and the number of finished generations (and the gains')
    basis.npz                        feedback only: obs_bar, B and sd
    gains.npy                        feedback only: the final mean gains W [k, action_dim], times gain_scale
    plan.npy                         the final mean plan [segments · segment_ticks, action_dim]
    stats.json                       the plan's solve rate over eval_envs noise draws, and the demonstrations'
    data/worlds_l_<level>.npz        the demonstrations (solved first episodes; obs in task.obs_dtype)
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
from rtc_sweep.train.io import record_settings, save_npz, write_json
from rtc_sweep.train.rollout import Transitions, host_mesh, solved_episode_mask, solved_episodes

# Settings a resume is expected to change: more generations, a folder copied elsewhere (with its init_plan), and
# how the finished plan is measured and recorded (gain_scale included). They are recorded quietly; any other
# change is warned about.
RESUME_MAY_CHANGE = frozenset(
    {"generations", "run_dir", "init_plan", "eval_envs", "demo_envs", "gain_scale", "obs_dtype"}
)
OBS_DTYPES = ("float16", "float32")  # task.obs_dtype's allowed values

GOAL_ROLE, TARGET_ROLE = 1, 2  # Kinetix shape roles: green (the thing to deliver) and blue (where it goes)


@dataclasses.dataclass(frozen=True)
class PlanConfig:
    run_dir: str  # where the plan, its numbers and the demonstrations go (see the module docstring)
    level: str = "grasp_easy"  # benchmark level name or path to a level JSON
    seed: int = 0  # the whole run is a function of it
    segments: int = 16  # piecewise-constant actions in a plan
    segment_ticks: int = 8  # ticks per segment (the plan lasts segments x segment_ticks ticks)
    population: int = 256  # candidate plans per generation
    noise_seeds: int = 2  # env-noise draws each candidate is scored over; once every elite solves all of them,
    #                       the ranking goes by the length term: raise it (and set length_weight=0) to rank by
    #                       robustness (controllers/README.md, hard_lunar_lander)
    elite: int = 32  # best candidates that the next generation's mean and std come from
    generations: int = 25
    init_std: float = 0.6  # the sampling std of generation 0 (actions lie in [-1, 1])
    init_mean_std: float = 0.0  # the initial mean: 0 = all zeros, > 0 = a random plan of this std (seeded), so
    #                             that runs with different seeds start apart and can end in different solutions
    min_std: float = 0.02  # added to the std every generation, so that the search never freezes
    smoothing: float = 0.7  # weight of the elite's mean and std in each update (1 = take them as they are)
    distance_weight: float = 0.3  # shaping: minus this times the closest goal-target approach
    length_weight: float = 0.002  # among solved episodes, shorter is better
    survival_weight: float = 0.0  # among unsolved episodes, longer is better (length / plan ticks): balancing levels
    env_action_noise_std: float = 0.1  # the env's own action noise (the evaluation's)
    eval_envs: int = 512  # noise draws the final plan is measured over
    demo_envs: int = 2048  # environments the final plan is recorded on (its solved episodes are kept)
    feedback_dims: int = 0  # k: 0 = an open-loop plan; > 0 = plan + feedback on k directions of the state
    feedback_std: float = 0.3  # the initial sampling std of the feedback gains
    init_plan: str | None = None  # a finished task=plan run_dir whose mean plan the search starts from
    basis_envs: int = 256  # noisy episodes of the initial plan the feedback directions are computed from
    gain_scale: float = 1.0  # multiplies the finished search's mean gains where the controller is measured and
    #                          recorded (the search itself and state.npz are unchanged): a gentler controller
    #                          can solve as often and be easier to imitate (controllers/README.md, the lander)
    obs_dtype: str = "float16"  # the recorded observations' precision: float16 (half the size) or float32, for
    #                             levels whose states differ by less than float16 resolves (OBS_DTYPES)


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


def role_indices(level: ke.Level, role: int) -> np.ndarray:
    """Indices into [polygons, circles] of the active shapes with this role."""
    st = level.state
    roles = np.concatenate([np.asarray(st.polygon_shape_roles), np.asarray(st.circle_shape_roles)])
    active = np.concatenate([np.asarray(st.polygon.active), np.asarray(st.circle.active)])
    return np.flatnonzero((roles == role) & active)


def eval_keys(seed: int, n: int) -> jax.Array:
    """The ``n`` env-noise draws a finished search's controller is measured on (``stats.json``'s solve rate), so that
    other measurements of the same controller (``scripts/controller_gains.py``) are paired with it."""
    return jax.random.split(jax.random.fold_in(jax.random.key(seed), 1_000_001), n)


def _programs(cfg: PlanConfig) -> tuple[Any, ...]:
    """(level, env, score_fn, record_fn), compiled once per setting that reaches them: a resume that only
    measures or records again (other envs, another gain_scale, another folder) reuses the programs."""
    reaching = ("level", "segments", "segment_ticks", "env_action_noise_std", "feedback_dims")
    return _compiled(PlanConfig(run_dir="", **{name: getattr(cfg, name) for name in reaching}))


@functools.lru_cache(maxsize=4)
def _compiled(cfg: PlanConfig) -> tuple[Any, ...]:
    level = ke.load_level(cfg.level)
    env = ke.make_env(level.static_params, action_noise_std=cfg.env_action_noise_std)
    env_params = ke.env_params(level)
    goal, target = role_indices(level, GOAL_ROLE), role_indices(level, TARGET_ROLE)
    T, L = cfg.segments * cfg.segment_ticks, cfg.segment_ticks
    mesh = host_mesh()

    def closest(state: Any) -> jax.Array:  # [E]: the closest goal-target distance now
        if goal.size == 0 or target.size == 0:
            return jnp.zeros(state.polygon.position.shape[0])
        pos = jnp.concatenate([state.polygon.position, state.circle.position], axis=1)  # [E, N, 2]
        gap = pos[:, goal][:, :, None] - pos[:, target][:, None, :]
        return jnp.linalg.norm(gap, axis=-1).min(axis=(1, 2))

    def local(plans: jax.Array, gains: jax.Array, keys: jax.Array, basis: Any, record: bool) -> Any:
        """plans [E, K, A], gains [E, k, A], keys [E]; basis (obs_bar [T, D], B [k, D], sd [k])."""
        E = keys.shape[0]
        obs_bar, directions, spread = basis
        obs0, state0 = env.reset(level)
        state = jax.tree.map(lambda x: jnp.broadcast_to(x, (E, *x.shape)), state0)
        obs = jnp.broadcast_to(obs0, (E, *obs0.shape))
        step = jax.vmap(lambda k, st, a: env.step(k, st, a, level, env_params))
        actions = jnp.repeat(plans, L, axis=1)  # [E, T, A]

        def tick(carry: Any, t: jax.Array) -> Any:
            state, obs, first, near = carry
            k = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, t)
            action = actions[:, t]
            if cfg.feedback_dims > 0:  # the controller reacts to where the noise has pushed the state
                z = (obs.astype(jnp.float32) - obs_bar[t]) @ directions.T / spread  # [E, k]
                action = jnp.clip(action + jnp.tanh(jnp.einsum("ek,eka->ea", z, gains)), -1.0, 1.0)
            next_obs, state, info = step(k, state, action)
            live = ~first.finished
            near = jnp.where(live & ~info.done, jnp.minimum(near, closest(state)), near)
            first = jax.vmap(ke.FirstEpisode.update)(first, info)
            rec = None
            if record:  # the first episode only: the plan is a plan for an episode from the reset state (obs at
                #         full precision; run_plan keeps the solved episodes' at task.obs_dtype's)
                done = info.done & live
                rec = (obs.astype(jnp.float32), action, done, info.solved & done, first.running_return,
                       first.running_length)  # fmt: skip
            return (state, next_obs, first, near), rec

        first0 = jax.vmap(lambda _: ke.FirstEpisode.init())(jnp.arange(E))
        carry0 = (state, obs, first0, jnp.full((E,), jnp.inf))
        (_, _, first, near), rec = jax.lax.scan(tick, carry0, jnp.arange(T))
        near = jnp.where(jnp.isfinite(near), near, 0.0)
        if not record:
            return first.solved, first.length, near, first.running_length  # running: T when it never ended
        obs_r, act_r, done_r, solved_r, ret_r, len_r = rec
        return Transitions(obs_r, act_r, done_r, solved_r, ret_r, len_r, solved_episode_mask(done_r, solved_r))

    env_first = P("env")

    def sharded(record: bool) -> Any:
        out = Transitions._make([P(None, "env")] * 7) if record else (env_first,) * 4  # shard_map's out_specs
        fn = functools.partial(local, record=record)
        specs = (env_first, env_first, env_first, P())
        return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=out, check_vma=False))

    return level, env, sharded(False), sharded(True)


def _score(cfg: PlanConfig, solved: np.ndarray, length: np.ndarray, near: np.ndarray, lasted: np.ndarray) -> np.ndarray:
    """``length``: the first episode's length where it ended (0 where not); ``lasted``: its ticks, T where it never
    ended (all means over the noise draws)."""
    survival = cfg.survival_weight * lasted / (cfg.segments * cfg.segment_ticks) * (1.0 - solved)
    return 2.0 * solved - cfg.distance_weight * near - cfg.length_weight * length * solved + survival


def _basis(cfg: PlanConfig, record_fn: Any, mean: np.ndarray, key: jax.Array, obs_dim: int) -> dict[str, np.ndarray]:
    """The feedback's coordinates: the mean plan's mean observation per tick over ``basis_envs`` noisy episodes
    (first episodes only), the ``feedback_dims`` principal directions of the deviations from it, their spreads."""
    T, k, n_dev = cfg.segments * cfg.segment_ticks, cfg.feedback_dims, jax.device_count()
    n = -(-cfg.basis_envs // n_dev) * n_dev
    none = _no_feedback(n, k, mean.shape[1], T, obs_dim)
    tr = record_fn(jnp.broadcast_to(jnp.asarray(mean), (n, *mean.shape)), none[0],
                   jax.random.split(jax.random.fold_in(key, 1_000_003), n), none[1])  # fmt: skip
    obs = np.asarray(tr.obs, np.float64)  # [T, E, D]
    done = np.asarray(tr.done)
    live = np.concatenate([np.ones((1, n), bool), np.cumsum(done, axis=0)[:-1] == 0])  # [T, E]: in the first episode
    count = np.maximum(live.sum(1), 1)[:, None]
    obs_bar = (obs * live[..., None]).sum(1) / count  # [T, D]
    # After the last tick at which a basis episode is still alive, the nominal holds its last mean observation, so
    # that a controller that keeps an episode alive longer than the nominal (balancing) is corrected around a
    # state it has seen, not around zeros.
    alive = np.flatnonzero(live.any(1))
    if alive.size:
        obs_bar[alive[-1] + 1 :] = obs_bar[alive[-1]]
    dev = (obs - obs_bar[:, None])[live]  # [N, D]
    _, sv, vt = np.linalg.svd(dev - dev.mean(0), full_matrices=False)
    directions = vt[:k]
    spread = np.maximum(sv[:k] / np.sqrt(max(len(dev) - 1, 1)), 1e-6)
    if len(directions) < k:  # fewer observed directions than asked: the rest stay silent
        directions = np.concatenate([directions, np.zeros((k - len(directions), obs.shape[-1]))])
        spread = np.concatenate([spread, np.ones(k - len(spread))])
    return {"obs_bar": obs_bar.astype(np.float32), "directions": directions.astype(np.float32),
            "spread": spread.astype(np.float32)}  # fmt: skip


def _no_feedback(n: int, k: int, a: int, t: int, d: int) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Zero gains for ``n`` environments and a basis of the right shapes (an open-loop plan, or the basis's own
    episodes)."""
    return jnp.zeros((n, k, a), jnp.float32), (
        jnp.zeros((t, d), jnp.float32), jnp.zeros((k, d), jnp.float32), jnp.ones((k,), jnp.float32)
    )  # fmt: skip


def run_plan(cfg: PlanConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the search, then measure the plan and record its demonstrations; returns stats.json."""
    if cfg.elite > cfg.population:
        raise ValueError(f"elite={cfg.elite} must be <= population={cfg.population}")
    init = None if cfg.init_plan is None else Path(cfg.init_plan).expanduser() / "state.npz"
    if init is not None and not init.is_file():
        raise FileNotFoundError(f"task.init_plan: {init} not found (the run_dir of a task=plan search)")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    level, env, score_fn, record_fn = _programs(cfg)
    A, K, M, k = env.action_dim, cfg.segments, cfg.noise_seeds, cfg.feedback_dims
    T, D = K * cfg.segment_ticks, env.obs_dim(level.params)
    used = action_dims(level, A)
    key = jax.random.key(cfg.seed)
    n_dev = jax.device_count()
    batch = -(-cfg.population * M // n_dev) * n_dev  # padded to the device count

    state_file, log_file, basis_file = run_dir / "state.npz", run_dir / "cem.json", run_dir / "basis.npz"
    if state_file.is_file():
        with np.load(state_file) as f:
            mean, std, start = f["mean"], f["std"], int(f["generation"])
            gain_mean = f["gain_mean"] if k else np.zeros((0, A), np.float32)
            gain_std = f["gain_std"] if k else np.zeros((0, A), np.float32)
        history = json.loads(log_file.read_text())[:start]
    else:
        mean = np.zeros((K, A), np.float32)
        if init is not None:
            with np.load(init) as f:
                mean = f["mean"].astype(np.float32)
            if mean.shape != (K, A):
                raise ValueError(f"task.init_plan: its plan has shape {mean.shape}, this search's is {(K, A)} "
                                 "(task.segments x the action dimension)")  # fmt: skip
        elif cfg.init_mean_std > 0:
            z = np.asarray(jax.random.normal(jax.random.fold_in(key, 999_999), (K, A)))
            mean = (np.clip(z * cfg.init_mean_std, -1.0, 1.0) * used).astype(np.float32)
        std = np.where(used, cfg.init_std, 0.0).astype(np.float32) * np.ones((K, 1), np.float32)
        gain_mean = np.zeros((k, A), np.float32)
        gain_std = np.where(used, cfg.feedback_std, 0.0).astype(np.float32) * np.ones((k, 1), np.float32)
        start, history = 0, []
    record_settings(
        run_dir,
        dataclasses.asdict(cfg),
        resuming=start > 0,
        at=("generation", start),
        what="plan search",
        quiet=RESUME_MAY_CHANGE,
    )
    if k and not basis_file.is_file():
        save_npz(basis_file, _basis(cfg, record_fn, mean, key, D))
    basis: tuple[jax.Array, ...]
    if k:
        with np.load(basis_file) as f:
            basis = (jnp.asarray(f["obs_bar"]), jnp.asarray(f["directions"]), jnp.asarray(f["spread"]))
    else:
        basis = _no_feedback(1, 0, A, T, D)[1]

    bar = tqdm(range(start, cfg.generations), desc="plan (CEM)", unit="gen", disable=not progress)
    for g in bar:
        t0 = time.time()
        k_g = jax.random.fold_in(key, g)
        eps = np.asarray(jax.random.normal(jax.random.fold_in(k_g, 0), (cfg.population, K, A)))
        cand = np.clip(mean + std * eps, -1.0, 1.0).astype(np.float32) * used
        cand[0] = mean  # the current mean is always scored
        gain_eps = np.asarray(jax.random.normal(jax.random.fold_in(k_g, 2), (cfg.population, k, A)))
        gain_cand = ((gain_mean + gain_std * gain_eps) * used).astype(np.float32)
        gain_cand[0] = gain_mean

        def pad(x: np.ndarray) -> jax.Array:
            x = np.repeat(x, M, axis=0)
            return jnp.asarray(np.concatenate([x, np.zeros((batch - len(x), *x.shape[1:]), np.float32)]))

        keys = jax.random.split(jax.random.fold_in(k_g, 1), batch)
        solved, length, near, lasted = (np.asarray(x)[: cfg.population * M].reshape(cfg.population, M).mean(1)
                                        for x in score_fn(pad(cand), pad(gain_cand), keys, basis))  # fmt: skip
        elite = np.argsort(-_score(cfg, solved, length, near, lasted), kind="stable")[: cfg.elite]
        mean = (1 - cfg.smoothing) * mean + cfg.smoothing * cand[elite].mean(0)
        std = ((1 - cfg.smoothing) * std + cfg.smoothing * cand[elite].std(0) + cfg.min_std) * used
        gain_mean = (1 - cfg.smoothing) * gain_mean + cfg.smoothing * gain_cand[elite].mean(0)
        gain_std = ((1 - cfg.smoothing) * gain_std + cfg.smoothing * gain_cand[elite].std(0) + cfg.min_std) * used
        history.append({
            "generation": g,
            "population_solved": float(solved.mean()),
            "elite_solved": float(solved[elite].mean()),
            "mean_plan_solved": float(solved[0]),
            "elite_closest": float(near[elite].mean()),
            "elite_length": float(length[elite].mean()),
            "elite_lasted": float(lasted[elite].mean()),  # ticks its episodes lasted (T where they never ended)
            "std": float(std[:, used].mean()),
            **({"gain_norm": float(np.linalg.norm(gain_mean))} if k else {}),
            "wall_s": time.time() - t0,
        })  # fmt: skip
        write_json(log_file, history)
        gains = {"gain_mean": gain_mean, "gain_std": gain_std} if k else {}
        save_npz(state_file, {"mean": mean, "std": std, "generation": np.int64(g + 1), **gains})
        bar.set_postfix(
            elite=f"{solved[elite].mean():.2f}", pop=f"{solved.mean():.2f}", near=f"{near[elite].mean():.2f}"
        )

    plan = np.repeat(mean, cfg.segment_ticks, axis=0)  # [T, A]
    np.save(run_dir / "plan.npy", plan)
    gain_mean = (gain_mean * cfg.gain_scale).astype(np.float32)  # the controller measured and recorded
    if k:
        np.save(run_dir / "gains.npy", gain_mean)
    t0 = time.time()

    def everywhere(n: int) -> tuple[jax.Array, jax.Array]:  # the mean plan and gains on n environments
        return (jnp.broadcast_to(jnp.asarray(mean), (n, K, A)),
                jnp.broadcast_to(jnp.asarray(gain_mean, jnp.float32), (n, k, A)))  # fmt: skip

    n_eval = -(-cfg.eval_envs // n_dev) * n_dev
    solved, length, _, _ = score_fn(*everywhere(n_eval), eval_keys(cfg.seed, n_eval), basis)
    solved = np.asarray(solved, np.float64)
    n_demo = -(-cfg.demo_envs // n_dev) * n_dev
    tr = record_fn(*everywhere(n_demo), jax.random.split(jax.random.fold_in(key, 1_000_002), n_demo), basis)
    data = solved_episodes(tr)
    data["obs"] = data["obs"].astype(cfg.obs_dtype)  # recorded at full precision, kept at task.obs_dtype's
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
        "feedback_dims": k,
        **({"gain_scale": cfg.gain_scale} if k else {}),
        "generations": len(history),
        "wall_s": {"search": float(sum(h["wall_s"] for h in history)), "measure_and_record": time.time() - t0},
    }
    write_json(run_dir / "stats.json", stats)
    return stats
