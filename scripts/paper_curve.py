"""The RTC paper's figure and tables over the shipped levels, from the committed record of their curve cells.

    python scripts/paper_curve.py                       # docs/paper_curve.csv -> docs/paper_curve.png, tables on stdout
    python scripts/paper_curve.py --levels grasp_easy cartpole_thrust catapult h17_unicycle --figure /tmp/four.png
    python scripts/paper_curve.py --missing             # the commands that would measure the cells still missing
    python scripts/paper_curve.py --add runs/levels/h17_unicycle/paper_curve_d0_bid   # a finished sweep's new cells

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

``--missing`` prints, for every level and d where a method of the preset lacks its cell, the sweep that measures it:
the missing methods beside naive, as a pair holds only within one sweep on one machine (a bid cell takes an hour or
more on 2 CPU cores: add ``micro_batch=256`` and a killed job resumes at its next 256 environments when the same
command runs again). ``--add SWEEP_DIR...`` puts
the cells of finished sweeps of the preset into the CSV (atomically) before drawing: only cells the record lacks;
a cell it has already is kept, and the sweep's own value is printed beside it. A sweep of anything else (another
delay profile, execute policy, seed or model than the record's, or not the shipped checkpoint) is refused, naming
the key. A checkpoint file with the same bytes as the level's shipped policy counts as the shipped checkpoint (a
candidate's curve measured before it was moved into ``rtc_sweep/checkpoints``).
"""

from __future__ import annotations

import argparse
import filecmp
import functools
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from rtc_sweep.core.options import METHODS
from rtc_sweep.io import atomic_path
from rtc_sweep.report import page as doc
from rtc_sweep.report import stats
from rtc_sweep.report.aggregate import LEVEL_MEAN, POOLED, collect, level_means, summarize
from rtc_sweep.report.figures import FIXED_DELAY_KEY, HORIZON_KEY, fixed_delay_figure
from rtc_sweep.report.results import SOLVED

ROOT = Path(__file__).resolve().parents[1]
CELLS = ROOT / "docs" / "paper_curve.csv"
FIGURE = ROOT / "docs" / "paper_curve.png"
PRESET = ROOT / "rtc_sweep" / "conf" / "experiment" / "paper_delay_curve.yaml"
COLUMNS = ("level", "model", "method", "d", "s", "episodes", "solved_episodes")
SECTION = "model_card_section"
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


