"""Policy files in the benchmark's pickle layout (reference-benchmark.md §4.5).

The benchmark pickles ``nnx.state(policy).to_pure_dict()``: a nested dict with int keys for list entries,
``None`` for disabled params, and jax ``ArrayImpl`` leaves of jax 0.4.35. Those leaves pickle through
``jax._src.array._reconstruct_array(fun, args, arr_state, aval_state)``, a private function that any jax may
rename, so the loader maps it to a numpy rebuild and never needs jax to unpickle. Files are read through
``rtc_sweep.core.safe_pickle``, which refuses every global outside a short allow-list: a checkpoint is data, and a
pickle may otherwise run arbitrary code.

``checkpoint=rtc-assets:<run>/<step>`` names one of the paper's published policies; ``rtc_sweep.core.assets``
downloads it into the user cache (``assets.fetch``), and ``load_policy`` reads the cached file.

Files written here hold numpy float32 leaves and load with a plain ``pickle.load`` (numpy 1.x or 2.x) and in
the benchmark's own ``eval_flow``.

A network of one's own (``model._target_``, ``rtc_sweep.core.network``) is stored the same way: its params are the
pure dict of its nnx state (``network.params_of``), checked on load against the tree its class builds.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rtc_sweep.core import network, safe_pickle
from rtc_sweep.core.network import ModelSpec, Params
from rtc_sweep.core.policy import ModelConfig
from rtc_sweep.errors import ConfigError


class _PolicyPickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        # numpy 2 pickles arrays through numpy._core, which numpy 1.x cannot import; np.ndarray(shape, dtype,
        # buffer) over a bytearray is readable by both and gives a writeable array.
        if type(obj) is np.ndarray:
            arr = np.ascontiguousarray(obj)
            return np.ndarray, (arr.shape, arr.dtype, bytearray(arr.tobytes()))
        return NotImplemented


def _to_jnp(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _to_jnp(v) for k, v in tree.items()}
    if tree is None:
        return None
    return jnp.asarray(np.asarray(tree, dtype=np.float32))


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    if tree is None:
        return None
    return np.asarray(tree, dtype=np.float32)


def infer_dims(params: Params) -> tuple[int, int]:
    """(obs_dim, action_dim) from the shapes: out_proj gives A, in_proj's rows are A + O ([x_t, obs])."""
    action_dim = int(np.shape(params["out_proj"]["kernel"])[1])
    return int(np.shape(params["in_proj"]["kernel"])[0]) - action_dim, action_dim


def infer_model_config(params: Params) -> ModelConfig:
    """The network sizes a params tree was built with (``simulated_delay`` is a training option, left None)."""
    block = params["mlp_stack"][0]
    H, token_hidden = np.shape(block["token_mix_in"]["kernel"])
    C, channel_hidden = np.shape(block["channel_mix_in"]["kernel"])
    return ModelConfig(
        action_chunk_size=int(H),
        channel_dim=int(C),
        channel_hidden_dim=int(channel_hidden),
        token_hidden_dim=int(token_hidden),
        num_layers=len(params["mlp_stack"]),
    )


def _tree_problems(found: Any, expected: Any, keypath: str = "") -> list[str]:
    """What differs between a loaded tree and the expected one (of ShapeDtypeStructs and None), key by key."""
    where = keypath or "<root>"
    if isinstance(expected, dict):
        if not isinstance(found, dict):
            return [f"at {where}: expected a dict, found {type(found).__name__}"]
        missing = [k for k in expected if k not in found]
        extra = [k for k in found if k not in expected]
        problems = [f"at {where}: missing keys {missing}, unexpected keys {extra}"] if missing or extra else []
        for k in expected:
            if k in found:
                problems += _tree_problems(found[k], expected[k], f"{keypath}[{k!r}]")
        return problems
    if expected is None:
        return [] if found is None else [f"at {where}: expected None, found shape {tuple(np.shape(found))}"]
    if found is None or np.shape(found) != tuple(expected.shape):
        got = "None" if found is None else tuple(np.shape(found))
        return [f"at {where}: expected shape {tuple(expected.shape)}, found {got}"]
    return []


