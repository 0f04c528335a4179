"""The ``gpu_pool`` launcher: a sweep on one machine with several GPUs, one job per GPU at a time.

    python -m rtc_sweep -m hydra/launcher=gpu_pool +experiment=tail_v1            # every visible GPU
    python -m rtc_sweep -m hydra/launcher=gpu_pool hydra.launcher.gpus=[0,2] ...  # just these

Each job runs in its own process (through submitit's local executor, so logs land in ``.submitit/``) that sees
only its GPU (``CUDA_VISIBLE_DEVICES``); as many jobs run as there are GPU slots, and a job starts on a GPU as
soon as the previous one there ends. Jobs share compiled programs through JAX's persistent cache.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Hydra instantiates a launcher only when its class path lies in the `hydra_plugins` namespace and its plugin
# scan (or Plugins.register) has seen the class. register_launcher() registers a subclass named into that
# namespace, which keeps the launcher inside this package instead of shipping a second top-level package.
PLUGIN_MODULE = "hydra_plugins.rtc_sweep_gpu_pool"


@dataclass
class GpuPoolLauncherConf:
    _target_: str = f"{PLUGIN_MODULE}.GpuPoolLauncher"
    gpus: list[int] | None = None  # GPU indices to use; null = every visible one (CUDA_VISIBLE_DEVICES or nvidia-smi)
    jobs_per_gpu: int = 1  # jobs sharing one GPU at a time (> 1 also splits JAX's GPU memory between them)
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"  # each job's pickled call, stdout and stderr
    timeout_min: int = 1440  # a job running longer than this (minutes) is killed


class GpuSlots:
    """Hands out GPUs to jobs: the least busy GPU first, at most ``jobs_per_gpu`` jobs on each. Thread-safe."""

    def __init__(self, gpus: Sequence[int], jobs_per_gpu: int = 1) -> None:
        if not gpus:
            raise ValueError("no GPUs to run on")
        if len(set(gpus)) != len(gpus):
            raise ValueError(f"GPU list {list(gpus)} names a GPU twice")
        if jobs_per_gpu < 1:
            raise ValueError(f"jobs_per_gpu={jobs_per_gpu}; allowed: >= 1")
        self.gpus = tuple(gpus)
        self.jobs_per_gpu = jobs_per_gpu
        self._busy = dict.fromkeys(self.gpus, 0)
        self._cond = threading.Condition()

    @property
    def capacity(self) -> int:
        return len(self.gpus) * self.jobs_per_gpu

    def acquire(self) -> int:
        """Block until a GPU has a free slot; return it (ties go to the GPU listed first)."""
        with self._cond:
            while True:
                gpu = min(self.gpus, key=lambda g: self._busy[g])
                if self._busy[gpu] < self.jobs_per_gpu:
                    self._busy[gpu] += 1
                    return gpu
                self._cond.wait()

    def release(self, gpu: int) -> None:
        with self._cond:
            if self._busy[gpu] <= 0:
                raise RuntimeError(f"GPU {gpu} released more often than acquired")
            self._busy[gpu] -= 1
            self._cond.notify()

    @contextlib.contextmanager
    def slot(self) -> Iterator[int]:
        gpu = self.acquire()
        try:
            yield gpu
        finally:
            self.release(gpu)


def run_on_gpus(tasks: Sequence[T], slots: GpuSlots, run_one: Callable[[T, int], R]) -> list[R]:
    """``run_one(task, gpu)`` for every task, ``slots.capacity`` at a time, in task order; results in task order."""

    def on_slot(task: T) -> R:
        with slots.slot() as gpu:
            return run_one(task, gpu)

    with ThreadPoolExecutor(max_workers=slots.capacity, thread_name_prefix="gpu_pool") as pool:
        futures = [pool.submit(on_slot, task) for task in tasks]
        return [f.result() for f in futures]


def visible_gpus() -> list[int]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else every GPU nvidia-smi lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        items = [x.strip() for x in env.split(",") if x.strip()]
        try:
            return [int(x) for x in items]
        except ValueError:
            raise ValueError(
                f"CUDA_VISIBLE_DEVICES={env!r} holds GPU UUIDs or MIG names; give hydra.launcher.gpus as indices"
            ) from None
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return list(range(sum(1 for line in out.splitlines() if line.startswith("GPU "))))


@dataclass
class JobRunner:
    """One job of the sweep, run in its own process (pickled there by submitit): what Hydra's launchers do."""

    hydra_context: HydraContext
    config: DictConfig
    task_function: TaskFunction

    def __call__(self, overrides: list[str], job_num: int, job_id: str, singleton_state: dict[Any, Any]) -> JobReturn:
        from rtc_sweep.sweep import config  # noqa: F401  (registers rtc_sweep.job_dir, which hydra.sweep.subdir uses)

        Singleton.set_state(singleton_state)
        setup_globals()
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        job = sweep_config.hydra.job
        with open_dict(job):
            job.id = job_id
            job.num = job_num
        return run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )


