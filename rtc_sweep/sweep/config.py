"""The typed schema behind ``rtc_sweep/conf/`` and its one conversion into the frozen runtime config.

``rtc_sweep/conf/config.yaml`` composes a ``level``, ``delay_profile``, ``method``, ``execute_policy`` and ``model``
option onto ``RtcSweepSchema``. Every node is a dataclass in Hydra's ConfigStore, so a misspelt key
(``method.nme=...``) or a wrong type (``num_evals=many``) fails at composition, naming the key.

The ``delay_profile``, ``method`` and ``execute_policy`` keys are declared once, in ``core/options.py``: the frozen
dataclasses the rollout reads, and for each kind of option (delay mode, method, execute mode) the fields it reads.
From the two this module builds one schema per kind (``delay_profile_schema_mixture``: the mixture's keys only,
the defaults of the dataclass), which each YAML option extends through its defaults list::

    # rtc_sweep/conf/delay_profile/long_tail.yaml
    defaults:
      - /delay_profile_schema_mixture@_here_
      - _self_
    name: long_tail
    ...

So ``--help`` and ``--cfg job`` show the chosen option's keys, and ``method=naive method.n_samples=4`` fails at
composition naming ``method.n_samples``. ``to_job_config`` converts the composed config into the frozen
dataclasses, checking each group's keys against its kind once more (an option without a schema, a loaded
``.hydra/config.yaml``, a changed ``mode``); ``validate`` then checks every value and resolves what the loaders
need (policy files, a trace file read) once, still before JAX compiles anything.

This module imports only Hydra, OmegaConf and the JAX-free ``core/options.py`` at the top: ``--help``, ``--cfg``
and tab completion stay fast, and JAX is not imported before ``runtime.configure_host_devices`` has run.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from rtc_sweep.core.options import (
    DELAY_GROUP,
    EXECUTE_GROUP,
    METHOD_GROUP,
    OPTION_GROUPS,
    OptionGroup,
    config_keys,
    schema_type,
)
from rtc_sweep.errors import ConfigError

if TYPE_CHECKING:
    from rtc_sweep.core.run_config import RunConfig

SCHEMA_NAME = "rtc_sweep_schema"
T = TypeVar("T")


def _schema_default(default: Any) -> Any:
    if isinstance(default, tuple):
        return field(default_factory=functools.partial(list, default))
    return field(default=default)


def option_schema(group: OptionGroup, kind: str) -> type:
    """The Hydra schema of one kind of option: the fields ``group.keys[kind]`` of the group's dataclass, in their
    order, with their defaults (the selector's is ``kind``)."""
    hints = typing.get_type_hints(group.fields)
    keys = group.keys[kind]
    fields = [
        (f.name, schema_type(hints[f.name]), _schema_default(kind if f.name == group.selector else f.default))
        for f in dataclasses.fields(group.fields)
        if f.name in keys
    ]
    name = "".join(part.capitalize() for part in (*group.key.split("_"), *kind.split("_")))  # DelayProfileMixture
    schema = dataclasses.make_dataclass(name, fields)
    schema.__module__ = __name__
    return schema


# group -> kind -> its schema (delay_profile -> mixture -> DelayProfileMixture)
OPTION_SCHEMAS: dict[str, dict[str, type]] = {g.key: {k: option_schema(g, k) for k in g.keys} for g in OPTION_GROUPS}
# Module attributes too: a composed config holds them as its nodes' types, and pickles them by name (submitit).
globals().update({schema.__name__: schema for kinds in OPTION_SCHEMAS.values() for schema in kinds.values()})
_KIND_OF_SCHEMA: dict[type, tuple[OptionGroup, str]] = {
    schema: (g, kind) for g in OPTION_GROUPS for kind, schema in OPTION_SCHEMAS[g.key].items()
}


@dataclass
class LevelSchema:
    name: str = "grasp_easy"  # a benchmark level (level=<name> picks it) or a path to a level JSON (level.name=x.json)


# model._target_ of the benchmark's MLP-mixer (rtc_sweep/core/policy.py MIXER_TARGET; named here without importing JAX)
MIXER_TARGET = "rtc_sweep.core.policy.MixerPolicy"


@dataclass
class ModelSchema:
    """The mixer's keys (``model._target_`` unset or ``MIXER_TARGET``), with their defaults.

    The ``model`` node itself is untyped (``RtcSweepSchema.model``): a network of one's own
    (``model._target_=my_pkg.MyPolicy``) brings keys of its own, which its constructor's signature types.
    ``policy.model_from_config`` checks every key against the class (these for the mixer) before anything compiles,
    naming ``model.<key>`` and the keys allowed.
    """

    action_chunk_size: int = 8  # H: actions per chunk
    channel_dim: int = 256  # width of each action token and of the time embedding
    channel_hidden_dim: int = 512  # hidden width of the channel-mixing MLP
    token_hidden_dim: int = 64  # hidden width of the token-mixing MLP (mixes the H positions)
    num_layers: int = 4  # mixer blocks
    simulated_delay: int | None = None  # training-time RTC: max delay simulated in training; null = plain BC policy


@dataclass
class RtcSweepSchema:
    level: LevelSchema = field(default_factory=LevelSchema)  # which level to evaluate on
    # The three option groups: each option's schema types its keys (OPTION_SCHEMAS); an empty node is the defaults
    delay_profile: Any = field(default_factory=dict)  # the law of the inference delay (core/options.py DelayFields)
    method: Any = field(default_factory=dict)  # how a new chunk is sampled given the old one (MethodConfig)
    execute_policy: Any = field(default_factory=dict)  # how many actions of each chunk run (ExecutePolicy)
    # The flow network: model._target_ (default the mixer) and its keys (ModelSchema's, or a user class's own)
    model: Any = field(default_factory=lambda: {"_target_": MIXER_TARGET})  # must match the checkpoint
    seed: int = 0  # the whole run (initial states, flow noise, delay draws, random init) is a function of it
    num_evals: int = 256  # environments (episodes) per level; the benchmark uses 2048
    num_flow_steps: int = 5  # Euler steps of the flow sampler
    checkpoint: str | None = None  # policy .pkl; null = shipped; random = init; rtc-assets:bc/31 = the paper's
    max_timesteps: int = 256  # T: ticks per environment that count (the benchmark's episode length)
    micro_batch: int = 512  # environments per compiled rollout call; lower it when the GPU runs out of memory
    action_noise_std: float = 0.1  # std of the Gaussian noise the environment adds to every commanded action
    video: bool = False  # also render one environment's rollout to rollout.mp4 in the job folder
    progress: bool = True  # show a progress bar while evaluating (only on a terminal)
    resume: bool = True  # skip the job when its folder already holds a complete results.csv for this config
    reference_grid_only: bool = False  # skip (d, s) outside the RTC paper's grid d <= s <= H - d (fixed_delay_sweep)
    compatible_only: bool = False  # skip training_time jobs on a model without simulated_delay (tt_vs_rtc)
    synchronous_naive_only: bool = False  # skip execute_policy=synchronous jobs of any method but naive (sweeps)


JOB_DIR_MAX_BYTES = 200  # a file name's limit is 255 bytes on common file systems; the hash suffix fits under it


def job_dir_name(override_dirname: str) -> str:
    """A sweep job's folder name (``hydra.sweep.subdir``) from Hydra's ``override_dirname``: one path component.

    A swept value holding ``/`` (``checkpoint=runs/a/policy.pkl``) would otherwise nest the job folder inside folders
    named after the path, and a long one would exceed the file system's 255-byte name limit. ``/`` becomes ``%2F``;
    a name over ``JOB_DIR_MAX_BYTES`` is cut and ends in ``~`` and 12 hex digits of the full name's SHA-1, so two jobs
    never share a folder and a rerun with the same ``hydra.sweep.dir`` finds each job's folder again.
    """
    name = override_dirname.replace("%", "%25").replace("/", "%2F")
    if len(name.encode()) <= JOB_DIR_MAX_BYTES:
        return name
    digest = hashlib.sha1(override_dirname.encode()).hexdigest()[:12]
    head = name.encode()[: JOB_DIR_MAX_BYTES - 13].decode(errors="ignore")
    return f"{head}~{digest}"


# At import, not in register_configs: a submitit job process resolves hydra.sweep.subdir too, and it imports this
# module (through the task function it unpickles) without calling register_configs.
if not OmegaConf.has_resolver("rtc_sweep.job_dir"):
    OmegaConf.register_new_resolver("rtc_sweep.job_dir", job_dir_name)


def register_configs() -> None:
    """Put the schemas into Hydra's ConfigStore (idempotent): the root one, which rtc_sweep/conf/config.yaml builds
    on, and one per kind of option, which the YAML options extend. They are stored outside the groups, so that
    ``--help`` and tab completion list the options only."""
    store = ConfigStore.instance()
    store.store(name=SCHEMA_NAME, node=RtcSweepSchema)
    for group in OPTION_GROUPS:
        for kind, schema in OPTION_SCHEMAS[group.key].items():
            store.store(name=group.schema_name(kind), node=schema)


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """One job as the app runs it: the evaluation itself plus what the app does around it."""

    run: RunConfig
    video: bool = False
    progress: bool = True
    resume: bool = True
    reference_grid_only: bool = False
    compatible_only: bool = False
    synchronous_naive_only: bool = False


def to_job_config(cfg: DictConfig | RtcSweepSchema) -> JobConfig:
    """The composed config (a DictConfig on the schema, or the schema object) as frozen runtime dataclasses.

    Raises ``ConfigError`` for a group key that the option's kind does not read, naming it and the kind's keys.
    """
    from rtc_sweep.core.delays import DelayProfile
    from rtc_sweep.core.policy import model_from_config
    from rtc_sweep.core.run_config import ExecutePolicy, RunConfig
    from rtc_sweep.core.samplers import MethodConfig

    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.structured(cfg)
    # Merging onto the schema types a plain DictConfig too (a loaded .hydra/config.yaml, a test's dict); the option
    # groups are typed by their kind's schema (_option).
    typed = OmegaConf.merge(OmegaConf.structured(RtcSweepSchema), cfg)
    schema = OmegaConf.to_object(typed)
    assert isinstance(schema, RtcSweepSchema), type(schema)
    assert isinstance(typed, DictConfig)

    run = RunConfig(
        level=schema.level.name,
        seed=schema.seed,
        num_evals=schema.num_evals,
        num_flow_steps=schema.num_flow_steps,
        checkpoint=schema.checkpoint,
        delay=_option(DELAY_GROUP, typed.delay_profile, DelayProfile),
        method=_option(METHOD_GROUP, typed.method, MethodConfig),
        execute=_option(EXECUTE_GROUP, typed.execute_policy, ExecutePolicy),
        model=model_from_config(schema.model),  # the mixer's ModelConfig, or a network.NetworkConfig
        action_noise_std=schema.action_noise_std,
        micro_batch=schema.micro_batch,
        max_timesteps=schema.max_timesteps,
    )
    return JobConfig(
        run=run,
        video=schema.video,
        progress=schema.progress,
        resume=schema.resume,
        reference_grid_only=schema.reference_grid_only,
        compatible_only=schema.compatible_only,
        synchronous_naive_only=schema.synchronous_naive_only,
    )


def _option(group: OptionGroup, node: Any, runtime: type[T]) -> T:
    """A group's node as its runtime dataclass: the keys its kind reads, typed by the kind's schema; the fields the
    kind does not read keep their defaults."""
    if not isinstance(node, DictConfig):
        raise ConfigError(group.key, f"{node!r}; allowed: an option ({group.key}=<name>) or its keys")
    kind = node.get(group.selector, getattr(group.fields, group.selector))
    if kind not in group.keys:
        raise ConfigError(f"{group.key}.{group.selector}", f"{kind!r}; allowed: {', '.join(group.keys)}")
    allowed = group.keys[kind]
    extra = [str(k) for k in node if k not in allowed]
    if extra:
        built_for = _KIND_OF_SCHEMA.get(OmegaConf.get_type(node))  # type: ignore[arg-type]
        if built_for is not None and built_for[1] != kind:  # e.g. delay_profile=long_tail delay_profile.mode=lognormal
            raise ConfigError(
                f"{group.key}.{group.selector}",
                f"{kind!r} on an option of {group.selector} {built_for[1]}, whose keys {', '.join(extra)} {kind} does "
                f"not read; allowed: {built_for[1]}, or an option of {group.selector} {kind}",
            )
        raise ConfigError(
            f"{group.key}.{extra[0]}",
            f"not a key of {group.selector} {kind} (it does not read it); allowed keys: {', '.join(allowed)}",
        )
    try:
        values = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(OPTION_SCHEMAS[group.key][kind]), node))
    except OmegaConfBaseException as e:  # an option without a schema (a user's YAML), a loaded config: a wrong type
        raise ConfigError(f"{group.key}.{e.full_key}", " ".join(str(e).split("\n")[0].split())) from e
    assert isinstance(values, dict)
    return runtime(**{str(k): v for k, v in values.items()})


