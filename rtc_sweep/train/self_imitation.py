"""Success-filtered self-imitation of a flow policy (route 2: the shipped default policies).

PPO at the benchmark's settings needs tens of millions of env steps per level, which a CPU cannot give in
hours; but a randomly initialised (perturbed) flow policy already solves a third of ``grasp_easy``'s
episodes. So, per iteration ``k``:

1. **collect**: roll out the current policy with exploration (flow noise scaled by ``noise_scale``, extra
   action noise, env noise on top) over ``collect_envs`` environments on the evaluation's timeline
   (train/rollout.py): the naive method, ``collect_execute_horizon`` actions per chunk, under the delay law
   ``delay_profile`` (none: d = 0, synchronous chunking: sample a chunk, run s of its actions, repeat), and keep
   the *solved* episodes, or only the shortest ``elite_fraction`` of them (the cross-entropy method's elite);
2. **fit**: ``grad_steps`` flow-matching BC steps on the kept episodes of the last ``replay_iterations``
   iterations (the shared trainer, ``flow_bc.make_fit``; one optimiser state for the whole run);
3. **evaluate**: the evaluation job ``rollout.measurement`` names (naive, ``delay_profile``, execute horizon
   ``execute_horizon``, no exploration, the env's noise) over ``eval_envs`` environments, first episode each. With
   the defaults (no delay, s = 1) the benchmark's solve rate; ``stats.json`` keeps its seed, and
   ``python -m rtc_sweep`` on that job, seed and the iteration's policy returns the same solve rate, bit for bit.

Iteration 0 is the starting policy: ``init_checkpoint``, or the best of ``init_candidates`` perturbed random
initialisations. The run stops after ``num_iterations`` or when the solve rate has not improved for
``patience`` iterations.

Layout of ``run_dir`` (every iteration is resumable; a killed run continues after its last full iteration):

    config.json                         the settings of the latest start (resumed_with_changes: what each resume
                                        changed, and the iteration it took effect at)
    <k>/policies/worlds_l_<level>.pkl   the policy after iteration k (benchmark layout, checkpoint.save_policy)
    <k>/stats.json                      collect / fit / eval numbers of iteration k
    <k>/data/worlds_l_<level>.npz       the kept (solved) transitions collected in iteration k
    best.json                           the best iteration so far and its solve rate
    state.pkl                           optimiser state and counters, for resuming

Datasets hold the benchmark's keys as env-major streams [N, ...] of whole solved episodes, each ending on
a ``done`` row: ``obs`` float16 (the 679-dim observation lies in [-10, 10]; half precision keeps 3
significant digits and halves the disk and memory), ``action`` float32 (the commanded action, before the
env's own noise), ``done``, ``solved`` bool, ``return_`` float32 and ``length`` int32 (the episode's values on
its done row, running values before).
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
from tqdm import tqdm

from rtc_sweep.core import network
from rtc_sweep.core.checkpoint import load_policy, save_policy
from rtc_sweep.core.policy import MODEL_PRESETS, ModelConfig, Params
from rtc_sweep.core.run_config import RunConfig
from rtc_sweep.errors import ConfigError
from rtc_sweep.train.flow_bc import (
    OptimConfig,
    Stream,
    TrainState,
    init_train_state,
    make_fit,
    make_optimizer,
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
from rtc_sweep.train.rollout import (
    Exploration,
    Rollout,
    delay_profile,
    delay_stats,
    episode_stats,
    make_rollout,
    measurement,
    rollout_seed,
    shortest_episodes,
    solved_episodes,
)
from rtc_sweep.train.rollout import transitions as rollout_transitions


@dataclasses.dataclass(frozen=True)
class SelfImitationConfig:
    run_dir: str  # where iterations, data and state go (see the module docstring)
    level: str = "grasp_easy"  # benchmark level name or path to a level JSON
    model: ModelConfig = MODEL_PRESETS["small"]
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(warmup_steps=200))
    seed: int = 0  # the whole run is a function of it
    num_iterations: int = 60  # collect-fit-evaluate iterations after iteration 0
    patience: int = 10  # stop after this many iterations without a better eval solve rate
    init_checkpoint: str | None = None  # start from this policy file instead of random candidates
    init_candidates: int = 3  # random initialisations tried for iteration 0 (the best solver starts)
    init_perturb_scale: float = 0.5  # std of the perturbation of each init param, in units of 1/sqrt(fan_in)
    collect_envs: int = 512  # environments per collection (each plays ~1-4 episodes in num_ticks ticks)
    collect_execute_horizon: int = 1  # s while collecting (1..H); 1 matches the evaluation's execution
    delay_profile: str | None = None  # collection and evaluation: a delay preset (long_tail, ...); None: d = 0
    execute_horizon: int = 1  # evaluation: s (fixed execute policy, 1..H); with no delay, 1 is the benchmark's eval
    noise_scale: float = 1.2  # collection: multiplies the flow sampler's initial noise (1 = the policy's own)
    action_noise_std: float = 0.05  # collection: extra Gaussian noise on each commanded action
    env_action_noise_std: float = 0.1  # the env's own action noise, in collection and evaluation
    num_flow_steps: int = 5  # Euler steps of the naive sampler
    replay_iterations: int = 4  # the fit sees the kept episodes of this many latest iterations
    elite_fraction: float = 1.0  # keep only this shortest fraction of each collection's solved episodes
    grad_steps: int = 600  # gradient steps per iteration
    eval_envs: int = 512  # environments (first episodes) in each iteration's evaluation
    num_ticks: int = 256  # ticks per environment in every rollout (the level's max_timesteps)


def perturbed_init(key: jax.Array, obs_dim: int, action_dim: int, model: network.ModelSpec, scale: float) -> Params:
    """A fresh policy with every parameter moved off its init (zero-init adaLN would make the net near-trivial)."""
    k_init, k_pert = jax.random.split(key)
    params = network.init(model, k_init, obs_dim, action_dim)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(k_pert, len(leaves))
    moved = [
        x + scale * jax.random.normal(k, x.shape) / np.sqrt(x.shape[0] if x.ndim == 2 else 10.0 * x.shape[0])
        for k, x in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, moved)


def check_config(cfg: SelfImitationConfig) -> None:
    """Raise ConfigError naming the first invalid rollout setting (``task.<key>``), before anything compiles."""
    delay_profile(cfg.delay_profile, "task.delay_profile")
    H = cfg.model.action_chunk_size
    for key in ("collect_execute_horizon", "execute_horizon"):
        if not 1 <= getattr(cfg, key) <= H:
            raise ConfigError(f"task.{key}", f"{getattr(cfg, key)}; allowed: 1..{H} (H)")
    for key in ("collect_envs", "eval_envs", "num_ticks"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"task.{key}", f"{getattr(cfg, key)}; allowed: >= 1")


def eval_run(cfg: SelfImitationConfig) -> RunConfig:
    """The evaluation job each iteration's solve rate is (``rollout.measurement``; ``seed`` is in stats.json)."""
    return measurement(cfg.level, cfg.model, cfg.eval_envs, cfg.num_ticks, cfg.num_flow_steps,
                       cfg.env_action_noise_std, cfg.delay_profile, cfg.execute_horizon)  # fmt: skip


