"""One evaluation job: a RunConfig in, one results row out (the importable entry the Hydra app calls)."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rtc_sweep.core.run_config import RunConfig
from rtc_sweep.errors import ConfigError

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


def model_preset_name(model: Any) -> str | None:
    from rtc_sweep.core.policy import MODEL_PRESETS

    for name, preset in MODEL_PRESETS.items():
        if dataclasses.replace(model, simulated_delay=None) == preset:
            return name
    return None


def default_checkpoint(level: str, model: Any) -> Path | None:
    """The shipped policy for a level and model preset: checkpoints/<level>/<preset>[_tt]/policy.pkl."""
    preset = model_preset_name(model)
    if preset is None:
        return None
    folder = preset + ("_tt" if model.simulated_delay else "")
    path = CHECKPOINTS_DIR / level / folder / "policy.pkl"
    return path if path.is_file() else None


def _policy_file(key: str, value: str, level: str, model: Any) -> str:
    """The file a checkpoint value names, found once: ``~`` expanded and a relative path made absolute, or
    ``rtc-assets:<run>/<step>`` fetched and checked to load; ``random`` stays. Raises ConfigError(key)."""
    from rtc_sweep.core.assets import is_asset_ref, resolve_checkpoint

    if value == "random":
        return value
    if is_asset_ref(value):
        return str(resolve_checkpoint(value, level, model, key))  # the cached file
    path = Path(value).expanduser().absolute()
    if not path.is_file():
        raise ConfigError(key, f"file {value} does not exist (give a policy .pkl in the benchmark layout, or 'random')")
    return str(path)


def validate(cfg: RunConfig) -> RunConfig:
    """Every check that needs no compile, once: returns ``cfg`` resolved, with the policy files the loaders open
    (``checkpoint_file``, ``weak_checkpoint_file``) and a trace file read (``DelayProfile.resolved``). Raises
    ConfigError naming the key. A config this returned passes through unchecked (``prepare`` calls it too, for the
    callers that skip the boundary, sweep/config.py ``validate``)."""
    from rtc_sweep.core.kinetix_env import level_name
    from rtc_sweep.core.options import is_checked, mark_checked

    if is_checked(cfg):
        return cfg
    if cfg.num_evals < 1:
        raise ConfigError("num_evals", f"{cfg.num_evals}; allowed: >= 1")
    if cfg.num_flow_steps < 1:
        raise ConfigError("num_flow_steps", f"{cfg.num_flow_steps}; allowed: >= 1")
    if cfg.micro_batch < 1:
        raise ConfigError("micro_batch", f"{cfg.micro_batch}; allowed: >= 1")
    if cfg.max_timesteps < 1:
        raise ConfigError("max_timesteps", f"{cfg.max_timesteps}; allowed: >= 1")
    if cfg.action_noise_std < 0:
        raise ConfigError("action_noise_std", f"{cfg.action_noise_std}; allowed: >= 0")
    H = cfg.model.action_chunk_size
    cfg.model.validate()  # model.<key>: the mixer's sizes >= 1 (ModelConfig), a network of one's own's H (network.py)
    delay = cfg.delay.resolved()  # mode trace: its file read, here only
    delay.validate()
    cfg.method.validate()
    cfg.execute.validate(H)
    if cfg.method.name == "temporal_ensembling" and cfg.execute.mode == "synchronous":
        raise ConfigError(
            "execute_policy.mode",
            "'synchronous' runs each chunk alone, there is nothing to ensemble; allowed with method "
            "temporal_ensembling: fixed, adaptive",
        )
    if cfg.method.name == "training_time" and not cfg.model.simulated_delay:
        raise ConfigError(
            "method.name",
            "training_time needs a policy trained with simulated delay: set model.simulated_delay (e.g. 5) and a "
            "checkpoint fine-tuned that way",
        )
    name = level_name(cfg.level)
    checkpoint_file: str | Path | None
    if cfg.checkpoint is None:
        checkpoint_file = default_checkpoint(name, cfg.model)
        if checkpoint_file is None:
            shipped = shipped_checkpoints()
            presets = [c.partition("/")[2] for c in shipped if c.partition("/")[0] == name]
            hint = f"this level's shipped policies are for model={', model='.join(presets)}; " if presets else ""
            raise ConfigError(
                "checkpoint",
                f"no shipped policy for level {name!r} with this model (shipped: {shipped or 'none'}); "
                f"{hint}give checkpoint=<path to .pkl> or checkpoint=random",
            )
    else:
        checkpoint_file = _policy_file("checkpoint", cfg.checkpoint, name, cfg.model)
    weak = cfg.method.weak_checkpoint
    resolved = dataclasses.replace(
        cfg,
        delay=delay,
        checkpoint_file=str(checkpoint_file),
        weak_checkpoint_file=None if weak is None else _policy_file("method.weak_checkpoint", weak, name, cfg.model),
    )
    mark_checked(resolved)
    return resolved


def shipped_checkpoints() -> list[str]:
    return sorted(str(p.parent.relative_to(CHECKPOINTS_DIR)) for p in CHECKPOINTS_DIR.glob("*/*/policy.pkl"))


def load_params(cfg: RunConfig, path: str | None, obs_dim: int, action_dim: int, salt: int = 0) -> Any:
    """The params of ``cfg.model`` (any model spec, ``core/network.py``): fresh from the seed for ``random``, else
    the policy file, checked against the network. A network named by ``model._target_`` is first built abstractly
    (no compile) and checked against the interface: a ``ConfigError("model._target_")`` says what does not fit."""
    import jax

    from rtc_sweep.core import network
    from rtc_sweep.core.checkpoint import load_policy
    from rtc_sweep.core.kinetix_env import level_name

    if isinstance(cfg.model, network.NetworkConfig):
        network.check_policy(cfg.model, obs_dim, action_dim)
    if path == "random":  # the mixer's is the benchmark's own draw (init_params), as it always was
        return network.init(cfg.model, jax.random.fold_in(jax.random.key(cfg.seed), 1000 + salt), obs_dim, action_dim)
    if path is None:
        path = str(default_checkpoint(level_name(cfg.level), cfg.model))
    from rtc_sweep.core.assets import cached_file, is_asset_ref

    if is_asset_ref(path):  # validate (run by prepare first) has fetched and checked it: read it from the cache
        path = str(cached_file(path, level_name(cfg.level)))
    return load_policy(path, cfg.model, obs_dim, action_dim)


@dataclasses.dataclass
class Prepared:
    """Everything a run needs, built once: loaded level, env, parameters, traced config arrays."""

    cfg: RunConfig
    spec: Any
    level: Any
    params: Any
    weak_params: Any
    env_params: Any
    delay_arrays: Any
    execute: Any


def prepare(cfg: RunConfig, record_actions: bool = False) -> Prepared:
    """The job's rollout (``timeline.setup``, the one training builds too) and its policy parameters."""
    from rtc_sweep.core.timeline import setup

    cfg = validate(cfg)  # at once when the boundary has (app.run): the policy files found, a trace read there
    built = setup(cfg, record_actions=record_actions)
    obs_dim, action_dim = built.spec.obs_dim, built.spec.action_dim
    params = load_params(cfg, cfg.checkpoint_file, obs_dim, action_dim)
    weak = cfg.weak_checkpoint_file if cfg.method.name == "bid" else None
    weak_params = load_params(cfg, weak, obs_dim, action_dim, salt=1) if weak else None
    return Prepared(
        cfg=cfg,
        spec=built.spec,
        level=built.level,
        params=params,
        weak_params=weak_params,
        env_params=built.env_params,
        delay_arrays=built.delay_arrays,
        execute=built.execute,
    )