def unknown_key(error: BaseException) -> ConfigError | None:
    """A composition error for a key the chosen option does not carry (``method=naive method.n_samples=4``), as a
    ``ConfigError`` naming the key and the option's keys; None for any other error."""
    e: BaseException | None = error
    while e is not None and not isinstance(e, ConfigAttributeError | ConfigKeyError):
        e = e.__cause__ or e.__context__
    if not isinstance(e, OmegaConfBaseException) or e.object_type is None:
        return None
    built_for = _KIND_OF_SCHEMA.get(e.object_type)
    if built_for is None:
        return None
    group, kind = built_for
    return ConfigError(
        e.full_key or group.key,
        f"not a key of {group.key} {group.selector} {kind}; allowed keys: {', '.join(group.keys[kind])}",
    )


def in_reference_grid(run: RunConfig) -> bool:
    """The RTC paper's fixed-delay grid: d <= s <= H - d (s >= 1), so that nothing starves or stretches."""
    d, s, H = run.delay.fixed_delay, run.execute.execute_horizon, run.model.action_chunk_size
    return d <= s <= H - d


def validate(job: JobConfig) -> JobConfig:
    """Every check that needs no compile, once, at the boundary; returns the job with its run resolved (the policy
    files found, a trace file read: ``evaluate.validate``). Raises ``ConfigError`` naming the key."""
    from rtc_sweep.sweep.evaluate import validate as validate_run

    if job.reference_grid_only and (
        job.run.delay.mode != "fixed" or job.run.execute.mode not in ("fixed", "synchronous")
    ):
        raise ConfigError(
            "reference_grid_only",
            f"true needs delay_profile.mode=fixed and execute_policy.mode=fixed or synchronous (got "
            f"{job.run.delay.mode!r}, {job.run.execute.mode!r}); allowed: false otherwise",
        )
    return dataclasses.replace(job, run=validate_run(job.run))


