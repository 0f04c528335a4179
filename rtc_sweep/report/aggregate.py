"""A sweep folder's jobs merged, summarised over seeds, tested in pairs, judged, plotted, and put on one page.

    python -m rtc_sweep.aggregate multirun/2025-06-01/12-00-00 [--detect 0.05]

Runs by itself at the end of every multirun (``AggregateCallback``, hooked in ``rtc_sweep/conf/config.yaml``) and can be
rerun at any time, e.g. on a sweep that was killed: it writes, into the sweep folder,

* ``results_all.csv``: every complete job's row with its config columns and its folder (``job``), and each
  job's 95 % Wilson interval of its solve rate (computed from the rate and ``num_evals`` where the row has none);
* ``summary.csv``: per group (the identifying columns except ``seed``, plus any config key that the sweep varied
  within them), ``n_seeds``, ``n_episodes``, the solve rate of the episodes pooled over seeds with its Wilson
  interval, and for every metric the mean, std and 95 % bootstrap CI over seeds;
* ``paired.csv``: each method against the baseline (``naive``, else the first method) on the same seeds, with
  the paired test of the solve rates, its p-value and the smallest difference it could detect (stats.py);
* ``levels.csv`` and ``levels_paired.csv``, when the rows span two levels or more (e.g. a folder holding one
  sweep per level): the pooled solve rates and the paired differences averaged over the levels, the RTC paper's
  way of reporting (``level_means``);
* ``summary.md`` and ``report.html`` (the same document; the page self-contained, figures embedded): the
  question, exp-delta's verdict, the paired differences, the summary, its average over levels, the power of the
  sweep, the figures and the command that reproduces the sweep;
* figures (PNG, figures.py): the solve rate and the jerk against what the sweep varied, the delays seen, and for
  a fixed-delay sweep the RTC paper's view (solve rate against d and s, with a row of the mean over levels).

A job counts only when its results.csv is complete and was written for the config in its ``.hydra`` folder;
every other job is listed as incomplete and never averaged in. Nothing here imports JAX: a sweep copied to a
laptop aggregates without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rtc_sweep.io import atomic_write_text, write_csv
from rtc_sweep.report import page as doc
from rtc_sweep.report import stats
from rtc_sweep.report.results import (
    CONFIG_EXTRA_COLUMNS,
    CONFIG_HASH_COLUMN,
    IDENTIFYING_COLUMNS,
    MEASUREMENT_COLUMNS,
    METRIC_COLUMNS,
    PARTIAL_DIR,
    RESULTS_FILE,
    SKIPPED_FILE,
    SOLVED,
    SOLVED_CI_COLUMNS,
    complete_results,
    config_mismatches,
    flatten_config,
    partial_envs,
)

if TYPE_CHECKING:
    import pandas as pd
    from numpy.typing import ArrayLike

    from rtc_sweep.report.figures import FigureInfo

log = logging.getLogger(__name__)

RESULTS_ALL = "results_all.csv"
SUMMARY_CSV = "summary.csv"
PAIRED_CSV = "paired.csv"
SUMMARY_MD = "summary.md"
REPORT_HTML = doc.REPORT_HTML
JOB_COLUMN = "job"
N_BOOTSTRAP = stats.N_BOOTSTRAP
# Columns that never define a group: bookkeeping, measurements of the machine or of one job, and keys that by
# construction do not change results (micro_batch only splits the same environments into calls).
NOT_CONFIG = {"seed", JOB_COLUMN, CONFIG_HASH_COLUMN, "micro_batch", *MEASUREMENT_COLUMNS}
# The summary table's columns, in reading order (every metric is in summary.csv).
HEADLINE_METRICS = (
    SOLVED,
    "returned_episode_returns",
    "d_p99",
    "p_violate",
    "starved_ticks",
    "max_ddelta_action",
)
ADAPTIVE_HORIZON = "mean_execute_horizon"  # shown with the headline metrics when a group executes adaptively
PAIRED_METRICS = (SOLVED, "returned_episode_returns", "max_delta_action", "max_ddelta_action")
BASELINE_METHOD = "naive"
POOLED = f"{SOLVED}_pooled"
LEVELS_CSV = "levels.csv"
LEVELS_PAIRED_CSV = "levels_paired.csv"
LEVEL_MEAN = f"{SOLVED}_level_mean"  # levels.csv: the mean over levels of the pooled solve rates
LEVEL_DIFF = f"{SOLVED}_diff_level_mean"  # levels_paired.csv: the mean over levels of the paired differences
# Group columns that name what the sweep compares: never merged across levels, even with one value per level.
COMPARED_COLUMNS = ("profile", "method", "execute_policy", "execute_horizon")


@dataclasses.dataclass(frozen=True)
class JobState:
    path: Path  # the job's folder
    status: str  # complete | incomplete | skipped
    reason: str = ""  # why it is incomplete or skipped
    config_keys: frozenset[str] = frozenset()  # the dotted keys of its .hydra/config.yaml (empty: unreadable)


@dataclasses.dataclass(frozen=True)
class Report:
    sweep_dir: Path
    jobs: tuple[JobState, ...]
    expected: int | None  # jobs the sweep defines (from multirun.yaml), when known
    files: tuple[Path, ...]
    power: str = ""  # the power line (also in summary.md and report.html)

    def count(self, status: str) -> int:
        return sum(j.status == status for j in self.jobs)

    @property
    def not_started(self) -> int:
        return max(0, (self.expected or 0) - len(self.jobs))

    def headline(self) -> str:
        parts = [f"{self.count('complete')} complete", f"{self.count('incomplete')} incomplete"]
        if self.count("skipped"):
            parts.append(f"{self.count('skipped')} skipped")
        if self.not_started:
            parts.append(f"{self.not_started} not started")
        total = self.expected if self.expected is not None else len(self.jobs)
        # A folder launched into more than once: multirun.yaml holds the last launch only.
        last_launch = f" (the last launch defined {total})" if len(self.jobs) > total else ""
        return f"{max(total, len(self.jobs))} jobs: " + ", ".join(parts) + last_launch


# ---------------------------------------------------------------------------------------------------------------
# Finding jobs


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job folder under the sweep (a folder with Hydra's .hydra/config.yaml), sorted."""
    return sorted(p.parent.parent for p in sweep_dir.rglob(".hydra/config.yaml") if ".submitit" not in p.parts)