class GpuPoolLauncher(Launcher):
    def __init__(
        self,
        gpus: Sequence[int] | None = None,
        jobs_per_gpu: int = 1,
        submitit_folder: str = ".submitit/%j",
        timeout_min: int = 1440,
    ) -> None:
        self.gpus = None if gpus is None else [int(g) for g in gpus]
        self.jobs_per_gpu = int(jobs_per_gpu)
        self.submitit_folder = str(submitit_folder)
        self.timeout_min = int(timeout_min)
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        gpus = self.gpus if self.gpus is not None else visible_gpus()
        if not gpus:
            raise RuntimeError(
                "hydra/launcher=gpu_pool found no GPU (no CUDA_VISIBLE_DEVICES, no nvidia-smi); "
                "name them with hydra.launcher.gpus=[0,1] or use the default launcher"
            )
        slots = GpuSlots(gpus, self.jobs_per_gpu)
        if self.jobs_per_gpu > 1:
            # JAX takes 75 % of a GPU's memory per process by default; jobs sharing a GPU must split it.
            os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / self.jobs_per_gpu:.3f}")
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(
            f"gpu_pool: {len(job_overrides)} jobs on GPUs {list(gpus)} ({self.jobs_per_gpu} per GPU) -> {sweep_dir}"
        )
        runner = JobRunner(self.hydra_context, self.config, self.task_function)
        state = Singleton.get_state()

        def run_one(task: tuple[int, Sequence[str]], gpu: int) -> JobReturn:
            idx, overrides = task
            log.info(f"\t#{idx} on GPU {gpu}: {' '.join(filter_overrides(overrides))}")
            executor = submitit.LocalExecutor(folder=self.submitit_folder, max_num_timeout=0)
            executor.update_parameters(gpus_per_node=1, visible_gpus=(gpu,), timeout_min=self.timeout_min)
            job = executor.submit(runner, list(overrides), idx, f"gpu_pool_{idx}", state)
            try:
                return job.result()
            except Exception as e:  # the process died (killed, out of memory): report it as a failed job
                log.error(f"\t#{idx} on GPU {gpu} failed: {e}")
                return JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=e)

        tasks = [(initial_job_idx + i, overrides) for i, overrides in enumerate(job_overrides)]
        return run_on_gpus(tasks, slots, run_one)


# ---------------------------------------------------------------------------------------------------------------
# Warm-up: compile each static spec of a sweep into the persistent cache before its jobs start (rtc_sweep.warmup)


@dataclass
class WarmupLauncherConf:
    _target_: str = f"{PLUGIN_MODULE}.WarmupLauncher"


@dataclass
class SweepWarmup:
    """Warm up a sweep's jobs, given as override lists, in this process (or in one SLURM job, pickled there)."""

    hydra_context: HydraContext
    config: DictConfig

    def __call__(self, job_overrides: Sequence[Sequence[str]], singleton_state: dict[Any, Any] | None = None) -> int:
        from rtc_sweep.warmup import warm_overrides

        if singleton_state is not None:  # a fresh process: Hydra's config search path and plugins
            Singleton.set_state(singleton_state)
            setup_globals()
            # submitit's own handlers are already on the root logger, so basicConfig would do nothing: give the
            # warm-up's log lines a handler of their own, on stdout (the job's *_log.out)
            ours = logging.getLogger("rtc_sweep")
            if not ours.handlers:
                handler = logging.StreamHandler(sys.stdout)
                handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
                ours.addHandler(handler)
            ours.setLevel(logging.INFO)

        def load(overrides: list[str]) -> DictConfig:
            assert self.hydra_context is not None
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with open_dict(cfg):
                del cfg["hydra"]  # what run_job hands the task function: the job's config without Hydra's
            return cfg

        return warm_overrides(load, job_overrides).compiled


class WarmupLauncher(Launcher):
    """``python -m rtc_sweep.warmup ... -m``'s launcher: every job of the sweep warmed up here, none run."""

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        SweepWarmup(self.hydra_context, self.config)(job_overrides)
        return [JobReturn(overrides=list(o), status=JobStatus.COMPLETED, _return_value=None) for o in job_overrides]


