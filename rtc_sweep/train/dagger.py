"""DAgger with the CEM planner as the expert: recovery demonstrations from the states the policy itself visits.

BC on open-loop CEM plans (``task=plan`` → ``task=flow``) is weak where the plan is fragile to the env's action
noise: on catapult the plan solves 0.68 open-loop, its BC policy 0.39 and self-imitation lifted that to 0.49.
The demonstrations only cover the states near the plan's own trajectory; once the policy drifts off it, it has
never seen what to do. DAgger (Ross et al., 2011) labels the learner's states with an expert's actions; the
expert here is the planner, re-run from each such state. Every Kinetix level is deterministic except for the
env's action noise, and a Kinetix env state holds the whole simulation (its episode clock included), so a plan
can be searched for and replayed from any state of a rollout. Per iteration ``i``:

1. **collect**: roll out the current policy on the evaluation's timeline (``rollout.measurement``: naive, d = 0,
   s = 1, the env's action noise, no exploration) on ``rollout_envs`` environments and keep the env state of
   each first episode at the ticks ``replan_every, 2·replan_every, ... <= max_state_tick`` (default: the median
   length of the plan's demonstration episodes, the time the nominal solution takes; later states are mostly
   past saving, see below); draw ``num_states`` of them, those of episodes that failed first (the solved ones
   only fill up the rest), without replacement with probabilities proportional to how often re-plans from
   states at the same tick have solved in earlier iterations (``tick_weights``: (successes + 1) / (tries + 2),
   uniform in iteration 1);
2. **re-plan**: from each kept state at episode tick ``t``, ``generations`` generations of the cross-entropy
   method of ``rtc_sweep.train.plan`` over ``replan_ticks // segment_ticks`` piecewise-constant segments,
   warm-started at the nominal plan's remainder ``plan[t : t + replan_ticks]`` (the state's elapsed episode
   ticks are the offset into the plan) with std ``init_std``, scored as plan.py scores (``2·solved -
   distance_weight · closest goal-target distance - length_weight · length · solved``, averaged over
   ``noise_seeds`` env-noise draws); candidate 0 is always the current mean, so generation 0 measures the nominal
   remainder from the state. One program, vmapped over states × candidates × draws and sharded over the host
   devices, scores every generation of every iteration;
3. **record**: play each state's final mean plan and its nominal remainder (the warm start) from that state on
   ``record_draws`` env-noise draws each; the solved episodes (from the state to their ``done``) of whichever
   solves more often (the re-plan on ties) are the iteration's recovery demonstrations;
4. **fit**: flow-matching BC (``rtc_sweep.train.flow_bc``: its optimiser, windows and masking, one optimiser
   state for the run) for ``epochs_per_iteration`` passes over the aggregate: the plan's demonstrations plus
   every iteration's recoveries so far;
5. **evaluate**: self-imitation's measurement (``rollout.measurement``: naive, d = 0, s = 1, env noise,
   ``eval_envs`` first episodes; its seed goes to stats.json); ``best.json`` keeps the best iteration, in
   self-imitation's format (``scripts/train_levels.sh`` reads either).

Iteration 0 is ``init_checkpoint`` measured. The run stops after ``num_iterations`` or when the solve rate has
not improved for ``patience`` iterations. Every shape is static and everything that changes between iterations
is traced, so the rollout, the scorer, the recorder and the evaluation compile once per run; the fit's data is
padded to a power of two (never sampled from the padding), so it compiles once per doubling of the data.

Layout of ``run_dir`` (resumable after any finished iteration, like self-imitation's)::

    config.json                         the settings of the latest start (resumed_with_changes: what each resume
                                        changed, and the iteration it took effect at)
    <i>/policies/worlds_l_<level>.pkl   the policy after iteration i (benchmark layout)
    <i>/stats.json                      collect / re-plan / record / fit / eval numbers and wall seconds of i
    <i>/replans.npz                     the re-planned states: env, tick, obs, the final plans, their solve rates
    <i>/data/worlds_l_<level>.npz       iteration i's recovery demonstrations (self-imitation's data format)
    best.json                           the best iteration so far: iteration, returned_episode_solved, policy
    state.pkl                           optimiser state and counters, for resuming

Cost per iteration: ``num_states · population · noise_seeds · replan_ticks · generations`` env steps to re-plan
(the defaults: 32 · 32 · 2 · 64 · 4 = 0.52 M), ``num_states · 2 · record_draws · replan_ticks`` to record, and two
policy rollouts (``rollout_envs`` and ``eval_envs`` environments × ``num_ticks``).

Measured on catapult (``runs/levels/catapult``: plan_s0, which solves 0.68 open-loop, and the BC policy of
``bc/9``; 2 CPU cores shared with the background pipeline and other jobs, load 4-7, so wall times are upper
bounds; 512 evaluation episodes, stderr 0.022):

    iteration                 0      1      2      3
    solve rate (eval)         0.393  0.441  0.377  0.488    (self-imitation: 0.426 at 1, best 0.486 at 5)
    states re-planned         -      32     32     32       (all from failed episodes)
    re-plans that solve       -      0.164  0.109  0.207    (nominal remainder from the same states 0.09 / 0.00 / 0.17)
    recovery episodes         -      42     28     106      (aggregate 36.7 k / 37.8 k / 41.9 k transitions)
    wall s: collect           -      48     19     179      (compiles included: 1, 3)
            re-plan           -      365    490    442      (1.1-1.4 k env steps/s)
            record / fit      -      44/18  12/12  35/21
            eval              75     120    96     131
            total             -      595    629    808

Iterations 1-2 ran with ``max_state_tick=128``, ``record_draws=8`` and the re-plan alone recorded; iteration 3
with ``max_state_tick`` from the demonstrations (49) and ``record_draws=16``; all of them before the collection
and the evaluation moved onto the evaluation's timeline (the same measurement, other random streams).

Where re-planning pays off is a matter of the tick: from catapult's failed episodes at ticks 8-24 the re-plans
solve 0.47-0.58 per iteration (the nominal remainder from the same states 0.00-0.39, but at some ticks better:
hence step 3's choice), from tick 32 on never (0 of 66 states in three iterations; the throw has missed by then).
Step 1's tick weights and step 3's choice came after these measurements (not measured on catapult yet).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from rtc_sweep.core import kinetix_env as ke
from rtc_sweep.core.checkpoint import load_policy, save_policy
from rtc_sweep.core.policy import MODEL_PRESETS, ModelConfig, Params
from rtc_sweep.core.run_config import RunConfig
from rtc_sweep.train.flow_bc import (
    OptimConfig,
    TrainState,
    init_train_state,
    make_fit,
    make_optimizer,
    padded_stream,
    train_state_like,
)
from rtc_sweep.train.io import (
    ITERATIONS_MAY_CHANGE,
    completed_steps,
    load_pickle,
    record_settings,
    save_npz,
    save_pickle,
    write_json,
)
from rtc_sweep.train.plan import GOAL_ROLE, TARGET_ROLE, action_dims, role_indices
from rtc_sweep.train.rollout import (
    Rollout,
    Transitions,
    host_mesh,
    make_rollout,
    measurement,
    rollout_seed,
    solved_episode_mask,
    solved_episodes,
)
from rtc_sweep.train.self_imitation import _eval_stats

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DaggerConfig:
    run_dir: str  # where iterations, data and state go (see the module docstring)
    plan_dir: str  # a finished task=plan run of this level: plan.npy, config.json, data/worlds_l_<level>.npz
    init_checkpoint: str  # the flow BC policy to start from (benchmark layout)
    level: str = "grasp_easy"  # benchmark level name or path to a level JSON
    model: ModelConfig = MODEL_PRESETS["small"]
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(warmup_steps=100))
    seed: int = 0  # the whole run is a function of it
    num_iterations: int = 8  # collect-replan-record-fit-evaluate iterations after iteration 0
    patience: int = 4  # stop after this many iterations without a better eval solve rate
    rollout_envs: int = 64  # environments the policy is rolled out on to find states
    replan_every: int = 8  # a first-episode state is kept every this many ticks
    max_state_tick: int | None = None  # ... up to this episode tick; None = the plan's median demo length
    num_states: int = 32  # states re-planned per iteration (those of failed episodes first)
    replan_ticks: int = 64  # the horizon of a re-plan (ticks played from the state)
    segment_ticks: int = 8  # ticks per piecewise-constant segment of a re-plan
    population: int = 32  # candidate plans per state and generation
    noise_seeds: int = 2  # env-noise draws each candidate is scored over
    elite: int = 8  # best candidates the next generation's mean and std come from
    generations: int = 4  # CEM generations per state
    init_std: float = 0.3  # sampling std around the warm start (actions lie in [-1, 1])
    min_std: float = 0.02  # added to the std every generation
    smoothing: float = 0.7  # weight of the elite's mean and std in each update
    distance_weight: float = 0.3  # the plan score's shaping: minus this times the closest goal-target approach
    length_weight: float = 0.002  # among solved episodes, shorter is better
    record_draws: int = 16  # env-noise draws each state's final plan is played on (solved ones are kept)
    epochs_per_iteration: float = 2.0  # passes of the fit over the aggregate data per iteration
    fit_block: int = 32  # gradient steps per compiled fit call (the fit runs whole blocks)
    env_action_noise_std: float = 0.1  # the env's own action noise, everywhere
    num_flow_steps: int = 5  # Euler steps of the naive sampler
    eval_envs: int = 512  # environments (first episodes) in each iteration's evaluation
    num_ticks: int = 256  # ticks per environment in the policy rollouts (the level's max_timesteps)


def check_config(cfg: DaggerConfig) -> None:
    """Raise ValueError naming the first inconsistent setting."""
    positive = ("num_states", "population", "noise_seeds", "elite", "generations", "record_draws", "fit_block",
                "replan_every", "replan_ticks", "segment_ticks", "eval_envs", "rollout_envs")  # fmt: skip
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key}={getattr(cfg, key)} must be >= 1")
    if cfg.elite > cfg.population:
        raise ValueError(f"elite={cfg.elite} must be <= population={cfg.population}")
    if cfg.replan_ticks % cfg.segment_ticks:
        raise ValueError(f"replan_ticks={cfg.replan_ticks} must be a multiple of segment_ticks={cfg.segment_ticks}")
    if cfg.max_state_tick is not None and not cfg.replan_every <= cfg.max_state_tick < cfg.num_ticks:
        raise ValueError(f"max_state_tick={cfg.max_state_tick} must be in replan_every..num_ticks-1")
    if not 0.0 < cfg.smoothing <= 1.0:
        raise ValueError(f"smoothing={cfg.smoothing} must be in (0, 1]")
    if cfg.epochs_per_iteration <= 0:
        raise ValueError(f"epochs_per_iteration={cfg.epochs_per_iteration} must be > 0")


class Snapshots(NamedTuple):
    """The policy rollout's first-episode states every ``replan_every`` ticks, [B, E, ...] (B snapshot ticks)."""

    state: Any  # Kinetix EnvState, numpy leaves [B, E, ...]
    obs: np.ndarray  # [B, E, O] float16, the observation at that state
    live: np.ndarray  # [B, E] bool, the first episode had not ended yet
    tick: np.ndarray  # [B, E] int32, ticks the first episode has run (its elapsed time)
    solved: np.ndarray  # [E] bool, the first episode ended solved within num_ticks


