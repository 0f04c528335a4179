"""The one interface between the samplers and a flow network, and how a network crosses ``jax.jit``.

**The interface** (``FlowPolicy``): a flow policy has its sizes, ``action_chunk_size`` (H), ``action_dim`` (A) and
``obs_dim`` (O), and ``velocity(obs [B, O], x_t [B, H, A], time) -> [B, H, A]``, the flow's velocity at flow time
``time``: [B] (one per sample, what the samplers pass) or [B, H] (one per action position, what training-time RTC
trains with). Time runs from 0 (noise) to 1 (data). That is all the samplers call. A policy may add
``velocity_with_prefix(obs, x_t, time [B], prefix [B, H] bool)``, the velocity with flow time 1 at the prefix
positions; without it ``velocity_with_prefix`` below asks ``velocity`` for per-position times.

**Crossing jit.** A policy is split in two halves:

- the *model spec* (``ModelSpec``), static: a frozen, hashable config naming the network and its keys
  (``policy.ModelConfig`` for the benchmark's mixer, ``NetworkConfig`` for a class named by ``model._target_``),
  equal for every policy of the same class and shape;
- its *params*, traced: a pytree of arrays. For an nnx module it is the pure dict of its state
  (``nnx.to_pure_dict``), with ``None`` where a layer's parameter is disabled (``bias``, ``scale``), as the
  benchmark's flax 0.10 pickled them: for the mixer this is exactly the benchmark's checkpoint layout.

The rollout passes the spec as a static argument and the params as traced ones, as before: one compile serves
every checkpoint of the same shape. Inside the trace ``bind(spec, params, obs_dim, action_dim)`` joins them again;
for an nnx module that is ``nnx.merge(graphdef, state)``, the graphdef made once per spec and sizes (abstractly,
``nnx.eval_shape``, no arrays) and cached. ``merge`` only builds Python objects around the traced arrays, so the
program jit compiles is the network's arithmetic and nothing else.

**Speed.** Flax costs the rollout nothing measurable, so the nnx module is the computation behind the interface.
The mixer as an nnx module compiles to the same optimised XLA program as the pure functions it replaced (identical up
to instruction names) and gives bit-identical outputs, forward and backward; ``scripts/bench_policy.py`` times both
in one run, its pre-nnx baseline plugged in as a ``ModelSpec`` of its own over those pure functions. nnx / pure on 2
shared CPU cores: velocity 0.98 (small) and 1.02 (default), the samplers 0.94-1.06 (naive, realtime, bid-16,
training_time; both signs: noise), a 32-env x 64-tick rollout 1.002; tracing takes 4-8 ms more per sampler. A
pure-function network plugs in the same way (a ``ModelSpec`` whose ``bind`` wraps its params).

**A user's network** (``model._target_=my_pkg.MyPolicy``): an ``nnx.Module`` whose constructor takes
``obs_dim``, ``action_dim`` (the level's), ``rngs`` (``nnx.Rngs`` from the run's seed, for ``checkpoint=random``)
and its own keys, among them ``action_chunk_size``. ``network_config`` checks the ``model`` keys against that
signature (an error names ``model.<key>`` and the allowed keys) and makes its ``NetworkConfig``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import types
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from flax import nnx

from rtc_sweep.errors import ConfigError

Params = Any  # a pytree of arrays; for an nnx module the pure dict of its state (None where a param is disabled)

# What the runner gives every network's constructor; a `model` node may not set them.
RUNNER_ARGS = ("obs_dim", "action_dim", "rngs")
# Attributes of flax layers that hold None when the layer has that parameter disabled (Linear(use_bias=False),
# LayerNorm(use_scale=False)): the benchmark's flax 0.10 pickled them as None leaves, flax >= 0.11 leaves them out.
_OPTIONAL_PARAMS = ("bias", "scale")


@runtime_checkable
class FlowPolicy(Protocol):
    """What the samplers call: the sizes and the velocity (module docstring)."""

    action_chunk_size: int
    action_dim: int
    obs_dim: int

    def velocity(self, obs: jax.Array, x_t: jax.Array, time: jax.Array) -> jax.Array: ...


class ModelSpec(Protocol):
    """The static half of a policy: frozen, hashable, compared by value (a jit static argument)."""

    @property
    def action_chunk_size(self) -> int: ...

    @property
    def simulated_delay(self) -> int | None: ...

    def bind(self, params: Params, obs_dim: int, action_dim: int) -> FlowPolicy:
        """The policy these params make (inside a trace or outside)."""
        ...

    def init(self, key: jax.Array, obs_dim: int, action_dim: int) -> Params:
        """Fresh params from ``key`` (``checkpoint=random``)."""
        ...

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the ``model.<key>`` whose value is invalid; needs no compile."""
        ...