def batch_size(cfg: RunConfig) -> int:
    """Environments per rollout call: ``micro_batch`` (at most ``num_evals``) rounded up to the device count."""
    from rtc_sweep.core import timeline

    return timeline.batch_size(cfg)


def rollout_args(prep: Prepared, b: int, batch: int) -> tuple[Any, ...]:
    """The arguments of the rollout for micro-batch ``b`` (environments ``b*batch .. (b+1)*batch - 1``)."""
    import jax.numpy as jnp

    idx = np.arange(b * batch, (b + 1) * batch)
    return (
        prep.params, prep.weak_params, prep.level.state, prep.env_params, prep.delay_arrays, prep.execute,
        jnp.int32(prep.cfg.seed), idx.astype(np.int32),  # numpy: sent to each device's shard, no slicing program
    )  # fmt: skip


def compile_rollout(prep: Prepared) -> Any:
    """Compile (or load from the persistent cache) the program ``run_rollouts`` runs, without running it."""
    from rtc_sweep.core.timeline import make_rollout

    fn = make_rollout(prep.spec, prep.cfg.delay.scope == "batch")
    return fn.lower(*rollout_args(prep, 0, batch_size(prep.cfg))).compile()


class PartialStore:
    """A job's finished micro-batches in ``folder`` (the job folder's ``partial/``), so that a killed job resumes
    at its next batch: one ``.npz`` per batch, written atomically, under a fingerprint of everything the batch's
    results depend on (the config's hash, the batch size, the device count, the JAX and package versions, the
    rollout's source code, every array the rollout takes: policy, level, delay law). Files under another fingerprint
    are removed, never read.
    """

    def __init__(self, folder: str | Path, prep: Prepared):
        self.folder = Path(folder) / partial_fingerprint(prep, batch_size(prep.cfg))
        self.resumed_envs = 0
        self.resumed_seconds = 0.0
        if Path(folder).is_dir():
            import shutil

            for other in Path(folder).iterdir():
                if other == self.folder:
                    continue
                if other.is_dir():
                    shutil.rmtree(other)
                else:
                    other.unlink()

    def path(self, start: int, stop: int) -> Path:
        from rtc_sweep.report.results import partial_file_name

        return self.folder / partial_file_name(start, stop)

    def load(self, start: int, stop: int) -> Any | None:
        """Environments ``start .. stop - 1`` as run before (PerEnv, numpy), or None (not run, or unreadable)."""
        from rtc_sweep.core.timeline import per_env_from_arrays

        path = self.path(start, stop)
        if not path.is_file():
            return None
        try:
            with np.load(path) as f:
                out, seconds = per_env_from_arrays(f), float(f["seconds"])
        except (OSError, ValueError, KeyError, EOFError) as err:  # a damaged file: run the batch again
            log.warning("%s is unreadable (%s); running its environments again", path, err)
            return None
        self.resumed_envs += stop - start
        self.resumed_seconds += seconds
        return out

    def save(self, start: int, stop: int, per_env: Any, seconds: float) -> None:
        from rtc_sweep.core.timeline import per_env_arrays
        from rtc_sweep.io import atomic_path

        with atomic_path(self.path(start, stop)) as tmp, open(tmp, "wb") as f:
            arrays: dict[str, Any] = {"seconds": np.float64(seconds), **per_env_arrays(per_env)}
            np.savez(f, **arrays)


