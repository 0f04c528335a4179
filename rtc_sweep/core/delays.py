"""Delay profiles: the law of the inference delay ``d_k`` (ticks) and its draw inside the rollout.

A ``DelayProfile`` is the frozen, validated config (``delay_profile.*`` keys, interface.md; declared once in
core/options.py, ``DelayFields``, with the keys each mode reads). Its named presets are the YAML options of
rtc_sweep/conf/delay_profile/ (``PRESETS``, read from there). The rollout turns it into ``DelayArrays`` once,
outside jit, and calls ``draw_delay`` inside its scan:

    arrays = profile.arrays(max_delay)                   # host side; validates first
    key = stream_key(seed_key, env_index, profile.scope)  # one delay stream per environment (or per batch)
    d_k = draw_delay(arrays, key, k)                      # int32 scalar; vmap over keys

Three promises the rollout relies on:

* ``DelayArrays`` has the same shapes and dtypes for every profile and mode given ``max_delay``, so one
  compiled rollout serves a whole sweep over profiles (style.md: a delay is an array, never a constant).
* A draw depends on (stream key, cycle) only (timeline.md, common random numbers): two methods run with
  the same seed see the same delays, whatever else differs between them.
* Every draw lies in ``0 .. max_delay``. Mass of the law beyond ``max_delay`` (a long base, a spike, a
  heavy tail, a slow trace entry) is put at ``max_delay``; pick ``max_delay`` at least the largest delay
  that can still change an episode (the rollout's horizon) and this clipping never matters.

One draw, iid modes (fixed, mixture, lognormal, pareto)::

    base  ~ base pmf over 0..max_delay          (categorical)
    spike ~ Bernoulli(p_spike)                  -> d_spike
    drop  ~ Bernoulli(spike_drop_prob)          a spike that is dropped falls back to the base draw
    d     = min(spike and not drop ? d_spike : base, cap)

Trace mode replays the trace ticks cyclically from an offset drawn per stream:
``d_k = min(ticks[(offset + k) % len], cap)``. Milliseconds become ticks as ``ceil(latency / dt_ms)``,
so a chunk that needs any part of a tick is not there at that tick (``dt_ms`` is ``1000 / control_hz`` when
``control_hz`` is set).

Measured mode is trace mode on the job's own sampler, timed before the rollout (sweep/evaluate.py,
``measure_latency``): ``d_k = min(ceil(latency_scale * ms[(offset + k) % calls] / dt_ms) + system_k, cap)``,
where ``system_k`` is an iid draw (ticks) of the scenario law named by ``system`` (``none``: 0). Each part is
rounded up on its own, so the sum can be one tick more than rounding the summed milliseconds.

``deadline`` (ticks, optional) is not part of the draw: the rollout abandons a chunk whose delay exceeds it
(timeline.py) and starts a new inference at tick ``t_k + deadline``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, TypeGuard

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from rtc_sweep.core.options import (
    DELAY_GROUP,
    IID_MODES,
    MODES,
    RESOLVED,
    SCOPES,
    DelayFields,
    is_checked,
    mark_checked,
)
from rtc_sweep.errors import ConfigError

# A traced "no deadline": larger than any delay a draw can return.
NO_DEADLINE = np.iinfo(np.int32).max
DATA_DIR = Path(__file__).resolve().parent.parent / "data"

# Traces are padded to this length so that trace and iid profiles share one compiled rollout. 16 k entries
# cost 64 KiB, shared by all environments; a longer recording should be subsampled (or cut) first.
TRACE_MAX_LEN = 16384

# Tag that separates the delay stream from the run's other streams (initial states, flow noise), which
# must fold other values into the seed key. The bytes spell "dlay".
DELAY_STREAM_TAG = 0x646C6179

PROB_TOL = 1e-6
# A latency this close (relatively) to a whole number of ticks is that number: 100 ms at dt = 1000/30 ms
# divides to 2.9999999999999996 or 3.0000000000000004 depending on rounding, and is 3 ticks either way.
_TICK_RTOL = 1e-9


def ms_to_ticks(latency_ms: np.ndarray | Sequence[float] | float, dt_ms: float) -> np.ndarray:
    """``ceil(latency / dt_ms)`` as int64, exact multiples of ``dt_ms`` mapping to their multiple."""
    q = np.asarray(latency_ms, dtype=np.float64) / float(dt_ms)
    nearest = np.round(q)
    on_multiple = np.abs(q - nearest) <= _TICK_RTOL * np.maximum(nearest, 1.0)
    return np.where(on_multiple, nearest, np.ceil(q)).astype(np.int64)


def resolve_trace_path(path: str | Path) -> Path:
    """A trace file: absolute, relative to the working directory, or else shipped in ``rtc_sweep/data``.

    The fallback lets a preset (and a Hydra YAML) name a shipped trace without a machine-specific path.
    """
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    shipped = DATA_DIR / p
    return shipped if shipped.exists() else p


def read_trace(path: str | Path) -> np.ndarray:
    """Latencies (ms, float64) from a text/CSV file: one number per line, an optional header line first.

    Blank lines and ``#`` comments are skipped. Raises ``ConfigError`` naming ``delay_profile.trace_path``.
    """
    key = "delay_profile.trace_path"
    resolved = resolve_trace_path(path)
    try:
        text = resolved.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(key, f"cannot read trace file {str(path)!r} ({e}); allowed: a readable text file") from e
    values: list[float] = []
    first = True
    for lineno, line in enumerate(text.splitlines(), start=1):
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        try:
            values.append(float(item))
        except ValueError:
            if not first:
                raise ConfigError(
                    key, f"{resolved}:{lineno}: {item!r} is not a number; allowed: one latency (ms) per line"
                ) from None
        first = False
    return np.asarray(values, dtype=np.float64)


class DelayArrays(NamedTuple):
    """A delay profile as arrays: same shapes and dtypes for every profile given ``max_delay``."""

    base_pmf: jax.Array  # [max_delay + 1] float32, the base law (trace mode: the trace's, unused by draws)
    trace_ticks: jax.Array  # [TRACE_MAX_LEN] int32, the trace in ticks, zero padded past trace_len
    trace_len: jax.Array  # [] int32, >= 1 (1 outside trace mode)
    use_trace: jax.Array  # [] bool, replay the trace instead of drawing iid
    p_spike: jax.Array  # [] float32
    d_spike: jax.Array  # [] int32, <= max_delay
    spike_drop_prob: jax.Array  # [] float32
    cap: jax.Array  # [] int32, min(tail_cap, max_delay); max_delay when there is no tail cap
    add_iid: jax.Array  # [] bool, mode measured with a system law: replay + the iid draw (else replay alone)
    deadline: jax.Array  # [] int32, abandon a chunk later than this (timeline.py); NO_DEADLINE when none
    warmup_cycles: jax.Array  # [] int32, cycles 0 .. warmup_cycles - 1 of a stream are warm-up cycles
    warmup_factor: jax.Array  # [] float32, >= 1: a warm-up draw is ceil(factor * d) (before the cap)

    @property
    def max_delay(self) -> int:
        return int(self.base_pmf.shape[-1]) - 1


def _fail(field: str, what: str) -> ConfigError:
    return ConfigError(f"delay_profile.{field}", what)


def _is_int(x: object) -> TypeGuard[int | np.integer]:
    return isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_)


def _is_real(x: object) -> TypeGuard[int | float | np.integer | np.floating]:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool | np.bool_)


def _check_ticks(field: str, value: object) -> None:
    if not _is_int(value) or int(value) < 0:
        raise _fail(field, f"{value!r} is not a delay in ticks; allowed: an integer >= 0")


def _check_probability(field: str, value: object) -> None:
    if not _is_real(value) or not 0.0 <= float(value) <= 1.0:
        raise _fail(field, f"{value!r} is not a probability; allowed: a number in [0, 1]")


def _check_positive(field: str, value: object, unit: str) -> None:
    if not _is_real(value) or not math.isfinite(float(value)) or float(value) <= 0.0:
        raise _fail(field, f"{value!r} must be positive; allowed: a finite number > 0 ({unit})")


def _check_max_delay(max_delay: int) -> None:
    if not _is_int(max_delay) or max_delay < 0:
        raise ValueError(f"max_delay must be an integer >= 0, got {max_delay!r}")


@dataclasses.dataclass(frozen=True)
class DelayProfile(DelayFields):
    """The law of the inference delay: the keys of ``DelayFields`` (core/options.py), the fields each mode reads
    in ``KEYS_BY_MODE``; the others keep their defaults and are not read."""

    # mode trace with trace_path: the file's latencies (ms), read once by ``resolved()`` at the boundary so that
    # nothing after it opens the file again; None: read when needed
    trace_file_ms: tuple[float, ...] | None = dataclasses.field(
        default=None, compare=False, repr=False, metadata=RESOLVED
    )

    def __post_init__(self) -> None:
        # Lists (from YAML or callers) become tuples so a profile stays hashable (jit static args, caches).
        for field in ("base_delays", "base_probs", "trace_ms", "trace_file_ms"):
            value = getattr(self, field)
            if isinstance(value, list | np.ndarray):
                object.__setattr__(self, field, tuple(value.tolist() if isinstance(value, np.ndarray) else value))

    def resolved(self) -> DelayProfile:
        """This profile with its trace file read into it (mode trace with ``trace_path``; otherwise itself).

        Raises ``ConfigError`` naming ``delay_profile.trace_path`` when the file cannot be read.
        """
        if self.mode != "trace" or self.trace_path is None or self.trace_file_ms is not None:
            return self
        return dataclasses.replace(self, trace_file_ms=tuple(read_trace(self.trace_path).tolist()))

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first bad ``delay_profile.<field>`` and what is allowed.

        A profile is checked once: once it has passed, later calls (``arrays``, ``base_pmf``) return at once.
        """
        if is_checked(self):
            return
        if not isinstance(self.name, str) or not self.name:
            raise _fail("name", f"{self.name!r} is not a label; allowed: a non-empty string")
        if self.mode not in MODES:
            raise _fail("mode", f"unknown mode {self.mode!r}; allowed: {', '.join(MODES)}")
        if self.scope not in SCOPES:
            raise _fail("scope", f"unknown scope {self.scope!r}; allowed: {', '.join(SCOPES)}")
        _check_ticks("fixed_delay", self.fixed_delay)
        if not isinstance(self.base_delays, tuple) or not self.base_delays:
            raise _fail("base_delays", f"{self.base_delays!r}; allowed: a non-empty list of delays in ticks")
        for d in self.base_delays:
            _check_ticks("base_delays", d)
        if not isinstance(self.base_probs, tuple) or len(self.base_probs) != len(self.base_delays):
            raise _fail(
                "base_probs",
                f"{self.base_probs!r} does not match base_delays {self.base_delays!r}; "
                "allowed: one probability per base delay",
            )
        for p in self.base_probs:
            _check_probability("base_probs", p)
        if abs(math.fsum(self.base_probs) - 1.0) > PROB_TOL:
            raise _fail(
                "base_probs", f"{self.base_probs!r} sums to {math.fsum(self.base_probs)!r}; allowed: a sum of 1"
            )
        _check_probability("p_spike", self.p_spike)
        _check_ticks("d_spike", self.d_spike)
        _check_probability("spike_drop_prob", self.spike_drop_prob)
        if self.tail_cap is not None:
            _check_ticks("tail_cap", self.tail_cap)
        _check_positive("dt_ms", self.dt_ms, "ms")
        _check_positive("median_ms", self.median_ms, "ms")
        _check_positive("sigma", self.sigma, "log-ms")
        _check_positive("scale_ms", self.scale_ms, "ms")
        _check_positive("alpha", self.alpha, "tail index")
        if self.control_hz is not None:
            _check_positive("control_hz", self.control_hz, "Hz")
            if self.dt_ms != _DEFAULT_DT_MS and abs(self.dt_ms - 1000.0 / float(self.control_hz)) > 1e-9 * self.dt_ms:
                raise _fail(
                    "control_hz",
                    f"{self.control_hz!r} disagrees with dt_ms={self.dt_ms!r}; allowed: one of them (or dt_ms = "
                    "1000 / control_hz)",
                )
        if self.deadline is not None and (not _is_int(self.deadline) or int(self.deadline) < 1):
            raise _fail("deadline", f"{self.deadline!r} is not a deadline in ticks; allowed: an integer >= 1 or null")
        self._validate_measured()
        _check_ticks("warmup_cycles", self.warmup_cycles)
        if not _is_real(self.warmup_factor) or not math.isfinite(float(self.warmup_factor)) or self.warmup_factor < 1:
            raise _fail("warmup_factor", f"{self.warmup_factor!r}; allowed: a finite number >= 1")
        if self.mode == "trace":
            if self.p_spike != 0:
                # A recorded trace already holds its slow calls; silently ignoring a spike rate would be worse.
                raise _fail("p_spike", f"{self.p_spike!r} in mode trace; allowed: 0 (mode trace has no spikes)")
            self.trace_latencies_ms()
        mark_checked(self)

    def _validate_measured(self) -> None:
        """The measured-mode keys: checked always, and rejected off their default outside mode measured."""
        measured = self.mode == "measured"
        checks: tuple[tuple[str, bool, str], ...] = (
            ("batch", _is_int(self.batch) and int(self.batch) >= 1, "an integer >= 1"),
            ("calls", _is_int(self.calls) and 1 <= int(self.calls) <= TRACE_MAX_LEN, f"an integer 1..{TRACE_MAX_LEN}"),
            (
                "latency_scale",
                _is_real(self.latency_scale) and math.isfinite(float(self.latency_scale)) and self.latency_scale > 0,
                "a finite number > 0",
            ),
            ("system", self.system in ("none", *SYSTEM_PRESETS), ", ".join(("none", *SYSTEM_PRESETS))),
        )
        for field, ok, allowed in checks:
            if not ok:
                raise _fail(field, f"{getattr(self, field)!r}; allowed: {allowed}")
            default = _DEFAULTS[field]
            if not measured and getattr(self, field) != default:
                raise _fail(
                    field,
                    f"{getattr(self, field)!r} applies to mode measured only (mode is {self.mode!r}); "
                    f"allowed here: {default!r}",
                )
        if measured and self.p_spike != 0:
            raise _fail(
                "p_spike",
                f"{self.p_spike!r} in mode measured; allowed: 0 (spikes come from delay_profile.system, e.g. stalls)",
            )

    @property
    def period_ms(self) -> float:
        """The controller period (ms) the ms-based modes convert with: ``1000 / control_hz``, else ``dt_ms``."""
        return 1000.0 / float(self.control_hz) if self.control_hz is not None else float(self.dt_ms)

    def system_profile(self) -> DelayProfile | None:
        """Mode measured: the system law added to the measured part, at this profile's rate (None for none)."""
        if self.system == "none":
            return None
        return dataclasses.replace(SYSTEM_PRESETS[self.system], dt_ms=self.period_ms, control_hz=None)

    def measured_ticks(self, latency_ms: np.ndarray | Sequence[float]) -> np.ndarray:
        """Mode measured: measured latencies (ms) as ticks, ``ceil(latency_scale * ms / dt)`` (int64, uncapped)."""
        return ms_to_ticks(np.asarray(latency_ms, np.float64) * float(self.latency_scale), self.period_ms)

    def trace_latencies_ms(self) -> np.ndarray:
        """The trace (ms, float64) of mode trace, checked: one source, non-empty, finite, >= 0, not too long."""
        if (self.trace_ms is None) == (self.trace_path is None):
            field = "trace_path" if self.trace_path is not None else "trace_ms"
            raise _fail(field, "mode trace needs exactly one trace; allowed: trace_ms (inline list) or trace_path")
        if self.trace_path is not None:
            field = "trace_path"
            values = read_trace(self.trace_path) if self.trace_file_ms is None else np.asarray(self.trace_file_ms)
        else:
            field = "trace_ms"
            if not all(_is_real(v) for v in self.trace_ms or ()):
                raise _fail(field, f"{self.trace_ms!r} holds a non-number; allowed: latencies in ms >= 0")
            values = np.asarray(self.trace_ms, dtype=np.float64)
        if values.size == 0:
            raise _fail(field, "the trace is empty; allowed: at least one latency (ms)")
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            raise _fail(
                field, f"latency {values[bad][0]!r} at entry {int(np.argmax(bad))}; allowed: finite latencies >= 0 ms"
            )
        if values.size > TRACE_MAX_LEN:
            raise _fail(
                field, f"the trace has {values.size} entries; allowed: at most {TRACE_MAX_LEN} (subsample it first)"
            )
        return values

    def trace_ticks(self) -> np.ndarray:
        """The trace of mode trace in ticks (int64), before any cap."""
        return ms_to_ticks(self.trace_latencies_ms(), self.period_ms)

    def cap_ticks(self, max_delay: int) -> int:
        """The cap every draw is clipped to: ``min(tail_cap, max_delay)``."""
        return max_delay if self.tail_cap is None else min(int(self.tail_cap), max_delay)

    def base_pmf(self, max_delay: int) -> np.ndarray:
        """The base law over ticks 0..max_delay (float64), before spikes and the cap; mass beyond at max_delay.

        Lognormal and pareto latencies L are discretised exactly: P(d = k) = P((k-1) dt < L <= k dt).
        """
        self.validate()
        _check_max_delay(max_delay)
        pmf = np.zeros(max_delay + 1)
        if self.mode == "fixed":
            pmf[min(int(self.fixed_delay), max_delay)] = 1.0
        elif self.mode == "mixture":
            np.add.at(pmf, np.minimum(np.asarray(self.base_delays, dtype=np.int64), max_delay), self.base_probs)
        elif self.mode == "trace":
            pmf = np.bincount(np.minimum(self.trace_ticks(), max_delay), minlength=max_delay + 1).astype(np.float64)
        elif self.mode == "measured":  # the system part's base law (the measured part is replayed, see arrays)
            system = self.system_profile()
            if system is None:
                pmf[0] = 1.0
            else:
                return system.base_pmf(max_delay)
        else:
            edges = self.period_ms * np.arange(max_delay)  # cdf at 0, dt, .., (max_delay - 1) dt
            cdf = np.array([self._latency_cdf(x) for x in edges])
            pmf = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
        pmf = np.clip(pmf, 0.0, None)
        return pmf / pmf.sum()

    def _latency_cdf(self, x_ms: float) -> float:
        if x_ms <= 0.0:
            return 0.0
        if self.mode == "lognormal":
            z = (math.log(x_ms) - math.log(self.median_ms)) / self.sigma
            return 0.5 * math.erfc(-z / math.sqrt(2.0))
        if self.mode == "loglogistic":  # F(x) = 1 / (1 + (x / median)^-alpha)
            return 1.0 / (1.0 + (x_ms / self.median_ms) ** -self.alpha)
        return 0.0 if x_ms < self.scale_ms else 1.0 - (self.scale_ms / x_ms) ** self.alpha

    def arrays(self, max_delay: int, measured_ms: np.ndarray | Sequence[float] | None = None) -> DelayArrays:
        """The profile as ``DelayArrays`` for ``draw_delay`` (validates; host side, call outside jit).

        Mode measured replays ``measured_ms`` (the timed calls, ms) plus the system part; without them (what
        ``prepare`` builds before ``evaluate`` has measured) the measured part reads 0 ticks, a placeholder that
        ``evaluate`` replaces before any rollout runs.
        """
        base = self.base_pmf(max_delay)
        trace = np.zeros(TRACE_MAX_LEN, dtype=np.int32)
        trace_len = 1
        spikes: DelayProfile = self
        if self.mode == "trace" or (self.mode == "measured" and measured_ms is not None):
            ticks = self.trace_ticks() if self.mode == "trace" else self.measured_ticks(_checked_ms(measured_ms))
            ticks = np.minimum(ticks, max_delay)
            trace[: ticks.size] = ticks
            trace_len = int(ticks.size)
        system = self.system_profile() if self.mode == "measured" else None
        if system is not None:
            spikes = system
        return DelayArrays(
            base_pmf=jnp.asarray(base, dtype=jnp.float32),
            trace_ticks=jnp.asarray(trace),
            trace_len=jnp.asarray(np.int32(trace_len)),
            use_trace=jnp.asarray(np.bool_(self.mode in ("trace", "measured"))),
            p_spike=jnp.asarray(np.float32(spikes.p_spike)),
            d_spike=jnp.asarray(np.int32(min(int(spikes.d_spike), max_delay))),
            spike_drop_prob=jnp.asarray(np.float32(spikes.spike_drop_prob)),
            cap=jnp.asarray(np.int32(self.cap_ticks(max_delay))),
            add_iid=jnp.asarray(np.bool_(system is not None)),
            deadline=jnp.asarray(np.int32(NO_DEADLINE if self.deadline is None else int(self.deadline))),
            warmup_cycles=jnp.asarray(np.int32(self.warmup_cycles)),
            warmup_factor=jnp.asarray(np.float32(self.warmup_factor)),
        )


