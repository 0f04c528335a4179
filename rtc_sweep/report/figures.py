"""A sweep's figures, laid out by what the sweep varied (no JAX; matplotlib's Agg backend).

Every figure is drawn from the summary (one row per group: the identifying columns except seed, plus every
config key the sweep varied), so a plotted point is one group and nothing the sweep varied is averaged away:

* the x axis is the varied numeric key (a delay, an execute horizon, a spike size, a latency scale, ...): the
  delay keys first, then the execute horizon, then the others in the summary's order; a second varied numeric
  key makes facets;
* one line (or, without a numeric key, one bar) per method, and per value of any other varied categorical key
  (execute policy, model, ...);
* facets by level and by delay profile where they vary;
* rates on a 0–1 axis, with error bars from the 95 % Wilson interval of the episodes pooled over seeds; other
  metrics with the 95 % bootstrap CI over seeds.

One figure averages on purpose: the fixed-delay figure of a sweep over two levels or more has a top row of the
mean over levels (aggregate.level_means), the RTC paper's headline view, above the per-level rows.

``build_figures`` returns the figures with a ``FigureInfo`` each (axes, limits, and the group behind every
point), which is what the tests inspect; ``save_figures`` writes them as PNG.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtc_sweep.io import atomic_path
from rtc_sweep.report.results import SOLVED

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

SOLVED_FIGURE = "solved.png"
JERK_FIGURE = "jerk.png"
DELAY_FIGURE = "delay_distribution.png"
FIXED_DELAY_FIGURE = "fixed_delay_solved.png"
FIXED_DELAY_KEY = "delay_profile.fixed_delay"
HORIZON_KEY = "execute_horizon"
# Keys with their own role in a layout; every other varied key is an x axis, a facet or part of a line's name.
ROLE_KEYS = ("method", "level", "profile")
DELAY_STATISTICS = ("d_mean", "d_p50", "d_p95", "d_p99", "d_max")
MAX_FACET_COLUMNS = 3
SHORT_NAMES = {FIXED_DELAY_KEY: "d", HORIZON_KEY: "s"}


@dataclasses.dataclass(frozen=True)
class Panel:
    """One axes of a figure: its labels, limits, and the group (summary row) behind every plotted point."""

    title: str
    xlabel: str
    ylabel: str
    ylim: tuple[float, float]
    rate: bool  # the y axis is a rate (0–1)
    points: tuple[dict[str, Any], ...]


@dataclasses.dataclass(frozen=True)
class FigureInfo:
    name: str  # file name in the sweep folder
    title: str
    x: str | None  # the key on the x axis (None: bars, one per line)
    facets: tuple[str, ...]  # keys that split the panels
    lines: tuple[str, ...]  # keys that name a line (or bar)
    panels: tuple[Panel, ...]
    path: Path | None = None  # where it was saved


@dataclasses.dataclass(frozen=True)
class Layout:
    x: str | None
    facets: tuple[str, ...]
    lines: tuple[str, ...]


# ---------------------------------------------------------------------------------------------------------------
# Layout


def varied_keys(summary: pd.DataFrame, groups: Sequence[str]) -> list[str]:
    """The group columns that take more than one value in the summary."""
    return [g for g in groups if g in summary.columns and summary[g].nunique(dropna=False) > 1]


def is_numeric(values: pd.Series) -> bool:
    import pandas as pd

    if values.dtype == bool:
        return False
    present = values.dropna()
    if present.empty or present.map(lambda v: isinstance(v, bool)).any():
        return False
    return bool(pd.to_numeric(present, errors="coerce").notna().all())


def _priority(key: str) -> int:
    if key.startswith("delay_profile."):
        return 0
    if key == HORIZON_KEY or key.startswith("execute_policy."):
        return 1
    return 2


def layout(summary: pd.DataFrame, groups: Sequence[str]) -> Layout:
    """Which varied key goes on the x axis, which split the facets, which name the lines."""
    varied = varied_keys(summary, groups)
    others = [k for k in varied if k not in ROLE_KEYS]
    numeric = sorted((k for k in others if is_numeric(summary[k])), key=_priority)
    categorical = [k for k in others if k not in numeric]
    lines = (["method"] if "method" in summary.columns else []) + categorical
    facets: list[str] = [k for k in ("level", "profile") if k in varied]
    x = numeric[0] if numeric else None
    facets += numeric[1:]
    if x is not None:
        # A numeric key that takes one value per line and facet (execute_horizon across execute policies) is
        # a line's label, not an axis.
        keys = [*facets, *lines]
        per_line = summary.groupby(keys, dropna=False)[x].nunique(dropna=False).max() if keys else summary[x].nunique()
        if per_line <= 1:
            lines.append(x)
            x = None
    return Layout(x=x, facets=tuple(facets), lines=tuple(lines))


def _label(keys: Sequence[str], values: Sequence[Any]) -> str:
    parts = []
    for k, v in zip(keys, values, strict=True):
        parts.append(
            str(v) if k in ("method", "level", "profile", "execute_policy") else f"{SHORT_NAMES.get(k, k)}={_v(v)}"
        )
    return " · ".join(parts)


def _v(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _order(value: Any) -> tuple[int, float, str]:
    """Numbers by value (2 before 10), then everything else by its text."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _combinations(summary: pd.DataFrame, keys: Sequence[str]) -> list[tuple[Any, ...]]:
    """The distinct value tuples of ``keys`` in the summary, sorted (one empty tuple without keys)."""
    if not keys:
        return [()]
    found = {tuple(r) for r in summary[list(keys)].itertuples(index=False)}
    return sorted(found, key=lambda t: tuple(_order(v) for v in t))