# The source a micro-batch's results come from: the rollout, env, samplers, policy and delay laws (core/) and how a
# job is prepared and batched (this file). An edit there between a kill and the resume starts the job's batches over.
ROLLOUT_SOURCE = (Path(__file__).resolve().parent.parent / "core", Path(__file__).resolve())


@functools.cache
def code_digest(paths: Sequence[Path] = ROLLOUT_SOURCE) -> str:
    """A hash of the ``.py`` files at ``paths`` (files, or folders read one level deep), by name and bytes; read once
    per process (the code it runs is the code it imported)."""
    h = hashlib.sha256()
    for path in paths:
        files = sorted(path.glob("*.py")) if path.is_dir() else [path]
        for f in files:
            h.update(f"{f.name}\0{f.stat().st_size}\0".encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def partial_fingerprint(prep: Prepared, batch: int, code: str | None = None) -> str:
    """What a micro-batch's results depend on beyond its environment indices (``PartialStore``); ``code``: the
    rollout source's digest (``code_digest()`` when not given)."""
    import jax

    import rtc_sweep
    from rtc_sweep.sweep.config import config_hash

    what = {"config": config_hash(prep.cfg), "batch": batch, "devices": len(jax.devices()),
            "jax": jax.__version__, "rtc_sweep": rtc_sweep.__version__,
            "code": code_digest() if code is None else code}  # fmt: skip
    h = hashlib.sha256(json.dumps(what, sort_keys=True).encode())
    arrays = (prep.params, prep.weak_params, prep.level.state, prep.env_params, prep.delay_arrays, prep.execute)
    for leaf in jax.tree.leaves(arrays):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def run_rollouts(
    prep: Prepared,
    progress: bool = True,
    injected_delays: np.ndarray | None = None,
    store: PartialStore | None = None,
) -> Any:
    """All ``num_evals`` environments in micro-batches; returns the per-env results concatenated (numpy).

    ``store`` (``PartialStore``): each finished batch is kept there, and the batches it already holds are read back
    instead of run; the results are the same either way (an environment's draws depend on its index only).
    """
    import jax
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    from rtc_sweep.core.timeline import make_rollout, rollout

    cfg = prep.cfg
    batch = batch_size(cfg)
    n_batches = math.ceil(cfg.num_evals / batch)
    scope_batch = cfg.delay.scope == "batch"
    if injected_delays is None:
        fn = make_rollout(prep.spec, scope_batch)
    else:  # tests: injected delay sequences (rows repeated over the envs), unsharded
        table = np.resize(injected_delays, (cfg.num_evals, injected_delays.shape[1]))
        jitted = jax.jit(lambda *a, inj: rollout(prep.spec, *a, scope_batch=scope_batch, injected_delays=inj))
    if store is not None and injected_delays is not None:
        raise ValueError("run_rollouts: results under injected delays are not kept in a PartialStore")
    parts = []
    bar = tqdm(total=cfg.num_evals, desc="evaluating", unit="env", disable=not progress, leave=False)
    for b in range(n_batches):
        keep = int(min(batch, cfg.num_evals - b * batch))
        start, stop = b * batch, b * batch + keep
        if store is not None and (done := store.load(start, stop)) is not None:
            log.info("environments %d-%d: read back from %s", start, stop - 1, store.folder)
            parts.append(done)
            bar.update(keep)
            continue
        t0 = time.perf_counter()
        args = rollout_args(prep, b, batch)
        if injected_delays is None:
            out = fn(*args)
        else:
            idx = np.arange(b * batch, (b + 1) * batch)
            out = jitted(*args, inj=jnp.asarray(table[np.minimum(idx, cfg.num_evals - 1)]))
        kept = jax.tree.map(lambda x, keep=keep: np.asarray(x)[:keep], out)  # drop the padding envs
        if store is not None:
            store.save(start, stop, kept, time.perf_counter() - t0)
        parts.append(kept)
        bar.update(keep)
    bar.close()
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *parts)