# ---------------------------------------------------------------------------------------------------------------
# What the samplers use


def bind(model: ModelSpec, params: Params, obs_dim: int, action_dim: int) -> FlowPolicy:
    """The policy ``params`` make under ``model`` (``model.bind``)."""
    return model.bind(params, obs_dim, action_dim)


def init(model: ModelSpec, key: jax.Array, obs_dim: int, action_dim: int) -> Params:
    """Fresh params for ``model`` (``model.init``): the mixer draws the benchmark's own init from ``key``."""
    return model.init(key, obs_dim, action_dim)


def batch_time(time: jax.Array | float, batch: int) -> jax.Array:
    """A flow time as the interface takes it: float32 [B] from a scalar, unchanged when [B] or [B, H]."""
    time = jnp.asarray(time, jnp.float32)
    return jnp.broadcast_to(time, (batch,)) if time.ndim == 0 else time


def velocity_with_prefix(
    policy: FlowPolicy, obs: jax.Array, x_t: jax.Array, time: jax.Array, prefix: jax.Array
) -> jax.Array:
    """The velocity with flow time 1 at the ``prefix`` positions ([B, H] bool) and ``time`` ([] or [B]) elsewhere.

    The policy's own ``velocity_with_prefix`` when it has one (the mixer's costs one per-sample network), else
    ``velocity`` with per-position times.
    """
    B, H, _ = x_t.shape
    time = batch_time(time, B)
    prefix = jnp.broadcast_to(prefix, (B, H))
    own: Callable[..., jax.Array] | None = getattr(policy, "velocity_with_prefix", None)
    if own is not None:
        return own(obs, x_t, time, prefix)
    return policy.velocity(obs, x_t, jnp.where(prefix, 1.0, time[:, None]))


# ---------------------------------------------------------------------------------------------------------------
# nnx modules: the params pytree, the graphdef, merge


def params_of(module: nnx.Module) -> Params:
    """A module's params: the pure dict of its state, ``None`` where a flax layer has a parameter disabled.

    For the mixer this is the benchmark's checkpoint layout (what ``checkpoint.save_policy`` writes).
    """
    tree: dict[Any, Any] = nnx.to_pure_dict(nnx.state(module))
    for path, sub in nnx.iter_modules(module):
        fields = vars(sub)
        for name in _OPTIONAL_PARAMS:
            if name in fields and fields[name] is None:
                node = tree
                for part in path:
                    node = node.setdefault(part, {})
                node[name] = None
    return tree


def strip_none(tree: Any) -> Any:
    """``params_of``'s tree as nnx's state holds it: without the ``None`` leaves and the dicts left empty."""
    if not isinstance(tree, Mapping):
        return tree
    out = {k: strip_none(v) for k, v in tree.items() if v is not None}
    return {k: v for k, v in out.items() if not (isinstance(v, Mapping) and not v)}


@dataclasses.dataclass(frozen=True)
class NnxDef:
    """What ``merge`` needs of an nnx class at given sizes: its graphdef and the tree structure its state has."""

    graphdef: nnx.GraphDef[Any]
    treedef: Any  # jax PyTreeDef of strip_none(params)


@functools.cache
def nnx_def(cls: type, obs_dim: int, action_dim: int, kwargs: tuple[tuple[str, Any], ...]) -> NnxDef:
    """``cls(obs_dim, action_dim, rngs=..., **kwargs)`` built abstractly (no arrays), cached per class and sizes."""
    abstract = nnx.eval_shape(lambda: cls(obs_dim=obs_dim, action_dim=action_dim, rngs=nnx.Rngs(0), **dict(kwargs)))
    graphdef, state = nnx.split(abstract)
    return NnxDef(graphdef, jax.tree.structure(nnx.to_pure_dict(state)))


def merge(definition: NnxDef, params: Params) -> Any:
    """The module ``params`` (``params_of``'s layout) make: ``nnx.merge(graphdef, state)``; works inside a trace."""
    state = strip_none(params)
    found = jax.tree.structure(state)
    if found != definition.treedef:
        raise ValueError(f"params do not fit the network: expected the tree {definition.treedef}, got {found}")
    return nnx.merge(definition.graphdef, state)


# ---------------------------------------------------------------------------------------------------------------
# A user's network: model._target_ and its keys


