"""A sweep folder's jobs merged, summarised over seeds, judged against exp-delta's criteria, and plotted.

    python -m rtc_sweep.aggregate multirun/2025-06-01/12-00-00

Runs by itself at the end of every multirun (``AggregateCallback``, hooked in ``conf/config.yaml``) and can be
rerun at any time, e.g. on a sweep that was killed: it writes, into the sweep folder,

* ``results_all.csv``: every complete job's row with its config columns and its folder (``job``);
* ``summary.csv`` / ``summary.md``: per group (the identifying columns except ``seed``, plus any config key that
  the sweep varied within them), mean, std and a 95 % bootstrap CI over seeds, and ``n_seeds``;
  ``summary.md`` adds exp-delta's pass criteria as a verdict table and paired method differences;
* figures (PNG): success and jerk by profile and method, the delay law of each profile, and for a fixed-delay
  sweep success against the delay as in the RTC paper.

A job counts only when its results.csv is complete and was written for the config in its ``.hydra`` folder;
every other job is listed as incomplete and never averaged in.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rtc_sweep.io import CONFIG_HASH_COLUMN, RESULTS_FILE, SKIPPED_FILE, atomic_path, atomic_write_text, write_csv

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

RESULTS_ALL = "results_all.csv"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
JOB_COLUMN = "job"
N_BOOTSTRAP = 2000
# Columns that never define a group: bookkeeping, measurements of the machine, and keys that by construction do not
# change results (micro_batch only splits the same environments into calls).
NOT_CONFIG = {"seed", JOB_COLUMN, CONFIG_HASH_COLUMN, "wall_s", "env_steps_per_s", "micro_batch"}
# The summary table's columns, in reading order (every metric is in summary.csv).
HEADLINE_METRICS = (
    "returned_episode_solved",
    "returned_episode_returns",
    "d_p99",
    "p_violate",
    "starved_ticks",
    "max_ddelta_action",
)
PAIRED_METRICS = ("returned_episode_solved", "returned_episode_returns", "max_delta_action", "max_ddelta_action")
BASELINE_METHOD = "naive"


@dataclasses.dataclass(frozen=True)
class JobState:
    path: Path  # the job's folder
    status: str  # complete | incomplete | skipped
    reason: str = ""  # why it is incomplete or skipped


@dataclasses.dataclass(frozen=True)
class Report:
    sweep_dir: Path
    jobs: tuple[JobState, ...]
    expected: int | None  # jobs the sweep defines (from multirun.yaml), when known
    files: tuple[Path, ...]

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
        return f"{total} jobs: " + ", ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# Finding jobs


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job folder under the sweep (a folder with Hydra's .hydra/config.yaml), sorted."""
    return sorted(p.parent.parent for p in sweep_dir.rglob(".hydra/config.yaml") if ".submitit" not in p.parts)


def expected_config_hash(job_dir: Path) -> str | None:
    """The config hash the job's results must carry, from its .hydra/config.yaml (None when unreadable)."""
    from rtc_sweep.config import config_hash, to_job_config

    try:
        cfg = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
        assert isinstance(cfg, DictConfig)
        return config_hash(to_job_config(cfg).run)
    except Exception as e:  # a config from another version of rtc_sweep: judge the results file alone
        log.debug("cannot read the config of %s: %s", job_dir, e)
        return None


def job_state(job_dir: Path) -> JobState:
    from rtc_sweep.io import complete_results

    results = job_dir / RESULTS_FILE
    if (job_dir / SKIPPED_FILE).is_file() and not results.exists():
        return JobState(job_dir, "skipped", (job_dir / SKIPPED_FILE).read_text().strip())
    if not results.exists():
        return JobState(job_dir, "incomplete", "no results.csv (not finished, failed or killed)")
    if complete_results(results) is None:
        return JobState(job_dir, "incomplete", "results.csv is partial or unreadable")
    digest = expected_config_hash(job_dir)
    if digest is not None and complete_results(results, digest) is None:
        return JobState(job_dir, "incomplete", "results.csv was written for another config (rerun in progress?)")
    return JobState(job_dir, "complete")


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
    import pandas as pd

    from rtc_sweep.evaluate import IDENTIFYING_COLUMNS, METRIC_COLUMNS

    frames = []
    for job in jobs:
        if job.status == "complete":
            frame = pd.read_csv(job.path / RESULTS_FILE)
            frame[JOB_COLUMN] = str(job.path.relative_to(sweep_dir))
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*IDENTIFYING_COLUMNS, *METRIC_COLUMNS, JOB_COLUMN])
    df = pd.concat(frames, ignore_index=True)
    head = [*IDENTIFYING_COLUMNS, *METRIC_COLUMNS]
    return df[head + [c for c in df.columns if c not in head]]


