"""Process-level JAX set-up shared by every entry point (call before JAX runs anything)."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

_REJECTED: dict[str, bool] = {}


def configure_host_devices() -> None:
    """Expose the machine's cores as host devices so environments can be sharded over them on CPU.

    XLA runs the Kinetix physics step on about one core; with the batch sharded over one host device per
    core it uses them all (measured 3.3 k vs 1.7 k env steps/s on 2 cores). Only done when the user has not
    set ``XLA_FLAGS`` and JAX has not started yet; GPUs and TPUs are unaffected by this flag.
    """
    if "XLA_FLAGS" in os.environ:
        return
    import sys

    if "jax" in sys.modules:
        import jax

        if jax._src.xla_bridge.backends_are_initialized():
            return
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if n > 1:
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"


CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
log = logging.getLogger("rtc_sweep")


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rtc_sweep" / "jax"


def cache_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The persistent cache folder: ``path`` if given, else ``$JAX_COMPILATION_CACHE_DIR``, else the user cache."""
    return Path(path or os.environ.get(CACHE_ENV) or default_cache_dir()).expanduser()


def enable_compilation_cache(path: str | os.PathLike[str] | None = None) -> Path:
    """Turn on JAX's persistent compilation cache for every program this process compiles.

    Every program is written, however small or quick to compile: a job's start is otherwise spent re-compiling
    the ~180 small op-by-op programs of loading a level and initialising a policy (6 s on 2 loaded cores), and
    a cache read costs milliseconds. ``JAX_COMPILATION_CACHE_DIR`` (or ``path``) points it at a shared
    filesystem so that every process of a sweep, on any node, loads what one of them compiled.
    """
    import jax

    global _enabled
    cache = cache_dir(path)
    if _enabled == cache:
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    # JAX decides once per process whether the cache is on; a process that compiled before this call (imports
    # that run jnp) would otherwise keep it off.
    from jax._src import compilation_cache

    compilation_cache.reset_cache()
    _enabled = cache
    _watch_rejections()
    return cache


_enabled: Path | None = None
_REJECTION = "Error reading persistent compilation cache entry"
_warned_rejection = False


def _watch_rejections() -> None:
    """Say once, with what to do, when jaxlib refuses an entry of the cache (then it compiles and goes on).

    XLA:CPU executables are compiled for the host's CPU features; an entry written on a node with other
    features (AVX-512 on one, not on the other) is refused when it is loaded. JAX warns per program; this
    turns that into one log line.
    """
    if getattr(warnings.showwarning, "_rtc_sweep", False):
        return
    previous = warnings.showwarning

    def showwarning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        global _warned_rejection
        text = str(message)
        if _REJECTION in text:
            name = text.split("'")[1] if text.count("'") >= 2 else "?"
            _REJECTED[name.removeprefix("jit_")] = True  # the module jit_f of the program CompileLog names f
            if not _warned_rejection:
                _warned_rejection = True
                log.warning(
                    "the compilation cache %s holds programs this machine's jaxlib refuses (%s); they are compiled "
                    "again here. Usually the cache was filled on a node with other CPU features: give each kind of "
                    "node its own cache (%s=<shared dir>/<cpu model>) or warm it up on the nodes the jobs run on.",
                    os.environ.get(CACHE_ENV) or "in use",
                    text.split(":", 2)[-1].strip()[:200],
                    CACHE_ENV,
                )
            return
        previous(message, category, *args, **kwargs)

    showwarning._rtc_sweep = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning


class Program(NamedTuple):
    """One program JAX compiled (or loaded from the persistent cache) in this process."""

    name: str  # JAX's fun_name: the jitted function's name, ``jit(add)`` style for op-by-op dispatch
    trace_s: float
    lower_s: float
    compile_s: float  # backend compile, or the cache read on a hit
    cache: str  # hit | miss (compiled, written) | unwritten (compiled, below the cache's thresholds) | off | rejected


class CompileLog:
    """Every program traced, lowered and compiled while active, read from JAX's monitoring events::

    with CompileLog() as log:
        evaluate(cfg)
    log.programs  # [Program(name='rollout', trace_s=2.1, lower_s=0.8, compile_s=0.3, cache='hit'), ...]
    """

    def __init__(self) -> None:
        self.programs: list[Program] = []
        self._trace: dict[str, float] = {}
        self._lower: dict[str, float] = {}
        self._flags: set[str] = set()

    def _on_event(self, event: str, **kwargs: Any) -> None:
        if event.startswith("/jax/compilation_cache/"):
            self._flags.add(event.rsplit("/", 1)[1])

    def _on_duration(self, event: str, duration_secs: float, **kwargs: str | int) -> None:
        name = str(kwargs.get("fun_name", "?"))
        if name.startswith("jit(") and name.endswith(")"):  # trace events name the function, compile ones jit(it)
            name = name[4:-1]
        if event == "/jax/core/compile/jaxpr_trace_duration":
            self._trace[name] = self._trace.get(name, 0.0) + duration_secs
        elif event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            self._lower[name] = self._lower.get(name, 0.0) + duration_secs
        elif event == "/jax/core/compile/backend_compile_duration":
            f = self._flags
            cache = (
                "hit" if "cache_hits" in f else "rejected" if _REJECTED.pop(name, False) else
                "miss" if "cache_misses" in f else "unwritten" if "compile_requests_use_cache" in f else "off"
            )  # fmt: skip
            trace_s, lower_s = self._trace.pop(name, 0.0), self._lower.pop(name, 0.0)
            self.programs.append(Program(name, trace_s, lower_s, duration_secs, cache))
            self._flags = set()

    def __enter__(self) -> CompileLog:
        from jax import monitoring

        monitoring.register_event_listener(self._on_event)
        monitoring.register_event_duration_secs_listener(self._on_duration)
        return self

    def __exit__(self, *exc: object) -> None:
        from jax import monitoring

        monitoring.unregister_event_listener(self._on_event)
        monitoring.unregister_event_duration_listener(self._on_duration)

    def compiled(self, min_seconds: float = 0.0) -> list[Program]:
        """The programs that were compiled here rather than loaded (a persistent cache miss or no cache)."""
        return [p for p in self.programs if p.cache != "hit" and p.compile_s >= min_seconds]
