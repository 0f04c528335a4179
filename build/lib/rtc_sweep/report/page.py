"""A sweep's page: the same content as summary.md, as one self-contained ``report.html`` (no JAX, no network).

The aggregation builds a document once (headings, paragraphs, tables, figures, commands) and renders it twice:
as Markdown (``summary.md``, figures linked) and as HTML (``report.html``, figures embedded as base64 PNG, the
style inline, nothing fetched), so a reader can open the page from a copied folder or an e-mail.

Also here: how to reproduce a sweep, from what Hydra wrote into the sweep folder (``multirun.yaml``, or the jobs'
``.hydra/overrides.yaml`` when it is missing), and the question it asks (an experiment preset's own comment).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import logging
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"
CONF_DIRS = (Path(__file__).resolve().parent.parent / "conf",)  # the shipped presets (rtc_sweep/conf)


@dataclasses.dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclasses.dataclass(frozen=True)
class Paragraph:
    text: str  # inline Markdown: **bold** and `code` only
    quote: bool = False


@dataclasses.dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclasses.dataclass(frozen=True)
class Figure:
    path: Path
    caption: str


@dataclasses.dataclass(frozen=True)
class Command:
    text: str


Block = Heading | Paragraph | Bullets | Table | Figure | Command


# ---------------------------------------------------------------------------------------------------------------
# Rendering


def markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Paragraph):
            out += [("> " if b.quote else "") + b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {item}" for item in b.items] + [""]
        elif isinstance(b, Table):
            out += ["| " + " | ".join(b.header) + " |", "|" + "---|" * len(b.header)]
            out += ["| " + " | ".join(row) + " |" for row in b.rows] + [""]
        elif isinstance(b, Figure):
            out += [f"![{b.path.stem}]({b.path.name})", ""]
        elif isinstance(b, Command):
            out += ["```bash", b.text, "```", ""]
    return "\n".join(out)


_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def _inline(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = _CODE.sub(r"<code>\1</code>", escaped)
    return _BOLD.sub(r"<strong>\1</strong>", escaped)


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 80rem;
       padding: 0 1.5rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.3rem; }
h2 { font-size: 1.25rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2rem; }
h3 { font-size: 1.05rem; margin-top: 1.4rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.6rem 0 1rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #d0d0d0; padding: 0.25rem 0.5rem; text-align: left; white-space: nowrap; }
th { background: #f2f2f4; }
tr:nth-child(even) td { background: #fafafa; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.85rem; }
pre { background: #f5f5f7; padding: 0.7rem 0.9rem; border-radius: 4px; overflow-x: auto; white-space: pre-wrap; }
blockquote { border-left: 4px solid #c9a227; margin: 0.8rem 0; padding: 0.3rem 0.9rem; background: #fffbea; }
figure { margin: 1rem 0 1.6rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85rem; color: #555; }
"""


def html_page(title: str, blocks: Sequence[Block]) -> str:
    """A standalone HTML page: inline style, figures as data: URIs, no script, nothing loaded from elsewhere."""
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            p = f"<p>{_inline(b.text)}</p>"
            body.append(f"<blockquote>{p}</blockquote>" if b.quote else p)
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Figure):
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            alt = html.escape(b.path.stem)
            body.append(
                f'<figure id="{alt}"><img alt="{alt}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_inline(b.caption)}</figcaption></figure>"
            )
        elif isinstance(b, Command):
            body.append(f"<pre><code>{html.escape(b.text, quote=False)}</code></pre>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------------------------------------------------------
# Reproducing a sweep


@dataclasses.dataclass(frozen=True)
class Reproduce:
    command: str  # the sweep's command line, as Hydra recorded it
    resume: str  # the same into this folder: complete jobs are skipped, the rest run
    source: str  # where the overrides come from


def _load_yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as e:  # unreadable: no command rather than a failed report
        log.debug("cannot read %s: %s", path, e)
        return None


def _quote(args: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def reproduce(sweep_dir: Path, job_dirs: Sequence[Path]) -> Reproduce | None:
    """The command that ran the sweep (``python -m rtc_sweep ... -m``), from multirun.yaml or the jobs' overrides."""
    task: list[str] = []
    hydra_args: list[str] = []
    source = ""
    multirun = _load_yaml(sweep_dir / "multirun.yaml") if (sweep_dir / "multirun.yaml").is_file() else None
    overrides = (multirun or {}).get("hydra", {}).get("overrides", {}) if isinstance(multirun, dict) else {}
    if overrides:
        task = [str(a) for a in overrides.get("task") or []]
        hydra_args = [str(a) for a in overrides.get("hydra") or []]
        source = "multirun.yaml"
    else:
        # No multirun.yaml (copied jobs, an older sweep): each job's overrides, one sweep value list per key.
        values: dict[str, list[str]] = {}
        for job in job_dirs:
            for arg in _load_yaml(job / ".hydra" / "overrides.yaml") or []:
                key, _, value = str(arg).partition("=")
                values.setdefault(key, [])
                if value not in values[key]:
                    values[key].append(value)
            hydra = _load_yaml(job / ".hydra" / "hydra.yaml") if not hydra_args else None
            if isinstance(hydra, dict):
                hydra_args = [str(a) for a in hydra.get("hydra", {}).get("overrides", {}).get("hydra") or []]
        if not values:
            return None
        task = [f"{k}={','.join(v)}" for k, v in values.items()]
        source = "the jobs' .hydra/overrides.yaml (no multirun.yaml: reconstructed, one value list per key)"
    hydra_args = [a for a in hydra_args if a != "hydra.mode=MULTIRUN"]
    base = ["python", "-m", "rtc_sweep", *task, *hydra_args, "-m"]
    has_dir = any(a.startswith("hydra.sweep.dir=") for a in hydra_args)
    resume = base if has_dir else [*base[:-1], f"hydra.sweep.dir={sweep_dir}", "-m"]
    return Reproduce(command=_quote(base), resume=_quote(resume), source=source)


def experiment_question(task_overrides: Sequence[str]) -> str | None:
    """The header comment of the sweep's experiment preset (``+experiment=<name>``), which says what it asks."""
    for arg in task_overrides:
        key, _, name = arg.lstrip("+~").partition("=")
        if key != "experiment" or not name:
            continue
        for conf in CONF_DIRS:
            path = conf / "experiment" / f"{name}.yaml"
            if path.is_file():
                lines = []
                for line in path.read_text().splitlines():
                    if not line.startswith("#"):
                        break
                    text = line.lstrip("#").strip()
                    if not text.startswith("@package"):
                        lines.append(text)
                return " ".join(lines).strip() or None
    return None


def task_overrides(command: Reproduce | None) -> list[str]:
    return shlex.split(command.command)[3:-1] if command else []
