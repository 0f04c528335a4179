"""The options of a run, each declared once: the delay profile's keys, the method and the execute policy.

Every field below is a config key (``delay_profile.<field>``, ``method.<field>``, ``execute_policy.<field>``;
interface.md) with its one comment: unit, range, what it changes. Next to each dataclass a table says which
fields each kind of option reads (``KEYS_BY_MODE``: mode ``mixture`` reads ``base_delays`` and ``base_probs``,
not ``sigma``). ``sweep/config.py`` builds one Hydra schema per option kind from the two, so a ``delay_profile``
option of mode mixture carries the mixture's keys only, and setting another is an error naming it, not a silent
no-op. The composed config becomes these frozen dataclasses (``DelayProfile`` adds the delay law to
``DelayFields``, ``core/delays.py``); a field an option does not carry keeps its default here.

No JAX and no numpy: a sweep's submitting process, ``--help`` and tab completion build the schema from this module
alone. ``MethodConfig`` and ``ExecutePolicy`` are re-exported by ``core/samplers.py`` and ``core/run_config.py``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from rtc_sweep.errors import ConfigError


def schema_type(hint: Any) -> Any:
    """A runtime field's type as OmegaConf takes it, tuples as lists (``tuple[int, ...] | None``: ``list[int] |
    None``): both apps build their Hydra schemas with it."""
    if isinstance(hint, types.UnionType):
        args = [schema_type(a) for a in typing.get_args(hint)]
        out = args[0]
        for a in args[1:]:
            out = out | a
        return out
    if typing.get_origin(hint) is tuple:
        return list[typing.get_args(hint)[0]]  # type: ignore[misc]
    return hint


# Metadata of a field that the boundary (sweep/evaluate.py: validate) fills from the keys, e.g. a policy file found
# or a trace file read: not a config key, so in no schema and no results column.
RESOLVED: Mapping[str, Any] = {"resolved": True}

_CHECKED = "_checked"


def config_keys(value: object) -> list[dataclasses.Field[Any]]:
    """The fields of a config dataclass (or instance) that are config keys: all but the ``RESOLVED`` ones."""
    return [f for f in dataclasses.fields(value) if not f.metadata.get("resolved")]  # type: ignore[arg-type]


def is_checked(value: object) -> bool:
    """Whether this very object passed its ``validate`` (a frozen value is checked once; a replaced copy anew)."""
    return bool(vars(value).get(_CHECKED, False))


def mark_checked(value: object) -> None:
    object.__setattr__(value, _CHECKED, True)  # not a field: equality, hashing and replace() ignore it


# --- delay_profile ------------------------------------------------------------------------------------------------

MODES: tuple[str, ...] = ("fixed", "mixture", "trace", "lognormal", "pareto", "loglogistic", "measured")
# Modes whose law is iid and known without a measurement: what delay_profile.system may name.
IID_MODES: tuple[str, ...] = ("fixed", "mixture", "lognormal", "pareto", "loglogistic")
SCOPES: tuple[str, ...] = ("env", "batch")


@dataclasses.dataclass(frozen=True)
class DelayFields:
    """The keys of a delay profile (``delay_profile.*``); which ones a mode reads: ``KEYS_BY_MODE``."""

    name: str = "custom"  # label written to results.csv as `profile` (each delay_profile option sets its own)
    mode: str = "mixture"  # fixed | mixture | trace | lognormal | pareto | loglogistic | measured
    fixed_delay: int = 0  # ticks >= 0, mode fixed: every inference takes this long
    base_delays: tuple[int, ...] = (0, 1)  # ticks >= 0, mode mixture: the support of the base law
    base_probs: tuple[float, ...] = (0.9, 0.1)  # mode mixture: their probabilities, summing to 1
    p_spike: float = 0.0  # [0, 1]: chance a draw is a spike of d_spike ticks instead of a base draw (iid modes)
    d_spike: int = 4  # ticks >= 0: the delay of a spike
    tail_cap: int | None = None  # ticks >= 0: hard cap applied to every draw last (tail control); None: no cap
    spike_drop_prob: float = 0.0  # [0, 1]: chance a spike is dropped and the base draw kept instead
    dt_ms: float = 1000 / 30  # ms > 0: controller period of the ms-based modes (30 Hz: Kinetix's 2 substeps of 1/60 s)
    trace_ms: tuple[float, ...] | None = None  # mode trace: inline latencies (ms >= 0), or give trace_path
    trace_path: str | None = None  # mode trace: latency file (ms), one per line; a relative one may name a shipped one
    median_ms: float = 40.0  # ms > 0, modes lognormal and loglogistic: median latency
    sigma: float = 0.5  # > 0, mode lognormal: std of the log-latency (larger = heavier tail)
    scale_ms: float = 20.0  # ms > 0, mode pareto: minimum latency x_m
    alpha: float = 2.0  # > 0, modes pareto, loglogistic: tail index, P(L > x) ~ x^-alpha (mean infinite at <= 1)
    scope: str = "env"  # env: an independent delay stream per environment; batch: one stream shared by all envs
    control_hz: float | None = None  # Hz > 0: controller rate; when set, the ms-based modes use dt_ms = 1000 / it
    deadline: int | None = None  # ticks >= 1: a chunk later than this is abandoned, a new inference starts; None: none
    batch: int = 1  # mode measured: batch size of the timed sampler calls (1: one robot, the deployment case)
    calls: int = 200  # mode measured: timed calls after the warm-up (1..16384, delays.TRACE_MAX_LEN)
    latency_scale: float = 1.0  # mode measured: factor on the measured ms (> 0; 4 stands in for a 4x slower device)
    system: str = "none"  # mode measured: system part added to each draw: none or an iid preset (stalls, network_rtt)
    warmup_cycles: int = 0  # >= 0: the first cycles of every stream (episode) are warm-up cycles, any mode
    warmup_factor: float = 1.0  # >= 1: a warm-up cycle takes ceil(warmup_factor * d) ticks (before the cap)


_EVERY_MODE = ("name", "mode", "tail_cap", "scope", "deadline", "warmup_cycles", "warmup_factor")
# Spikes are for the iid modes: a trace holds its own slow calls, and mode measured takes them from its system part.
_SPIKES = ("p_spike", "d_spike", "spike_drop_prob")
_RATE = ("dt_ms", "control_hz")  # the modes in milliseconds
# The fields each mode reads; its delay_profile options carry these keys and no other.
KEYS_BY_MODE: Mapping[str, tuple[str, ...]] = {
    "fixed": (*_EVERY_MODE, "fixed_delay", *_SPIKES),
    "mixture": (*_EVERY_MODE, "base_delays", "base_probs", *_SPIKES),
    "trace": (*_EVERY_MODE, "trace_ms", "trace_path", *_RATE),
    "lognormal": (*_EVERY_MODE, "median_ms", "sigma", *_SPIKES, *_RATE),
    "pareto": (*_EVERY_MODE, "scale_ms", "alpha", *_SPIKES, *_RATE),
    "loglogistic": (*_EVERY_MODE, "median_ms", "alpha", *_SPIKES, *_RATE),
    "measured": (*_EVERY_MODE, "batch", "calls", "latency_scale", "system", *_RATE),
}


# --- method -------------------------------------------------------------------------------------------------------

METHODS = ("naive", "realtime", "hard_masking", "bid", "training_time", "temporal_ensembling")
SCHEDULES = ("exp", "linear", "ones", "zeros")


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """How a new chunk is sampled given the one being executed (``method.*``); which keys each reads: KEYS_BY_METHOD."""

    name: str = "naive"  # naive | realtime | hard_masking | bid | training_time | temporal_ensembling
    prefix_attention_schedule: str = "exp"  # realtime: guidance weights over the chunk (exp | linear | ones | zeros)
    max_guidance_weight: float = 5.0  # realtime / hard_masking: β, the cap on the guidance weight (> 0)
    n_samples: int = 16  # bid: candidate chunks drawn per observation (>= 1)
    bid_k: int | None = None  # bid: size of the forward-contrast sets (1..n_samples); None = backward coherence only
    weak_checkpoint: str | None = None  # bid: weak policy file (or rtc-assets:<run>/<step>) for the forward contrast
    # ACT's m (>= 0): weights exp(-m·i) over the chunks covering a tick, i = 0 the oldest; traced by the rollout
    # (timeline.ExecuteArrays), not part of its static spec
    te_decay: float = 0.01  # temporal_ensembling: as above

    def validate(self) -> None:
        if self.name not in METHODS:
            raise ConfigError("method.name", f"{self.name!r}; allowed: {', '.join(METHODS)}")
        if self.prefix_attention_schedule not in SCHEDULES:
            raise ConfigError(
                "method.prefix_attention_schedule",
                f"{self.prefix_attention_schedule!r}; allowed: {', '.join(SCHEDULES)}",
            )
        if not self.max_guidance_weight > 0:
            raise ConfigError("method.max_guidance_weight", f"{self.max_guidance_weight}; allowed: > 0")
        if self.n_samples < 1:
            raise ConfigError("method.n_samples", f"{self.n_samples}; allowed: >= 1")
        if self.bid_k is not None:
            if not 1 <= self.bid_k <= self.n_samples:
                raise ConfigError("method.bid_k", f"{self.bid_k}; allowed: null or 1..{self.n_samples} (n_samples)")
            if self.weak_checkpoint is None:
                raise ConfigError("method.bid_k", f"{self.bid_k} needs method.weak_checkpoint; allowed: a path")
        elif self.name == "bid" and self.weak_checkpoint is not None:
            # The original only runs the forward contrast with both a weak policy and k.
            raise ConfigError(
                "method.weak_checkpoint", f"{self.weak_checkpoint!r} needs method.bid_k; allowed: 1..{self.n_samples}"
            )
        if not (math.isfinite(self.te_decay) and self.te_decay >= 0):
            raise ConfigError("method.te_decay", f"{self.te_decay}; allowed: a finite number >= 0")


# The fields each method reads (hard_masking's schedule is "zeros", bid's "exp": fixed, not keys).
KEYS_BY_METHOD: Mapping[str, tuple[str, ...]] = {
    "naive": ("name",),
    "realtime": ("name", "prefix_attention_schedule", "max_guidance_weight"),
    "hard_masking": ("name", "max_guidance_weight"),
    "bid": ("name", "n_samples", "bid_k", "weak_checkpoint"),
    "training_time": ("name",),
    "temporal_ensembling": ("name", "te_decay"),
}


# --- execute_policy -----------------------------------------------------------------------------------------------

EXECUTE_MODES = ("fixed", "adaptive", "synchronous")
ESTIMATORS = ("oracle", "max_recent")
STARVATION = ("zero", "hold")
MAX_BUFFER = 64  # capacity of the max_recent estimator's delay buffer (buffer_size is traced, up to this)


@dataclasses.dataclass(frozen=True)
class ExecutePolicy:
    """How many actions of each chunk run (``execute_policy.*``); which keys each mode reads: KEYS_BY_EXECUTE_MODE."""

    # fixed: s_k = execute_horizon; adaptive: s_k = clip(max(d̂_k, s_min), 1, H); synchronous: inference blocks the
    # controller (the fallback for d_k ticks, then new[0 .. s-1]; L_k = d_k + s; timeline.md "Two baselines")
    mode: str = "fixed"  # fixed | adaptive | synchronous, as above
    execute_horizon: int = 4  # s, modes fixed and synchronous: actions executed per chunk (1..H)
    s_min: int = 1  # adaptive: the smallest execute horizon (1..H)
    estimator: str = "oracle"  # d̂_k the method plans for: oracle (true delay) | max_recent (max of last buffer_size)
    buffer_size: int = 4  # max_recent: how many observed delays it remembers (1..MAX_BUFFER)
    prior_delay: int = 0  # max_recent: the estimate before any delay has been observed (ticks >= 0)
    starvation: str = "zero"  # action when the chunk runs dry: zero (the reference's padding) | hold (repeat last)

    def validate(self, action_chunk_size: int) -> None:
        H = action_chunk_size
        if self.mode not in EXECUTE_MODES:
            raise ConfigError("execute_policy.mode", f"{self.mode!r}; allowed: {', '.join(EXECUTE_MODES)}")
        if not 1 <= self.execute_horizon <= H:
            raise ConfigError("execute_policy.execute_horizon", f"{self.execute_horizon}; allowed: 1..{H} (H)")
        if not 1 <= self.s_min <= H:
            raise ConfigError("execute_policy.s_min", f"{self.s_min}; allowed: 1..{H} (H)")
        if self.estimator not in ESTIMATORS:
            raise ConfigError("execute_policy.estimator", f"{self.estimator!r}; allowed: {', '.join(ESTIMATORS)}")
        if not 1 <= self.buffer_size <= MAX_BUFFER:
            raise ConfigError("execute_policy.buffer_size", f"{self.buffer_size}; allowed: 1..{MAX_BUFFER}")
        if self.prior_delay < 0:
            raise ConfigError("execute_policy.prior_delay", f"{self.prior_delay}; allowed: >= 0")
        if self.starvation not in STARVATION:
            raise ConfigError("execute_policy.starvation", f"{self.starvation!r}; allowed: {', '.join(STARVATION)}")

    @property
    def label(self) -> str:
        return self.mode


_ESTIMATE = ("estimator", "buffer_size", "prior_delay")  # d̂_k: what the method is told (synchronous: 0, no estimate)
# The fields each execute mode reads.
KEYS_BY_EXECUTE_MODE: Mapping[str, tuple[str, ...]] = {
    "fixed": ("mode", "execute_horizon", *_ESTIMATE, "starvation"),
    "adaptive": ("mode", "s_min", *_ESTIMATE, "starvation"),
    "synchronous": ("mode", "execute_horizon", "starvation"),
}


# --- the groups ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OptionGroup:
    """A config group whose options are kinds of one dataclass, told apart by its selector field."""

    key: str  # the group, as users type it (delay_profile)
    fields: type  # the dataclass whose fields are the group's keys
    selector: str  # the field that says the option's kind (mode, name)
    keys: Mapping[str, tuple[str, ...]]  # kind -> the fields it reads, the selector included

    def schema_name(self, kind: str) -> str:
        """The ConfigStore name of the kind's schema, what its YAML options extend: ``/<name>@_here_``."""
        return f"{self.key}_schema_{kind}"


DELAY_GROUP = OptionGroup("delay_profile", DelayFields, "mode", KEYS_BY_MODE)
METHOD_GROUP = OptionGroup("method", MethodConfig, "name", KEYS_BY_METHOD)
EXECUTE_GROUP = OptionGroup("execute_policy", ExecutePolicy, "mode", KEYS_BY_EXECUTE_MODE)
OPTION_GROUPS = (DELAY_GROUP, METHOD_GROUP, EXECUTE_GROUP)
