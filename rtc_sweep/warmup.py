"""``python -m rtc_sweep.warmup <the sweep's overrides> -m``: fill the compilation cache before a cluster sweep.

Composes every job of the sweep exactly as ``python -m rtc_sweep`` would, and compiles each distinct static spec
(method, model, level shapes, ``max_timesteps``, batch shape: see core/timeline.py) once into JAX's persistent
cache, with the op-by-op programs of loading the level and the policy; no episode runs, no job folder is written.
The jobs of the sweep then load every program from the cache. Point ``JAX_COMPILATION_CACHE_DIR`` at the folder
the jobs will use (a shared filesystem on a cluster), and run it where the jobs run (the same kind of node and
the same number of CPU cores: XLA's flags, the device count and the CPU enter the cache key), e.g. with
``hydra.launcher.warmup=true`` on the SLURM launcher, which runs it as one job before the array.

A ``hydra/launcher`` given on the command line is ignored here: the warm-up always runs in this process.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("rtc_sweep")


@dataclass
class Warmup:
    """Compiles each distinct static spec once per process; remembers what it did."""

    seen: set[Any] = field(default_factory=set)
    compiled: int = 0
    skipped: int = 0
    seconds: float = 0.0

    def job(self, cfg: Any) -> bool:
        """Warm up one composed job config (a DictConfig); True when it compiled a new static spec."""
        from rtc_sweep.errors import ConfigError
        from rtc_sweep.runtime import enable_compilation_cache
        from rtc_sweep.sweep.config import to_job_config
        from rtc_sweep.sweep.evaluate import batch_size, compile_rollout, prepare

        job = to_job_config(cfg)
        run = job.run
        if job.compatible_only and run.method.name == "training_time" and not run.model.simulated_delay:
            return False  # the app skips these jobs (app.run), there is nothing to compile
        if job.synchronous_naive_only and run.execute.mode == "synchronous" and run.method.name != "naive":
            return False
        enable_compilation_cache()
        start = time.perf_counter()
        try:
            prep = prepare(run)
        except ConfigError as e:
            log.warning("warm-up: skipping an invalid job (%s)", e)
            self.skipped += 1
            return False
        key = (prep.spec, run.delay.scope == "batch", batch_size(run))
        if key in self.seen:
            return False
        self.seen.add(key)
        compile_rollout(prep)
        self.compiled += 1
        self.seconds += time.perf_counter() - start
        width = getattr(run.model, "channel_dim", type(run.model).__name__)  # a user network has its own keys
        log.info(
            "warm-up: compiled static spec %d (method=%s model=%s max_timesteps=%d batch=%d) in %.1f s",
            len(self.seen), run.method.name, width, run.max_timesteps, key[2], time.perf_counter() - start,
        )  # fmt: skip
        return True


def warm_overrides(load: Callable[[list[str]], Any], job_overrides: Sequence[Sequence[str]]) -> Warmup:
    """Warm up the jobs given by their override lists; ``load(overrides)`` composes one job's config."""
    from rtc_sweep.runtime import cache_dir, configure_host_devices

    configure_host_devices()
    w = Warmup()
    for overrides in job_overrides:
        w.job(load(list(overrides)))
    log.info(
        "warm-up: %d jobs, %d distinct static specs compiled into %s (%.1f s)",
        len(job_overrides), w.compiled, cache_dir(), w.seconds,
    )  # fmt: skip
    return w


def command_line(args: list[str], scratch: str) -> list[str]:
    """The sweep's command line for the warm-up: its own launcher, no aggregate, output in a scratch folder."""
    from rtc_sweep.sweep.config import command_line as sweep_command_line

    ours = ("hydra/launcher=", "hydra.launcher.", "hydra.sweep.dir=", "hydra.run.dir=")
    kept = [a for a in args if not a.startswith(ours)]
    return sweep_command_line(
        [
            *kept,
            "hydra/launcher=rtc_sweep_warmup",
            f"hydra.sweep.dir={scratch}/multirun",
            f"hydra.run.dir={scratch}/run",
            "hydra.output_subdir=null",
            "~hydra.callbacks.aggregate",  # nothing to aggregate
        ]
    )


def cli() -> None:
    from rtc_sweep.runtime import configure_host_devices

    configure_host_devices()  # before anything imports JAX
    import hydra
    from omegaconf import DictConfig

    from rtc_sweep.errors import ConfigError
    from rtc_sweep.sweep.config import register_configs
    from rtc_sweep.sweep.launch import register_launcher

    register_configs()
    register_launcher()
    with tempfile.TemporaryDirectory(prefix="rtc_sweep_warmup_") as scratch:
        try:
            sys.argv[1:] = command_line(sys.argv[1:], scratch)
        except ConfigError as e:
            sys.exit(f"invalid override: {e}")

        @hydra.main(version_base="1.3", config_path="conf", config_name="config")
        def main(cfg: DictConfig) -> None:  # a single run (no -m): warm up this one job
            warm_overrides(lambda _: cfg, [[]])

        main()


if __name__ == "__main__":
    cli()