def job_config(job_dir: Path) -> dict[str, Any] | None:
    """The job's composed config from its .hydra/config.yaml, as plain containers (None when unreadable)."""
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(job_dir / ".hydra" / "config.yaml"), resolve=True)
    except Exception as e:  # a config from another version of rtc_sweep: judge the results file alone
        log.debug("cannot read the config of %s: %s", job_dir, e)
        return None
    return {str(k): v for k, v in cfg.items()} if isinstance(cfg, dict) else None


def job_state(job_dir: Path) -> JobState:
    results = job_dir / RESULTS_FILE
    if (job_dir / SKIPPED_FILE).is_file() and not results.exists():
        return JobState(job_dir, "skipped", (job_dir / SKIPPED_FILE).read_text().strip())
    if not results.exists():
        reason = "no results.csv (not finished, failed or killed)"
        if done := partial_envs(job_dir):
            reason += f"; {done} environments done in {PARTIAL_DIR}/ (a rerun resumes there)"
        return JobState(job_dir, "incomplete", reason)
    rows = complete_results(results)
    if rows is None:
        return JobState(job_dir, "incomplete", "results.csv is partial or unreadable")
    cfg = job_config(job_dir)
    if cfg is not None:
        wrong = list(dict.fromkeys(m for row in rows for m in config_mismatches(row, cfg)))
        if wrong:
            return JobState(
                job_dir, "incomplete",
                "results.csv was written for another config (rerun in progress?): " + "; ".join(wrong[:3]),
            )  # fmt: skip
    return JobState(job_dir, "complete", config_keys=frozenset(flatten_config(cfg)) if cfg else frozenset())


def expected_jobs(sweep_dir: Path) -> int | None:
    """How many jobs the sweep in ``multirun.yaml`` defines, as Hydra's basic sweeper expands it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    try:
        cfg = OmegaConf.load(path)
        params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
        args = [f"{k}={v}" for k, v in params.items()] + list(OmegaConf.select(cfg, "hydra.overrides.task") or [])
        sizes: dict[str, int] = {}
        for override in OverridesParser.create().parse_overrides(args):
            # A later override of the same key replaces an earlier one (command line over preset), as in Hydra.
            n = len(list(override.sweep_string_iterator())) if override.is_sweep_override() else 1
            sizes[override.get_key_element()] = n
        return math.prod(sizes.values())
    except Exception as e:
        log.debug("cannot expand the sweep of %s: %s", path, e)
        return None


# ---------------------------------------------------------------------------------------------------------------
# Tables


def load_rows(sweep_dir: Path, jobs: Sequence[JobState]) -> pd.DataFrame:
    """Every complete job's rows, with its folder, and its Wilson interval where results.csv has none."""
    import pandas as pd

    frames = []
    for job in jobs:
        if job.status == "complete":
            frame = pd.read_csv(job.path / RESULTS_FILE)
            frame[JOB_COLUMN] = str(job.path.relative_to(sweep_dir))
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*IDENTIFYING_COLUMNS, *METRIC_COLUMNS, JOB_COLUMN])
    df = pd.concat(frames, ignore_index=True)
    low, high = SOLVED_CI_COLUMNS
    computed = [
        stats.wilson_interval(stats.solved_count(r, n), n) for r, n in zip(df[SOLVED], df["num_evals"], strict=True)
    ]
    for col, i in ((low, 0), (high, 1)):
        values = pd.Series([c[i] for c in computed], index=df.index)
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(values) if col in df.columns else values
    head = [*IDENTIFYING_COLUMNS, *METRIC_COLUMNS]
    return df[head + [c for c in df.columns if c not in head]]


def group_columns(df: pd.DataFrame, config_keys: Collection[str] | None = None) -> list[str]:
    """Identifying columns except seed, plus config columns that vary within those groups (e.g. a swept d).

    ``config_keys`` (the jobs' config keys, as in their .hydra/config.yaml) narrows the candidates to config
    columns and evaluate's config-derived extras, so that a per-job measurement that is not a metric column
    can never split a group; without it every column but the metrics and ``NOT_CONFIG`` is a candidate.
    """
    base = [c for c in IDENTIFYING_COLUMNS if c != "seed"]
    if df.empty:
        return base
    extra = []
    for col in df.columns:
        if col in base or col in NOT_CONFIG or col in METRIC_COLUMNS:
            continue
        if config_keys and col not in config_keys and col not in CONFIG_EXTRA_COLUMNS:
            continue
        if df.groupby(base, dropna=False)[col].nunique(dropna=False).max() > 1:
            extra.append(col)
    return base + extra