def _key(values: Any, n: int) -> tuple[Any, ...]:
    """A groupby key as a tuple of ``n`` values (pandas gives a scalar for one key in some versions)."""
    return values if isinstance(values, tuple) else (values,) if n else ()


# ---------------------------------------------------------------------------------------------------------------
# Drawing


def _grid(n: int, width: float = 4.4, height: float = 3.3, ncols: int | None = None) -> tuple[Figure, list[Axes]]:
    import matplotlib.pyplot as plt

    ncols = ncols or min(max(n, 1), MAX_FACET_COLUMNS)
    nrows = math.ceil(max(n, 1) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, sharey=True)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _x_ticks(ax: Axes, values: Any) -> None:
    """A tick at every value of a discrete key (up to 12 of them), else integer or automatic ticks."""
    import pandas as pd
    from matplotlib.ticker import MaxNLocator

    x = sorted(set(pd.to_numeric(pd.Series(list(values)), errors="coerce").dropna()))
    if 0 < len(x) <= 12:
        ax.set_xticks(x, [_v(float(v)) for v in x])
    elif x and all(float(v).is_integer() for v in x):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _errors(y: Sequence[float], lo: Sequence[float], hi: Sequence[float]) -> Any:
    import numpy as np

    y_, lo_, hi_ = (np.asarray(a, dtype=float) for a in (y, lo, hi))
    below = np.where(np.isfinite(lo_), y_ - lo_, 0.0)
    above = np.where(np.isfinite(hi_), hi_ - y_, 0.0)
    return np.clip(np.vstack([below, above]), 0.0, None)


def _colors(methods: Sequence[Any]) -> dict[Any, Any]:
    import matplotlib.pyplot as plt

    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {m: cycle[i % len(cycle)] for i, m in enumerate(methods)}


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")


@dataclasses.dataclass(frozen=True)
class Metric:
    column: str  # the results column
    label: str
    rate: bool

    def y(self, row: pd.Series) -> tuple[float, float, float]:
        """The point and its interval: pooled rate and Wilson interval for a rate, else the mean and bootstrap CI."""
        if self.rate and f"{self.column}_pooled" in row.index:
            c = f"{self.column}_pooled"
            return float(row[c]), float(row[f"{c}_ci_low"]), float(row[f"{c}_ci_high"])
        c = self.column
        return float(row[f"{c}_mean"]), float(row[f"{c}_ci_low"]), float(row[f"{c}_ci_high"])

    @property
    def interval(self) -> str:
        if self.rate:
            return "95 % Wilson interval of the episodes pooled over seeds"
        return "mean over seeds, 95 % bootstrap CI"