def collect_run(cfg: SelfImitationConfig) -> RunConfig:
    """The job collection rolls out (with exploration): evaluation's, at ``collect_envs`` and
    ``collect_execute_horizon``."""
    return measurement(cfg.level, cfg.model, cfg.collect_envs, cfg.num_ticks, cfg.num_flow_steps,
                       cfg.env_action_noise_std, cfg.delay_profile, cfg.collect_execute_horizon)  # fmt: skip


def _eval_stats(stats: Any) -> dict[str, float]:
    solved = np.asarray(stats.solved)
    return {
        "returned_episode_solved": float(solved.mean()),
        "returned_episode_returns": float(np.asarray(stats.returns).mean()),
        "returned_episode_lengths": float(np.asarray(stats.length).mean()),
        "solved_stderr": float(solved.std() / np.sqrt(len(solved))),
    }


# Fields that change no compiled program: a resume in the same process (the tests') reuses the programs
# instead of tracing Kinetix again.
_RUN_ONLY: dict[str, Any] = {
    "run_dir": "",
    "seed": 0,
    "num_iterations": 0,
    "patience": 0,
    "init_checkpoint": None,
    "init_candidates": 0,
    "init_perturb_scale": 0.0,
    "noise_scale": 0.0,
    "action_noise_std": 0.0,
    "replay_iterations": 0,
    "elite_fraction": 1.0,
}