def bootstrap_ci(values: ArrayLike, rng: Any, n_boot: int = N_BOOTSTRAP) -> tuple[float, float]:
    """95 % percentile bootstrap CI of the mean over seeds (the point itself for one seed)."""
    return stats.bootstrap_mean_ci(values, rng, n_boot)


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of a table as dicts keyed by column name."""
    return [{str(k): v for k, v in row.items()} for row in df.to_dict("records")]


def _key_dict(groups: Sequence[str], key: Any) -> dict[str, Any]:
    return dict(zip(groups, key if isinstance(key, tuple) else (key,), strict=True))


def summarize(df: pd.DataFrame, groups: list[str]) -> pd.DataFrame:
    """One row per group: n_seeds, n_episodes, the pooled solve rate and its Wilson interval, then <metric>_mean,
    _std, _ci_low, _ci_high (bootstrap over seeds) for every metric column."""
    import numpy as np
    import pandas as pd

    # A job's own interval is not averaged over seeds: the pooled interval replaces it.
    metrics = [m for m in METRIC_COLUMNS if m in df.columns and m not in SOLVED_CI_COLUMNS]
    rng = np.random.default_rng(0)  # fixed, so that rerunning the aggregation gives the same CIs
    out = []
    for key, g in df.groupby(groups, dropna=False, sort=True):
        row: dict[str, Any] = _key_dict(groups, key)
        row["n_seeds"] = int(g["seed"].nunique())
        n = pd.to_numeric(g["num_evals"]).to_numpy(dtype=float)
        k = [stats.solved_count(r, m) for r, m in zip(g[SOLVED], n, strict=True)]
        row["n_episodes"] = int(n.sum())
        row[POOLED], row[f"{POOLED}_ci_low"], row[f"{POOLED}_ci_high"] = stats.pooled_wilson(k, n)
        for m in metrics:
            vals = pd.to_numeric(g[m], errors="coerce")
            lo, hi = bootstrap_ci(vals.to_numpy(), rng)
            row[f"{m}_mean"] = float(vals.mean())
            row[f"{m}_std"] = float(vals.std(ddof=1)) if vals.count() > 1 else math.nan
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = lo, hi
        out.append(row)
    return pd.DataFrame(out)


def verdict(summary: pd.DataFrame, groups: list[str]) -> pd.DataFrame:
    """exp-delta's pass criteria, tail_controlled against long_tail, for each method and context.

    Pass: d_p99 lower, p_violate lower (or both 0: nothing to reduce), and returned_episode_solved not lower than
    long_tail's mean minus long_tail's std over seeds. exp-delta states them for ``realtime``.
    """
    import pandas as pd

    if summary.empty or not {"long_tail", "tail_controlled"} <= set(summary["profile"]):
        return pd.DataFrame()
    context = [c for c in groups if c != "profile"]
    lt = summary[summary["profile"] == "long_tail"].set_index(context)
    tc = summary[summary["profile"] == "tail_controlled"].set_index(context)
    rows = []
    for key in lt.index.intersection(tc.index):
        a, b = lt.loc[key], tc.loc[key]
        if isinstance(a, pd.DataFrame) or isinstance(b, pd.DataFrame):
            continue  # not one group per profile: the context is ambiguous
        std = 0.0 if math.isnan(a[f"{SOLVED}_std"]) else a[f"{SOLVED}_std"]
        d_ok = b["d_p99_mean"] < a["d_p99_mean"]
        both_zero = a["p_violate_mean"] == 0 and b["p_violate_mean"] == 0
        v_ok = b["p_violate_mean"] < a["p_violate_mean"] or both_zero
        s_ok = b[f"{SOLVED}_mean"] >= a[f"{SOLVED}_mean"] - std
        row = _key_dict(context, key)
        row.update(
            d_p99_long_tail=a["d_p99_mean"],
            d_p99_tail_controlled=b["d_p99_mean"],
            d_p99_lower=bool(d_ok),
            p_violate_long_tail=a["p_violate_mean"],
            p_violate_tail_controlled=b["p_violate_mean"],
            p_violate_lower=bool(v_ok),
            p_violate_note="both 0" if both_zero else "",
            solved_long_tail=a[f"{SOLVED}_mean"],
            solved_long_tail_std=std,
            solved_tail_controlled=b[f"{SOLVED}_mean"],
            solved_not_lower=bool(s_ok),
            verdict="PASS" if d_ok and v_ok and s_ok else "FAIL",
        )
        rows.append(row)
    return pd.DataFrame(rows)


def baseline_method(df: pd.DataFrame) -> str | None:
    """``naive`` when the sweep has it, else the first method (sorted); None with fewer than two methods."""
    if df.empty or "method" not in df.columns or df["method"].nunique() < 2:
        return None
    methods = sorted(set(df["method"]), key=str)
    return BASELINE_METHOD if BASELINE_METHOD in methods else methods[0]


def paired_differences(df: pd.DataFrame, groups: list[str], baseline: str | None = None) -> pd.DataFrame:
    """Method − baseline per seed with everything else equal (common random numbers), summarised over seeds.

    For every paired metric: mean ± std of the per-seed difference and its bootstrap CI over seeds. For the
    solve rate also the paired test (``stats.paired_rate_test``): the difference of the pooled rates, its 95 %
    interval, p-value, the test used, the pooled z-test's p-value, the per-episode sd of the paired difference
    and the smallest difference the sweep could detect (``mde``, 80 % power at alpha 0.05).
    """
    import numpy as np
    import pandas as pd

    baseline = baseline or baseline_method(df)
    if baseline is None or baseline not in set(df["method"]):
        return pd.DataFrame()
    # Pair on everything that defines a group except the method, and on the seed. A method's own settings are not
    # part of the key, but those swept within it (method.max_guidance_weight=1,5) are variants: each is paired with
    # the baseline on its own, never folded with the others into one group of twice the pairs.
    variants = [c for c in groups if c.startswith("method.")]
    keys = [c for c in groups if c != "method" and c not in variants] + ["seed"]
    metrics = [m for m in PAIRED_METRICS if m in df.columns]
    base = df[df["method"] == baseline][keys + metrics]
    rng = np.random.default_rng(0)
    rows = []
    for method in sorted(set(df["method"]) - {baseline}, key=str):
        paired = df[df["method"] == method][keys + variants + metrics].merge(base, on=keys, suffixes=("", "_base"))
        if paired.empty:
            continue
        context = [k for k in keys if k != "seed"] + variants
        for key, g in paired.groupby(context, dropna=False, sort=True):
            row: dict[str, Any] = _key_dict(context, key)
            row.update(method=method, baseline=baseline, n_pairs=len(g))
            for m in metrics:
                diff = (pd.to_numeric(g[m]) - pd.to_numeric(g[f"{m}_base"])).to_numpy(dtype=float)
                lo, hi = bootstrap_ci(diff, rng)
                row[f"{m}_diff_mean"] = float(diff.mean())
                row[f"{m}_diff_std"] = float(diff.std(ddof=1)) if diff.size > 1 else math.nan
                row[f"{m}_diff_ci_low"], row[f"{m}_diff_ci_high"] = lo, hi
            episodes = int(pd.to_numeric(g["num_evals"]).min())
            k_a = [stats.solved_count(r, episodes) for r in g[SOLVED]]
            k_b = [stats.solved_count(r, episodes) for r in g[f"{SOLVED}_base"]]
            test = stats.paired_rate_test(k_a, k_b, episodes)
            row.update({f"{SOLVED}_test_{f.name}": getattr(test, f.name) for f in dataclasses.fields(test)})
            rows.append(row)
    return pd.DataFrame(rows)


@dataclasses.dataclass(frozen=True)
class Power:
    """What the sweep as run could detect, and (with ``detect``) what a given difference would need.

    Two tests: the paired t-test over seeds, with the paired variance measured (two seeds or more, and two
    methods), and the pooled z-test on the counts, which ignores the pairing (arms independent: conservative
    under common random numbers, and with few seeds often the stronger of the two).
    """

    seeds: int
    episodes: int  # per job
    sigma_paired: float  # per-episode sd of the paired difference, measured over seeds (nan: not measurable)
    sigma_independent: float  # the same with the arms independent
    source: str  # where the sds come from
    mde_paired: float  # nan without a measured paired variance
    mde_pooled: float
    detect: float | None = None
    plan: stats.Plan | None = None  # for the paired t-test (with sigma_independent when sigma_paired is nan)
    pooled_episodes: int | None = None  # episodes per method in all for the pooled z-test to detect ``detect``

    def line(self) -> str:
        design = f"With {self.seeds} seed{'s' if self.seeds != 1 else ''} × {self.episodes} episodes per job"
        if self.sigma_independent == 0 and (math.isnan(self.sigma_paired) or self.sigma_paired == 0):
            # every episode had the same outcome (all solved or none): the variance the power comes from is 0
            return (
                f"{design}, every episode had the same outcome, so the data give no variance to size a test "
                "with: no detectable difference can be stated (run more episodes, or a level the methods do not all "
                "solve or all fail)."
            )
        z = (
            f"the pooled z-test on the counts (arms independent, per-episode sd {_fmt(self.sigma_independent)}) "
            f"detects a solve-rate difference of **{_fmt(self.mde_pooled)}**"
        )
        if math.isnan(self.mde_paired):
            text = f"{design}, {z} or more with 80 % power at α = 0.05 (two-sided); {self.source}."
        else:
            text = (
                f"{design}, the paired t-test over seeds detects a solve-rate difference of "
                f"**{_fmt(self.mde_paired)}** or more with 80 % power at α = 0.05 (two-sided), from the paired "
                f"variance {self.source} (per-episode sd of the paired difference {_fmt(self.sigma_paired)}); {z}."
            )
        if self.detect is not None and self.plan is not None:
            p = self.plan
            paired = [f"{p.seeds_needed} seeds × {p.episodes} episodes"]
            if p.episodes_needed is not None and not math.isnan(self.mde_paired):
                paired.append(f"{p.seeds} seeds × {p.episodes_needed} episodes")
            if math.isnan(self.mde_paired):
                paired_text = " or ".join(paired) + " (if the pairing is no weaker than independence)"
            else:
                paired_text = " or ".join(paired)
            text += f" To detect a difference of {_fmt(self.detect)}: paired t-test {paired_text}"
            if self.pooled_episodes is not None:
                per_job = math.ceil(self.pooled_episodes / self.episodes)
                text += (
                    f"; pooled z-test {self.pooled_episodes} episodes per method in all "
                    f"(e.g. {per_job} seed{'s' if per_job != 1 else ''} × {self.episodes} episodes)"
                )
            text += "."
        return text


def power_summary(
    df: pd.DataFrame, paired: pd.DataFrame, groups: list[str], detect: float | None = None
) -> Power | None:
    """The sweep's power, from the variances of its method pairings (pooled, weighted by seeds − 1)."""
    import numpy as np
    import pandas as pd

    if df.empty:
        return None
    t = f"{SOLVED}_test_"
    sigma_paired = math.nan
    if not paired.empty and f"{t}sigma_episode" in paired.columns:
        seeds = int(np.median(paired["n_pairs"]))
        episodes = int(np.median(paired[f"{t}episodes"]))
        sigma_ind = math.sqrt(float(np.mean(paired[f"{t}sigma_independent"].to_numpy(dtype=float) ** 2)))
        measured = paired[paired[f"{t}sigma_source"] == "paired"]
        if not measured.empty:
            weights = measured["n_pairs"].to_numpy(dtype=float) - 1
            sd = measured[f"{t}sigma_episode"].to_numpy(dtype=float)
            sigma_paired = math.sqrt(float(np.average(sd**2, weights=weights)))
            source = f"measured over seeds in {len(measured)} method pairing{'s' if len(measured) != 1 else ''}"
        else:
            source = "one seed cannot measure the pairing"
    else:
        seeds = int(df.groupby(groups, dropna=False)["seed"].nunique().median())
        episodes = int(pd.to_numeric(df["num_evals"]).median())
        p = float(pd.to_numeric(df[SOLVED]).mean())
        sigma_ind = math.sqrt(2 * p * (1 - p))
        source = f"no method pairing in this sweep: for two methods at its mean solve rate {_fmt(p)}"
    mde_paired = stats.detectable_difference(sigma_paired, episodes, seeds) if seeds >= 2 else math.nan
    mde_pooled = stats.detectable_difference(sigma_ind, episodes * seeds, 1)
    plan = pooled = None
    if detect is not None:
        sigma = sigma_ind if math.isnan(sigma_paired) else sigma_paired
        if sigma > 0:
            plan = stats.plan(detect, sigma, episodes, seeds)
        if sigma_ind > 0:
            pooled = stats.pooled_z_episodes(detect, sigma_ind)
    return Power(seeds, episodes, sigma_paired, sigma_ind, source, mde_paired, mde_pooled, detect, plan, pooled)