SOLVED_METRIC = Metric(SOLVED, "solve rate (returned_episode_solved)", rate=True)
JERK_METRIC = Metric("max_ddelta_action", "jerk (max_ddelta_action)", rate=False)


def _finish_axes(ax: Axes, metric: Metric) -> tuple[float, float]:
    if metric.rate:
        ax.set_ylim(0.0, 1.0)
    else:
        lo, hi = ax.get_ylim()
        ax.set_ylim(min(0.0, lo), hi if hi > 0 else 1.0)
    ax.grid(True, axis="y", alpha=0.3)
    lo, hi = ax.get_ylim()
    return float(lo), float(hi)


def metric_figure(
    summary: pd.DataFrame, groups: Sequence[str], metric: Metric, name: str
) -> tuple[Figure, FigureInfo] | None:
    """The metric against the varied numeric key (lines) or per line (bars), faceted by level, profile, ..."""

    needed = [f"{metric.column}_mean"] + ([f"{metric.column}_pooled"] if metric.rate else [])
    if summary.empty or not all(c in summary.columns for c in needed):
        return None
    lay = layout(summary, groups)
    group_cols = [g for g in groups if g in summary.columns]
    facet_values = _combinations(summary, lay.facets)
    line_values = _combinations(summary, lay.lines)
    methods = sorted({v[0] for v in line_values}, key=str) if lay.lines and lay.lines[0] == "method" else []
    colors = _colors(methods or [None])
    styles = {lv: i for i, lv in enumerate(sorted({lv[1:] for lv in line_values}, key=str))}
    ncols = None
    if len(lay.facets) >= 2:  # a full grid of the first facet key (rows) by the others (columns), if it is one
        rest = _combinations(summary, lay.facets[1:])
        if len(facet_values) == len(_combinations(summary, lay.facets[:1])) * len(rest) and len(rest) <= 4:
            ncols = len(rest)
    width = 4.4 if lay.x else max(3.2, 0.55 * len(line_values) + 1.6)
    fig, axes = _grid(len(facet_values), width=width, ncols=ncols)
    ncols_used = ncols or min(len(facet_values), MAX_FACET_COLUMNS)
    panels = []
    for n_ax, (ax, fv) in enumerate(zip(axes, facet_values, strict=True)):
        mask = summary.index == summary.index  # all rows
        for k, v in zip(lay.facets, fv, strict=True):
            mask &= (summary[k] == v) | (summary[k].isna() & (v != v))
        sub = summary[mask]
        points: list[dict[str, Any]] = []
        for i, lv in enumerate(line_values):
            rows = sub
            for k, v in zip(lay.lines, lv, strict=True):
                rows = rows[(rows[k] == v) | (rows[k].isna() & (v != v))]
            if rows.empty:
                continue
            color = colors.get(lv[0] if methods else None)
            label = _label(lay.lines, lv)
            if lay.x is not None:
                import pandas as pd

                rows = rows.assign(_x=pd.to_numeric(rows[lay.x])).sort_values("_x")
                ys = [metric.y(r) for _, r in rows.iterrows()]
                s = styles[lv[1:]]
                ax.errorbar(
                    rows["_x"], [y[0] for y in ys], yerr=_errors(*zip(*ys, strict=True)), color=color,
                    marker=MARKERS[s % len(MARKERS)], linestyle=LINESTYLES[s % len(LINESTYLES)], capsize=3,
                    label=label, clip_on=False,
                )  # fmt: skip
            else:
                # Every varied key is a facet or names the bar, so one group is left: the bar is that group.
                assert len(rows) == 1, f"{len(rows)} groups behind one bar: {rows[group_cols].to_dict('records')}"
                (y, lo, hi) = metric.y(rows.iloc[0])
                ax.bar(i, y, yerr=_errors([y], [lo], [hi]), color=color, capsize=3, label=label,
                       hatch=["", "//", "..", "xx"][styles[lv[1:]] % 4])  # fmt: skip
            points += [{g: r[g] for g in group_cols} for _, r in rows.iterrows()]
        if lay.x is not None:
            ax.set_xlabel(lay.x)
            _x_ticks(ax, sub[lay.x])
        else:
            ax.set_xticks(range(len(line_values)), [_label(lay.lines, lv) for lv in line_values], rotation=30,
                          ha="right")  # fmt: skip
            ax.set_xlabel("")
        title = _label(lay.facets, fv) if lay.facets else ""
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(metric.label if n_ax % ncols_used == 0 else "")
        ylim = _finish_axes(ax, metric)
        panels.append(Panel(title, ax.get_xlabel(), metric.label, ylim, metric.rate, tuple(points)))
    if lay.x is not None:
        handles, labels = axes[0].get_legend_handles_labels()
        seen = dict(zip(labels, handles, strict=True))
        for ax in axes[1:]:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                seen.setdefault(lab, h)
        fig.legend(list(seen.values()), list(seen), loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False)
    title = f"{metric.label}: {metric.interval}"
    fig.suptitle(title, y=1.02, fontsize=11)
    fig.tight_layout()
    info = FigureInfo(name, title, lay.x, lay.facets, lay.lines, tuple(panels))
    return fig, info