def group_columns(df: pd.DataFrame) -> list[str]:
    """Identifying columns except seed, plus config columns that vary within those groups (e.g. a swept d)."""
    from rtc_sweep.evaluate import IDENTIFYING_COLUMNS, METRIC_COLUMNS

    base = [c for c in IDENTIFYING_COLUMNS if c != "seed"]
    if df.empty:
        return base
    extra = []
    for col in df.columns:
        if col in base or col in NOT_CONFIG or col in METRIC_COLUMNS:
            continue
        if df.groupby(base, dropna=False)[col].nunique(dropna=False).max() > 1:
            extra.append(col)
    return base + extra


def bootstrap_ci(values: Sequence[float], rng: Any, n_boot: int = N_BOOTSTRAP) -> tuple[float, float]:
    """95 % percentile bootstrap CI of the mean over seeds (the point itself for one seed)."""
    import numpy as np

    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), float(x[0])
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def summarize(df: pd.DataFrame, groups: list[str]) -> pd.DataFrame:
    """One row per group: n_seeds, then <metric>_mean, _std, _ci_low, _ci_high for every metric column."""
    import numpy as np
    import pandas as pd

    from rtc_sweep.evaluate import METRIC_COLUMNS

    metrics = [m for m in METRIC_COLUMNS if m in df.columns]
    rng = np.random.default_rng(0)  # fixed, so that rerunning the aggregation gives the same CIs
    out = []
    for key, g in df.groupby(groups, dropna=False, sort=True):
        row: dict[str, Any] = dict(zip(groups, key if isinstance(key, tuple) else (key,), strict=True))
        row["n_seeds"] = int(g["seed"].nunique())
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
        std = 0.0 if math.isnan(a["returned_episode_solved_std"]) else a["returned_episode_solved_std"]
        d_ok = b["d_p99_mean"] < a["d_p99_mean"]
        both_zero = a["p_violate_mean"] == 0 and b["p_violate_mean"] == 0
        v_ok = b["p_violate_mean"] < a["p_violate_mean"] or both_zero
        s_ok = b["returned_episode_solved_mean"] >= a["returned_episode_solved_mean"] - std
        row = dict(zip(context, key if isinstance(key, tuple) else (key,), strict=True))
        row.update(
            d_p99_long_tail=a["d_p99_mean"],
            d_p99_tail_controlled=b["d_p99_mean"],
            d_p99_lower=bool(d_ok),
            p_violate_long_tail=a["p_violate_mean"],
            p_violate_tail_controlled=b["p_violate_mean"],
            p_violate_lower=bool(v_ok),
            p_violate_note="both 0" if both_zero else "",
            solved_long_tail=a["returned_episode_solved_mean"],
            solved_long_tail_std=std,
            solved_tail_controlled=b["returned_episode_solved_mean"],
            solved_not_lower=bool(s_ok),
            verdict="PASS" if d_ok and v_ok and s_ok else "FAIL",
        )
        rows.append(row)
    return pd.DataFrame(rows)