# ---------------------------------------------------------------------------------------------------------------
# Averaged over levels (the RTC paper's way of reporting)


@dataclasses.dataclass(frozen=True)
class LevelMeans:
    """Each group's solve rate, and each paired difference, averaged over the sweep's levels (each weighs the same).

    Only a group run at every level is averaged, so every row of ``rates`` and ``paired`` spans all of ``levels``;
    the others are listed in ``dropped`` and ``dropped_pairs`` with the levels they were run at.
    """

    levels: tuple[str, ...]  # the sweep's levels, sorted
    keys: tuple[str, ...]  # what a row of ``rates`` is: the summary's groups without the level and ``bound``
    bound: tuple[str, ...]  # group columns that only differ because the level does (e.g. num_evals per level)
    rates: pd.DataFrame  # keys, n_levels, levels, n_episodes, LEVEL_MEAN and its _se, _ci_low, _ci_high
    paired: pd.DataFrame  # paired keys, method, baseline, n_levels, levels, LEVEL_DIFF and its _se, _ci_low, _ci_high
    dropped: tuple[tuple[dict[str, Any], tuple[str, ...]], ...]  # (group, its levels) not run at every level
    dropped_pairs: tuple[tuple[dict[str, Any], tuple[str, ...]], ...]


def level_bound_columns(summary: pd.DataFrame, groups: Sequence[str]) -> list[str]:
    """Group columns other than the level that take one value per level, not the same one at every level.

    group_columns never lets a per-level config key (``checkpoint``, ``level.name``) into the groups, as the
    level is part of every group; what is left is an identifying column such as ``num_evals`` when the levels
    were run with different episode counts. ``COMPARED_COLUMNS`` name what the sweep compares and are never
    merged across levels. A swept key varies within a level, so it is never bound.
    """
    if "level" not in groups or summary.empty:
        return []
    out = []
    for col in groups:
        if col == "level" or col in COMPARED_COLUMNS or col not in summary.columns:
            continue
        if summary.groupby("level")[col].nunique(dropna=False).max() == 1 and summary[col].nunique(dropna=False) > 1:
            out.append(col)
    return out