def import_target(target: str) -> type[Any]:
    """The class ``model._target_`` names; a ``ConfigError("model._target_")`` saying why when it is not one."""
    allowed = "allowed: the import path of an nnx.Module class (PYTHONPATH), e.g. rtc_sweep.core.policy.MixerPolicy"
    module_name, _, name = str(target).rpartition(".")
    if not module_name or not name:
        raise ConfigError("model._target_", f"{target!r} is not a dotted path module.Class; {allowed}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError("model._target_", f"{target!r}: cannot import {module_name} ({e}); {allowed}") from e
    cls = getattr(module, name, None)
    if cls is None:
        raise ConfigError("model._target_", f"{target!r}: {module_name} has no {name}; {allowed}")
    if not (isinstance(cls, type) and issubclass(cls, nnx.Module)):
        raise ConfigError("model._target_", f"{target!r} is a {type(cls).__name__}, not an nnx.Module class; {allowed}")
    if not callable(getattr(cls, "velocity", None)):
        raise ConfigError("model._target_", f"{target!r} has no velocity(obs, x_t, time) method (FlowPolicy)")
    return cls


def constructor_keys(cls: type[Any]) -> tuple[dict[str, inspect.Parameter], bool]:
    """The keys a network's constructor takes from the ``model`` node (not ``RUNNER_ARGS``), and whether it
    takes ``**kwargs``; a ``ConfigError("model._target_")`` when it lacks what the runner passes."""
    # The class's own __init__: nnx's metaclass makes inspect.signature(cls) read (*args, **kwargs).
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop(next(iter(params)), None)  # self
    missing = [a for a in (*RUNNER_ARGS, "action_chunk_size") if a not in params]
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if missing and not var_kw:
        raise ConfigError(
            "model._target_",
            f"{cls.__module__}.{cls.__qualname__}'s constructor takes no {', '.join(missing)}; a flow policy's takes "
            f"obs_dim, action_dim and rngs (given by the runner) and action_chunk_size (a model key)",
        )
    keys = {
        n: p
        for n, p in params.items()
        if n not in RUNNER_ARGS and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }
    return keys, var_kw


def _type_name(hint: Any) -> str:
    return " | ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in typing.get_args(hint)) or (
        getattr(hint, "__name__", str(hint))
    )


def check_value(key: str, value: Any, hint: Any) -> Any:
    """``value`` as the annotation ``hint`` types it (int, float, bool, str, ``X | None``; lists become tuples);
    a ``ConfigError(key)`` when it does not fit. Other annotations pass the value through."""
    if isinstance(value, list | tuple):
        value = tuple(value)
    elif isinstance(value, Mapping):
        raise ConfigError(key, f"{dict(value)!r}; allowed: a number, string, boolean, null or list")
    if hint is Any:
        return value
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options or hint is None:
            return None
        raise ConfigError(key, f"null; allowed: {_type_name(hint)}")
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if option not in (bool, int, float, str, type(None)):
            return value  # an annotation this check does not know: the constructor decides
    raise ConfigError(key, f"{value!r}; allowed: {_type_name(hint)}")


class NetworkConfig:
    """The model spec of a network named by ``model._target_``: a frozen dataclass made per class (``network_config``)
    whose fields are ``_target_``, the class's keys and ``simulated_delay``, so that results.csv has them as
    ``model.<key>`` columns. ``simulated_delay`` (training-time RTC's; null when the class does not declare it)
    goes to the constructor only when the class declares it."""

    _target_: str
    action_chunk_size: int
    simulated_delay: int | None
    _constructor_keys: tuple[str, ...] = ()

    def policy_class(self) -> type:
        return import_target(self._target_)

    def kwargs(self) -> dict[str, Any]:
        """The constructor's keyword arguments besides ``RUNNER_ARGS``."""
        return {k: getattr(self, k) for k in self._constructor_keys}

    def build(self, obs_dim: int, action_dim: int, rngs: nnx.Rngs) -> Any:
        return self.policy_class()(obs_dim=obs_dim, action_dim=action_dim, rngs=rngs, **self.kwargs())

    def definition(self, obs_dim: int, action_dim: int) -> NnxDef:
        return nnx_def(self.policy_class(), obs_dim, action_dim, tuple(self.kwargs().items()))

    def bind(self, params: Params, obs_dim: int, action_dim: int) -> FlowPolicy:
        return merge(self.definition(obs_dim, action_dim), params)

    def init(self, key: jax.Array, obs_dim: int, action_dim: int) -> Params:
        return params_of(self.build(obs_dim, action_dim, nnx.Rngs(key)))

    def validate(self) -> None:
        H = self.action_chunk_size
        if not (isinstance(H, int) and H >= 1):
            raise ConfigError("model.action_chunk_size", f"{H!r}; allowed: an int >= 1")
        d = self.simulated_delay
        if d is not None and not (isinstance(d, int) and d >= 1):
            raise ConfigError("model.simulated_delay", f"{d!r}; allowed: null or an int >= 1")

    def __reduce__(self) -> tuple[Any, ...]:
        items = tuple((f.name, getattr(self, f.name)) for f in dataclasses.fields(self))  # type: ignore[arg-type]
        return _rebuild_network_config, (items, self._constructor_keys)