def _slurm_base() -> tuple[type, type]:
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    return SlurmQueueConf, SlurmLauncher


def _slurm_classes() -> tuple[type, type]:
    """hydra-submitit's SLURM launcher with ``warmup``: one job runs rtc_sweep.warmup before the array starts."""
    SlurmQueueConf, SlurmLauncher = _slurm_base()

    @dataclass
    class RtcSweepSlurmConf(SlurmQueueConf):  # type: ignore[misc,valid-type]
        _target_: str = f"{PLUGIN_MODULE}.RtcSweepSlurmLauncher"
        # Compile each static spec of the sweep once, in one job on the same kind of node, before the array
        # starts; the array's jobs then load every program from the cache (JAX_COMPILATION_CACHE_DIR: shared).
        warmup: bool = False

    class RtcSweepSlurmLauncher(SlurmLauncher):  # type: ignore[misc,valid-type]
        def __init__(self, warmup: bool = False, **params: Any) -> None:
            super().__init__(**params)
            self.warmup = bool(warmup)

        def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:  # one job, in its SLURM process
            from rtc_sweep.sweep import config  # noqa: F401  (registers rtc_sweep.job_dir: hydra.sweep.subdir uses it)

            return super().__call__(*args, **kwargs)

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            if self.warmup:
                self._warm(job_overrides)
            return super().launch(job_overrides, initial_job_idx)

        def _warm(self, job_overrides: Sequence[Sequence[str]]) -> None:
            import submitit
            from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
            from omegaconf import OmegaConf

            assert self.config is not None and self.hydra_context is not None
            params = dict(self.params)
            folder = str(params.pop("submitit_folder")).replace("%j", "warmup_%j")
            init = {f"{self._EXECUTOR}_max_num_timeout": params.pop("max_num_timeout", 0)}
            executor = submitit.AutoExecutor(folder=folder, cluster=self._EXECUTOR, **init)
            base = set(OmegaConf.structured(BaseQueueConf).keys())
            params.pop("array_parallelism", None)
            executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})
            warm = SweepWarmup(self.hydra_context, self.config)
            job = executor.submit(warm, list(job_overrides), Singleton.get_state())
            log.info(f"warm-up: job {job.job_id} compiles the sweep's static specs before the array starts")
            try:
                log.info(f"warm-up: {job.result()} static specs compiled into the cache")
            except Exception as e:  # the jobs compile what they need themselves
                log.warning(f"warm-up job failed ({e}); the array starts anyway and its jobs compile on their own")

    return RtcSweepSlurmConf, RtcSweepSlurmLauncher


def register_launcher() -> None:
    """Make ``hydra/launcher=gpu_pool``, ``slurm`` (with ``warmup``) and the warm-up's launcher available.

    Idempotent; call before Hydra composes the config.
    """
    import cloudpickle
    from hydra.core.plugins import Plugins

    cs = ConfigStore.instance()
    cs.store(group="hydra/launcher", name="gpu_pool", node=GpuPoolLauncherConf, provider="rtc_sweep")
    cs.store(group="hydra/launcher", name="rtc_sweep_warmup", node=WarmupLauncherConf, provider="rtc_sweep")
    slurm: tuple[type, type] | None
    try:
        slurm = _slurm_classes()
    except ImportError:  # hydra-submitit-launcher not installed: no SLURM
        slurm = None
    if slurm is not None:
        cs.store(group="hydra/launcher", name="rtc_sweep_slurm", node=slurm[0], provider="rtc_sweep")
    if PLUGIN_MODULE in sys.modules:
        return
    module = types.ModuleType(PLUGIN_MODULE, "rtc_sweep's launchers where Hydra looks for launchers")
    classes: dict[str, type] = {"GpuPoolLauncher": GpuPoolLauncher, "WarmupLauncher": WarmupLauncher}
    if slurm is not None:
        classes["RtcSweepSlurmLauncher"] = slurm[1]
    for name, cls in classes.items():
        setattr(module, name, type(name, (cls,), {"__module__": PLUGIN_MODULE}))
    sys.modules[PLUGIN_MODULE] = module
    # Jobs started through submitit (any launcher) unpickle Hydra's plugin registry, which now holds these classes,
    # in a process that cannot import the module above: cloudpickle must carry them by value.
    cloudpickle.register_pickle_by_value(module)
    for name in classes:
        Plugins.instance().register(getattr(module, name))