def paired_differences(df: pd.DataFrame, groups: list[str], baseline: str = BASELINE_METHOD) -> pd.DataFrame:
    """Method − baseline per seed with everything else equal (common random numbers), summarised over seeds."""
    import numpy as np
    import pandas as pd

    if df.empty or baseline not in set(df["method"]) or df["method"].nunique() < 2:
        return pd.DataFrame()
    # Pair on everything that defines a group except the method, and on the seed; method-specific settings
    # (e.g. method.name, nfe_per_chunk) must not be part of the key.
    keys = [c for c in groups if c != "method" and not c.startswith("method.")] + ["seed"]
    metrics = [m for m in PAIRED_METRICS if m in df.columns]
    base = df[df["method"] == baseline][keys + metrics]
    rng = np.random.default_rng(0)
    rows = []
    for method in sorted(set(df["method"]) - {baseline}):
        paired = df[df["method"] == method][keys + metrics].merge(base, on=keys, suffixes=("", "_base"))
        if paired.empty:
            continue
        context = [k for k in keys if k != "seed"]
        for key, g in paired.groupby(context, dropna=False, sort=True):
            row: dict[str, Any] = dict(zip(context, key if isinstance(key, tuple) else (key,), strict=True))
            row.update(method=method, baseline=baseline, n_pairs=len(g))
            for m in metrics:
                diff = (pd.to_numeric(g[m]) - pd.to_numeric(g[f"{m}_base"])).to_numpy(dtype=float)
                lo, hi = bootstrap_ci(diff, rng)
                row[f"{m}_diff_mean"] = float(diff.mean())
                row[f"{m}_diff_std"] = float(diff.std(ddof=1)) if diff.size > 1 else math.nan
                row[f"{m}_diff_ci_low"], row[f"{m}_diff_ci_high"] = lo, hi
            rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------------
# Figures


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    return path


def _by_profile(df: pd.DataFrame, metric: str, ylabel: str, path: Path) -> Path | None:
    import matplotlib.pyplot as plt
    import seaborn as sns

    if df.empty or metric not in df.columns:
        return None
    col = "level" if df["level"].nunique() > 1 else None
    grid = sns.catplot(
        data=df, x="profile", y=metric, hue="method", col=col, kind="bar", errorbar="sd", height=3.5, aspect=1.3
    )
    grid.set_axis_labels("delay profile", ylabel)
    grid.figure.suptitle(f"{ylabel} (mean ± std over seeds)", y=1.03)
    out = _save(grid.figure, path)
    plt.close(grid.figure)
    return out


def delay_profile_from_row(row: pd.Series) -> Any:
    """The DelayProfile a results row was run with, from its ``delay_profile.*`` config columns."""
    import json

    from rtc_sweep.delays import DelayProfile

    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(DelayProfile):
        value = row[f"delay_profile.{f.name}"]
        if isinstance(value, float) and math.isnan(value):
            value = None
        elif f.name in ("base_delays", "base_probs", "trace_ms") and isinstance(value, str):
            value = tuple(json.loads(value))
        elif f.name in ("fixed_delay", "d_spike", "tail_cap") and value is not None:
            value = int(value)
        kwargs[f.name] = value
    return DelayProfile(**kwargs)


def _delay_laws(df: pd.DataFrame, path: Path) -> Path | None:
    """The law of one draw per profile (delays.law), or the measured quantiles when the config is not in the rows."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    if df.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    try:
        from rtc_sweep.delays import law

        max_delay = int(max(8, pd.to_numeric(df["d_max"]).max()))
        laws = []
        for profile, g in df.groupby("profile", sort=True):
            pmf = law(delay_profile_from_row(g.iloc[0]), max_delay)
            laws += [{"profile": profile, "delay (ticks)": d, "probability": p} for d, p in enumerate(pmf)]
        sns.barplot(data=pd.DataFrame(laws), x="delay (ticks)", y="probability", hue="profile", ax=ax)
        ax.set_yscale("log")
        ax.set_title("law of one delay draw, per profile (log scale)")
    except (KeyError, ValueError, TypeError) as e:
        log.info("delay laws not computable from the rows (%s); plotting the measured quantiles", e)
        quantiles = df.melt(id_vars=["profile"], value_vars=["d_p50", "d_p95", "d_p99", "d_max"], var_name="statistic")
        sns.pointplot(data=quantiles, x="statistic", y="value", hue="profile", errorbar="sd", ax=ax)
        ax.set_ylabel("delay (ticks)")
        ax.set_title("measured delay quantiles, per profile")
    out = _save(fig, path)
    plt.close(fig)
    return out


def _fixed_delay(df: pd.DataFrame, path: Path) -> Path | None:
    """The RTC paper's view: success against the delay d (at s = max(d, 1)) and against s (at d = 1)."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    col, mode = "delay_profile.fixed_delay", "delay_profile.mode"
    if df.empty or col not in df.columns or mode not in df.columns:
        return None
    fixed = df[df[mode] == "fixed"].copy()
    if fixed.empty or fixed[col].nunique() < 2:
        return None
    fixed["d"] = pd.to_numeric(fixed[col]).astype(int)
    fixed["s"] = pd.to_numeric(fixed["execute_horizon"]).astype(int)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    at_min_s = fixed[fixed["s"] == fixed["d"].clip(lower=1)]
    sns.lineplot(data=at_min_s, x="d", y="returned_episode_solved", hue="method", marker="o", errorbar="sd", ax=left)
    left.set_title("solve rate vs inference delay d (s = max(d, 1))")
    left.set_xlabel("d (ticks)")
    at_d1 = fixed[fixed["d"] == 1]
    if not at_d1.empty:
        sns.lineplot(data=at_d1, x="s", y="returned_episode_solved", hue="method", marker="o", errorbar="sd", ax=right)
    right.set_title("solve rate vs execute horizon s (d = 1)")
    right.set_xlabel("s (actions)")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    out = _save(fig, path)
    plt.close(fig)
    return out


