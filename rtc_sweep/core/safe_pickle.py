"""The one way this package reads a pickle: a restricted unpickler for the benchmark's pure-dict layout.

A pickle is a program: ``pickle.load`` imports and calls whatever the file names (``os.system``,
``builtins.eval``, any class), so a policy downloaded from the web, or handed over by someone, could run code
the moment it is opened. Every pickle the package reads (policy checkpoints, PPO experts for ``collect``, the
trainers' own resume files) goes through :func:`load` instead, which builds only

* dicts, lists and tuples (the containers), ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``;
* numpy arrays and scalars of non-object dtypes, rebuilt through numpy's own pickle entry points
  (``numpy[._]core.multiarray._reconstruct`` / ``scalar``, ``numpy[._]core.numeric._frombuffer``,
  ``numpy.ndarray``, ``numpy.dtype``, ``bytearray`` buffers, and protocol 2's bytes: latin-1
  ``_codecs.encode`` and an empty ``bytes()``);
* jax arrays as jax 0.4 pickled them (``jax._src.array._reconstruct_array``), mapped to a numpy rebuild so that
  no jax private function is imported or called.

Any other global is refused with :class:`UnsafePickleError` *before* it is imported, so nothing it names runs;
a result that is not made of the types above (an object array, a set, a bytes leaf) is refused as well.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

_MAX_DEPTH = 64  # policy trees are ~5 deep and trainer states ~15; a cycle or a pathological nesting stops here

ALLOWED_CONTENT = "dicts, lists, tuples, numpy arrays, numbers, strings and None"


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names something outside the pure-data allow-list; nothing it names was imported or run."""

    def __init__(self, what: str):
        super().__init__(f"refused to build {what}: only {ALLOWED_CONTENT} are allowed (nothing in the file was run)")
        self.what = what


_reconstruct = np._core.multiarray._reconstruct  # type: ignore[attr-defined]
_scalar = np._core.multiarray.scalar  # type: ignore[attr-defined]
_frombuffer = np._core.numeric._frombuffer  # type: ignore[attr-defined]


def _plain_dtype(dtype: Any) -> np.dtype[Any]:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError(f"an array of dtype {dtype!r}")
    return dtype


def _safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"an array of type {subtype!r}")
    # The dtype here is a placeholder ('b'); the real one arrives with BUILD (__setstate__), checked at the end.
    return _reconstruct(np.ndarray, shape, dtype)


def _safe_scalar(dtype: Any, *args: Any) -> Any:
    return _scalar(_plain_dtype(dtype), *args)


def _safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    return _frombuffer(buf, _plain_dtype(dtype), shape, order)


def _latin1(text: Any, encoding: Any) -> bytes:
    # How protocol 2 stores bytes (numpy's raw data among them): _codecs.encode(str, 'latin1').
    if type(text) is not str or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode with {type(text).__name__}, {encoding!r}")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    # How protocol 2 stores b"": __builtin__.bytes().
    if args:
        raise UnsafePickleError("bytes(...) with arguments")
    return b""


def _rebuild_jax_array(fun: Callable[..., Any], args: tuple[Any, ...], arr_state: Any, aval_state: Any) -> Any:
    # What jax 0.4's _reconstruct_array does, minus the device put: numpy's reconstruct plus __setstate__.
    del aval_state  # only weak_type, which does not matter for stored data
    if fun is not _safe_reconstruct:
        raise UnsafePickleError("a jax array through anything but numpy's _reconstruct")
    arr = fun(*args)
    arr.__setstate__(arr_state)
    return arr


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("jax._src.array", "_reconstruct_array"): _rebuild_jax_array,
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy.core.multiarray", "scalar"): _safe_scalar,
    ("numpy._core.multiarray", "scalar"): _safe_scalar,
    ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
    # _reconstruct's subtype, and np.ndarray(shape, dtype, buffer) as rtc_sweep.core.checkpoint writes arrays (numpy
    # refuses an object dtype over a buffer; any other object dtype is refused by the final check).
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    ("_codecs", "encode"): _latin1,
    ("builtins", "bytes"): _empty_bytes,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # protocol 2's name for builtins (what fix_imports maps)
            module = "builtins"
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"a persistent reference {pid!r}")


_SCALARS = (type(None), bool, int, float, complex, str)


def _check_pure(obj: Any, checked: set[int], depth: int = 0) -> None:
    if type(obj) in _SCALARS:
        return
    if id(obj) in checked:  # shared (memoised) subtrees are checked once
        return
    if depth > _MAX_DEPTH:
        raise UnsafePickleError(f"a structure nested deeper than {_MAX_DEPTH} levels (or a cycle)")
    kind = type(obj)
    if kind is dict:
        for k, v in obj.items():
            _check_pure(k, checked, depth + 1)
            _check_pure(v, checked, depth + 1)
    elif kind in (list, tuple):
        for v in obj:
            _check_pure(v, checked, depth + 1)
    elif kind is np.ndarray or isinstance(obj, np.generic):
        _plain_dtype(obj.dtype)
    else:
        raise UnsafePickleError(f"a {kind.__module__}.{kind.__qualname__} value")
    checked.add(id(obj))


def load(file: IO[bytes]) -> Any:
    """Unpickle pure data only (see the module docstring); raises ``UnsafePickleError`` on anything else.

    A damaged file raises what ``pickle`` raises for it (``UnpicklingError``, ``EOFError``, ``ValueError``, ...).
    """
    obj = _Unpickler(file).load()
    _check_pure(obj, set())
    return obj


def loads(data: bytes) -> Any:
    return load(io.BytesIO(data))


def load_file(path: str | os.PathLike[str]) -> Any:
    with Path(path).open("rb") as f:
        return load(f)