def fixed_delay_figure(
    summary: pd.DataFrame, groups: Sequence[str], fixed_profiles: set[str]
) -> tuple[Figure, FigureInfo] | None:
    """The RTC paper's view: solve rate against the delay d, and against the execute horizon s at d = 1.

    One line per method and execute policy (and any other varied key but d, s and the level, which makes rows of
    panels). Where the sweep varied s at a delay d (the paper's d x s grid), the line takes the smallest s with
    s >= max(d, 1), the paper's s = max(d, 1); elsewhere each d has one s (a fixed s, or an adaptive policy's
    s_min) and that group is the point. The right panel, s at d = 1, is drawn for lines that swept s.

    With two levels or more, the top row is the mean over the levels (aggregate.level_means of the fixed-delay
    groups: those run at every level, normal 95 % interval), the RTC paper's headline figure; its points are
    those rows (levels.csv's, when every profile of the sweep is fixed).
    """
    import pandas as pd

    from rtc_sweep.report.aggregate import LEVEL_MEAN, POOLED, level_bound_columns, level_means

    if summary.empty or FIXED_DELAY_KEY not in summary.columns or "profile" not in summary.columns:
        return None
    fixed = summary[summary["profile"].isin(fixed_profiles)].copy()
    if fixed.empty or fixed[FIXED_DELAY_KEY].nunique() < 2:
        return None
    fixed["_d"] = pd.to_numeric(fixed[FIXED_DELAY_KEY]).astype(int)
    fixed["_s"] = pd.to_numeric(fixed[HORIZON_KEY]).astype(int)
    group_cols = [g for g in groups if g in summary.columns]
    # A key bound to the level (num_evals per level) is constant in a level's panels: it names no line.
    skip = (FIXED_DELAY_KEY, HORIZON_KEY, "level", *level_bound_columns(fixed, groups))
    varied = [k for k in varied_keys(fixed, groups) if k not in skip]
    lines = ["method", *(k for k in varied if k != "method")] if "method" in fixed.columns else varied
    if "execute_policy" in fixed.columns and "execute_policy" not in lines:
        lines.append("execute_policy")  # named even when it does not vary, so a reader sees fixed or adaptive
    levels = sorted(fixed["level"].unique(), key=str) if "level" in fixed.columns else [None]
    line_values = _combinations(fixed, lines)
    methods = sorted({lv[0] for lv in line_values}, key=str)
    colors = _colors(methods)
    styles = {lv: i for i, lv in enumerate(sorted({lv[1:] for lv in line_values}, key=str))}

    # Rows of panels: (title prefix, the groups drawn, the columns that name a point).
    rows_of_panels: list[tuple[str, pd.DataFrame, list[str]]] = []
    means = level_means(fixed.drop(columns=["_d", "_s"]), list(groups)) if len(levels) >= 2 else None
    if means is not None and not means.rates.empty:
        # Drawn as a summary's rows: the mean over levels and its interval copied into the pooled rate's columns.
        mean = means.rates.copy()
        for end in ("", "_ci_low", "_ci_high"):
            mean[f"{POOLED}{end}"] = mean[f"{LEVEL_MEAN}{end}"]
        mean["_d"] = pd.to_numeric(mean[FIXED_DELAY_KEY]).astype(int)
        mean["_s"] = pd.to_numeric(mean[HORIZON_KEY]).astype(int)
        rows_of_panels.append((f"mean over {len(means.levels)} levels: ", mean, list(means.rates.columns)))
    for level in levels:
        at_level = fixed if level is None else fixed[fixed["level"] == level]
        rows_of_panels.append(("" if level is None or len(levels) == 1 else f"{level}: ", at_level, group_cols))

    def per_line(rows: pd.DataFrame, lv: tuple[Any, ...]) -> pd.DataFrame:
        for k, v in zip(lines, lv, strict=True):
            rows = rows[rows[k] == v]
        return rows

    def left_rows(rows: pd.DataFrame) -> pd.DataFrame:
        chosen = []
        for _, at_d in rows.groupby("_d", sort=True):
            ok = at_d[at_d["_s"] >= at_d["_d"].clip(lower=1)]  # s >= max(d, 1), d the group's
            pick = ok if not ok.empty else at_d
            chosen.append(pick[pick["_s"] == pick["_s"].min()])
        return pd.concat(chosen) if chosen else rows.iloc[0:0]

    has_right = any(per_line(fixed[fixed["_d"] == 1], lv)["_s"].nunique() > 1 for lv in line_values)
    ncols = 2 if has_right else 1
    fig, grid = _grid_rows(len(rows_of_panels), ncols)
    panels = []
    for r, (prefix, frame, point_cols) in enumerate(rows_of_panels):
        specs = [("_d", "d (ticks)", "solve rate vs inference delay d (s = max(d, 1) where s was swept)")]
        if has_right:
            specs.append(("_s", "s (actions)", "solve rate vs execute horizon s (d = 1)"))
        for c, (xcol, xlabel, title) in enumerate(specs):
            ax = grid[r][c]
            points: list[dict[str, Any]] = []
            for lv in line_values:
                rows = per_line(frame, lv)
                rows = left_rows(rows) if xcol == "_d" else rows[rows["_d"] == 1]
                if rows.empty or (xcol == "_s" and rows["_s"].nunique() < 2):
                    continue
                rows = rows.sort_values(xcol)
                ys = [SOLVED_METRIC.y(row) for _, row in rows.iterrows()]
                s = styles[lv[1:]]
                ax.errorbar(
                    rows[xcol], [y[0] for y in ys], yerr=_errors(*zip(*ys, strict=True)), color=colors[lv[0]],
                    marker=MARKERS[s % len(MARKERS)], linestyle=LINESTYLES[s % len(LINESTYLES)], capsize=3,
                    label=_label(lines, lv), clip_on=False,
                )  # fmt: skip
                points += [{g: row[g] for g in point_cols} for _, row in rows.iterrows()]
            full_title = prefix + title
            # Two panels side by side: the prefix (level, or the mean) on a line of its own, or the titles overlap.
            ax.set_title(f"{prefix.rstrip()}\n{title}" if prefix and has_right else full_title, fontsize=10)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(SOLVED_METRIC.label)
            _x_ticks(ax, [p[HORIZON_KEY if xcol == "_s" else FIXED_DELAY_KEY] for p in points])
            ylim = _finish_axes(ax, SOLVED_METRIC)
            panels.append(Panel(full_title, xlabel, SOLVED_METRIC.label, ylim, True, tuple(points)))
    seen: dict[str, Any] = {}  # every line once, also those the mean over levels leaves out
    for ax in (ax for row in grid for ax in row):
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen), loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False)
    title = f"fixed delay: {SOLVED_METRIC.interval}"
    if means is not None and not means.rates.empty:
        title += "; top row: mean over levels, normal 95 % interval"
    fig.suptitle(title, y=1.02, fontsize=11)
    fig.tight_layout()
    info = FigureInfo(FIXED_DELAY_FIGURE, title, FIXED_DELAY_KEY, ("level",), tuple(lines), tuple(panels))
    return fig, info