def _over_levels(
    table: pd.DataFrame, keys: list[str], levels: tuple[str, ...], value: str, variance: Callable[[Any], float],
    bounds: tuple[float, float], name: str, extra: Callable[[pd.DataFrame], dict[str, Any]],
) -> tuple[pd.DataFrame, list[tuple[dict[str, Any], tuple[str, ...]]]]:  # fmt: skip
    """Per key, the mean over levels of ``value`` with its interval (``stats.mean_over_strata``), or a drop."""
    import pandas as pd

    rows, dropped = [], []
    for key, g in table.groupby(keys, dropna=False, sort=True):
        group = _key_dict(keys, key)
        at = tuple(sorted({str(v) for v in g["level"]}))
        if at != levels:
            dropped.append((group, at))
            continue
        assert len(g) == len(levels), f"{len(g)} rows for {len(levels)} levels: {group}"
        mean, se, lo, hi = stats.mean_over_strata(
            g[value].to_numpy(dtype=float), [variance(r) for _, r in g.iterrows()], bounds
        )
        rows.append({**group, "n_levels": len(levels), "levels": ", ".join(levels), **extra(g),
                     name: mean, f"{name}_se": se, f"{name}_ci_low": lo, f"{name}_ci_high": hi})  # fmt: skip
    return pd.DataFrame(rows), dropped


def level_means(summary: pd.DataFrame, groups: list[str], paired: pd.DataFrame | None = None) -> LevelMeans | None:
    """The summary's pooled solve rates and the paired differences averaged over levels; None below two levels.

    Rate: the mean over the L levels of each level's pooled rate p_i (n_i episodes), var = sum p_i (1 - p_i) / n_i
    / L^2. Paired difference: the mean of the levels' pooled differences, var = sum se_i^2 / L^2 with the level's
    se_i = sigma_episode / sqrt(episodes x seeds) of its paired test (stats.paired_rate_test). Both with the
    normal 95 % interval, clipped to [0, 1] and [-1, 1].
    """
    import pandas as pd

    if summary.empty or "level" not in summary.columns or summary["level"].nunique() < 2:
        return None
    levels = tuple(sorted({str(v) for v in summary["level"]}))
    bound = level_bound_columns(summary, groups)
    keys = [g for g in groups if g != "level" and g not in bound]
    rates, dropped = _over_levels(
        summary, keys, levels, POOLED, lambda r: r[POOLED] * (1 - r[POOLED]) / r["n_episodes"], (0.0, 1.0),
        LEVEL_MEAN, lambda g: {"n_episodes": int(g["n_episodes"].sum())},
    )  # fmt: skip
    t = f"{SOLVED}_test_"
    pairs, dropped_pairs = pd.DataFrame(), list[tuple[dict[str, Any], tuple[str, ...]]]()
    if paired is not None and not paired.empty and "level" in paired.columns:
        pkeys = [c for c in paired.columns if c in keys] + ["method", "baseline"]
        pairs, dropped_pairs = _over_levels(
            paired, pkeys, levels, f"{t}diff",
            lambda r: r[f"{t}sigma_episode"] ** 2 / (r[f"{t}episodes"] * r[f"{t}n_seeds"]), (-1.0, 1.0),
            LEVEL_DIFF, lambda g: {"n_pairs": int(g["n_pairs"].sum())},
        )  # fmt: skip
    return LevelMeans(levels, tuple(keys), tuple(bound), rates, pairs, tuple(dropped), tuple(dropped_pairs))


# ---------------------------------------------------------------------------------------------------------------
# The document (summary.md and report.html)


def _fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return "–" if math.isnan(x) else f"{x:.{digits}f}"
    return str(x)


def _p(x: float) -> str:
    if math.isnan(x):
        return "–"
    return "< 0.001" if x < 0.001 else f"{x:.3f}"


def _stat(row: Any, m: str, suffix: str = "") -> str:
    mean, std = row[f"{m}{suffix}_mean"], row[f"{m}{suffix}_std"]
    lo, hi = row[f"{m}{suffix}_ci_low"], row[f"{m}{suffix}_ci_high"]
    return f"{_fmt(mean)} ± {_fmt(std)} [{_fmt(lo)}, {_fmt(hi)}]"


def _pooled(row: Any) -> str:
    return f"{_fmt(row[POOLED])} [{_fmt(row[f'{POOLED}_ci_low'])}, {_fmt(row[f'{POOLED}_ci_high'])}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> doc.Table:
    return doc.Table(tuple(header), tuple(tuple(_fmt(v) for v in row) for row in rows))


def _values(series: pd.Series, limit: int = 8) -> str:
    values = sorted({_fmt(v) for v in series.dropna()}, key=lambda v: (len(v), v))
    return ", ".join(values[:limit]) + (", …" if len(values) > limit else "")