class Data(NamedTuple):
    """An env-major stream of whole episodes on the host (the fit's input, before padding)."""

    obs: np.ndarray  # [N, O] float16, or float32 for a float32 recording
    action: np.ndarray  # [N, A] float32
    done: np.ndarray  # [N] bool


class Programs(NamedTuple):
    level: ke.Level
    env: ke.Env
    env_params: Any
    collect: Callable[[Params, int], Snapshots]  # (params, seed) -> the policy rollout's states
    score: Callable[..., tuple[jax.Array, jax.Array, jax.Array]]  # (states, idx, plans, keys, ticks) -> s, l, near
    record: Callable[..., Transitions]  # (states, idx, plans, keys, ticks) -> time-major transitions
    evaluate: Rollout  # the evaluation job (eval_run), self-imitation's measurement
    fit: Callable[..., tuple[TrainState, dict[str, jax.Array]]]  # (state, key, stream, n) -> state, metrics
    optimizer: optax.GradientTransformation


def eval_run(cfg: DaggerConfig) -> RunConfig:
    """The evaluation job each iteration's solve rate is: self-imitation's (``rollout.measurement``: naive, d = 0,
    s = 1, the env's noise, ``eval_envs`` first episodes); ``stats.json`` keeps its seed."""
    return measurement(cfg.level, cfg.model, cfg.eval_envs, cfg.num_ticks, cfg.num_flow_steps,
                       cfg.env_action_noise_std)  # fmt: skip