def figures(df: pd.DataFrame, sweep_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    # Tick labels such as "0".."8" make matplotlib log at INFO, once per figure, that they look numeric.
    logging.getLogger("matplotlib.category").setLevel(logging.WARNING)
    made = [
        _by_profile(df, "returned_episode_solved", "returned_episode_solved", sweep_dir / "solved_by_profile.png"),
        _by_profile(df, "max_ddelta_action", "jerk (max_ddelta_action)", sweep_dir / "jerk_by_profile.png"),
        _delay_laws(df, sweep_dir / "delay_distribution.png"),
        _fixed_delay(df, sweep_dir / "fixed_delay_solved.png"),
    ]
    return [p for p in made if p is not None]


# ---------------------------------------------------------------------------------------------------------------
# summary.md


def _fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return "–" if math.isnan(x) else f"{x:.{digits}f}"
    return str(x)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _stat(row: Any, m: str, suffix: str = "") -> str:
    mean, std = row[f"{m}{suffix}_mean"], row[f"{m}{suffix}_std"]
    lo, hi = row[f"{m}{suffix}_ci_low"], row[f"{m}{suffix}_ci_high"]
    return f"{_fmt(mean)} ± {_fmt(std)} [{_fmt(lo)}, {_fmt(hi)}]"


def summary_markdown(
    report: Report, df: pd.DataFrame, summary: pd.DataFrame, groups: list[str], judged: pd.DataFrame,
    paired: pd.DataFrame, figs: Sequence[Path],
) -> str:  # fmt: skip
    md = [f"# Sweep summary: {report.sweep_dir.name}", "", f"{report.headline()}.", ""]
    if "delay_scope" in df.columns and (df["delay_scope"] == "batch").any():
        n = int((df["delay_scope"] == "batch").sum())
        md += [
            f"> **delay_scope = batch** in {n} of {len(df)} rows: their delays are drawn once per run and cycle and "
            "shared by all environments of the run (exp-delta's setting), so the delay statistics of such a run "
            "rest on one delay sequence and vary between seeds, not between environments.",
            "",
        ]
    metrics = [m for m in HEADLINE_METRICS if f"{m}_mean" in summary.columns]
    md += [
        "## Results",
        "",
        "Mean ± std over seeds [95 % bootstrap CI of the mean]; every metric is in summary.csv.",
        "",
    ]
    md += _table(
        [*groups, "n_seeds", *metrics],
        [[*(r[g] for g in groups), r["n_seeds"], *(_stat(r, m) for m in metrics)] for _, r in summary.iterrows()],
    )
    md += ["", "## exp-delta pass criteria: tail_controlled vs long_tail", ""]
    if judged.empty:
        md += ["Not applicable: the sweep needs both delay profiles long_tail and tail_controlled.", ""]
    else:
        md += [
            "Pass: d_p99 lower, p_violate lower (or both 0), returned_episode_solved not below long_tail's mean "
            "minus one std over seeds. exp-delta's criteria are stated for `realtime`.",
            "",
        ]
        context = [c for c in judged.columns if c in groups]
        md += _table(
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
        )
        if "method" in judged.columns and "realtime" in set(judged["method"]):
            rt = judged[judged["method"] == "realtime"]["verdict"]
            md += ["", f"**exp-delta verdict (realtime): {'PASS' if (rt == 'PASS').all() else 'FAIL'}**"]
        md += [""]
    md += ["## Paired method differences (common random numbers)", ""]
    if paired.empty:
        md += [f"Not applicable: the sweep needs `{BASELINE_METHOD}` and another method with the same seeds.", ""]
    else:
        md += [
            f"Per seed, method − {BASELINE_METHOD} with the same profile, level and seed (hence the same delay draws, "
            "initial states and flow noise); mean ± std of the paired difference [95 % bootstrap CI].",
            "",
        ]
        pm = [m for m in PAIRED_METRICS if f"{m}_diff_mean" in paired.columns]
        context = [c for c in paired.columns if c in groups and c != "method"]
        md += _table(
            [*context, "method", "n_pairs", *(f"Δ {m}" for m in pm)],
            [[*(r[c] for c in context), r["method"], r["n_pairs"], *(_stat(r, m, "_diff") for m in pm)]
             for _, r in paired.iterrows()],
        )  # fmt: skip
        md += [""]
    bad = [j for j in report.jobs if j.status == "incomplete"]
    if bad or report.not_started:
        md += ["## Incomplete jobs (not averaged in)", ""]
        md += [f"- `{j.path.relative_to(report.sweep_dir)}`: {j.reason}" for j in bad]
        if report.not_started:
            md += [f"- {report.not_started} jobs of the sweep have no folder yet (never started)"]
        md += ["", f"Resume: rerun the sweep with `hydra.sweep.dir={report.sweep_dir}`; complete jobs are skipped.", ""]
    skipped = [j for j in report.jobs if j.status == "skipped"]
    if skipped:
        md += [f"{len(skipped)} jobs were skipped by design (e.g. outside the reference grid); they have no row.", ""]
    if figs:
        md += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figs] + [""]
    return "\n".join(md)