def question(df: pd.DataFrame, summary: pd.DataFrame, groups: Sequence[str], command: doc.Reproduce | None) -> str:
    """What the sweep asks, in one sentence from what it ran (and the experiment preset's own words, if any)."""
    from rtc_sweep.report.figures import varied_keys

    methods = sorted(set(df["method"]), key=str)
    levels = sorted(set(df["level"]), key=str)
    profiles = sorted(set(df["profile"]), key=str)
    varied = [k for k in varied_keys(summary, groups) if k not in ("method", "level", "profile")]
    if len(methods) > 1:
        text = f"Which of the methods {', '.join(f'`{m}`' for m in methods)} keeps the solve rate"
    else:
        text = f"How well does `{methods[0]}` keep the solve rate"
    text += f" on {', '.join(f'`{v}`' for v in levels)} under the delay profile{'s' if len(profiles) > 1 else ''} "
    text += ", ".join(f"`{p}`" for p in profiles)
    if varied:
        text += ", as " + "; ".join(f"`{k}` varies ({_values(summary[k])})" for k in varied)
    n_seeds = int(df["seed"].nunique())
    text += f"? {n_seeds} seed{'s' if n_seeds != 1 else ''}, {_values(df['num_evals'])} episodes per job."
    preset = doc.experiment_question(doc.task_overrides(command))
    return text + (f" The experiment preset says: {preset}" if preset else "")


def _dropped_text(dropped: Sequence[tuple[dict[str, Any], tuple[str, ...]]], table: pd.DataFrame, what: str) -> str:
    """The groups not run at every level, each by the keys that tell it from the others (and the table's rows)."""
    import pandas as pd

    every = pd.concat([table, pd.DataFrame([g for g, _ in dropped])], ignore_index=True)
    varied = [c for c in dropped[0][0] if every[c].nunique(dropna=False) > 1]

    def text(group: dict[str, Any]) -> str:
        shown = [k for k in group if k in varied] or list(group)
        return " · ".join(f"`{group[k]}`" if k in ("method", "profile") else f"`{k}={_fmt(group[k])}`" for k in shown)

    limit = 8
    items = [f"{text(g)} (at {', '.join(at)})" for g, at in dropped[:limit]]
    more = f"; and {len(dropped) - limit} more" if len(dropped) > limit else ""
    n = len(dropped)
    head = f"Not run at every level, so not averaged ({n} {what}{'s' if n != 1 else ''}): "
    return head + "; ".join(items) + more + "."


def level_blocks(levels: LevelMeans) -> list[doc.Block]:
    """The section "Averaged over levels": the rates (levels.csv) and the paired differences (levels_paired.csv)."""
    n = len(levels.levels)
    names = ", ".join(f"`{v}`" for v in levels.levels)
    blocks: list[doc.Block] = [
        doc.Heading("Averaged over levels"),
        doc.Paragraph(
            f"The RTC paper's way of reporting: each group's solve rate pooled over seeds at each level (the table "
            f"above), then the mean over the {n} levels {names}, each level weighing the same. 95 % interval: "
            "normal, mean ± 1.96 · √(Σ p_i (1 − p_i) / n_i) / L with p_i the level's pooled rate over its n_i "
            "episodes and L the number of levels, clipped to [0, 1]; a level whose episodes all had the same outcome "
            f"adds no variance. Only groups run at every level are averaged; the table is {LEVELS_CSV}."
        ),
    ]
    if levels.bound:
        blocks.append(doc.Paragraph(
            "Averaged across " + ", ".join(f"`{c}`" for c in levels.bound) + ": it takes one value per level, "
            "so it only differs because the level does."
        ))  # fmt: skip
    keys = list(levels.keys)
    if levels.rates.empty:
        blocks.append(doc.Paragraph("No group was run at every level: nothing to average."))
    else:
        blocks.append(_table(
            [*keys, "levels", "episodes", "solved (mean over levels) [95 %]"],
            [[*(r[k] for k in keys), r["n_levels"], r["n_episodes"],
              f"{_fmt(r[LEVEL_MEAN])} [{_fmt(r[f'{LEVEL_MEAN}_ci_low'])}, {_fmt(r[f'{LEVEL_MEAN}_ci_high'])}]"]
             for _, r in levels.rates.iterrows()],
        ))  # fmt: skip
    if levels.dropped:
        blocks.append(doc.Paragraph(_dropped_text(levels.dropped, levels.rates, "group")))
    if levels.paired.empty and not levels.dropped_pairs:
        return blocks
    base = levels.paired["baseline"].iloc[0] if not levels.paired.empty else levels.dropped_pairs[0][0]["baseline"]
    blocks.append(doc.Paragraph(
        f"Paired differences method − `{base}` (the paired table above) averaged the same way: the mean over the "
        "levels of each level's difference of pooled solve rates; 95 % interval: normal, mean ± 1.96 · √(Σ se_i²) "
        "/ L, clipped to [−1, 1], with se_i = σ_i / √(episodes_i · seeds_i) the standard error of the level's "
        "paired test (σ_i the per-episode sd of the paired difference: measured over seeds, or with one seed that of "
        "independent arms, conservative under common random numbers). The normal quantile, not Student's t: with "
        f"few seeds per level the interval is a little narrow. The table is {LEVELS_PAIRED_CSV}."
    ))  # fmt: skip
    if not levels.paired.empty:
        pkeys = [c for c in levels.paired.columns if c in keys and c != "method"]
        blocks.append(_table(
            [*pkeys, "method", "levels", "n_pairs", "Δ solved (mean over levels) [95 %]"],
            [[*(r[k] for k in pkeys), r["method"], r["n_levels"], r["n_pairs"],
              f"{_fmt(r[LEVEL_DIFF])} [{_fmt(r[f'{LEVEL_DIFF}_ci_low'])}, {_fmt(r[f'{LEVEL_DIFF}_ci_high'])}]"]
             for _, r in levels.paired.iterrows()],
        ))  # fmt: skip
    if levels.dropped_pairs:
        blocks.append(doc.Paragraph(_dropped_text(levels.dropped_pairs, levels.paired, "pairing")))
    return blocks


