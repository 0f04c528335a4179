"""DAgger with a feedback plan as the expert: the states the policy visits, labelled with the expert's actions.

A feedback plan (``task=plan task.feedback_dims=k``, ``rtc_sweep.train.plan``) is a controller in closed form: at
episode tick ``t`` and observation ``o`` it commands ``clip(u[t // L] + tanh(W · B(o - obs_bar[t]) / sd), -1, 1)``.
Unlike the re-planning expert of ``task=dagger`` it answers for any state at no cost, so every state of the
learner's own rollouts can be labelled (Ross et al., 2011: the learner visits, the expert labels, the aggregate is
fitted). An open-loop plan (k = 0) is the same expert without its feedback term (it labels by the tick alone).

BC on the feedback plan's own demonstrations covers only the states near the expert's trajectory: on catapult the
expert solves 0.83 of its episodes and its BC policy (30 epochs) 0.39, the policy drifting where the data has
nothing to say. Per iteration ``i``:

1. **collect**: the current policy on the evaluation's timeline (``rollout.measurement``: naive, d = 0, s = 1, the
   env's action noise, no exploration) on ``rollout_envs`` environments, transitions recorded;
2. **label**: each first episode's ticks ``t < label_ticks`` (default: the median length of the expert's own
   episodes, the time in which the outcome is decided) and ``t <`` the plan's length get the expert's action at their
   observation (episodes that last longer are cut there, their last kept row marked ``done``), solved or not;
3. **fit**: flow-matching BC (``rtc_sweep.train.flow_bc.make_fit``, one optimiser state for the run) for
   ``epochs_per_iteration`` passes over the aggregate: the expert's demonstrations plus every iteration's labels;
4. **evaluate**: the measurement of self-imitation (``eval_envs`` first episodes); ``best.json`` keeps the best
   iteration in self-imitation's format (the scripts read either).

Iteration 0 is ``init_checkpoint`` measured. The run stops after ``num_iterations``, or when the solve rate has not
improved for ``patience`` iterations. The fit's data is padded to a power of two (never sampled from the padding),
so it compiles once per doubling.

Layout of ``run_dir`` (resumable after any finished iteration)::

    config.json                         the settings of the latest start (resumed_with_changes: what each resume
                                        changed, and the iteration it took effect at)
    <i>/policies/worlds_l_<level>.pkl   the policy after iteration i (benchmark layout)
    <i>/stats.json                      collect / label / fit / eval numbers and wall seconds of iteration i
    <i>/data/worlds_l_<level>.npz       iteration i's labelled states (self-imitation's data format)
    best.json                           the best iteration so far: iteration, returned_episode_solved, policy
    state.pkl                           optimiser state and the last finished iteration, for resuming
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from rtc_sweep.core import kinetix_env as ke
from rtc_sweep.core.checkpoint import load_policy, save_policy
from rtc_sweep.core.policy import MODEL_PRESETS, ModelConfig, Params
from rtc_sweep.core.run_config import RunConfig
from rtc_sweep.errors import ConfigError
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
from rtc_sweep.train.plan import action_dims
from rtc_sweep.train.rollout import Rollout, episode_stats, make_rollout, measurement, rollout_seed, transitions
from rtc_sweep.train.self_imitation import _eval_stats


@dataclasses.dataclass(frozen=True)
class RelabelConfig:
    run_dir: str  # where iterations, data and state go (see the module docstring)
    expert_dir: str  # a finished task=plan run_dir (feedback or open-loop): its plan, gains and basis label
    init_checkpoint: str  # the policy of iteration 0 (e.g. flow BC on the expert's demonstrations)
    level: str = "grasp_easy"  # benchmark level name or path to a level JSON
    model: ModelConfig = MODEL_PRESETS["small"]
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(warmup_steps=100))
    seed: int = 0  # the whole run is a function of it
    num_iterations: int = 6  # collect-label-fit-evaluate iterations after iteration 0
    patience: int = 3  # stop after this many iterations without a better eval solve rate
    rollout_envs: int = 256  # environments whose first episodes are labelled per iteration
    epochs_per_iteration: float = 3.0  # passes over the aggregate per iteration
    include_demos: bool = True  # the aggregate starts with the expert's own demonstrations (expert_dir/data)
    label_ticks: int = 0  # label episode ticks < this; 0: the median length of the expert's demonstration episodes
    #                       (where the outcome is still open: later states of a failed episode are mostly lost)
    fit_block: int = 256  # gradient steps per compiled fit call (an iteration runs as many blocks as it needs)
    eval_envs: int = 512  # environments (first episodes) in each iteration's evaluation
    num_ticks: int = 256  # ticks per environment in every rollout (the level's max_timesteps)
    num_flow_steps: int = 5  # Euler steps of the naive sampler
    env_action_noise_std: float = 0.1  # the env's own action noise, in collection and evaluation


class Expert(NamedTuple):
    """A plan as a controller: plan [K, A] of segment_ticks each; gains [k, A] on basis (obs_bar [T, D], B, sd)."""

    plan: np.ndarray
    segment_ticks: int
    gains: np.ndarray
    obs_bar: np.ndarray | None
    directions: np.ndarray | None
    spread: np.ndarray | None

    @property
    def num_ticks(self) -> int:
        return self.plan.shape[0] * self.segment_ticks

    def actions(self, obs: np.ndarray, ticks: np.ndarray) -> np.ndarray:
        """[N, A]: what the expert commands at observations ``obs`` [N, D] at episode ticks ``ticks`` [N] (< T)."""
        u = self.plan[ticks // self.segment_ticks]
        if self.gains.shape[0] == 0 or self.obs_bar is None or self.directions is None or self.spread is None:
            return u.astype(np.float32)
        z = ((obs.astype(np.float32) - self.obs_bar[ticks]) @ self.directions.T) / self.spread
        return np.clip(u + np.tanh(z @ self.gains), -1.0, 1.0).astype(np.float32)


def load_expert(expert_dir: str | Path) -> Expert:
    """The controller of a finished task=plan run (``FileNotFoundError`` naming ``task.expert_dir``)."""
    root = Path(expert_dir).expanduser()
    state, cfg_file = root / "state.npz", root / "config.json"
    if not state.is_file() or not cfg_file.is_file():
        raise FileNotFoundError(f"task.expert_dir: {root} holds no state.npz and config.json (a task=plan run_dir)")
    cfg = json.loads(cfg_file.read_text())
    with np.load(state) as f:
        plan = f["mean"].astype(np.float32)
        no_gains = np.zeros((0, plan.shape[1]), np.float32)
        gains = f["gain_mean"].astype(np.float32) if "gain_mean" in f.files else no_gains
    basis: dict[str, np.ndarray | None] = {"obs_bar": None, "directions": None, "spread": None}
    if gains.shape[0]:
        with np.load(root / "basis.npz") as f:
            basis = {k: f[k].astype(np.float32) for k in basis}
    return Expert(plan, int(cfg["segment_ticks"]), gains, **basis)


def label(expert: Expert, obs: np.ndarray, done: np.ndarray, num_ticks: int) -> dict[str, np.ndarray]:
    """Each first episode of a time-major rollout (obs [T, E, D], done [T, E]) up to its done, the plan's end or
    tick ``num_ticks``, labelled with the expert's actions: an env-major stream of whole episodes (the last row of
    each ``done``)."""
    T, E = done.shape
    horizon = min(T, expert.num_ticks, num_ticks)
    ended = np.cumsum(done, axis=0)
    first = np.concatenate([np.zeros((1, E), bool), ended[:-1] > 0]) == 0  # [T, E]: the tick is in the 1st episode
    first[horizon:] = False
    lengths = first.sum(0)  # [E]
    ticks = np.arange(T)[:, None].repeat(E, 1)
    env_major = np.swapaxes(first, 0, 1).reshape(-1)
    o = np.swapaxes(obs, 0, 1).reshape(-1, obs.shape[-1])[env_major]
    t = np.swapaxes(ticks, 0, 1).reshape(-1)[env_major]
    ends = np.zeros(len(t), bool)
    ends[np.cumsum(lengths[lengths > 0]) - 1] = True
    return {"obs": o.astype(np.float16), "action": expert.actions(o, t), "done": ends, "tick": t.astype(np.int32)}


def check_config(cfg: RelabelConfig) -> None:
    """Raise ConfigError naming the first invalid setting (``task.<key>``), before anything compiles."""
    for key in ("rollout_envs", "eval_envs", "num_ticks", "num_flow_steps", "fit_block"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"task.{key}", f"{getattr(cfg, key)}; allowed: >= 1")
    for key in ("num_iterations", "patience", "label_ticks"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"task.{key}", f"{getattr(cfg, key)}; allowed: >= 0")
    if not cfg.epochs_per_iteration > 0:
        raise ConfigError("task.epochs_per_iteration", f"{cfg.epochs_per_iteration}; allowed: > 0")


def eval_run(cfg: RelabelConfig, envs: int | None = None) -> RunConfig:
    return measurement(cfg.level, cfg.model, envs or cfg.eval_envs, cfg.num_ticks, cfg.num_flow_steps,
                       cfg.env_action_noise_std)  # fmt: skip


@functools.lru_cache(maxsize=2)
def _programs(cfg: RelabelConfig) -> tuple[Rollout, Rollout, Any, Any]:
    evaluate = make_rollout(eval_run(cfg))
    collect = make_rollout(eval_run(cfg, cfg.rollout_envs), record=True)
    optimizer = make_optimizer(cfg.optim)
    return evaluate, collect, optimizer, make_fit(cfg.model, optimizer, cfg.optim.batch_size, cfg.fit_block)


def run_relabel(cfg: RelabelConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume); returns the contents of best.json."""
    check_config(cfg)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    expert = load_expert(cfg.expert_dir)  # the files it reads are checked here, before anything compiles
    if not Path(cfg.init_checkpoint).expanduser().is_file():
        raise FileNotFoundError(f"task.init_checkpoint: {cfg.init_checkpoint} not found (a policy .pkl)")
    runtime_only: dict[str, Any] = {"run_dir": "", "seed": 0, "num_iterations": 0, "patience": 0, "expert_dir": "",
                    "init_checkpoint": "", "epochs_per_iteration": 1.0, "include_demos": True,
                    "label_ticks": 0}  # fmt: skip
    evaluate, collect, optimizer, fit = _programs(dataclasses.replace(cfg, **runtime_only))
    spec = evaluate.setup.spec
    obs_dim, action_dim, H = spec.obs_dim, spec.action_dim, cfg.model.action_chunk_size
    level = ke.load_level(cfg.level)
    used = action_dims(level, action_dim)
    expert = expert._replace(plan=expert.plan * used, gains=expert.gains * used)
    name, data_name = f"worlds_l_{level.name}.pkl", f"worlds_l_{level.name}.npz"
    key = jax.random.key(cfg.seed)

    def run_eval(params: Params, k: jax.Array) -> tuple[dict[str, float], float]:
        t0 = time.time()
        seed = rollout_seed(k)
        stats, _ = evaluate(params, seed)
        return {**_eval_stats(stats), "seed": seed}, time.time() - t0

    parts: list[dict[str, np.ndarray]] = []
    demos = Path(cfg.expert_dir).expanduser() / "data" / data_name
    if cfg.include_demos:
        if not demos.is_file():
            raise FileNotFoundError(f"task.expert_dir: {demos} not found (task.include_demos=false fits without it)")
        with np.load(demos) as f:
            parts.append({k: f[k] for k in ("obs", "action", "done")})
    label_ticks = cfg.label_ticks
    if label_ticks == 0:
        if not demos.is_file():
            raise FileNotFoundError(f"task.expert_dir: {demos} not found (give task.label_ticks > 0 without it)")
        with np.load(demos) as f:
            ends = np.flatnonzero(f["done"])
        label_ticks = int(np.median(np.diff(np.concatenate([[-1], ends])))) if len(ends) else cfg.num_ticks

    done_iters = completed_steps(run_dir)
    state_file = run_dir / "state.pkl"
    resuming = bool(done_iters) and state_file.is_file()
    at = done_iters[-1] + 1 if resuming else 0
    record_settings(run_dir, dataclasses.asdict(cfg), resuming=resuming, at=("iteration", at), what="relabelling",
                    quiet=ITERATIONS_MAY_CHANGE)  # fmt: skip
    if resuming:
        like = train_state_like(obs_dim, action_dim, cfg.model, optimizer)
        saved = load_pickle(state_file, {"iteration": 0, "train": tuple(like)})
        train_state = TrainState(*saved["train"])
        start = int(saved["iteration"]) + 1
        best = json.loads((run_dir / "best.json").read_text())
        for it in range(1, start):
            with np.load(run_dir / str(it) / "data" / data_name) as f:
                parts.append({k: f[k] for k in ("obs", "action", "done")})
    else:
        params = load_policy(Path(cfg.init_checkpoint).expanduser(), cfg.model, obs_dim, action_dim)
        eval0, eval_s = run_eval(params, jax.random.fold_in(key, 0))
        train_state = init_train_state(params, optimizer)
        save_policy(run_dir / "0" / "policies" / name, params)
        write_json(run_dir / "0" / "stats.json", {"iteration": 0, "eval": eval0, "wall_s": {"eval": eval_s}})
        best = {"iteration": 0, "returned_episode_solved": eval0["returned_episode_solved"],
                "policy": f"0/policies/{name}"}  # fmt: skip
        write_json(run_dir / "best.json", best)
        save_pickle(state_file, {"iteration": 0, "train": tuple(train_state)})
        start = 1

    bar = tqdm(range(start, cfg.num_iterations + 1), desc="relabel (DAgger)", unit="it", disable=not progress)
    for it in bar:
        if it - int(best["iteration"]) > cfg.patience:
            break
        k_it = jax.random.fold_in(key, it)
        t0 = time.time()
        out = collect.per_env(train_state.params, jax.random.fold_in(k_it, 0))
        tr = transitions(out)
        assert tr is not None
        collected = episode_stats(out)
        data = label(expert, np.asarray(tr.obs), np.asarray(tr.done), min(label_ticks, cfg.num_ticks))
        del out, tr
        collect_s = time.time() - t0
        save_npz(run_dir / str(it) / "data" / data_name, data)
        parts.append({k: data[k] for k in ("obs", "action", "done")})

        t1 = time.time()
        stream, n = padded_stream([(p["obs"], p["action"], p["done"]) for p in parts])
        steps = max(1, round(cfg.epochs_per_iteration * (n - H + 1) / cfg.optim.batch_size))
        losses = []
        for b in range(-(-steps // cfg.fit_block)):
            train_state, metrics = fit(train_state, jax.random.fold_in(jax.random.fold_in(k_it, 1), b), stream,
                                       jnp.int32(n))  # fmt: skip
            losses.append(np.asarray(metrics["loss"]))
        del stream
        loss = np.concatenate(losses)
        if not np.isfinite(loss).all():
            raise FloatingPointError(f"relabel: non-finite loss in iteration {it}")
        tenth = max(1, len(loss) // 10)
        fit_s = time.time() - t1

        eval_stats, eval_s = run_eval(train_state.params, jax.random.fold_in(k_it, 2))
        record = {
            "iteration": it,
            "eval": eval_stats,
            "collect": {
                "returned_episode_solved": float(np.asarray(collected.solved).mean()),
                "labelled_transitions": len(data["done"]),
                "labelled_episodes": int(data["done"].sum()),
                "aggregate_transitions": n,
                "label_ticks": min(label_ticks, cfg.num_ticks),
            },
            "fit": {
                "loss_first": float(loss[:tenth].mean()),
                "loss_last": float(loss[-tenth:].mean()),
                "grad_steps_this_iteration": len(loss),
                "grad_steps": int(train_state.step),
            },
            "wall_s": {"collect": collect_s, "fit": fit_s, "eval": eval_s},
        }
        save_policy(run_dir / str(it) / "policies" / name, train_state.params)
        write_json(run_dir / str(it) / "stats.json", record)
        if eval_stats["returned_episode_solved"] > best["returned_episode_solved"]:
            best = {"iteration": it, "returned_episode_solved": eval_stats["returned_episode_solved"],
                    "policy": f"{it}/policies/{name}"}  # fmt: skip
            write_json(run_dir / "best.json", best)
        save_pickle(state_file, {"iteration": it, "train": tuple(train_state)})
        bar.set_postfix(solve=f"{eval_stats['returned_episode_solved']:.3f}",
                        best=f"{best['returned_episode_solved']:.3f}@{best['iteration']}")  # fmt: skip
    return best