def metrics(per_env: Any) -> dict[str, float]:
    """timeline.md's metrics from the per-environment results (numpy)."""
    from rtc_sweep.report.stats import wilson_interval

    delays = per_env.cycle_delay[per_env.cycle_delay >= 0].astype(np.float64)  # every cycle, all envs
    n_cycles = max(int(per_env.n_cycles.sum()), 1)
    first = per_env.first
    solved = np.asarray(first.solved, dtype=bool)
    ci_low, ci_high = wilson_interval(int(solved.sum()), solved.size)
    return {
        "returned_episode_solved": float(np.mean(first.solved)),
        "returned_episode_solved_ci_low": ci_low,
        "returned_episode_solved_ci_high": ci_high,
        "returned_episode_returns": float(np.mean(first.returns)),
        "returned_episode_lengths": float(np.mean(first.length)),
        "d_mean": float(delays.mean()),
        "d_p50": float(np.percentile(delays, 50)),
        "d_p95": float(np.percentile(delays, 95)),
        "d_p99": float(np.percentile(delays, 99)),
        "d_max": float(delays.max()),
        "p_violate": float(per_env.n_violate.sum() / n_cycles),
        "p_late": float(per_env.n_late.sum() / n_cycles),
        "p_underestimate": float(per_env.n_under.sum() / n_cycles),
        "starved_ticks": float(np.mean(per_env.starved_ticks)),
        "mean_execute_horizon": float(per_env.sum_execute_horizon.sum() / n_cycles),
        "mean_cycle_length": float(per_env.sum_cycle_length.sum() / n_cycles),
        "max_delta_action": float(np.mean(per_env.max_delta)),
        "max_ddelta_action": float(np.mean(per_env.max_ddelta)),
    }