def document(
    report: Report, df: pd.DataFrame, summary: pd.DataFrame, groups: list[str], judged: pd.DataFrame,
    paired: pd.DataFrame, power: Power | None, figs: Sequence[FigureInfo], command: doc.Reproduce | None,
    levels: LevelMeans | None = None,
) -> list[doc.Block]:  # fmt: skip
    blocks: list[doc.Block] = [doc.Heading(f"Sweep summary: {report.sweep_dir.name}", 1)]
    blocks.append(doc.Paragraph(f"{report.headline()}."))
    if not df.empty:
        blocks += [doc.Heading("Question"), doc.Paragraph(question(df, summary, groups, command))]
    if "delay_scope" in df.columns and (df["delay_scope"] == "batch").any():
        n = int((df["delay_scope"] == "batch").sum())
        blocks.append(doc.Paragraph(
            f"**delay_scope = batch** in {n} of {len(df)} rows: their delays are drawn once per run and cycle and "
            "shared by all environments of the run (exp-delta's setting), so the delay statistics of such a run "
            "rest on one delay sequence and vary between seeds, not between environments.", quote=True,
        ))  # fmt: skip

    blocks += [doc.Heading("exp-delta pass criteria: tail_controlled vs long_tail")]
    if judged.empty:
        blocks.append(
            doc.Paragraph("Not applicable: the sweep needs both delay profiles long_tail and tail_controlled.")
        )
    else:
        blocks.append(doc.Paragraph(
            "Pass: d_p99 lower, p_violate lower (or both 0), returned_episode_solved not below long_tail's mean "
            "minus one std over seeds. exp-delta's criteria are stated for `realtime`."
        ))  # fmt: skip
        context = [c for c in judged.columns if c in groups]
        blocks.append(_table(
            [*context, "d_p99 LT → TC", "p_violate LT → TC", "solved LT (± std) → TC", "verdict"],
            [
                [
                    *(r[c] for c in context),
                    f"{_fmt(r['d_p99_long_tail'])} → {_fmt(r['d_p99_tail_controlled'])} "
                    f"({'lower' if r['d_p99_lower'] else 'not lower'})",
                    f"{_fmt(r['p_violate_long_tail'])} → {_fmt(r['p_violate_tail_controlled'])} "
                    f"({r['p_violate_note'] or ('lower' if r['p_violate_lower'] else 'not lower')})",
                    f"{_fmt(r['solved_long_tail'])} (± {_fmt(r['solved_long_tail_std'])}) → "
                    f"{_fmt(r['solved_tail_controlled'])} ({'ok' if r['solved_not_lower'] else 'lower'})",
                    f"**{r['verdict']}**",
                ]
                for _, r in judged.iterrows()
            ],
        ))  # fmt: skip
        if "method" in judged.columns and "realtime" in set(judged["method"]):
            rt = judged[judged["method"] == "realtime"]["verdict"]
            blocks.append(
                doc.Paragraph(f"**exp-delta verdict (realtime): {'PASS' if (rt == 'PASS').all() else 'FAIL'}**")
            )

    blocks.append(doc.Heading("Paired method differences (common random numbers)"))
    if paired.empty:
        blocks.append(doc.Paragraph("Not applicable: the sweep needs two methods run with the same seeds."))
    else:
        base = str(paired["baseline"].iloc[0])
        t = f"{SOLVED}_test_"
        blocks.append(doc.Paragraph(
            f"Per seed, method − `{base}` with the same profile, level and seed (hence the same delay draws, initial "
            "states and flow noise): mean ± std of the paired difference over seeds [95 % bootstrap CI]. Then for "
            "the solve rate: the difference of the episodes pooled over seeds with its 95 % interval and the p-value "
            "of its test (two seeds or more: the paired t-test on the per-seed differences; one seed: the "
            "two-proportion z-test on the counts), the pooled z-test's p-value for every number of seeds (it "
            "ignores the pairing: conservative under common random numbers), and the smallest difference the test "
            "detects with 80 % power at α = 0.05 (MDE). results.csv holds rates, not per-episode outcomes, so "
            "McNemar's test is not available."
        ))  # fmt: skip
        pm = [m for m in PAIRED_METRICS if f"{m}_diff_mean" in paired.columns]
        context = [c for c in paired.columns if c in groups and c != "method"]
        first, rest = pm[:1], pm[1:]  # the solve rate first, with its test next to it
        blocks.append(_table(
            [*context, "method", "n_pairs", *(f"Δ {m}" for m in first), "Δ solved pooled [95 %]", "p (test)",
             "p (pooled z)", "MDE", *(f"Δ {m}" for m in rest)],
            [
                [
                    *(r[c] for c in context), r["method"], r["n_pairs"], *(_stat(r, m, "_diff") for m in first),
                    f"{_fmt(r[f'{t}diff'])} [{_fmt(r[f'{t}ci_low'])}, {_fmt(r[f'{t}ci_high'])}]",
                    f"{_p(r[f'{t}p_value'])} ({r[f'{t}test']})", _p(r[f"{t}p_pooled_z"]), _fmt(r[f"{t}mde"]),
                    *(_stat(r, m, "_diff") for m in rest),
                ]
                for _, r in paired.iterrows()
            ],
        ))  # fmt: skip

    metrics = [m for m in HEADLINE_METRICS if f"{m}_mean" in summary.columns]
    adaptive = "execute_policy" in summary.columns and bool((summary["execute_policy"] == "adaptive").any())
    if adaptive and f"{ADAPTIVE_HORIZON}_mean" in summary.columns:
        metrics.insert(1, ADAPTIVE_HORIZON)  # what an adaptive job executed: its execute_horizon column is s_min
    blocks += [
        doc.Heading("Results"),
        doc.Paragraph(
            "Solve rate of the episodes pooled over seeds [95 % Wilson interval], then every metric as mean ± std "
            "over seeds [95 % bootstrap CI of the mean; a single seed has none]; every metric is in summary.csv."
            + (
                f" For `execute_policy=adaptive` the execute_horizon column is its floor s_min; {ADAPTIVE_HORIZON} "
                "is the s it executed, averaged over its inference cycles."
                if adaptive
                else ""
            )
        ),
    ]
    if not summary.empty:
        blocks.append(_table(
            [*groups, "n_seeds", "episodes", "solved (pooled) [Wilson 95 %]", *metrics],
            [[*(r[g] for g in groups), r["n_seeds"], r["n_episodes"], _pooled(r), *(_stat(r, m) for m in metrics)]
             for _, r in summary.iterrows()],
        ))  # fmt: skip
    if levels is not None:
        blocks += level_blocks(levels)

    if power is not None:
        blocks += [doc.Heading("Power"), doc.Paragraph(power.line())]
        if power.detect is None:
            blocks.append(doc.Paragraph(
                f"For the seeds and episodes a given difference needs: `python -m rtc_sweep.aggregate "
                f"{report.sweep_dir} --detect 0.05`."
            ))  # fmt: skip

    if figs:
        blocks.append(doc.Heading("Figures"))
        for f in figs:
            assert f.path is not None
            blocks.append(doc.Figure(f.path, f.title))

    blocks.append(doc.Heading("Reproduce"))
    if command is None:
        blocks.append(doc.Paragraph("No multirun.yaml and no job overrides found: the command is unknown."))
    else:
        blocks += [
            doc.Paragraph(f"The sweep's command (from {command.source}):"),
            doc.Command(command.command),
            doc.Paragraph("Resume into this folder (complete jobs are skipped), then aggregate again:"),
            doc.Command(f"{command.resume}\npython -m rtc_sweep.aggregate {report.sweep_dir}"),
        ]

    bad = [j for j in report.jobs if j.status == "incomplete"]
    if bad or report.not_started:
        items = [f"`{j.path.relative_to(report.sweep_dir)}`: {j.reason}" for j in bad]
        if report.not_started:
            items.append(f"{report.not_started} jobs of the sweep have no folder yet (never started)")
        blocks += [
            doc.Heading("Incomplete jobs (not averaged in)"),
            doc.Bullets(tuple(items)),
            doc.Paragraph(
                f"Resume: rerun the sweep with `hydra.sweep.dir={report.sweep_dir}`; complete jobs are skipped."
            ),
        ]
    skipped = [j for j in report.jobs if j.status == "skipped"]
    if skipped:
        blocks.append(doc.Paragraph(
            f"{len(skipped)} jobs were skipped by design (e.g. outside the reference grid); they have no row."
        ))  # fmt: skip
    return blocks