@functools.lru_cache(maxsize=2)
def _programs(cfg: SelfImitationConfig) -> tuple[Rollout, Rollout, Any, Any]:
    evaluate = make_rollout(eval_run(cfg))
    collect = make_rollout(collect_run(cfg), record=True)
    optimizer = make_optimizer(cfg.optim)
    fit = make_fit(cfg.model, optimizer, cfg.optim.batch_size, cfg.grad_steps)
    return evaluate, collect, optimizer, fit


def run_self_imitation(cfg: SelfImitationConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) self-imitation; returns the contents of best.json."""
    check_config(cfg)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    evaluate, collect, optimizer, fit = _programs(dataclasses.replace(cfg, **_RUN_ONLY))
    spec = evaluate.setup.spec
    obs_dim, action_dim = spec.obs_dim, spec.action_dim
    level_name = evaluate.setup.level.name
    name = f"worlds_l_{level_name}.pkl"
    data_name = f"worlds_l_{level_name}.npz"
    key = jax.random.key(cfg.seed)
    H = cfg.model.action_chunk_size
    explore = Exploration(jnp.float32(cfg.noise_scale), jnp.float32(cfg.action_noise_std))

    def run_eval(params: Params, k: jax.Array) -> tuple[dict[str, float], float]:
        t0 = time.time()
        seed = rollout_seed(k)
        stats, _ = evaluate(params, seed)
        return {**_eval_stats(stats), "seed": seed}, time.time() - t0

    done_iters = completed_steps(run_dir)
    state_file = run_dir / "state.pkl"
    resuming = bool(done_iters) and state_file.is_file()
    at = done_iters[-1] + 1 if resuming else 0
    record_settings(run_dir, dataclasses.asdict(cfg), resuming=resuming, at=("iteration", at), what="self-imitation",
                    quiet=ITERATIONS_MAY_CHANGE)  # fmt: skip
    if resuming:
        like = train_state_like(obs_dim, action_dim, cfg.model, optimizer)
        saved = load_pickle(state_file, {"iteration": 0, "train": tuple(like)})
        train_state = TrainState(*saved["train"])
        start = int(saved["iteration"]) + 1
        best = json.loads((run_dir / "best.json").read_text())
    else:
        t0 = time.time()
        candidates: list[dict[str, float]] = []
        if cfg.init_checkpoint is not None:
            params = load_policy(cfg.init_checkpoint, cfg.model, obs_dim, action_dim)
            stats, _ = run_eval(params, jax.random.fold_in(key, 0))
            candidates.append(stats)
        else:
            best_params, best_solve = None, -1.0
            for c in tqdm(range(cfg.init_candidates), desc="init candidates", disable=not progress):
                k_c = jax.random.fold_in(jax.random.fold_in(key, 0), c)
                params = perturbed_init(k_c, obs_dim, action_dim, cfg.model, cfg.init_perturb_scale)
                stats, _ = run_eval(params, jax.random.fold_in(k_c, 1))
                candidates.append(stats)
                if stats["returned_episode_solved"] > best_solve:
                    best_params, best_solve = params, stats["returned_episode_solved"]
            params = best_params
        assert params is not None
        train_state = init_train_state(params, optimizer)
        eval0 = max(candidates, key=lambda s: s["returned_episode_solved"])
        save_policy(run_dir / "0" / "policies" / name, params)
        write_json(
            run_dir / "0" / "stats.json",
            {"iteration": 0, "eval": eval0, "candidates": candidates, "wall_s": time.time() - t0},
        )
        best = {
            "iteration": 0,
            "returned_episode_solved": eval0["returned_episode_solved"],
            "policy": f"0/policies/{name}",
        }
        write_json(run_dir / "best.json", best)
        save_pickle(state_file, {"iteration": 0, "train": tuple(train_state)})
        start = 1

    replay: list[dict[str, np.ndarray]] = []
    for it in range(max(1, start - cfg.replay_iterations + 1), start):
        path = run_dir / str(it) / "data" / data_name
        if path.is_file():
            with np.load(path) as f:
                replay.append({k: f[k] for k in ("obs", "action", "done")})

    bar = tqdm(range(start, cfg.num_iterations + 1), desc="self-imitation", unit="it", disable=not progress)
    bar.set_postfix(best=f"{best['returned_episode_solved']:.3f}@{best['iteration']}")
    for it in bar:
        if it - int(best["iteration"]) > cfg.patience:
            break
        k_it = jax.random.fold_in(key, it)
        t0 = time.time()
        collected = collect.per_env(train_state.params, jax.random.fold_in(k_it, 0), explore)
        transitions = rollout_transitions(collected)
        assert transitions is not None
        solved = solved_episodes(transitions)
        collect_stats, collect_delays = episode_stats(collected), delay_stats(collected)
        del transitions, collected
        data = shortest_episodes(solved, cfg.elite_fraction)
        collect_s = time.time() - t0
        save_npz(run_dir / str(it) / "data" / data_name, data)
        replay.append({k: data[k] for k in ("obs", "action", "done")})
        replay = replay[-cfg.replay_iterations :]
        stream = Stream(*(jnp.asarray(np.concatenate([r[k] for r in replay])) for k in ("obs", "action", "done")))

        t1 = time.time()
        if stream.action.shape[0] >= H:
            train_state, metrics = fit(train_state, jax.random.fold_in(k_it, 1), stream)
            loss = np.asarray(metrics["loss"])
            fit_stats = {
                "loss_first": float(loss[: max(1, len(loss) // 10)].mean()),
                "loss_last": float(loss[-max(1, len(loss) // 10) :].mean()),
                "grad_norm": float(np.asarray(metrics["grad_norm"]).mean()),
            }
            if not np.isfinite(loss).all():
                raise FloatingPointError(f"self-imitation: non-finite loss in iteration {it}")
        else:
            fit_stats = {}
        fit_s = time.time() - t1
        del stream

        eval_stats, eval_s = run_eval(train_state.params, jax.random.fold_in(k_it, 2))
        n_done = int(data["done"].sum())
        record: dict[str, Any] = {
            "iteration": it,
            "eval": eval_stats,
            "collect": {
                **_eval_stats(collect_stats),
                **collect_delays,
                "solved_episodes": int(solved["done"].sum()),
                "kept_episodes": n_done,
                "kept_max_length": int(data["length"][data["done"]].max()) if n_done else 0,
                "kept_transitions": int(data["done"].shape[0]),
                "replay_transitions": int(sum(r["done"].shape[0] for r in replay)),
                "env_steps_per_s": cfg.collect_envs * cfg.num_ticks / collect_s,
            },
            "fit": {**fit_stats, "grad_steps": int(train_state.step)},
            "wall_s": {"collect": collect_s, "fit": fit_s, "eval": eval_s},
        }
        save_policy(run_dir / str(it) / "policies" / name, train_state.params)
        write_json(run_dir / str(it) / "stats.json", record)
        if eval_stats["returned_episode_solved"] > best["returned_episode_solved"]:
            best = {
                "iteration": it,
                "returned_episode_solved": eval_stats["returned_episode_solved"],
                "policy": f"{it}/policies/{name}",
            }
            write_json(run_dir / "best.json", best)
        save_pickle(state_file, {"iteration": it, "train": tuple(train_state)})
        bar.set_postfix(
            solve=f"{eval_stats['returned_episode_solved']:.3f}",
            best=f"{best['returned_episode_solved']:.3f}@{best['iteration']}",
            kept=n_done,
        )
    return best