@functools.cache
def _config_class(names: tuple[str, ...], constructor_keys: tuple[str, ...], class_name: str) -> type:
    cls = dataclasses.make_dataclass(
        class_name,
        [(n, Any) for n in names],
        bases=(NetworkConfig,),
        frozen=True,
        namespace={"_constructor_keys": constructor_keys},
    )
    cls.__module__ = __name__
    return cls


def _rebuild_network_config(items: tuple[tuple[str, Any], ...], constructor_keys: tuple[str, ...]) -> NetworkConfig:
    target = dict(items)["_target_"]
    cls = _config_class(tuple(n for n, _ in items), constructor_keys, _config_name(target))
    return cls(**dict(items))


def _config_name(target: str) -> str:
    return str(target).rpartition(".")[2] + "Config"


def network_config(target: str, node: Mapping[str, Any], ignore: Collection[str] = ()) -> NetworkConfig:
    """The spec of the class ``target`` names, from a ``model`` node (plain values; ``_target_`` is left out).

    Every key must be one the constructor declares (``ConfigError("model.<key>")`` listing them), except those in
    ``ignore``: the mixer's keys the composed model preset carries, which a class that does not declare them does
    not get. A declared key missing from ``node`` takes the constructor's default; one without a default must be
    given. Values are checked against the constructor's annotations (int, float, bool, str, optional).
    """
    cls = import_target(target)
    keys, var_kw = constructor_keys(cls)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: leave the values to the constructor
        hints = {}
    values: dict[str, Any] = {}
    for key, value in node.items():
        if key == "_target_":
            continue
        if key in RUNNER_ARGS:
            raise ConfigError(f"model.{key}", "is given by the runner (the level's sizes, the seed); remove it")
        if key in keys or var_kw:
            values[key] = check_value(f"model.{key}", value, hints.get(key, Any))
        elif key not in ignore:
            raise ConfigError(f"model.{key}", f"not a key of {target}; allowed: {', '.join(keys) or 'none'}")
    for key, param in keys.items():
        if key not in values:
            if param.default is inspect.Parameter.empty:
                raise ConfigError(f"model.{key}", f"{target} needs it and it has no default; give +model.{key}=...")
            values[key] = param.default
    if "action_chunk_size" not in values:
        raise ConfigError("model.action_chunk_size", f"{target} takes **kwargs but no action_chunk_size was given")
    # One order whatever the node's: the signature's, then any **kwargs keys sorted (the dataclass and its columns)
    values = {k: values[k] for k in [*(k for k in keys if k in values), *sorted(k for k in values if k not in keys)]}
    constructor = tuple(values)
    values.setdefault("simulated_delay", None)
    names = ("_target_", *values)
    spec = _config_class(names, constructor, _config_name(target))(_target_=target, **values)
    try:
        hash(spec)
    except TypeError as e:
        raise ConfigError("model", f"the keys of {target} must be hashable values ({e})") from e
    spec.validate()
    return spec


def check_policy(model: ModelSpec, obs_dim: int, action_dim: int) -> None:
    """Build the policy abstractly (no arrays, no compile) and check its sizes and its velocity's shape; a
    ``ConfigError("model._target_")`` saying what does not fit the interface."""
    what = getattr(model, "_target_", type(model).__name__)
    B, H = 2, model.action_chunk_size
    obs = jax.ShapeDtypeStruct((B, obs_dim), jnp.float32)
    x_t = jax.ShapeDtypeStruct((B, H, action_dim), jnp.float32)
    try:
        params = jax.eval_shape(lambda: model.init(jax.random.key(0), obs_dim, action_dim))
        policy = model.bind(params, obs_dim, action_dim)  # abstract leaves: nothing is computed
        sizes = (policy.action_chunk_size, policy.obs_dim, policy.action_dim)
        out = jax.eval_shape(
            lambda p, o, x: model.bind(p, obs_dim, action_dim).velocity(o, x, jnp.zeros((B,), jnp.float32)),
            params,
            obs,
            x_t,
        )
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(
            "model._target_", f"{what}: building it or its velocity failed: {type(e).__name__}: {e}"
        ) from e
    if sizes != (H, obs_dim, action_dim):
        raise ConfigError(
            "model._target_",
            f"{what} has action_chunk_size, obs_dim, action_dim = {sizes}; expected {(H, obs_dim, action_dim)}",
        )
    if out.shape != (B, H, action_dim):
        raise ConfigError(
            "model._target_", f"{what}: velocity returned shape {out.shape}; expected {(B, H, action_dim)}"
        )