def _grid_rows(nrows: int, ncols: int) -> tuple[Figure, list[list[Axes]]]:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols, 3.6 * nrows), squeeze=False, sharey=True)
    return fig, [list(row) for row in axes]


def delay_figure(summary: pd.DataFrame, groups: Sequence[str]) -> tuple[Figure, FigureInfo] | None:
    """The delays the jobs saw (mean, p50, p95, p99, max over all cycles), one line per delay configuration.

    A delay configuration is the profile plus every varied ``delay_profile.*`` key. The delays a job records
    differ a little between methods and execute horizons of one configuration (they run different numbers of
    cycles), so each point is the median over the configuration's groups, its bar their range.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    cols = [f"{s}_mean" for s in DELAY_STATISTICS]
    if summary.empty or not all(c in summary.columns for c in cols):
        return None
    keys = [k for k in ("profile", *varied_keys(summary, groups)) if k == "profile" or k.startswith("delay_profile.")]
    keys = list(dict.fromkeys(k for k in keys if k in summary.columns))
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    x = np.arange(len(DELAY_STATISTICS))
    points: list[dict[str, Any]] = []
    for i, (key, g) in enumerate(summary.groupby(keys, dropna=False, sort=True) if keys else [((), summary)]):
        values = g[cols].to_numpy(dtype=float)
        mid = np.nanmedian(values, axis=0)
        err = np.vstack([mid - np.nanmin(values, axis=0), np.nanmax(values, axis=0) - mid])
        label = _label(keys, _key(key, len(keys))) if keys else "all"
        ax.errorbar(x + 0.04 * i, mid, yerr=err, marker=MARKERS[i % len(MARKERS)], capsize=3, label=label)
        points.append(dict(zip(keys, _key(key, len(keys)), strict=True)))
    ax.set_xticks(x, ["mean", "p50", "p95", "p99", "max"])
    ax.set_ylabel("delay (ticks)")
    ax.set_ylim(bottom=0)
    ax.grid(True, axis="y", alpha=0.3)
    title = "delays seen per delay configuration (median over its groups, range as bars)"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    lo, hi = ax.get_ylim()
    panel = Panel(title, "statistic", "delay (ticks)", (float(lo), float(hi)), False, tuple(points))
    return fig, FigureInfo(DELAY_FIGURE, title, None, (), tuple(keys), (panel,))


def build_figures(summary: pd.DataFrame, groups: Sequence[str], df: pd.DataFrame) -> list[tuple[Figure, FigureInfo]]:
    """Every figure the sweep supports, as (matplotlib figure, description); close them when done."""
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib.category").setLevel(logging.WARNING)
    mode = "delay_profile.mode"
    fixed_profiles = set(df.loc[df[mode] == "fixed", "profile"]) if mode in df.columns else set()
    made = [
        metric_figure(summary, groups, SOLVED_METRIC, SOLVED_FIGURE),
        metric_figure(summary, groups, JERK_METRIC, JERK_FIGURE),
        delay_figure(summary, groups),
        fixed_delay_figure(summary, groups, fixed_profiles),
    ]
    return [m for m in made if m is not None]


def save_figures(summary: pd.DataFrame, groups: Sequence[str], df: pd.DataFrame, sweep_dir: Path) -> list[FigureInfo]:
    import matplotlib.pyplot as plt

    out = []
    for fig, info in build_figures(summary, groups, df):
        path = sweep_dir / info.name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
        plt.close(fig)
        out.append(dataclasses.replace(info, path=path))
    return out