def padded(n: int, n_dev: int) -> int:
    return -(-n // n_dev) * n_dev


# Fields that change no compiled program (host-side search settings, paths, counters): a resume in the same
# process reuses the programs.
_RUN_ONLY: dict[str, Any] = {
    "run_dir": "",
    "plan_dir": "",
    "init_checkpoint": "",
    "seed": 0,
    "num_iterations": 0,
    "patience": 0,
    "num_states": 0,
    "population": 0,
    "elite": 0,
    "generations": 0,
    "init_std": 0.0,
    "min_std": 0.0,
    "smoothing": 0.0,
    "distance_weight": 0.0,
    "length_weight": 0.0,
    "record_draws": 0,
    "epochs_per_iteration": 0.0,
    "noise_seeds": 0,
    "max_state_tick": 0,
    "replan_every": 0,
    "segment_ticks": 0,
}


@functools.lru_cache(maxsize=2)
def _programs(cfg: DaggerConfig, snapshot_ticks: tuple[int, ...], segment_ticks: int) -> Programs:
    """The compiled programs; batch sizes are inferred from the arguments, so S, population and draws only
    change the (static) shapes the programs are traced for."""
    level = ke.load_level(cfg.level)
    env = ke.make_env(level.static_params, action_noise_std=cfg.env_action_noise_std)
    env_params = ke.env_params(level, max_timesteps=cfg.num_ticks)
    goal, target = role_indices(level, GOAL_ROLE), role_indices(level, TARGET_ROLE)
    R, L = cfg.replan_ticks, segment_ticks
    mesh = host_mesh()
    env_first = P("env")
    every = snapshot_ticks[1] - snapshot_ticks[0] if len(snapshot_ticks) > 1 else snapshot_ticks[0]

    # -- 1. the policy rollout that keeps its states: the evaluation's timeline (rollout.measurement), naive, d = 0,
    # s = 1, with the env state every `every` ticks (timeline's snapshots)
    n_snap = len(snapshot_ticks)
    collect_rollout = make_rollout(
        measurement(
            cfg.level, cfg.model, cfg.rollout_envs, cfg.num_ticks, cfg.num_flow_steps, cfg.env_action_noise_std
        ),
        snapshot_every=every,
        num_snapshots=n_snap,
    )

    def collect_fn(params: Params, seed: int) -> Snapshots:
        out = collect_rollout.per_env(params, seed)
        snap = out.snapshots  # env-major [E, n_snap, ...] -> [n_snap, E, ...]
        assert snap is not None
        tm = lambda x: np.swapaxes(np.asarray(x), 0, 1)
        return Snapshots(jax.tree.map(tm, snap.state), tm(snap.obs), tm(snap.live), tm(snap.tick),
                         np.asarray(out.first.solved))  # fmt: skip

    # -- 2./3. plans played from given states -------------------------------------------------------------------
    def closest(state: Any) -> jax.Array:  # [E]: the closest goal-target distance now (plan.py's)
        if goal.size == 0 or target.size == 0:
            return jnp.zeros(state.polygon.position.shape[0])
        pos = jnp.concatenate([state.polygon.position, state.circle.position], axis=1)  # [E, N, 2]
        gap = pos[:, goal][:, :, None] - pos[:, target][:, None, :]
        return jnp.linalg.norm(gap, axis=-1).min(axis=(1, 2))

    def play_local(states: Any, idx: jax.Array, plans: jax.Array, keys: jax.Array, ticks: jax.Array,
                   record: bool) -> Any:  # fmt: skip
        state = jax.tree.map(lambda x: x[idx], states)  # each element starts from its own stored state
        obs = jax.vmap(lambda st: env.reset(st)[0])(state)
        step = jax.vmap(lambda k, st, a: env.step(k, st, a, level, env_params))
        actions = jnp.repeat(plans, L, axis=1)  # [E, R, A]

        def tick(carry: Any, t: jax.Array) -> Any:
            state, obs, first, near = carry
            k = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, t)
            action = actions[:, t]
            next_obs, state, info = step(k, state, action)
            live = ~first.finished
            near = jnp.where(live & ~info.done, jnp.minimum(near, closest(state)), near)
            first = jax.vmap(ke.FirstEpisode.update)(first, info)
            rec = None
            if record:  # the first episode from the state only
                done = info.done & live
                rec = (obs.astype(jnp.float16), action, done, info.solved & done, first.running_return,
                       first.running_length + ticks)  # fmt: skip
            return (state, next_obs, first, near), rec

        E = keys.shape[0]
        first0 = jax.vmap(lambda _: ke.FirstEpisode.init())(jnp.arange(E))
        carry0 = (state, obs, first0, jnp.full((E,), jnp.inf))
        (_, _, first, near), rec = jax.lax.scan(tick, carry0, jnp.arange(R))
        near = jnp.where(jnp.isfinite(near), near, 0.0)
        if not record:
            return first.solved, first.length, near
        obs_r, act_r, done_r, solved_r, ret_r, len_r = rec
        return Transitions(obs_r, act_r, done_r, solved_r, ret_r, len_r, solved_episode_mask(done_r, solved_r))

    def sharded_play(record: bool) -> Any:
        out = Transitions._make([P(None, "env")] * 7) if record else (env_first,) * 3
        fn = functools.partial(play_local, record=record)
        in_specs = (P(), env_first, env_first, env_first, env_first)
        return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out, check_vma=False))

    # -- 4./5. fit and evaluation ------------------------------------------------------------------------------
    evaluate = make_rollout(eval_run(cfg))
    optimizer = make_optimizer(cfg.optim)
    fit = make_fit(cfg.model, optimizer, cfg.optim.batch_size, cfg.fit_block)  # n traced (padded data)
    return Programs(level, env, env_params, collect_fn, sharded_play(False), sharded_play(True), evaluate, fit,
                    optimizer)  # fmt: skip