def _checked_ms(latency_ms: np.ndarray | Sequence[float] | None) -> np.ndarray:
    values = np.asarray(latency_ms, dtype=np.float64)
    if values.ndim != 1 or not 1 <= values.size <= TRACE_MAX_LEN or not np.all(np.isfinite(values) & (values >= 0)):
        raise ValueError(f"measured latencies must be 1..{TRACE_MAX_LEN} finite values >= 0 ms, got {values!r}")
    return values


_DEFAULT_DT_MS = 1000 / 30
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(DelayProfile)}


def stream_key(seed_key: jax.Array, env_index: jax.Array | int, scope: str) -> jax.Array:
    """The key of one delay stream: per environment for scope ``env``, shared by the batch for ``batch``.

    ``env_index`` must be the environment's global index (not its index within a device shard), so that the
    delays of an environment do not depend on how the batch is split. Vmappable over ``env_index``.
    """
    delay_root = jax.random.fold_in(seed_key, DELAY_STREAM_TAG)
    if scope == "batch":
        return delay_root
    if scope == "env":
        return jax.random.fold_in(delay_root, env_index)
    raise _fail("scope", f"unknown scope {scope!r}; allowed: {', '.join(SCOPES)}")


def draw_delay(arrays: DelayArrays, stream_key: jax.Array, cycle: jax.Array | int) -> jax.Array:
    """The delay (int32 scalar, ticks) of inference cycle ``cycle`` of one delay stream.

    A pure function of (stream_key, cycle) given the profile: jittable, usable inside ``lax.scan``, and
    vmappable over ``stream_key`` and ``cycle``. Every mode is computed and one selected with ``where``, so
    the program is the same for every profile.
    """
    cycle_root, offset_key = jax.random.split(stream_key)
    k_base, k_spike, k_drop = jax.random.split(jax.random.fold_in(cycle_root, cycle), 3)

    # A dropped spike keeps the base draw: it has the same law as a fresh base draw (the base is independent
    # of both coins), and with it a profile with spikes dropped sees exactly the delays of one without spikes.
    base = jax.random.categorical(k_base, jnp.log(arrays.base_pmf)).astype(jnp.int32)
    spike = jax.random.bernoulli(k_spike, arrays.p_spike) & ~jax.random.bernoulli(k_drop, arrays.spike_drop_prob)
    iid = jnp.where(spike, arrays.d_spike, base)

    # The offset comes from the stream key alone, so successive cycles of a stream walk the trace in order.
    offset = jax.random.randint(offset_key, (), 0, arrays.trace_len, dtype=jnp.int32)
    replay = arrays.trace_ticks[(offset + jnp.asarray(cycle, jnp.int32)) % arrays.trace_len]
    # Mode measured with a system law: the system's iid draw adds to the replayed compute time.
    replay = replay + jnp.where(arrays.add_iid, iid, 0)

    d = jnp.where(arrays.use_trace, replay, iid)
    warm = jnp.ceil(d.astype(jnp.float32) * arrays.warmup_factor).astype(jnp.int32)
    d = jnp.where(jnp.asarray(cycle, jnp.int32) < arrays.warmup_cycles, warm, d)
    return jnp.minimum(d, arrays.cap).astype(jnp.int32)


