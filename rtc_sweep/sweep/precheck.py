"""Every job of a sweep checked before any is launched (``PrecheckCallback``, hooked in ``rtc_sweep/conf/config.yaml``).

Without it a sweep finds a bad value only when the job holding it runs: ``delay_profile.fixed_delay=-1,1 -m``
dies on job #0, and in a 100-job sweep on SLURM the bad job may fail hours after the good ones were queued. At
the start of a multirun, in the submitting process (so with every launcher: basic, ``gpu_pool``, ``slurm``), this
expands the sweep into its jobs exactly as Hydra's ``BasicSweeper`` will (``hydra.sweeper.params``, e.g. of an
``+experiment`` preset, then the command line's overrides; the ``a-b`` integer ranges were already rewritten by
``config.command_line``), composes each job's config as the launcher will, converts it (``to_job_config``) and
checks it (``validate``), in the order ``app.run`` does: a job that ``app.run`` skips before validating
(``compatible_only``, ``synchronous_naive_only``) is not checked. A job that does not compose because it sets a key
its option does not carry (``method=realtime,naive method.max_guidance_weight=3``: naive has none) is reported with
that key and the option's keys. When any job is invalid it prints every such job with its overrides and the key,
launches nothing and exits with code 2 (as a single invalid run does).

Nothing is compiled and no JAX backend is started; a few hundred jobs take a few seconds.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from rtc_sweep.errors import ConfigError

if TYPE_CHECKING:
    from hydra.core.config_loader import ConfigLoader

log = logging.getLogger(__name__)

# One job's outcome: (ok | skipped | invalid, the offending key or None, the message).
Outcome = tuple[str, str | None, str]

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
SHOWN = 20  # invalid jobs listed in full; the rest are counted
EXIT_CODE = 2  # as a single run with an invalid config (rtc_sweep/__main__.py)


@dataclasses.dataclass(frozen=True)
class InvalidJob:
    index: int  # the job's number in the sweep (Hydra's #N)
    overrides: tuple[str, ...]  # the job's overrides, as Hydra launches it
    key: str | None  # the offending key; None when the config did not compose for another reason (a wrong type)
    message: str  # what is wrong and what is allowed

    def __str__(self) -> str:
        where = f"{self.key}: " if self.key else ""
        return f"job #{self.index} ({' '.join(self.overrides)}): {where}{self.message}"


@dataclasses.dataclass(frozen=True)
class Precheck:
    jobs: int  # jobs the sweep defines
    checked: int  # jobs validated (the others app.run skips before validating)
    invalid: tuple[InvalidJob, ...]
    seconds: float

    def report(self) -> str:
        lines = [f"invalid config in {len(self.invalid)} of the sweep's {self.jobs} jobs; no job was launched:"]
        lines += [f"  {job}" for job in self.invalid[:SHOWN]]
        if len(self.invalid) > SHOWN:
            lines.append(f"  ... and {len(self.invalid) - SHOWN} more invalid jobs")
        return "\n".join(lines)


def sweep_jobs(config: DictConfig, loader: ConfigLoader) -> list[list[str]] | None:
    """The overrides of every job of the multirun ``config``, in launch order; None for a sweeper other than basic.

    The same steps as ``BasicSweeper.sweep``: ``hydra.sweeper.params`` first, then the task overrides, parsed by
    Hydra's override parser and crossed by ``BasicSweeper.split_arguments``.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    sweeper = config.hydra.sweeper
    if sweeper.get("_target_") != BASIC_SWEEPER:
        return None
    params = sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    task = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
    assert isinstance(task, list)
    arguments += [str(a) for a in task]
    overrides = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def compose_job(config: DictConfig, overrides: Sequence[str], loader: ConfigLoader) -> dict[str, Any]:
    """The job's config as the launcher composes it and ``run_job`` hands it to the task (no ``hydra`` node), as a
    plain container. Raises Hydra's or OmegaConf's errors when it does not compose (a misspelt key, a wrong type)."""
    return _container(_without_hydra(loader.load_sweep_config(config, list(overrides))))


class JobComposer:
    """``compose_job`` for many jobs, fast: the defaults (the config groups a job picks, ``method=bid``) are composed
    once per distinct choice of groups, and each job's value overrides (``seed=3``) are then applied to a copy
    with the function Hydra's own composition applies them with; the result equals ``compose_job``'s (tested).
    Falls back to ``compose_job`` for every job where this Hydra lacks those internals."""

    def __init__(self, config: DictConfig, loader: ConfigLoader) -> None:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        self.config = config
        self.loader = loader
        self.parser = OverridesParser.create(config_loader=loader)
        self.repository = getattr(loader, "repository", None)
        self.apply = getattr(ConfigLoaderImpl, "_apply_overrides_to_config", None)
        self.bases: dict[tuple[str, ...], DictConfig | HydraException | OmegaConfBaseException] = {}

    def __call__(self, overrides: Sequence[str]) -> dict[str, Any]:
        if self.repository is None or self.apply is None:
            return compose_job(self.config, overrides, self.loader)
        parsed = self.parser.parse_overrides(list(overrides))
        # As Hydra's defaults list tells group choices from value overrides (defaults_list.Overrides).
        is_group = [self.repository.group_exists(o.key_or_group) and not isinstance(o.value(), dict) for o in parsed]
        groups = tuple(line for line, g in zip(overrides, is_group, strict=True) if g)  # each parsed's input_line
        if groups not in self.bases:
            try:
                self.bases[groups] = _without_hydra(self.loader.load_sweep_config(self.config, list(groups)))
            except (HydraException, OmegaConfBaseException) as e:
                self.bases[groups] = e
        base = self.bases[groups]
        if not isinstance(base, DictConfig):
            raise base
        cfg = copy.deepcopy(base)
        self.apply([o for o, g in zip(parsed, is_group, strict=True) if not g], cfg)
        return _container(cfg)


