"""The results contract: what a job's results.csv holds, when it is complete, and which config it was written for.

Pure Python (the standard library and ``rtc_sweep.io``): the writer (the app, after ``evaluate``) and every reader
(resume, ``aggregate``, the report) share these names, and reading a sweep never imports JAX.

A job folder holds ``results.csv`` (one row: the identifying columns, the metrics, evaluate's extras, then the
config columns, which are the job's config flattened to the dotted keys users type, and ``config_hash``) or
``skipped.txt`` (a job skipped by design, with the reason).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rtc_sweep.io import read_csv

RESULTS_FILE = "results.csv"
SKIPPED_FILE = "skipped.txt"
CONFIG_HASH_COLUMN = "config_hash"

# What a row is about: a group in the summary is these columns except seed (plus any config key that varies).
IDENTIFYING_COLUMNS = ("profile", "method", "execute_policy", "seed", "level", "execute_horizon", "num_evals")
SOLVED = "returned_episode_solved"
# The job's 95 % Wilson interval of the solve rate over its num_evals episodes (stats.wilson_interval).
SOLVED_CI_COLUMNS = (f"{SOLVED}_ci_low", f"{SOLVED}_ci_high")
METRIC_COLUMNS = (
    SOLVED,
    *SOLVED_CI_COLUMNS,
    "returned_episode_returns",
    "returned_episode_lengths",
    "d_mean",
    "d_p50",
    "d_p95",
    "d_p99",
    "d_max",
    "p_violate",
    "p_late",
    "p_underestimate",
    "p_abandoned",
    "starved_ticks",
    "mean_execute_horizon",
    "mean_cycle_length",
    "max_delta_action",
    "max_ddelta_action",
    "nfe_per_chunk",
)
# Metric columns a complete row may lack: rows written before they existed stay complete (a resumed sweep keeps
# them), and readers compute the interval from the rate and num_evals.
OPTIONAL_COLUMNS = (*SOLVED_CI_COLUMNS, "p_abandoned")
# delay_profile=measured: the timed sampler calls (ms, p50 and p99 after the warm-up; the first warm-up call),
# kept in the job folder as LATENCY_FILE. Only measured jobs have them.
LATENCY_COLUMNS = ("latency_ms_p50", "latency_ms_p99", "latency_ms_warmup")
LATENCY_FILE = "latency_ms.csv"
# A job's finished micro-batches while it runs (one .npz per batch of environments), so that a job killed midway
# resumes at its next batch; removed once results.csv is written.
PARTIAL_DIR = "partial"
# Per-job measurements of the machine: they differ between jobs of one group, so they never define a group.
# resumed_envs: environments read back from PARTIAL_DIR rather than run by the process that wrote the row.
MEASUREMENT_COLUMNS = ("wall_s", "env_steps_per_s", "resumed_envs", *LATENCY_COLUMNS)
# evaluate's extras that restate the config in a reader's words (each has a config column twin): they may name a
# group. Every other non-metric column that is not a config key is a measurement.
CONFIG_EXTRA_COLUMNS = ("delay_scope", "delay_mode", "estimator", "starvation", "model", "checkpoint")
# evaluate's extras that show a config value in a reader's form rather than the value itself.
DISPLAY_VALUES: dict[str, tuple[tuple[Any, str], ...]] = {"checkpoint": ((None, "shipped"),)}


def required_columns() -> tuple[str, ...]:
    return tuple(c for c in (*IDENTIFYING_COLUMNS, *METRIC_COLUMNS) if c not in OPTIONAL_COLUMNS)


def partial_file_name(start: int, stop: int) -> str:
    """The kept micro-batch of environments ``start .. stop - 1`` (under ``PARTIAL_DIR/<fingerprint>/``)."""
    return f"envs_{start:07d}-{stop:07d}.npz"


def partial_envs(job_dir: Path) -> int:
    """Environments an unfinished job has kept in its ``PARTIAL_DIR``, from the file names alone (no JAX)."""
    done = 0
    for path in (job_dir / PARTIAL_DIR).glob("*/envs_*-*.npz"):
        start, _, stop = path.stem.removeprefix("envs_").partition("-")
        if start.isdigit() and stop.isdigit():
            done += max(int(stop) - int(start), 0)
    return done


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, str]] | None:
    """The rows of a results.csv as strings, or None when it is missing or unreadable."""
    return read_csv(path)


def complete_results(path: str | os.PathLike[str], config_hash: str | None = None) -> list[dict[str, str]] | None:
    """The rows of a job's results.csv when it is complete, else None.

    Complete: it parses, holds at least one row, every identifying and metric column (``OPTIONAL_COLUMNS`` aside)
    is present, the identifying columns and ``returned_episode_solved`` are filled and it parses as a finite
    number, and (when ``config_hash`` is given) it was written for that config.
    """
    rows = read_rows(path)
    if not rows:
        return None
    required = required_columns()
    for row in rows:
        if any(col not in row or row[col] is None for col in required):
            return None
        if any(row[col] == "" for col in (*IDENTIFYING_COLUMNS, SOLVED)):
            return None
        try:
            if not math.isfinite(float(row[SOLVED])):
                return None
        except ValueError:
            return None
        if config_hash is not None and row.get(CONFIG_HASH_COLUMN) != config_hash:
            return None
    return rows


def hash_config_columns(columns: Mapping[str, Any]) -> str:
    """A short fingerprint of a job's config columns (``config.config_columns(run)``): the ``config_hash`` cell."""
    text = json.dumps(dict(columns), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def flatten_config(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A composed config (plain containers, e.g. a loaded .hydra/config.yaml) as dotted keys, Hydra's own left out."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        if not prefix and key == "hydra":
            continue
        if isinstance(value, Mapping):
            out.update(flatten_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_mismatches(row: Mapping[str, str], cfg: Mapping[str, Any]) -> list[str]:
    """The config keys on which a results row (strings, as read) disagrees with a job's composed config.

    Compares every config key the two share: what the row says it was run with against what the job's folder
    says it should be run with (a rerun with a new config leaves the old row until it finishes). Needs no
    runtime config objects, so no JAX. Keys only one side knows (a newer or older version of rtc_sweep) are not
    compared. Each mismatch reads ``key: <row> in results.csv, <config> in the config``.
    """
    out = []
    for key, value in flatten_config(cfg).items():
        cell = row.get(key)
        if cell is None or _same(cell, value, DISPLAY_VALUES.get(key, ())):
            continue
        out.append(f"{key}: {cell or 'empty'} in results.csv, {value} in the config")
    return out


def _same(cell: str, value: Any, display: tuple[tuple[Any, str], ...]) -> bool:
    if any(value == shown_for and cell == shown for shown_for, shown in display):
        return True
    if value is None:
        return cell == ""
    if isinstance(value, bool):
        return cell.lower() == str(value).lower()
    if isinstance(value, int | float):
        return _close(cell, value)
    if isinstance(value, list | tuple):
        try:
            parsed = json.loads(cell)
        except ValueError:
            return False
        return (
            isinstance(parsed, list)
            and len(parsed) == len(value)
            and all(_equal(p, v) for p, v in zip(parsed, value, strict=True))
        )
    text = str(value)
    return cell == text or os.path.expanduser(cell) == os.path.expanduser(text)


def _close(cell: str, value: float) -> bool:
    try:
        x = float(cell)
    except ValueError:
        return False
    return _equal(x, value)


def _equal(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return a == b or math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-12)
    return bool(a == b)
