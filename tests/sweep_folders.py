"""Sweep folders built by hand, as a sweep leaves them (real configs, made-up metrics): no Kinetix, no compile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from rtc_sweep.io import write_csv
from rtc_sweep.report.results import IDENTIFYING_COLUMNS, METRIC_COLUMNS, RESULTS_FILE
from rtc_sweep.report.stats import solved_count, wilson_interval
from rtc_sweep.sweep.app import results_row
from rtc_sweep.sweep.config import config_hash, to_job_config

CONF = Path(__file__).resolve().parents[1] / "rtc_sweep" / "conf"


def compose_config(overrides: list[str]) -> DictConfig:
    """The job's config as the app composes it (needs ``config.register_configs()`` first)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=["checkpoint=random", *overrides])


def make_job(
    sweep: Path, overrides: list[str], results: bool = True, extras: dict[str, Any] | None = None, **metrics: float
) -> Path:
    """A job folder: .hydra/config.yaml and overrides.yaml, and results.csv with the given metrics (others 0) and
    ``extras``, columns evaluate adds (``model``: the preset's name)."""
    cfg = compose_config(overrides)
    job = to_job_config(cfg)
    folder = sweep / ",".join(overrides)
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), folder / ".hydra" / "overrides.yaml")
    if results:
        run = job.run
        row: dict[str, Any] = dict.fromkeys(METRIC_COLUMNS, 0.0)
        solved = metrics.get("returned_episode_solved", 0.0)
        low, high = wilson_interval(solved_count(solved, run.num_evals), run.num_evals)
        row.update(returned_episode_solved_ci_low=low, returned_episode_solved_ci_high=high)
        # As evaluate writes it: an adaptive policy's execute_horizon column is its s_min.
        s = run.execute.execute_horizon if run.execute.mode != "adaptive" else run.execute.s_min
        row.update(
            profile=run.delay.name, method=run.method.name, execute_policy=run.execute.mode, seed=run.seed,
            level=run.level, execute_horizon=s, num_evals=run.num_evals, **metrics,
        )  # fmt: skip
        out, columns = results_row({c: row[c] for c in (*IDENTIFYING_COLUMNS, *METRIC_COLUMNS)}, job,
                                   config_hash(run))  # fmt: skip
        out.update(extras or {})
        write_csv(folder / RESULTS_FILE, [out], [*columns, *(c for c in extras or {} if c not in columns)])
    return folder