def evaluate(cfg: RunConfig, progress: bool = True) -> dict[str, Any]:
    """Run one job and return its results row (identifying columns, metrics, then extras)."""
    from rtc_sweep.core.kinetix_env import level_name
    from rtc_sweep.core.samplers import nfe_per_chunk

    t0 = time.perf_counter()
    prep = prepare(cfg)
    latency: LatencyMeasurement | None = None
    if cfg.delay.mode == "measured":  # time the job's own sampler, then replay it (prepare left a placeholder)
        latency = measured_latency(prep, _JOB_DIR.get())
        prep.delay_arrays = cfg.delay.arrays(cfg.max_timesteps, measured_ms=latency.ms)
    log.info("level %s loaded; compiling and running %d environments", prep.level.name, cfg.num_evals)
    from rtc_sweep.report.results import PARTIAL_DIR

    job_dir = _JOB_DIR.get()
    store = None if job_dir is None else PartialStore(job_dir / PARTIAL_DIR, prep)
    per_env = run_rollouts(prep, progress=progress, store=store)
    # a resumed job's wall time: this process's, plus the batch calls it read back (their compile included)
    wall = time.perf_counter() - t0 + (0.0 if store is None else store.resumed_seconds)
    execute_horizon = cfg.execute.execute_horizon if cfg.execute.mode != "adaptive" else cfg.execute.s_min
    row: dict[str, Any] = {
        "profile": cfg.delay.name,
        "method": cfg.method.name,
        "execute_policy": cfg.execute.mode,
        "seed": cfg.seed,
        "level": level_name(cfg.level),
        "execute_horizon": execute_horizon,
        "num_evals": cfg.num_evals,
        **metrics(per_env),
        "p_abandoned": float(per_env.n_abandoned.sum() / max(int(per_env.n_cycles.sum()), 1)),
        "nfe_per_chunk": nfe_per_chunk(cfg.method, cfg.num_flow_steps, prep.weak_params is not None),
        "delay_scope": cfg.delay.scope,
        "delay_mode": cfg.delay.mode,
        "estimator": cfg.execute.estimator,
        "starvation": cfg.execute.starvation,
        "num_flow_steps": cfg.num_flow_steps,
        "model": model_preset_name(cfg.model) or "custom",
        "checkpoint": cfg.checkpoint or "shipped",
        "wall_s": round(wall, 2),
        "resumed_envs": 0 if store is None else store.resumed_envs,
        "env_steps_per_s": round(cfg.num_evals * cfg.max_timesteps / wall, 1),
    }
    if latency is not None:
        row.update(latency.columns())
    return row


def render_video(cfg: RunConfig, path: str | Path, fps: int = 15) -> Path:
    """Write an mp4 of environment 0 of this run: the same delay, flow-noise and action-noise draws as in the
    evaluation, so it is the trajectory that produced that environment's metrics."""
    import jax
    import jax.numpy as jnp

    from rtc_sweep.core.kinetix_env import render_rollout
    from rtc_sweep.core.timeline import env_keys
    from rtc_sweep.io import write_mp4

    one = dataclasses.replace(cfg, num_evals=1, micro_batch=1)
    prep = prepare(one, record_actions=True)
    per_env = run_rollouts(prep, progress=False)
    _, _, action_keys, _ = env_keys(jnp.int32(cfg.seed), jnp.zeros((1,), jnp.int32), False)
    tick_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(action_keys[0], jnp.arange(cfg.max_timesteps))
    frames = np.asarray(render_rollout(prep.level, prep.env_params, jnp.asarray(per_env.actions[0]), tick_keys,
                                       cfg.action_noise_std))  # fmt: skip
    path = Path(path)
    write_mp4(path, frames, fps)  # not imageio's writer: its ffmpeg child runs fork handlers (JAX's warns)
    return path