def snapshot_ticks(cfg: DaggerConfig) -> tuple[int, ...]:
    if cfg.max_state_tick is None:
        raise ValueError("max_state_tick is not resolved (run_dagger resolves None from the plan's demonstrations)")
    return tuple(range(cfg.replan_every, cfg.max_state_tick + 1, cfg.replan_every))


def median_episode_length(done: np.ndarray) -> int:
    """The median length of the whole episodes of an env-major stream (each ends on a ``done`` row)."""
    ends = np.flatnonzero(done)
    if len(ends) == 0:
        raise ValueError("the plan's demonstrations hold no episode")
    return int(np.median(np.diff(np.concatenate([[-1], ends]))))


def programs(cfg: DaggerConfig) -> Programs:
    """The (cached) compiled programs of a config."""
    return _programs(dataclasses.replace(cfg, **_RUN_ONLY), snapshot_ticks(cfg), cfg.segment_ticks)


def tick_weights(replans: list[dict[str, np.ndarray]]) -> dict[int, float]:
    """Per episode tick, the posterior mean (uniform prior) of "a re-plan from a state at this tick solves at
    least once", from earlier iterations' ``replans.npz``: (successes + 1) / (states + 2)."""
    tried: dict[int, int] = {}
    won: dict[int, int] = {}
    for rp in replans:
        ok = rp["best_solved"] if "best_solved" in rp else np.maximum(rp["replan_solved"], rp["nominal_solved"])
        for t, o in zip(rp["tick"].tolist(), (ok > 0).tolist(), strict=True):
            tried[t] = tried.get(t, 0) + 1
            won[t] = won.get(t, 0) + int(o)
    return {t: (won[t] + 1) / (tried[t] + 2) for t in tried}