def _without_hydra(cfg: DictConfig) -> DictConfig:
    with open_dict(cfg):
        del cfg["hydra"]  # as hydra's run_job hands the task its config
    return cfg


def _container(cfg: DictConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}


def validate_jobs(containers: Sequence[dict[str, Any]]) -> list[Outcome]:
    """Convert and validate each composed job as ``app.run`` does: ``(status, key, message)`` per job, status
    ``ok``, ``skipped`` (app.run skips it before validating) or ``invalid``. Imports the runtime config (JAX)."""
    from rtc_sweep.sweep.app import skip_before_validation
    from rtc_sweep.sweep.config import to_job_config, validate

    out: list[Outcome] = []
    for container in containers:
        try:
            job = to_job_config(OmegaConf.create(container))
            if skip_before_validation(job) is not None:
                out.append(("skipped", None, ""))
                continue
            validate(job)
        except ConfigError as e:
            out.append(("invalid", e.key, e.message))
        except OmegaConfBaseException as e:
            out.append(("invalid", None, _one_line(e)))
        else:
            out.append(("ok", None, ""))
    return out


def validate_jobs_in_child(containers: Sequence[dict[str, Any]]) -> list[Outcome]:
    """``validate_jobs`` in a child process on JAX's CPU backend, so that this process never imports JAX (nor, through
    Kinetix, starts a backend on a GPU that the jobs it launches need, or on a SLURM login node)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", __name__],
        input=json.dumps(list(containers)),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the sweep's precheck failed (exit code {proc.returncode}):\n{proc.stderr[-4000:]}")
    return [(str(status), key, str(message)) for status, key, message in json.loads(proc.stdout)]


def check_sweep(config: DictConfig, loader: ConfigLoader | None = None, isolate: bool | None = None) -> Precheck | None:
    """Check every job of the multirun ``config`` (Hydra's, ``hydra`` node included); None when the sweeper is
    not Hydra's basic one (its jobs are not known in advance).

    ``loader``: the running app's by default. ``isolate``: validate in a child process (``validate_jobs_in_child``);
    by default when the launcher runs the jobs elsewhere (gpu_pool, slurm), not with Hydra's basic launcher, whose
    jobs run in this process, which imports JAX anyway.
    """
    from rtc_sweep.sweep.config import unknown_key

    if loader is None:
        from hydra.core.global_hydra import GlobalHydra

        loader = GlobalHydra.instance().config_loader()
    if isolate is None:
        isolate = config.hydra.launcher.get("_target_") != BASIC_LAUNCHER
    start = time.perf_counter()
    jobs = sweep_jobs(config, loader)
    if jobs is None:
        return None
    invalid: list[InvalidJob] = []
    composed: list[tuple[int, dict[str, Any]]] = []
    compose = JobComposer(config, loader)
    for index, overrides in enumerate(jobs):
        try:
            composed.append((index, compose(overrides)))
        except (HydraException, OmegaConfBaseException) as e:
            # A key the job's option does not carry (method=naive method.n_samples=4): named, with the option's keys.
            named = unknown_key(e)
            key, message = (named.key, named.message) if named else (None, _one_line(e))
            invalid.append(InvalidJob(index, tuple(overrides), key, message))
    containers = [c for _, c in composed]
    outcomes = validate_jobs_in_child(containers) if isolate else validate_jobs(containers)
    checked = 0
    for (index, _), (status, key, message) in zip(composed, outcomes, strict=True):
        checked += status != "skipped"
        if status == "invalid":
            invalid.append(InvalidJob(index, tuple(jobs[index]), key, message))
    invalid.sort(key=lambda job: job.index)
    return Precheck(len(jobs), checked, tuple(invalid), time.perf_counter() - start)


def _one_line(e: BaseException) -> str:
    text = str(e)
    if e.__cause__ is not None and str(e.__cause__) not in text:
        text += f" ({e.__cause__})"
    return " ".join(text.split())


class PrecheckCallback(Callback):
    """Validates every job of a multirun before the sweeper launches any; exits with code 2 when one is invalid."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        result = check_sweep(config)
        if result is None:
            log.info("precheck: sweeper %s defines its jobs as it goes; not checked", config.hydra.sweeper._target_)
            return
        if result.invalid:
            print(result.report(), file=sys.stderr, flush=True)
            raise SystemExit(EXIT_CODE)
        log.info(
            "precheck: %d jobs valid (%d checked, %d skipped before validation) in %.1f s",
            result.jobs, result.checked, result.jobs - result.checked, result.seconds,
        )  # fmt: skip


def _child_main() -> None:
    """``python -m rtc_sweep.sweep.precheck``: composed job configs (JSON list) on stdin, their outcomes on stdout."""
    out, sys.stdout = sys.stdout, sys.stderr  # whatever an import prints stays out of the answer
    outcomes = validate_jobs(json.loads(sys.stdin.read()))
    out.write(json.dumps(outcomes))


if __name__ == "__main__":
    _child_main()