# --- delay_profile=measured: the job's own sampler, timed on its device --------------------------------------------

# The warm-up calls before the timed ones (the first compiles); latency_ms_warmup reports the first of them.
WARMUP_CALLS = 3
_JOB_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar("job_dir", default=None)


@contextlib.contextmanager
def job_folder(job_dir: str | Path | None) -> Iterator[None]:
    """Within it, ``evaluate`` keeps in ``job_dir`` what lets a rerun of the job resume: a measured job's timings
    (``latency_ms.csv``) and the finished micro-batches (``partial/``, ``PartialStore``)."""
    token = _JOB_DIR.set(None if job_dir is None else Path(job_dir))
    try:
        yield
    finally:
        _JOB_DIR.reset(token)


@dataclasses.dataclass(frozen=True)
class LatencyMeasurement:
    """The timed sampler calls of a measured job: ``ms`` [calls] (float64) after a warm-up reported apart."""

    ms: np.ndarray
    warmup_ms: float
    fingerprint: str

    def columns(self) -> dict[str, float]:
        from rtc_sweep.report.results import LATENCY_COLUMNS

        values = (np.percentile(self.ms, 50), np.percentile(self.ms, 99), self.warmup_ms)
        return {c: round(float(v), 4) for c, v in zip(LATENCY_COLUMNS, values, strict=True)}


def _spec_fields(spec: object) -> Any:
    """A model spec's fields (it is a frozen dataclass, ModelConfig or a NetworkConfig); anything else, its repr."""
    if dataclasses.is_dataclass(spec) and not isinstance(spec, type):
        return dataclasses.asdict(spec)
    return repr(spec)