# ---------------------------------------------------------------------------------------------------------------
# Entry points


def aggregate(sweep_dir: str | Path, make_figures: bool = True) -> Report:
    """Write results_all.csv, summary.csv, summary.md and the figures into ``sweep_dir``; return what it found."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no sweep folder {sweep_dir}")
    jobs = tuple(job_state(p) for p in job_dirs(sweep_dir))
    report = Report(sweep_dir=sweep_dir, jobs=jobs, expected=expected_jobs(sweep_dir), files=())
    df = load_rows(sweep_dir, jobs)
    groups = group_columns(df)
    summary = summarize(df, groups) if not df.empty else df.iloc[0:0]
    judged = verdict(summary, groups)
    paired = paired_differences(df, groups)
    figs = figures(df, sweep_dir) if make_figures and not df.empty else []

    write_csv(sweep_dir / RESULTS_ALL, df.to_dict("records"), list(df.columns))
    write_csv(sweep_dir / SUMMARY_CSV, summary.to_dict("records"), list(summary.columns))
    atomic_write_text(sweep_dir / SUMMARY_MD, summary_markdown(report, df, summary, groups, judged, paired, figs))
    files = (sweep_dir / RESULTS_ALL, sweep_dir / SUMMARY_CSV, sweep_dir / SUMMARY_MD, *figs)
    return dataclasses.replace(report, files=files)


class AggregateCallback(Callback):
    """Aggregates every multirun's sweep folder when the sweep ends (hooked in conf/config.yaml)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            report = aggregate(sweep_dir)
        except Exception:
            # The jobs' results are safe on disk; a failed summary must not turn a finished sweep into an error.
            log.exception("aggregating %s failed; retry with: python -m rtc_sweep.aggregate %s", sweep_dir, sweep_dir)
            return
        log.info("sweep %s: %s; summary: %s", sweep_dir, report.headline(), sweep_dir / SUMMARY_MD)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rtc_sweep.aggregate", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder (hydra.sweep.dir), e.g. multirun/<date>/<time>")
    parser.add_argument("--no-figures", action="store_true", help="write the tables only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = aggregate(args.sweep_dir, make_figures=not args.no_figures)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.sweep_dir}: {report.headline()}")
    for path in report.files:
        print(f"  wrote {path}")
    for job in report.jobs:
        if job.status == "incomplete":
            print(f"  incomplete: {job.path.relative_to(args.sweep_dir)}: {job.reason}")
    return 0 if report.count("complete") else 1


if __name__ == "__main__":
    sys.exit(main())
