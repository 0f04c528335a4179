"""The RTC paper's figure and tables over the shipped levels, from the committed record of their curve cells.

    python scripts/paper_curve.py                       # docs/paper_curve.csv -> docs/paper_curve.png, tables on stdout
    python scripts/paper_curve.py --levels grasp_easy cartpole_thrust catapult h17_unicycle --figure /tmp/four.png

Each shipped level's paper curve (fixed d = 0..4, s = max(d, 1), 1024 episodes, seed 0, the methods on the same draws)
was measured by its own sweep, in different sessions and on different machines: `+experiment=paper_delay_curve
level=<level> model=<model>` (commands in rtc_sweep/checkpoints/MODEL_CARD.md). `docs/paper_curve.csv` records every
cell of those sweeps' summaries (one row per level, model, method and d: episodes and solved episodes), so the figure
as the paper draws it (solve rate against d, one line per method, a top row of the mean over levels) can be drawn
again without the sweeps' folders. The figure and the mean over levels are the aggregate's own
(`rtc_sweep.report.figures.fixed_delay_figure`, `rtc_sweep.report.aggregate.level_means`: each level weighs the same,
a normal 95 % interval from the levels' episode variances); a method is averaged only where it has a cell at every
level of the selection, so restrict ``--levels`` to average one that some levels lack. Rates carry their 95 % Wilson
interval over episodes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from rtc_sweep.core.options import METHODS
from rtc_sweep.io import atomic_path
from rtc_sweep.report import page as doc
from rtc_sweep.report.aggregate import LEVEL_MEAN, POOLED, level_means, summarize
from rtc_sweep.report.figures import FIXED_DELAY_KEY, HORIZON_KEY, fixed_delay_figure
from rtc_sweep.report.results import SOLVED

ROOT = Path(__file__).resolve().parents[1]
CELLS = ROOT / "docs" / "paper_curve.csv"
FIGURE = ROOT / "docs" / "paper_curve.png"
COLUMNS = ("level", "model", "method", "d", "s", "episodes", "solved_episodes")
GROUPS = ["level", "method", "profile", FIXED_DELAY_KEY, HORIZON_KEY]


def read_cells(path: Path) -> pd.DataFrame:
    """The cells, checked: every column there, counts within their episodes, one row per level, method and d."""
    cells = pd.read_csv(path)
    missing = [c for c in COLUMNS if c not in cells.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; a row needs {', '.join(COLUMNS)}")
    bad = cells[(cells["solved_episodes"] < 0) | (cells["solved_episodes"] > cells["episodes"])]
    if not bad.empty:
        raise ValueError(f"{path}: solved_episodes outside 0..episodes on lines {list(bad.index + 2)}")
    twice = cells[cells.duplicated(["level", "method", "d"], keep=False)]
    if not twice.empty:
        raise ValueError(f"{path}: more than one row for level, method and d on lines {list(twice.index + 2)}")
    return cells


def summary_of(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells as the aggregate's summary: each cell is one job's results row (one seed, its episodes)."""
    rows = cells.assign(profile="fixed", seed=0, num_evals=cells["episodes"],
                        **{SOLVED: cells["solved_episodes"] / cells["episodes"], FIXED_DELAY_KEY: cells["d"],
                           HORIZON_KEY: cells["s"]})  # fmt: skip
    return summarize(rows[[*GROUPS, "seed", "num_evals", SOLVED]], GROUPS)


def _table(title: str, frame: pd.DataFrame, value: str) -> doc.Table:
    """Methods (rows) by d (columns): ``value`` with its interval, "–" where the method has no cell."""
    ds = sorted(frame[FIXED_DELAY_KEY].unique())
    present = set(frame["method"])
    rows = []
    for m in [m for m in METHODS if m in present] + sorted(present - set(METHODS)):
        at = {int(r[FIXED_DELAY_KEY]): r for r in frame[frame["method"] == m].to_dict("records")}
        rows.append((m, *(f"{at[d][value]:.3f} [{at[d][f'{value}_ci_low']:.3f}, {at[d][f'{value}_ci_high']:.3f}]"
                          if d in at else "–" for d in ds)))  # fmt: skip
    return doc.Table((title, *(f"d = {d}" for d in ds)), tuple(rows))


def tables(cells: pd.DataFrame, summary: pd.DataFrame) -> str:
    """Markdown: the mean over the levels (the methods run at every level), then one table per level."""
    blocks: list[doc.Block] = []
    means = level_means(summary, GROUPS)
    if means is not None and not means.rates.empty:
        blocks.append(_table(f"mean over {len(means.levels)} levels", means.rates, LEVEL_MEAN))
        blocks.append(doc.Paragraph(f"(levels: {', '.join(means.levels)}; each weighs the same; normal 95 % interval)"))
        left: dict[str, list[int]] = {}
        for group, _ in means.dropped:
            left.setdefault(str(group["method"]), []).append(int(group[FIXED_DELAY_KEY]))
        if left:
            named = "; ".join(f"{m} at d = {', '.join(map(str, sorted(ds)))}" for m, ds in left.items())
            blocks.append(doc.Paragraph(f"(not averaged, as some of these levels lack the cell: {named})"))
    for level in sorted(summary["level"].unique()):
        model = cells.loc[cells["level"] == level, "model"].iloc[0]
        blocks.append(_table(f"{level} / {model}", summary[summary["level"] == level], POOLED))
    return doc.markdown(blocks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=Path, default=CELLS, help="the cells' CSV (default: docs/paper_curve.csv)")
    parser.add_argument(
        "--figure", type=Path, default=FIGURE, help="where the PNG goes (default: docs/paper_curve.png)"
    )
    parser.add_argument("--levels", nargs="+", help="only these levels (default: every level in the cells)")
    args = parser.parse_args(argv)

    cells = read_cells(args.cells)
    if args.levels:
        unknown = sorted(set(args.levels) - set(cells["level"]))
        if unknown:
            parser.error(f"--levels: {', '.join(unknown)} not in {args.cells}; allowed: "
                         f"{', '.join(sorted(cells['level'].unique()))}")  # fmt: skip
        cells = cells[cells["level"].isin(args.levels)]
    summary = summary_of(cells)
    print(tables(cells, summary))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = fixed_delay_figure(summary, GROUPS, {"fixed"})
    if made is None:
        print("no figure: the cells need two delays or more", file=sys.stderr)
        return 1
    fig, _ = made
    with atomic_path(args.figure) as tmp:
        fig.savefig(tmp, dpi=80, bbox_inches="tight")
    plt.close(fig)
    print(f"figure: {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