def latency_fingerprint(cfg: RunConfig) -> str:
    """What the timings depend on: the sampler (method, model, flow steps, checkpoint), level, batch, calls, device."""
    import jax

    device = jax.devices()[0]
    what = {
        "method": dataclasses.asdict(cfg.method),
        "model": _spec_fields(cfg.model),
        "num_flow_steps": cfg.num_flow_steps,
        "checkpoint": cfg.checkpoint,
        "level": cfg.level,
        "batch": cfg.delay.batch,
        "calls": cfg.delay.calls,
        "device": f"{device.platform}:{device.device_kind}",
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def measure_latency(prep: Prepared) -> LatencyMeasurement:
    """Time ``delay_profile.calls`` calls of the job's sampler at batch ``delay_profile.batch`` (ms, wall clock).

    The calls see the level's initial observation, the initial chunk as ``prev`` and the job's execute horizon; every
    call gets fresh flow noise, generated (and finished) before its clock starts. ``WARMUP_CALLS`` calls go first.
    """
    import jax
    import jax.numpy as jnp

    from rtc_sweep.core.samplers import noise_shape, sample_chunk

    cfg, spec = prep.cfg, prep.spec
    B, H, A = cfg.delay.batch, spec.model.action_chunk_size, spec.action_dim
    obs, _ = jax.vmap(lambda _: spec.env.reset(prep.level.state))(jnp.arange(B))
    prev = jnp.zeros((B, H, A))
    s = min(cfg.execute.execute_horizon if cfg.execute.mode != "adaptive" else cfg.execute.s_min, H)
    d, horizon, plan = (jnp.full((B,), v, jnp.int32) for v in (min(1, H - s), H - s, H))

    # prev, d, horizon and plan are arguments, not constants of the program: one compile (and one cache entry)
    # serves every execute horizon
    @jax.jit
    def sample(params: Any, weak: Any, obs: jax.Array, noise: jax.Array, prev: jax.Array, d: jax.Array,
               horizon: jax.Array, plan: jax.Array) -> jax.Array:  # fmt: skip
        return sample_chunk(
            spec.method, params, spec.model, obs, noise, prev, d, horizon, spec.num_flow_steps, weak, plan_length=plan
        )

    shape = noise_shape(spec.method, B, H, A)
    keys = jax.random.split(jax.random.key(cfg.seed), WARMUP_CALLS + cfg.delay.calls)
    times = []
    for key in keys:
        noise = jax.block_until_ready(jax.random.normal(key, shape))
        start = time.perf_counter()
        jax.block_until_ready(sample(prep.params, prep.weak_params, obs, noise, prev, d, horizon, plan))
        times.append((time.perf_counter() - start) * 1000.0)
    ms = np.asarray(times[WARMUP_CALLS:], dtype=np.float64)
    return LatencyMeasurement(ms=ms, warmup_ms=float(times[0]), fingerprint=latency_fingerprint(cfg))


def write_latency_file(path: str | Path, latency: LatencyMeasurement, cfg: RunConfig) -> None:
    """``latency_ms.csv``: ``#`` comment lines (fingerprint, warm-up), a header, one latency (ms) per line; atomic.

    A trace profile reads it as it is (comments and the header are skipped), every value in full precision.
    """
    from rtc_sweep.io import atomic_write_text

    lines = [
        "# rtc_sweep delay_profile=measured: the job's sampler timed on its device, ms per call after the warm-up.",
        f"# method={cfg.method.name} num_flow_steps={cfg.num_flow_steps} checkpoint={cfg.checkpoint or 'shipped'} "
        f"batch={cfg.delay.batch} calls={cfg.delay.calls}",
        "# Replay: delay_profile=trace_example delay_profile.trace_path=<this file> delay_profile.control_hz=<rate>",
        f"# fingerprint: {latency.fingerprint}",
        f"# warmup_ms: {latency.warmup_ms!r}",
        "latency_ms",
        *(repr(float(v)) for v in latency.ms),
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_latency_file(path: str | Path) -> LatencyMeasurement | None:
    """A ``latency_ms.csv`` as written by ``write_latency_file``, or None when missing or unreadable."""
    from rtc_sweep.core.delays import read_trace

    try:
        text = Path(path).read_text()
        meta = dict(
            line[1:].strip().split(": ", 1) for line in text.splitlines() if line.startswith("# ") and ": " in line
        )
        return LatencyMeasurement(
            ms=read_trace(path), warmup_ms=float(meta["warmup_ms"]), fingerprint=meta["fingerprint"]
        )
    except (OSError, ValueError, KeyError, ConfigError):
        return None


def measured_latency(prep: Prepared, job_dir: Path | None) -> LatencyMeasurement:
    """The job's timings: ``job_dir/latency_ms.csv`` when it holds this job's (a resumed job), else measured now
    and written there (when there is a job folder)."""
    from rtc_sweep.report.results import LATENCY_FILE

    cfg = prep.cfg
    path = None if job_dir is None else job_dir / LATENCY_FILE
    if path is not None and (kept := read_latency_file(path)) is not None:
        if kept.fingerprint == latency_fingerprint(cfg) and kept.ms.size == cfg.delay.calls:
            log.info("reusing the measured latencies in %s (p50 %.3f ms)", path, np.percentile(kept.ms, 50))
            return kept
        log.info("%s was measured for another sampler or device; measuring again", path)
    log.info("timing the sampler: %d calls at batch %d after %d warm-up calls", cfg.delay.calls, cfg.delay.batch,
             WARMUP_CALLS)  # fmt: skip
    latency = measure_latency(prep)
    if path is not None:
        write_latency_file(path, latency, cfg)
    log.info("sampler latency: p50 %.3f ms, p99 %.3f ms, warm-up %.1f ms",
             *(latency.columns()[c] for c in ("latency_ms_p50", "latency_ms_p99", "latency_ms_warmup")))  # fmt: skip
    return latency