def read_policy_tree(path: str | os.PathLike[str]) -> Any:
    """A policy file's tree as stored (numpy leaves), through the restricted unpickler; no layout check.

    Raises ``ConfigError("checkpoint", ...)`` naming the file; its ``__cause__`` is the
    ``safe_pickle.UnsafePickleError`` when the file tried to build something other than data.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("checkpoint", f"{path}: no such file")
    try:
        return safe_pickle.load_file(path)
    except safe_pickle.UnsafePickleError as e:
        raise ConfigError("checkpoint", f"{path}: not loaded: {e}") from e
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise ConfigError("checkpoint", f"{path}: not a policy pickle ({type(e).__name__}: {e})") from e


def load_policy(
    path: str | os.PathLike[str],
    model: ModelSpec | None = None,
    obs_dim: int | None = None,
    action_dim: int | None = None,
) -> Params:
    """Load a policy file (the benchmark's or ours) as a params tree with float32 jnp leaves.

    With ``model`` given the tree is checked against it, key by key and shape by shape. For the mixer
    (``ModelConfig``, or no ``model``) ``obs_dim`` and ``action_dim`` default to the ones the file implies; another
    network's file is checked only with both given (an ``rtc-assets:<run>/<step>`` reference is resolved to its
    cached file first, by ``rtc_sweep.core.assets.fetch``). Every problem raises ``ConfigError("checkpoint",
    ...)`` naming the file.
    """
    path = Path(path)
    raw = read_policy_tree(path)
    if model is not None and not isinstance(model, ModelConfig):
        if obs_dim is None or action_dim is None:
            raise ConfigError(
                "checkpoint", f"{path}: checking it against {model} needs obs_dim and action_dim (the level's)"
            )
        _check_tree(path, raw, model, obs_dim, action_dim, holds="")
        return _as_params(path, raw)
    try:
        file_obs, file_act = infer_dims(raw)
    except (KeyError, TypeError, ValueError, IndexError):
        raise ConfigError(
            "checkpoint", f"{path}: not a policy in the benchmark's layout (no in_proj/out_proj kernels)"
        ) from None
    if model is not None:
        obs_dim = file_obs if obs_dim is None else obs_dim
        action_dim = file_act if action_dim is None else action_dim
        try:
            holds = f"; the file holds {infer_model_config(raw)}, obs_dim={file_obs}, action_dim={file_act}"
        except (KeyError, TypeError, ValueError, IndexError):
            holds = ""
        _check_tree(path, raw, model, obs_dim, action_dim, holds)
    return _as_params(path, raw)


def _check_tree(path: Path, raw: Any, model: ModelSpec, obs_dim: int, action_dim: int, holds: str) -> None:
    """``ConfigError("checkpoint")`` listing how ``raw`` differs from the tree ``model`` builds at these sizes."""
    expected = jax.eval_shape(lambda: network.init(model, jax.random.key(0), obs_dim, action_dim))
    # Missing or extra keys (a different layer count, a different kind of file) explain the most; say them first.
    problems = sorted(_tree_problems(raw, expected), key=lambda p: "keys" not in p)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ConfigError(
            "checkpoint",
            f"{path} does not fit model {model} with obs_dim={obs_dim}, action_dim={action_dim}: "
            f"{'; '.join(problems[:3])}{more}{holds}",
        )


def _as_params(path: Path, raw: Any) -> Params:
    try:
        return _to_jnp(raw)
    except (TypeError, ValueError) as e:
        raise ConfigError("checkpoint", f"{path}: a leaf is not a float array ({e})") from e


def save_policy(path: str | os.PathLike[str], params: Params | nnx.Module) -> None:
    """Write ``params`` in the benchmark's layout (numpy float32 leaves, None where absent), atomically.

    ``params`` may be an nnx module (a ``MixerPolicy``, a network of one's own): its ``network.params_of``.
    """
    from rtc_sweep.io import atomic_path

    tree = _to_numpy(network.params_of(params) if isinstance(params, nnx.Module) else params)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        _PolicyPickler(f).dump(tree)
        f.flush()
        os.fsync(f.fileno())