# ---------------------------------------------------------------------------------------------------------------
# Entry points


def collect(
    sweep_dir: Path, dirs: Sequence[Path] | None = None
) -> tuple[tuple[JobState, ...], pd.DataFrame, list[str]]:
    """The sweep's jobs, the rows of the complete ones, and the columns that define a group."""
    jobs = tuple(job_state(p) for p in (job_dirs(sweep_dir) if dirs is None else dirs))
    df = load_rows(sweep_dir, jobs)
    return jobs, df, group_columns(df, frozenset().union(*(j.config_keys for j in jobs)))


def aggregate(sweep_dir: str | Path, make_figures: bool = True, detect: float | None = None) -> Report:
    """Write results_all.csv, summary.csv, paired.csv, levels*.csv (two levels or more), the figures, summary.md and
    report.html into ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no sweep folder {sweep_dir}")
    if detect is not None and not 0 < detect < 1:
        raise ValueError(f"--detect {detect}; allowed: a solve-rate difference between 0 and 1")
    dirs = job_dirs(sweep_dir)
    jobs, df, groups = collect(sweep_dir, dirs)
    report = Report(sweep_dir=sweep_dir, jobs=jobs, expected=expected_jobs(sweep_dir), files=())
    summary = summarize(df, groups) if not df.empty else df.iloc[0:0]
    judged = verdict(summary, groups)
    paired = paired_differences(df, groups)
    power = power_summary(df, paired, groups, detect)
    levels = level_means(summary, groups, paired)
    figs: list[FigureInfo] = []
    if make_figures and not df.empty:
        from rtc_sweep.report.figures import save_figures

        figs = save_figures(summary, groups, df, sweep_dir)
    command = doc.reproduce(sweep_dir, dirs)

    tables = [(RESULTS_ALL, df), (SUMMARY_CSV, summary), (PAIRED_CSV, paired)]
    if levels is not None:
        tables += [(LEVELS_CSV, levels.rates), (LEVELS_PAIRED_CSV, levels.paired)]
    else:  # a folder that spanned levels once and no longer does: its old averages would mislead
        for stale in (LEVELS_CSV, LEVELS_PAIRED_CSV):
            (sweep_dir / stale).unlink(missing_ok=True)
    for path, table in tables:
        write_csv(sweep_dir / path, _records(table), [str(c) for c in table.columns])
    blocks = document(report, df, summary, groups, judged, paired, power, figs, command, levels)
    atomic_write_text(sweep_dir / SUMMARY_MD, doc.markdown(blocks))
    atomic_write_text(sweep_dir / REPORT_HTML, doc.html_page(f"Sweep {sweep_dir.name}", blocks))
    files = (
        *(sweep_dir / path for path, _ in tables), sweep_dir / SUMMARY_MD, sweep_dir / REPORT_HTML,
        *(f.path for f in figs if f.path is not None),
    )  # fmt: skip
    return dataclasses.replace(report, files=files, power=power.line() if power else "")


class AggregateCallback(Callback):
    """Aggregates every multirun's sweep folder when the sweep ends (hooked in rtc_sweep/conf/config.yaml)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            report = aggregate(sweep_dir)
        except Exception:
            # The jobs' results are safe on disk; a failed summary must not turn a finished sweep into an error.
            log.exception("aggregating %s failed; retry with: python -m rtc_sweep.aggregate %s", sweep_dir, sweep_dir)
            return
        log.info("sweep %s: %s; report: %s", sweep_dir, report.headline(), sweep_dir / REPORT_HTML)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rtc_sweep.aggregate", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder (hydra.sweep.dir), e.g. multirun/<date>/<time>")
    parser.add_argument("--no-figures", action="store_true", help="write the tables only")
    parser.add_argument(
        "--detect", type=float, metavar="DIFF",
        help="a solve-rate difference (e.g. 0.05): say how many seeds x episodes the paired test needs to detect "
        "it with 80 %% power at alpha 0.05, from the paired variance this sweep measured",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.detect is not None and not 0 < args.detect < 1:
        parser.error(f"--detect {args.detect}: allowed: a solve-rate difference between 0 and 1 (e.g. 0.05)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = aggregate(args.sweep_dir, make_figures=not args.no_figures, detect=args.detect)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.sweep_dir}: {report.headline()}")
    if report.power:
        print(f"  power: {report.power.replace('**', '')}")
    for path in report.files:
        print(f"  wrote {path}")
    for job in report.jobs:
        if job.status == "incomplete":
            print(f"  incomplete: {job.path.relative_to(args.sweep_dir)}: {job.reason}")
    return 0 if report.count("complete") else 1


if __name__ == "__main__":
    sys.exit(main())
