"""Demonstrations from the best PPO experts (the benchmark's generate_data, one level; §3).

Selection, per ``seed_<s>`` of the expert run (both listings sorted, unlike the benchmark, so that the choice
does not depend on the filesystem): the checkpoints whose ``returned_episode_solved >= threshold``, one of them
drawn with ``np.random.default_rng(seed)``; if none qualifies, the best one, *masked* (left out of the
mixture). If every seed is masked (the benchmark would sample from an empty set) the masked experts are used
anyway and ``selection.json`` says so.

Rollout: each environment follows one expert of the mixture, redrawn when its episode ends; actions are
sampled from the expert's squashed Gaussian (not clipped) and the env adds its noise. Recorded per step:
the single-frame 679-dim observation before the action, the pre-noise action, and done / solved /
return_ / length (the most recently completed episode's values, held until the next completion, as the
benchmark's LogWrapper). Written as ``<run_dir>/data/worlds_l_<level>.npz``, time-major [T, E, ...] float32.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from rtc_sweep.core import kinetix_env as ke
from rtc_sweep.core import safe_pickle
from rtc_sweep.train.io import save_npz, write_json
from rtc_sweep.train.ppo import ExpertEnvState, actor_dist, expert_obs, expert_reset, expert_step, sample_action


@dataclasses.dataclass(frozen=True)
class CollectConfig:
    run_dir: str  # the expert run (seed_<s>/<update>/...); data goes to <run_dir>/data/
    level: str = "grasp_easy"
    seed: int = 0
    num_envs: int = 128
    batch_size: int = 256  # steps per environment per jitted call
    num_steps: int = 1_000_000  # transitions wanted (a lower bound: rounded up to whole batches)
    solve_rate_threshold: float = 0.65
    action_noise_std: float = 0.1  # the env's action noise


class Selection(NamedTuple):
    paths: list[Path]  # one policy file per seed, sorted by seed
    masked: list[bool]
    all_masked: bool


def select_experts(run_dir: Path, level_name: str, threshold: float, seed: int) -> Selection:
    rng = np.random.default_rng(seed)
    paths, masked = [], []
    seed_dirs = sorted((p for p in run_dir.glob("seed_*") if p.is_dir()), key=lambda p: int(p.name.split("_")[1]))
    for seed_dir in seed_dirs:
        steps = sorted((p for p in seed_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        steps = [p for p in steps if (p / "stats" / f"{level_name}.json").is_file()]
        if not steps:
            continue
        solved = [
            json.loads((p / "stats" / f"{level_name}.json").read_text())["returned_episode_solved"] for p in steps
        ]
        good = [p for p, s in zip(steps, solved, strict=True) if s >= threshold]
        if good:
            chosen, is_masked = good[int(rng.choice(len(good)))], False
        else:
            chosen, is_masked = steps[int(np.argmax(solved))], True
        paths.append(chosen / "policies" / f"{level_name}.pkl")
        masked.append(is_masked)
    if not paths:
        raise FileNotFoundError(f"{run_dir}: no expert checkpoints for {level_name}")
    return Selection(paths, masked, all(masked))


def _load_expert(path: Path) -> dict[str, Any]:
    # Through the restricted unpickler: an expert checkpoint is data (nested dicts of arrays), never code.
    return jax.tree.map(jnp.asarray, safe_pickle.load_file(path))


class CollectState(NamedTuple):
    env: ExpertEnvState  # [E, ...]
    expert: jax.Array  # [E] int32, the mixture member each env follows
    last_return: jax.Array  # [E]
    last_length: jax.Array  # [E]
    key: jax.Array


def collect(cfg: CollectConfig, progress: bool = True) -> Path:
    """Write the dataset; returns its path."""
    run_dir = Path(cfg.run_dir)
    level = ke.load_level(cfg.level)
    name = f"worlds_l_{level.name}"
    sel = select_experts(run_dir, name, cfg.solve_rate_threshold, cfg.seed)
    experts = [_load_expert(p) for p in sel.paths]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *experts)
    allowed = jnp.asarray([not m for m in sel.masked] if not sel.all_masked else [True] * len(sel.masked))
    env = ke.make_env(level.static_params, action_noise_std=cfg.action_noise_std)
    env_params = ke.env_params(level)
    E = cfg.num_envs

    def draw(key: jax.Array) -> jax.Array:
        return jax.random.choice(key, len(sel.paths), (E,), p=allowed / allowed.sum())

    @jax.jit
    def run(state: CollectState, params: Any, env_params: Any) -> tuple[CollectState, dict[str, jax.Array]]:
        step = jax.vmap(lambda k, s, a: expert_step(env, level, env_params, k, s, a, dense=False))

        def body(st: CollectState, _: None) -> Any:
            key, k_act, k_env, k_draw = jax.random.split(st.key, 4)
            obs = jax.vmap(expert_obs)(st.env)
            p = jax.tree.map(lambda x: x[st.expert], params)
            mean, std = jax.vmap(actor_dist)(p, obs)
            action = sample_action(k_act, mean, std)
            frame = st.env.frames[:, -1]
            length = st.env.episode_step + 1
            env_state, _obs, info, episode_return = step(jax.random.split(k_env, E), st.env, action)
            ret = jnp.where(info.done, episode_return, st.last_return)
            ln = jnp.where(info.done, length, st.last_length)
            expert = jnp.where(info.done, draw(k_draw), st.expert)
            rec = {
                "obs": frame,
                "action": action,
                "done": info.done,
                "solved": info.solved,
                "return_": ret,
                "length": ln,
            }
            return CollectState(env_state, expert, ret, ln, key), rec

        return jax.lax.scan(body, state, None, cfg.batch_size)

    key = jax.random.key(cfg.seed)
    k_draw, k_run = jax.random.split(key)
    s0 = expert_reset(env, level)
    state = CollectState(
        jax.tree.map(lambda x: jnp.broadcast_to(x, (E, *x.shape)), s0),
        draw(k_draw),
        jnp.zeros(E, jnp.float32),
        jnp.zeros(E, jnp.int32),
        k_run,
    )
    n_batches = -(-(cfg.num_steps // E) // cfg.batch_size)
    chunks: list[dict[str, np.ndarray]] = []
    for _ in tqdm(range(n_batches), desc="collect", unit="batch", disable=not progress):
        state, rec = run(state, stacked, env_params)
        chunks.append(jax.device_get(rec))
    data = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    out = run_dir / "data" / f"{name}.npz"
    save_npz(out, data)  # atomic
    solved = float((data["solved"] & data["done"]).sum() / max(data["done"].sum(), 1))
    write_json(
        run_dir / "data" / f"{name}.selection.json",
        {
            "experts": [str(p.relative_to(run_dir)) for p in sel.paths],
            "masked": sel.masked,
            "all_masked": sel.all_masked,
            "transitions": int(data["done"].size),
            "episodes": int(data["done"].sum()),
            "returned_episode_solved": solved,
        },
    )
    return out
