"""Small file helpers shared by the trainers: every write is atomic, so a killed run never leaves half a file."""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rtc_sweep.core import safe_pickle

log = logging.getLogger(__name__)

RESUMED_KEY = "resumed_with_changes"
# What a resume of an iterative trainer (self-imitation, DAgger, relabelling) is expected to change: more iterations,
# or the folder it was copied to. record_settings logs these at INFO; any other change is a warning.
ITERATIONS_MAY_CHANGE = frozenset({"num_iterations", "run_dir"})


def completed_steps(run_dir: Path) -> list[int]:
    """The finished steps of a resumable run (epochs, iterations): its numbered folders holding a stats.json,
    sorted. A step's stats.json is written last, so a folder without one was interrupted."""
    return sorted(int(p.name) for p in run_dir.iterdir() if p.name.isdigit() and (p / "stats.json").is_file())


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def record_settings(
    run_dir: Path,
    settings: dict[str, Any],
    *,
    resuming: bool,
    at: tuple[str, int],
    what: str,
    quiet: frozenset[str] = frozenset(),
) -> None:
    """Write ``<run_dir>/config.json``, this start's settings, and say what a resume changed.

    On a resume, each setting that differs from the earlier start's record is named in one log line, ``key: old
    -> new``, and appended to the record's ``resumed_with_changes`` list with the step it took effect at
    (``at``, e.g. ``("epoch", 3)``), since the steps already done ran under the old values. The line is a warning
    unless every changed key is in ``quiet`` (the ones a resume is expected to change, such as a longer search, or
    a folder that was copied elsewhere); those are still recorded. A key the earlier record lacks (a run from
    before the record existed) counts as unchanged.
    """
    settings = json.loads(json.dumps(settings))  # compare as JSON reads it back (tuples become lists)
    record = run_dir / "config.json"
    previous = json.loads(record.read_text()) if resuming and record.is_file() else {}
    history = list(previous.get(RESUMED_KEY, []))
    changed = {k: (previous[k], v) for k, v in settings.items() if k in previous and previous[k] != v}
    if changed:
        loud = any(k not in quiet for k in changed)
        log.log(
            logging.WARNING if loud else logging.INFO,
            "%s resumes %s at %s %d with changed settings (the steps already done ran under the old ones; "
            "config.json records both): %s",
            what,
            run_dir,
            *at,
            "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items()),
        )
        history.append({at[0]: at[1], **{k: [old, new] for k, (old, new) in changed.items()}})
    write_json(record, {**settings, RESUMED_KEY: history})


def save_npz(path: Path, data: dict[str, Any]) -> None:
    """Arrays into one .npz (datasets, search state)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, **data)
    os.replace(tmp, path)


RESUME_FORMAT = "rtc_sweep.resume/1"


def save_pickle(path: Path, tree: Any) -> None:
    """A trainer's resume state (a pytree of arrays: optimiser state, env state, counters), atomically.

    Written in the pure layout every pickle the package reads must have (``rtc_sweep.core.safe_pickle``): a dict
    ``{"format": RESUME_FORMAT, "leaves": [numpy arrays in jax.tree order]}``, with no classes (the optax and
    Kinetix state types are not pure data). ``load_pickle`` puts the leaves back into the caller's structure.
    """
    leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        pickle.dump({"format": RESUME_FORMAT, "leaves": leaves}, f)
    os.replace(tmp, path)


def load_pickle(path: Path, like: Any) -> Any:
    """Read what ``save_pickle`` wrote, through the restricted unpickler, into the structure of ``like``.

    ``like`` is a pytree of the same structure as the state that was saved (arrays, ``jax.ShapeDtypeStruct``s
    from ``jax.eval_shape``, or Python numbers); each leaf must match its shape. Returns jnp leaves.
    """
    try:
        saved = safe_pickle.load_file(path)
    except safe_pickle.UnsafePickleError as e:
        raise ValueError(
            f"{path}: not loaded: {e}. A resume file from before rtc_sweep wrote them as pure data holds such "
            "classes; delete it to restart that stage from its beginning"
        ) from e
    if not (isinstance(saved, dict) and saved.get("format") == RESUME_FORMAT and isinstance(saved.get("leaves"), list)):
        raise ValueError(f"{path}: not a resume file of this rtc_sweep (format {RESUME_FORMAT!r})")
    leaves, treedef = jax.tree.flatten(like)
    found = saved["leaves"]
    if len(found) != len(leaves):
        raise ValueError(f"{path}: holds {len(found)} arrays, this run's state has {len(leaves)}; a different config?")
    for (where, want), got in zip(jax.tree_util.tree_flatten_with_path(like)[0], found, strict=True):
        if np.shape(got) != np.shape(want):
            raise ValueError(
                f"{path}: {jax.tree_util.keystr(where)} has shape {np.shape(got)}, this run's state "
                f"{np.shape(want)}; a different config?"
            )
    return jax.tree.map(jnp.asarray, jax.tree.unflatten(treedef, found))