# The named profiles (``delay_profile=<name>``) are the YAML options of rtc_sweep/conf/delay_profile/, each declared
# there once (its source in its comment) and read here without Hydra: an option extends its mode's schema
# (``defaults: [/delay_profile_schema_<mode>@_here_]``, sweep/config.py) and sets some of that mode's keys.
PRESETS_DIR = Path(__file__).resolve().parent.parent / "conf" / DELAY_GROUP.key
_SCHEMA_ENTRY = re.compile("/" + re.escape(DELAY_GROUP.schema_name("")) + r"(?P<mode>\w+)@_here_")


def read_preset(path: str | Path) -> DelayProfile:
    """A ``delay_profile`` YAML option as a profile: its schema's mode, its keys, the defaults for the others."""
    doc = yaml.safe_load(Path(path).read_text()) or {}
    for entry in doc.pop("defaults", None) or ():
        if m := _SCHEMA_ENTRY.fullmatch(str(entry)):
            doc.setdefault("mode", m["mode"])
    return DelayProfile(**doc)


PRESETS: dict[str, DelayProfile] = {p.stem: read_preset(p) for p in sorted(PRESETS_DIR.glob("*.yaml"))}
# What delay_profile.system may name: the presets with an iid law (converted at the measured profile's rate).
SYSTEM_PRESETS: dict[str, DelayProfile] = {
    name: p for name, p in PRESETS.items() if p.mode in IID_MODES and p.warmup_cycles == 0
}