def preset_grid() -> tuple[list[str], list[int]]:
    """The methods and delays the paper_delay_curve preset sweeps (its own file, so the two cannot disagree), expanded
    by Hydra's override parser as the sweeper expands them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.load(PRESET).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={params[k]}" for k in ("method", FIXED_DELAY_KEY)])
    methods, delays = (list(o.sweep_string_iterator()) for o in parsed)
    return methods, [int(d) for d in delays]


def missing_commands(cells: pd.DataFrame) -> list[str]:
    """One sweep per level and d where a method of the preset has no cell: those methods, naive beside them."""
    methods, delays = preset_grid()
    have = set(zip(cells["level"], cells["method"], cells["d"], strict=True))
    out = []
    for level, model in cells[["level", "model"]].drop_duplicates().itertuples(index=False):
        for d in delays:
            lacking = [m for m in methods if (level, m, d) not in have]
            if not lacking:
                continue
            run = ["naive", *(m for m in lacking if m != "naive")]
            folder = f"runs/levels/{level}/paper_curve_d{d}_{'_'.join(lacking)}"
            out.append(
                f"# {level} / {model}, d = {d}: {', '.join(lacking)} missing\n"
                f"python -m rtc_sweep +experiment=paper_delay_curve level={level} model={model} "
                f"delay_profile.fixed_delay={d} method={','.join(run)} hydra.sweep.dir={folder}\n"
                f"python -m rtc_sweep.aggregate {folder} && python scripts/paper_curve.py --add {folder}"
            )
    return out


# What a sweep's jobs must have been run with for their cells to join the record (the preset's settings).
REQUIRED = {"delay_profile.mode": "fixed", "execute_policy.mode": "adaptive", "execute_policy.s_min": 1,
            "execute_policy.estimator": "oracle", "checkpoint": "shipped", "seed": 0}  # fmt: skip


@functools.cache
def shipped_or_path(value: str, level: str, model: str) -> str:
    """``shipped`` for a checkpoint file whose bytes are the shipped policy of its level and model (a candidate
    measured before it was moved into the package), else the value as it is; each file compared once."""
    if value in ("shipped", "random"):
        return value
    from rtc_sweep.sweep.evaluate import CHECKPOINTS_DIR  # here, not at start-up: it brings in JAX (about 1.3 s)

    shipped = CHECKPOINTS_DIR / level / model / "policy.pkl"
    given = Path(value).expanduser()
    found = next((p for p in (given, ROOT / given) if p.is_file()), None)
    if found is not None and shipped.is_file() and filecmp.cmp(found, shipped, shallow=False):
        return "shipped"
    return value


def sweep_cells(sweep: Path, cells: pd.DataFrame) -> pd.DataFrame:
    """A finished sweep's jobs as rows of the record, checked against the preset's settings and the record."""
    if not sweep.is_dir():
        raise ValueError(f"--add: {sweep} is not a folder")
    _, rows, _ = collect(sweep)
    if rows.empty:
        raise ValueError(f"--add: {sweep} has no finished job (results.csv)")
    if "checkpoint" in rows.columns:
        rows = rows.assign(checkpoint=[shipped_or_path(str(c), str(level), str(model)) for c, level, model in
                                       zip(rows["checkpoint"], rows["level"], rows["model"], strict=True)])  # fmt: skip
    for key, want in REQUIRED.items():
        got = sorted({str(v) for v in rows[key]}) if key in rows.columns else ["(absent)"]
        if got != [str(want)]:
            raise ValueError(f"--add: {sweep}: {key} is {', '.join(got)}; the record's cells have {key}={want}")
    if "model" not in rows.columns:
        raise ValueError(f"--add: {sweep}: its results.csv has no model column (the model preset's name)")
    models = dict(zip(cells["level"], cells["model"], strict=False))
    for level, model in rows[["level", "model"]].drop_duplicates().itertuples(index=False):
        if level in models and models[level] != model:
            raise ValueError(
                f"--add: {sweep}: level={level} model={model}; the record's {level} is model={models[level]}"
            )
    d = rows[FIXED_DELAY_KEY].astype(int)
    new = pd.DataFrame({"level": rows["level"], "model": rows["model"], "method": rows["method"], "d": d,
                        "s": d.clip(lower=1), "episodes": rows["num_evals"].astype(int),
                        "solved_episodes": [stats.solved_count(r, n) for r, n in zip(rows[SOLVED], rows["num_evals"],
                                                                                    strict=True)]})  # fmt: skip
    twice = new[new.duplicated(["level", "method", "d"], keep=False)]
    if not twice.empty:
        raise ValueError(f"--add: {sweep}: more than one job for {twice.iloc[0][['level', 'method', 'd']].to_dict()}")
    new["solved"] = (new["solved_episodes"] / new["episodes"]).round(3)
    sections = cells.drop_duplicates("level").set_index("level")[SECTION]
    new[SECTION] = [sections.get(level, f"{level} / {model}") for level, model in zip(new["level"], new["model"],
                                                                                     strict=True)]  # fmt: skip
    return new


def add_sweeps(path: Path, cells: pd.DataFrame, sweeps: Sequence[Path]) -> pd.DataFrame:
    """The record with the sweeps' cells it lacked, written atomically; a cell it has is kept and reported."""
    key = ["level", "method", "d"]
    for sweep in sweeps:
        new = sweep_cells(sweep, cells)
        known = new.merge(cells[[*key, "solved"]], on=key, how="left", suffixes=("", "_record"))
        for r in known.to_dict("records"):
            cell = f"{r['level']} {r['method']} d = {r['d']}"
            if pd.notna(r["solved_record"]):
                print(f"kept: {cell} at {r['solved_record']:.3f} from the record ({sweep.name}: {r['solved']:.3f})")
            else:
                print(f"added: {cell}: {r['solved']:.3f} ({r['solved_episodes']} of {r['episodes']})")
        cells = pd.concat([cells, new[known["solved_record"].isna().to_numpy()]], ignore_index=True)
    # The record's order: levels as they first appear, then the methods' order, then d.
    level_rank = {level: i for i, level in enumerate(dict.fromkeys(cells["level"]))}
    method_rank = {m: i for i, m in enumerate([*METHODS, *sorted(set(cells["method"]) - set(METHODS))])}
    order = cells.assign(_l=cells["level"].map(level_rank), _m=cells["method"].map(method_rank))
    cells = order.sort_values(["_l", "_m", "d"], kind="stable").drop(columns=["_l", "_m"])
    with atomic_path(path) as tmp:
        cells.to_csv(tmp, index=False, float_format="%.3f")
    return read_cells(path)


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
    parser.add_argument("--missing", action="store_true", help="print the sweeps that measure the missing cells")
    parser.add_argument("--add", nargs="+", type=Path, metavar="SWEEP_DIR", help="record these sweeps' new cells")
    args = parser.parse_args(argv)

    cells = read_cells(args.cells)
    if args.add:
        try:
            cells = add_sweeps(args.cells, cells, args.add)
        except ValueError as e:
            parser.error(str(e))
    if args.levels:
        unknown = sorted(set(args.levels) - set(cells["level"]))
        if unknown:
            parser.error(f"--levels: {', '.join(unknown)} not in {args.cells}; allowed: "
                         f"{', '.join(sorted(cells['level'].unique()))}")  # fmt: skip
        cells = cells[cells["level"].isin(args.levels)]
    if args.missing:
        print("\n\n".join(missing_commands(cells)) or "every level has every cell of the preset")
        return 0
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
