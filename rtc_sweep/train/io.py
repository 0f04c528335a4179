"""Small file helpers shared by the trainers: every write is atomic, so a killed run never leaves half a file."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def save_npz(path: Path, data: dict[str, Any]) -> None:
    """Arrays into one .npz (datasets, search state)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, **data)
    os.replace(tmp, path)


def save_pickle(path: Path, tree: Any) -> None:
    """Pickle a pytree of arrays (optimiser and trainer state for resuming) with numpy leaves."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        pickle.dump(jax.device_get(tree), f)
    os.replace(tmp, path)


def load_pickle(path: Path) -> Any:
    """Read what ``save_pickle`` wrote (our own resume files only: pickles are not safe to load from strangers)."""
    with path.open("rb") as f:
        tree = pickle.load(f)
    return jax.tree.map(jnp.asarray, tree)
