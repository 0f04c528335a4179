"""A multimodal dataset from several plans of one level: ``task=mix``.

The benchmark's demonstrations are a mixture of 8 PPO experts per level, so consecutive chunks of a policy
cloned from them can pick different solutions ("modes"), which is what makes naive chunking under delay
switch plans mid-motion. Plans from ``task=plan`` with different seeds and a random initial mean
(``task.init_mean_std > 0``) play the experts' part here: each run of the cross-entropy method converges to
its own solution.

This task reads the finished plan runs that ``task.plans`` (a glob of run folders) matches, keeps those
whose plan solves at least ``task.min_solved`` of its measuring episodes, and among them, greedily in
order of solve rate, only those at least ``task.min_distance`` away from every plan already kept, so that
two runs that found the same solution do not count as two modes. The distance between two plans is the
root-mean-square difference of their actions over the ticks and the action dimensions the level uses
(actions lie in [-1, 1]; 0 = the same plan); the distance between their demonstrations' mean trajectories
of observations is reported beside it. The kept plans' demonstrations are merged, the same number of
episodes from each (the smallest count), into ``<run_dir>/data/worlds_l_<level>.npz`` for ``task=flow``.

``<run_dir>/modes.json`` records every candidate, both distance matrices and what was kept and why.
"""

from __future__ import annotations

import dataclasses
import glob
import json
from pathlib import Path
from typing import Any

import numpy as np

from rtc_sweep.core import kinetix_env as ke
from rtc_sweep.train.io import save_npz, write_json

KEYS = ("obs", "action", "done", "solved", "return_", "length")


@dataclasses.dataclass(frozen=True)
class MixConfig:
    run_dir: str  # the merged dataset and modes.json go here
    plans: str  # glob of finished task=plan run folders of this level (each with plan.npy, stats.json, data/)
    level: str = "grasp_easy"
    min_solved: float = 0.8  # a plan must solve at least this fraction of its measuring episodes
    min_distance: float = 0.25  # RMS action distance below which two plans count as one mode
    max_modes: int = 8  # keep at most this many modes (the benchmark mixes 8 experts)


def split_episodes(data: dict[str, np.ndarray]) -> list[slice]:
    """The episodes of an env-major stream of whole episodes, each ending with a ``done`` row."""
    ends = np.flatnonzero(np.asarray(data["done"]).astype(bool)) + 1
    starts = np.concatenate([[0], ends[:-1]])
    return [slice(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def plan_distance(a: np.ndarray, b: np.ndarray, used: np.ndarray) -> float:
    """RMS difference of two plans [T, A] over the ticks and the used action dimensions."""
    T = min(len(a), len(b))
    d = (a[:T] - b[:T])[:, used]
    return float(np.sqrt(np.mean(d**2))) if d.size else 0.0


def mean_trajectory(data: dict[str, np.ndarray], episodes: list[slice], length: int) -> np.ndarray:
    """[length, O]: the mean observation per tick over the episodes (each padded with its last row)."""
    obs = np.asarray(data["obs"], np.float32)
    rows = []
    for ep in episodes:
        x = obs[ep][:length]
        rows.append(np.concatenate([x, np.repeat(x[-1:], length - len(x), axis=0)]) if len(x) < length else x)
    return np.mean(rows, axis=0)


def run_mix(cfg: MixConfig) -> dict[str, Any]:
    """Select distinct plans and merge their demonstrations; returns what modes.json holds."""
    name = ke.level_name(cfg.level)
    runs = sorted(p for p in glob.glob(cfg.plans) if (Path(p) / "stats.json").is_file())
    if not runs:
        raise FileNotFoundError(f"task.plans={cfg.plans!r} matches no finished plan run (a folder with stats.json)")
    level = ke.load_level(cfg.level)
    used = _used_dims(level)
    cands = []
    for r in runs:
        stats = json.loads((Path(r) / "stats.json").read_text())
        data_file = Path(r) / "data" / f"worlds_l_{name}.npz"
        cands.append({
            "run": r,
            "solved": float(stats["plan"]["returned_episode_solved"]),
            "plan": np.load(Path(r) / "plan.npy"),
            "data_file": data_file,
        })  # fmt: skip
    n = len(cands)
    dist = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            dist[i, j] = plan_distance(cands[i]["plan"], cands[j]["plan"], used)
    kept: list[int] = []
    why: dict[str, str] = {}
    for i in sorted(range(n), key=lambda i: -cands[i]["solved"]):
        c = cands[i]
        if c["solved"] < cfg.min_solved:
            why[c["run"]] = f"solves {c['solved']:.3f} < min_solved {cfg.min_solved}"
        elif not c["data_file"].is_file():
            why[c["run"]] = "no demonstrations"
        elif kept and min(dist[i, k] for k in kept) < cfg.min_distance:
            near = min(kept, key=lambda k: dist[i, k])
            why[c["run"]] = f"same mode as {cands[near]['run']} (distance {dist[i, near]:.3f} < {cfg.min_distance})"
        elif len(kept) >= cfg.max_modes:
            why[c["run"]] = f"max_modes {cfg.max_modes} reached"
        else:
            kept.append(i)
            why[c["run"]] = "kept"
    if not kept:
        raise RuntimeError(f"no plan of {runs} qualifies: {why}")

    datas, eps = [], []
    for i in kept:
        with np.load(cands[i]["data_file"]) as f:
            d = {k: f[k] for k in KEYS}
        datas.append(d)
        eps.append(split_episodes(d))
    per_mode = min(len(e) for e in eps)
    merged: dict[str, list[np.ndarray]] = {k: [] for k in KEYS}
    for d, e in zip(datas, eps, strict=True):
        rows = np.concatenate([np.arange(s.start, s.stop) for s in e[:per_mode]])
        for k in KEYS:
            merged[k].append(d[k][rows])
    out = {k: np.concatenate(v) for k, v in merged.items()}
    save_npz(Path(cfg.run_dir) / "data" / f"worlds_l_{name}.npz", out)

    length = int(min(np.median([s.stop - s.start for s in e]) for e in eps))
    trajs = [mean_trajectory(d, e[:per_mode], length) for d, e in zip(datas, eps, strict=True)]
    scale = np.asarray(out["obs"], np.float32).std(0) + 1e-6
    obs_dist = [[float(np.sqrt(np.mean(((a - b) / scale) ** 2))) for b in trajs] for a in trajs]
    report = {
        "candidates": [{"run": c["run"], "solved": c["solved"], "decision": why[c["run"]]} for c in cands],
        "plan_distance": dist.round(4).tolist(),
        "kept": [cands[i]["run"] for i in kept],
        "kept_plan_distance": dist[np.ix_(kept, kept)].round(4).tolist(),
        "kept_obs_distance": obs_dist,  # mean-trajectory distance, in units of each observation's std
        "episodes_per_mode": per_mode,
        "transitions": len(out["done"]),
        "min_solved": cfg.min_solved,
        "min_distance": cfg.min_distance,
    }
    write_json(Path(cfg.run_dir) / "modes.json", report)
    return report


def _used_dims(level: ke.Level) -> np.ndarray:
    from rtc_sweep.train.plan import action_dims

    return action_dims(level, ke.make_env(level.static_params).action_dim)