# Runtime field -> the key users type (interface.md); everything else keeps its field name.
_USER_KEYS = {"delay": "delay_profile", "execute": "execute_policy", "level": "level.name"}


def config_columns(run: RunConfig) -> dict[str, Any]:
    """The run's config flattened to the dotted keys users type (``delay_profile.tail_cap``), for results.csv.

    Lists become JSON text so that a CSV cell holds them and they read back unambiguously.
    """
    out: dict[str, Any] = {}
    for f in config_keys(run):
        value = getattr(run, f.name)
        key = _USER_KEYS.get(f.name, f.name)
        if dataclasses.is_dataclass(value):
            for sub in config_keys(value):
                out[f"{key}.{sub.name}"] = _cell(getattr(value, sub.name))
        else:
            out[key] = _cell(value)
    return out


def _cell(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return json.dumps(list(value))
    return value


def config_hash(run: RunConfig) -> str:
    """A short fingerprint of everything that determines a job's results (resume compares it)."""
    from rtc_sweep.report.results import hash_config_columns

    return hash_config_columns(config_columns(run))


_INT_RANGE = re.compile(r"^(?P<prefix>\+{0,2})(?P<key>[\w.]+)=(?P<lo>\d+)-(?P<hi>\d+)$")


def int_keys(schema: type = RtcSweepSchema, prefix: str = "") -> set[str]:
    """Dotted keys of the schema's integer fields (where ``a-b`` can only mean a range); an option group's are
    those of any of its kinds."""
    keys: set[str] = set()
    for name, hint in typing.get_type_hints(schema).items():
        if schema is RtcSweepSchema and name in OPTION_SCHEMAS:
            for option in OPTION_SCHEMAS[name].values():
                keys |= int_keys(option, f"{prefix}{name}.")
        elif schema is RtcSweepSchema and name == "model":  # untyped (a user network's keys); the mixer's are known
            keys |= int_keys(ModelSchema, f"{prefix}{name}.")
        elif dataclasses.is_dataclass(hint):
            keys |= int_keys(hint, f"{prefix}{name}.")  # type: ignore[arg-type]
        elif hint in (int, int | None):
            keys.add(f"{prefix}{name}")
    return keys


def command_line(args: list[str]) -> list[str]:
    """The command line as Hydra should see it: ``-m`` first, integer ranges expanded.

    Hydra's argument parser stops collecting overrides at ``-m``, so ``python -m rtc_sweep a=1 -m b=2`` would
    drop ``b=2``; moving the flag first accepts it anywhere.
    """
    flags = [a for a in args if a in ("-m", "--multirun")]
    rest = [a for a in args if a not in ("-m", "--multirun")]
    return flags + expand_int_ranges(rest)


def expand_int_ranges(args: list[str]) -> list[str]:
    """Rewrite ``seed=0-4`` as Hydra's ``seed=range(0,5)`` (inclusive, as exp-delta's users type it).

    Hydra reads ``0-4`` as the string "0-4", which an integer key rejects. Only integer keys of the schema
    are rewritten, so a string value such as ``hydra.sweep.dir=2024-05`` is left alone.
    """
    keys = int_keys()
    out = []
    for arg in args:
        m = _INT_RANGE.match(arg)
        if m and m["key"] in keys:
            lo, hi = int(m["lo"]), int(m["hi"])
            if hi < lo:
                raise ConfigError(m["key"], f"range {lo}-{hi} is empty; allowed: a-b with a <= b")
            arg = f"{m['prefix']}{m['key']}=range({lo},{hi + 1})"
        out.append(arg)
    return out