def select_states(snaps: Snapshots, num_states: int, rng: np.random.Generator,
                  weights: dict[int, float] | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """``num_states`` live snapshots, those of failed first episodes first, drawn without replacement with
    probabilities proportional to ``weights[tick]`` (``tick_weights``; 0.5 for ticks not tried yet, uniform
    without weights); when fewer exist, the chosen ones repeat and ``valid`` marks the first of each. Returns the
    snapshot indices (``block``, ``env``), ``tick``, ``obs``, ``failed`` and ``valid``."""
    live = np.asarray(snaps.live)
    solved = np.asarray(snaps.solved)
    ticks = np.asarray(snaps.tick)
    b, e = np.nonzero(live)
    if len(b) == 0:
        raise RuntimeError("dagger: the policy's first episodes all ended before the first snapshot tick")
    w = np.array([(weights or {}).get(int(t), 0.5) for t in ticks[b, e]])
    race = rng.exponential(size=len(b)) / w  # the smallest of exponential clocks of rates w: weighted sampling
    order = np.lexsort((race, solved[e]))[:num_states]  # failed episodes first, then by their clocks
    valid = np.zeros(num_states, bool)
    valid[: len(order)] = True
    order = np.resize(order, num_states)
    b, e = b[order], e[order]
    return {
        "block": b,
        "env": e,
        "tick": ticks[b, e].astype(np.int32),
        "obs": np.asarray(snaps.obs)[b, e],
        "failed": ~solved[e],
        "valid": valid,
    }


def warm_start(plan: np.ndarray, ticks: np.ndarray, horizon: int, segment_ticks: int) -> np.ndarray:
    """[S, horizon // segment_ticks, A]: the nominal per-tick plan's remainder from each tick, averaged per
    segment (exactly the plan's own segments when the ticks and the plan's segments are aligned); zeros past
    the plan's end, as the plan itself plays."""
    A = plan.shape[1]
    ext = np.concatenate([plan, np.zeros((int(ticks.max()) + horizon, A), plan.dtype)])
    rows = ticks[:, None] + np.arange(horizon)[None, :]  # [S, horizon]
    return ext[rows].reshape(len(ticks), horizon // segment_ticks, segment_ticks, A).mean(2).astype(np.float32)


def _score(cfg: DaggerConfig, solved: np.ndarray, length: np.ndarray, near: np.ndarray) -> np.ndarray:
    return 2.0 * solved - cfg.distance_weight * near - cfg.length_weight * length * solved  # plan.py's score


def _load_data(path: Path) -> Data:
    """A recording's stream, its observations at their stored precision: a float32 recording (``task=plan
    task.obs_dtype=float32``) stays float32, so the fit's stream keeps it (the re-plans' own states are float16)."""
    with np.load(path) as f:
        obs = f["obs"]
        obs = obs.astype(np.float16 if obs.dtype.itemsize <= 2 else np.float32)
        return Data(obs, f["action"].astype(np.float32), f["done"].astype(bool))


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def replan(cfg: DaggerConfig, progs: Programs, states: Any, ticks: np.ndarray, plan: np.ndarray, used: np.ndarray,
           key: jax.Array) -> tuple[np.ndarray, list[dict[str, float]], np.ndarray, np.ndarray]:  # fmt: skip
    """CEM from each state; returns the final mean plans [S, K, A], per-generation numbers, the nominal
    remainder's solve rate per state (generation 0's candidate 0) and the warm starts [S, K, A]."""
    S, Pn, M = len(ticks), cfg.population, cfg.noise_seeds
    n_dev = jax.device_count()
    B = S * Pn * M
    Bp = padded(B, n_dev)
    idx = np.zeros(Bp, np.int32)
    idx[:B] = np.repeat(np.arange(S), Pn * M)
    tk = jnp.asarray(ticks[idx])
    idx_j = jnp.asarray(idx)
    warm = warm_start(plan, ticks, cfg.replan_ticks, cfg.segment_ticks) * used
    mean = warm.copy()
    K, A = mean.shape[1:]
    std = np.where(used, cfg.init_std, 0.0).astype(np.float32) * np.ones((S, K, 1), np.float32)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    history: list[dict[str, float]] = []
    nominal = np.zeros(S)
    for g in range(cfg.generations):
        t0 = time.time()
        eps = rng.standard_normal((S, Pn, K, A)).astype(np.float32)
        cand = np.clip(mean[:, None] + std[:, None] * eps, -1.0, 1.0) * used
        cand[:, 0] = mean  # the current mean is always scored
        plans = np.zeros((Bp, K, A), np.float32)
        plans[:B] = np.repeat(cand.reshape(S * Pn, K, A), M, axis=0)
        keys = jax.random.split(jax.random.fold_in(key, g), Bp)
        out = progs.score(states, idx_j, jnp.asarray(plans), keys, tk)
        solved, length, near = (np.asarray(x)[:B].reshape(S, Pn, M).mean(2) for x in out)
        if g == 0:
            nominal = solved[:, 0].copy()
        score = _score(cfg, solved, length, near)
        elite = np.argsort(-score, axis=1, kind="stable")[:, : cfg.elite]
        ec = np.take_along_axis(cand, elite[:, :, None, None], axis=1)
        mean = ((1 - cfg.smoothing) * mean + cfg.smoothing * ec.mean(1)).astype(np.float32)
        std = (((1 - cfg.smoothing) * std + cfg.smoothing * ec.std(1) + cfg.min_std) * used).astype(np.float32)
        history.append({
            "generation": g,
            "population_solved": float(solved.mean()),
            "elite_solved": float(np.take_along_axis(solved, elite, axis=1).mean()),
            "mean_plan_solved": float(solved[:, 0].mean()),
            "elite_closest": float(np.take_along_axis(near, elite, axis=1).mean()),
            "wall_s": time.time() - t0,
        })  # fmt: skip
    return mean, history, nominal, warm


class Recorded(NamedTuple):
    data: dict[str, np.ndarray]  # the kept solved episodes (self-imitation's data format)
    solved: np.ndarray  # [S, 2]: solve rate over the draws of the re-plan (0) and of the nominal remainder (1)
    chosen: np.ndarray  # [S] int: the plan whose solved episodes were kept (0 = re-plan, 1 = nominal remainder)
    transitions: Transitions  # time-major [R, S · 2 · D]: element (s · 2 + c) · D + j is state s, plan c, draw j


def record(cfg: DaggerConfig, progs: Programs, states: Any, ticks: np.ndarray, plans: np.ndarray,
           nominal: np.ndarray, valid: np.ndarray, key: jax.Array) -> Recorded:  # fmt: skip
    """Play each state's re-plan and its nominal remainder on ``record_draws`` noise draws each and keep the
    solved episodes of whichever solves more often from that state (the re-plan on ties): the CEM's mean after
    a few generations on a few noise draws can drift off a warm start that was already good."""
    S, D = len(ticks), cfg.record_draws
    B = S * 2 * D
    Bp = padded(B, jax.device_count())
    idx = np.zeros(Bp, np.int32)
    idx[:B] = np.repeat(np.arange(S), 2 * D)
    both = np.stack([plans, nominal], axis=1).reshape(S * 2, *plans.shape[1:])  # [S · 2, K, A]
    pl = np.zeros((Bp, *plans.shape[1:]), np.float32)
    pl[:B] = np.repeat(both, D, axis=0)
    tr = progs.record(states, jnp.asarray(idx), jnp.asarray(pl), jax.random.split(key, Bp), jnp.asarray(ticks[idx]))
    tr = jax.tree.map(lambda x: np.asarray(x)[:, :B], tr)
    solved = np.asarray(tr.solved).any(0).reshape(S, 2, D).mean(2)
    chosen = (solved[:, 1] > solved[:, 0]).astype(np.int64)
    pick = (np.arange(2)[None, :] == chosen[:, None]) & valid[:, None]  # padding states (repeats) give no data
    keep = np.asarray(tr.keep) & np.repeat(pick.reshape(-1), D)[None, :]
    return Recorded(solved_episodes(tr._replace(keep=keep)), solved, chosen, tr)


def run_dagger(cfg: DaggerConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) DAgger; returns the contents of best.json."""
    check_config(cfg)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    plan_dir = Path(cfg.plan_dir)
    plan_cfg = json.loads((plan_dir / "config.json").read_text())
    if ke.level_name(plan_cfg["level"]) != ke.level_name(cfg.level):
        raise ValueError(f"{plan_dir} is a plan of {plan_cfg['level']}, not of {cfg.level}")
    plan = np.load(plan_dir / "plan.npy").astype(np.float32)
    level = ke.load_level(cfg.level)
    env = ke.make_env(level.static_params, action_noise_std=cfg.env_action_noise_std)
    obs_dim, action_dim = env.obs_dim(level.params), env.action_dim
    used = action_dims(level, action_dim)
    name = f"worlds_l_{level.name}.pkl"
    data_name = f"worlds_l_{level.name}.npz"
    demos = _load_data(plan_dir / "data" / data_name)
    max_tick = cfg.max_state_tick
    if max_tick is None:
        max_tick = int(np.clip(median_episode_length(demos.done), cfg.replan_every, cfg.num_ticks - 1))
    progs = programs(dataclasses.replace(cfg, max_state_tick=max_tick))
    key = jax.random.key(cfg.seed)
    H = cfg.model.action_chunk_size

    def run_eval(params: Params, k: jax.Array) -> tuple[dict[str, float], float]:
        t0 = time.time()
        seed = rollout_seed(k)
        stats, _ = progs.evaluate(params, seed)
        return {**_eval_stats(stats), "seed": seed}, time.time() - t0

    state_file = run_dir / "state.pkl"
    done_iters = completed_steps(run_dir)
    resuming = bool(done_iters) and state_file.is_file()
    at = done_iters[-1] + 1 if resuming else 0
    record_settings(run_dir, dataclasses.asdict(cfg), resuming=resuming, at=("iteration", at), what="DAgger",
                    quiet=ITERATIONS_MAY_CHANGE)  # fmt: skip
    if resuming:
        like = train_state_like(obs_dim, action_dim, cfg.model, progs.optimizer)
        saved = load_pickle(state_file, {"iteration": 0, "train": tuple(like)})
        train_state = TrainState(*saved["train"])
        start = int(saved["iteration"]) + 1
        best = json.loads((run_dir / "best.json").read_text())
    else:
        params = load_policy(cfg.init_checkpoint, cfg.model, obs_dim, action_dim)
        eval0, eval_s = run_eval(params, jax.random.fold_in(key, 0))
        train_state = init_train_state(params, progs.optimizer)
        save_policy(run_dir / "0" / "policies" / name, params)
        write_json(run_dir / "0" / "stats.json", {"iteration": 0, "eval": eval0, "wall_s": {"eval": eval_s}})
        best = {"iteration": 0, "returned_episode_solved": eval0["returned_episode_solved"],
                "policy": f"0/policies/{name}"}  # fmt: skip
        write_json(run_dir / "best.json", best)
        save_pickle(state_file, {"iteration": 0, "train": tuple(train_state)})
        start = 1

    parts = [demos]
    for it in range(1, start):
        path = run_dir / str(it) / "data" / data_name
        if path.is_file():
            parts.append(_load_data(path))

    bar = tqdm(range(start, cfg.num_iterations + 1), desc="dagger", unit="it", disable=not progress)
    bar.set_postfix(best=f"{best['returned_episode_solved']:.3f}@{best['iteration']}")
    for it in bar:
        if it - int(best["iteration"]) > cfg.patience:
            break
        k_it = jax.random.fold_in(key, it)
        wall: dict[str, float] = {}

        # 1. collect the policy's states
        t0 = time.time()
        snaps = progs.collect(train_state.params, rollout_seed(jax.random.fold_in(k_it, 0)))
        earlier = [_load_npz(run_dir / str(i) / "replans.npz") for i in range(1, it)]
        weights = tick_weights([r for r in earlier if r])
        sel = select_states(snaps, cfg.num_states, np.random.default_rng([cfg.seed, it]), weights)
        b_sel, e_sel = sel["block"], sel["env"]
        states = jax.tree.map(lambda x, b=b_sel, e=e_sel: jnp.asarray(np.asarray(x)[b, e]), snaps.state)
        rollout_solved = float(np.asarray(snaps.solved).mean())
        n_live = int(np.asarray(snaps.live).sum())
        del snaps
        wall["collect"] = time.time() - t0
        log.info("dagger %d: collect %.0f s, %d live states, %d re-planned (%d from failed episodes), rollout solved "
                 "%.3f", it, wall["collect"], n_live, int(sel["valid"].sum()), int(sel["failed"][sel["valid"]].sum()),
                 rollout_solved)  # fmt: skip

        # 2. re-plan from each state
        t0 = time.time()
        plans, history, nominal0, warm = replan(cfg, progs, states, sel["tick"], plan, used,
                                                jax.random.fold_in(k_it, 1))  # fmt: skip
        wall["replan"] = time.time() - t0
        log.info("dagger %d: re-plan %.0f s, elite solved %s", it, wall["replan"],
                 " ".join(f"{h['elite_solved']:.2f}" for h in history))  # fmt: skip

        # 3. record the re-plans' solved episodes
        t0 = time.time()
        rec = record(cfg, progs, states, sel["tick"], plans, warm, sel["valid"], jax.random.fold_in(k_it, 2))
        data = rec.data
        v = sel["valid"]
        plan_solved, nominal = rec.solved[:, 0], rec.solved[:, 1]
        chosen = rec.chosen
        best_solved = rec.solved[np.arange(len(v)), chosen]
        wall["record"] = time.time() - t0
        log.info("dagger %d: record %.0f s, re-plans solve %.3f, nominal remainders %.3f, the better of the two %.3f; "
                 "%d recovery episodes", it, wall["record"], plan_solved[v].mean(), nominal[v].mean(),
                 best_solved[v].mean(), int(data["done"].sum()))  # fmt: skip
        save_npz(run_dir / str(it) / "data" / data_name, data)
        save_npz(run_dir / str(it) / "replans.npz", {
            "env": sel["env"][v], "tick": sel["tick"][v], "obs": sel["obs"][v], "failed": sel["failed"][v],
            "plan": plans[v], "nominal_solved": nominal[v], "replan_solved": plan_solved[v],
            "best_solved": best_solved[v], "chosen": chosen[v],
        })  # fmt: skip
        del rec
        parts.append(Data(data["obs"], data["action"].astype(np.float32), data["done"]))

        # 4. fine-tune on the aggregate
        t0 = time.time()
        stream, n = padded_stream([(p.obs, p.action, p.done) for p in parts])
        cap = int(stream.done.shape[0])
        steps = max(1, round(cfg.epochs_per_iteration * (n - H + 1) / cfg.optim.batch_size))
        blocks = -(-steps // cfg.fit_block)
        losses, norms = [], []
        for b in range(blocks):
            train_state, metrics = progs.fit(train_state, jax.random.fold_in(jax.random.fold_in(k_it, 3), b), stream,
                                             jnp.int32(n))  # fmt: skip
            losses.append(np.asarray(metrics["loss"]))
            norms.append(np.asarray(metrics["grad_norm"]))
        del stream
        loss = np.concatenate(losses)
        if not np.isfinite(loss).all():
            raise FloatingPointError(f"dagger: non-finite loss in iteration {it}")
        tenth = max(1, len(loss) // 10)
        fit_stats = {
            "loss_first": float(loss[:tenth].mean()),
            "loss_last": float(loss[-tenth:].mean()),
            "grad_norm": float(np.concatenate(norms).mean()),
            "grad_steps_this_iteration": len(loss),
            "grad_steps": int(train_state.step),
        }
        wall["fit"] = time.time() - t0

        # 5. evaluate
        eval_stats, wall["eval"] = run_eval(train_state.params, jax.random.fold_in(k_it, 4))
        log.info("dagger %d: fit %.0f s (%d steps, loss %.4f -> %.4f), eval %.0f s: solved %.3f", it, wall["fit"],
                 len(loss), fit_stats["loss_first"], fit_stats["loss_last"], wall["eval"],
                 eval_stats["returned_episode_solved"])  # fmt: skip
        S = int(v.sum())
        replan_steps = cfg.num_states * cfg.population * cfg.noise_seeds * cfg.replan_ticks * cfg.generations
        n_done = int(data["done"].sum())
        stats = {
            "iteration": it,
            "eval": eval_stats,
            "collect": {
                "rollout_solved": rollout_solved,
                "live_snapshots": n_live,
                "states": S,
                "states_from_failed_episodes": int(sel["failed"][v].sum()),
                "state_tick_mean": float(sel["tick"][v].mean()),
                "max_state_tick": max_tick,
                "tick_weights": {str(t): w for t, w in sorted(weights.items())},
            },
            "replan": {
                "states": S,
                "nominal_remainder_solved": float(nominal[v].mean()),
                "nominal_remainder_solved_generation_0": float(nominal0[v].mean()),
                "replan_solved": float(plan_solved[v].mean()),
                "best_solved": float(best_solved[v].mean()),
                "states_kept_nominal": int(chosen[v].sum()),
                "states_with_a_solved_replan": float((best_solved[v] > 0).mean()),
                "best_solved_failed_states": float(best_solved[v][sel["failed"][v]].mean())
                if sel["failed"][v].any()
                else None,
                "by_tick": {
                    str(t): {
                        "states": int((sel["tick"][v] == t).sum()),
                        "nominal_remainder_solved": float(nominal[v][sel["tick"][v] == t].mean()),
                        "replan_solved": float(plan_solved[v][sel["tick"][v] == t].mean()),
                        "best_solved": float(best_solved[v][sel["tick"][v] == t].mean()),
                    }
                    for t in sorted(set(sel["tick"][v].tolist()))
                },
                "generations": history,
                "env_steps": replan_steps,
                "env_steps_per_s": replan_steps / wall["replan"],
            },
            "data": {
                "recovery_episodes": n_done,
                "recovery_transitions": int(data["done"].shape[0]),
                "demo_transitions": int(demos.done.shape[0]),
                "aggregate_transitions": n,
                "fit_capacity": cap,
            },
            "fit": fit_stats,
            "wall_s": {**wall, "total": float(sum(wall.values()))},
        }
        save_policy(run_dir / str(it) / "policies" / name, train_state.params)
        write_json(run_dir / str(it) / "stats.json", stats)
        if eval_stats["returned_episode_solved"] > best["returned_episode_solved"]:
            best = {"iteration": it, "returned_episode_solved": eval_stats["returned_episode_solved"],
                    "policy": f"{it}/policies/{name}"}  # fmt: skip
            write_json(run_dir / "best.json", best)
        save_pickle(state_file, {"iteration": it, "train": tuple(train_state)})
        bar.set_postfix(
            solve=f"{eval_stats['returned_episode_solved']:.3f}",
            replan=f"{plan_solved[v].mean():.2f}",
            best=f"{best['returned_episode_solved']:.3f}@{best['iteration']}",
        )
    return best
