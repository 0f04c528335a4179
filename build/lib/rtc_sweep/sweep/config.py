"""The typed schema behind ``rtc_sweep/conf/`` and its one conversion into the frozen runtime config.

``rtc_sweep/conf/config.yaml`` composes a ``level``, ``delay_profile``, ``method``, ``execute_policy`` and ``model``
option onto ``RtcSweepSchema``. Because every node is a dataclass registered in Hydra's ConfigStore, a
misspelt key (``method.nme=...``) or a wrong type (``num_evals=many``) fails at composition, naming the key.
Values are checked after conversion (``validate``), still before JAX compiles anything.

This module imports only Hydra and OmegaConf at the top: ``--help``, ``--cfg`` and tab completion stay fast,
and JAX is not imported before ``runtime.configure_host_devices`` has run.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from rtc_sweep.errors import ConfigError

if TYPE_CHECKING:
    from rtc_sweep.core.run_config import RunConfig

SCHEMA_NAME = "rtc_sweep_schema"


@dataclass
class LevelSchema:
    name: str = "grasp_easy"  # a benchmark level (level=<name> picks it) or a path to a level JSON (level.name=x.json)


@dataclass
class DelayProfileSchema:
    name: str = "custom"  # label written to results.csv as `profile` (each delay_profile option sets its own)
    mode: str = "mixture"  # fixed | mixture | trace | lognormal | pareto | loglogistic | measured
    fixed_delay: int = 0  # ticks >= 0, mode fixed: every inference takes this long
    base_delays: list[int] = field(default_factory=lambda: [0, 1])  # ticks >= 0, mode mixture: support of the base
    base_probs: list[float] = field(default_factory=lambda: [0.9, 0.1])  # mode mixture: their probabilities, sum 1
    p_spike: float = 0.0  # [0, 1]: chance a draw is a spike of d_spike ticks instead of a base draw (not trace)
    d_spike: int = 4  # ticks >= 0: the delay of a spike
    tail_cap: int | None = None  # ticks >= 0: hard cap applied to every draw last (tail control); null = no cap
    spike_drop_prob: float = 0.0  # [0, 1]: chance a spike is dropped and the base draw kept instead
    dt_ms: float = 1000 / 30  # ms > 0: controller period, converts the ms-based modes to ticks (30 Hz)
    trace_ms: list[float] | None = None  # mode trace: inline latencies in ms (or give trace_path)
    trace_path: str | None = None  # mode trace: latency file (ms), one per line; relative paths may name a shipped one
    median_ms: float = 40.0  # ms > 0, modes lognormal and loglogistic: median latency
    sigma: float = 0.5  # > 0, mode lognormal: std of the log-latency (larger = heavier tail)
    scale_ms: float = 20.0  # ms > 0, mode pareto: minimum latency x_m
    alpha: float = 2.0  # > 0, modes pareto and loglogistic: tail index (smaller = heavier tail; infinite mean at <= 1)
    scope: str = "env"  # env: an independent delay stream per environment; batch: one draw shared by all envs
    control_hz: float | None = None  # Hz > 0: controller rate; when set, the ms-based modes use dt_ms = 1000 / it
    deadline: int | None = None  # ticks >= 1: a chunk later than this is abandoned and a new inference starts; null
    batch: int = 1  # mode measured: batch size of the timed sampler calls (1 = one robot, the deployment case)
    calls: int = 200  # mode measured: timed calls after the warm-up (1..16384)
    latency_scale: float = 1.0  # mode measured: factor on the measured ms (> 0; e.g. 4 for a 4x slower device)
    system: str = "none"  # mode measured: system part added to each draw: none or an iid preset (stalls, network_rtt)
    warmup_cycles: int = 0  # >= 0: the first cycles of every episode are warm-up cycles (any mode)
    warmup_factor: float = 1.0  # >= 1: a warm-up cycle takes ceil(warmup_factor * d) ticks


@dataclass
class MethodSchema:
    name: str = "naive"  # naive | realtime | hard_masking | bid | training_time | temporal_ensembling
    prefix_attention_schedule: str = "exp"  # realtime: guidance weights over the chunk (exp | linear | ones | zeros)
    max_guidance_weight: float = 5.0  # realtime / hard_masking: β, the cap on the guidance weight (> 0)
    n_samples: int = 16  # bid: candidate chunks per inference (>= 1)
    bid_k: int | None = None  # bid: forward-contrast set size (1..n_samples); null = backward coherence only
    weak_checkpoint: str | None = None  # bid: weak policy file (or rtc-assets:<run>/<step>) for the forward contrast
    te_decay: float = 0.01  # temporal_ensembling: ACT's m (>= 0), weights exp(-m·i) over chunks, i = 0 the oldest


@dataclass
class ExecutePolicySchema:
    # fixed: execute execute_horizon actions per chunk; adaptive: s_k = clip(max(d̂_k, s_min), 1, H); synchronous:
    # inference blocks the controller (the fallback for d_k ticks, then execute_horizon actions; L_k = d_k + s)
    mode: str = "fixed"  # fixed | adaptive | synchronous, as above
    execute_horizon: int = 4  # s, fixed and synchronous modes: actions executed per chunk (1..H)
    s_min: int = 1  # adaptive: the smallest execute horizon (1..H)
    estimator: str = "oracle"  # d̂_k the method plans for: oracle (true delay) | max_recent (max of last buffer_size)
    buffer_size: int = 4  # max_recent: how many observed delays it remembers (>= 1)
    prior_delay: int = 0  # max_recent: the estimate before any delay was observed (ticks >= 0)
    starvation: str = "zero"  # action when the chunk runs dry: zero (the reference's padding) | hold (repeat last)


@dataclass
class ModelSchema:
    action_chunk_size: int = 8  # H: actions per chunk
    channel_dim: int = 256  # width of each action token and of the time embedding
    channel_hidden_dim: int = 512  # hidden width of the channel-mixing MLP
    token_hidden_dim: int = 64  # hidden width of the token-mixing MLP (mixes the H positions)
    num_layers: int = 4  # mixer blocks
    simulated_delay: int | None = None  # training-time RTC: max delay simulated in training; null = plain BC policy


@dataclass
class RtcSweepSchema:
    level: LevelSchema = field(default_factory=LevelSchema)  # which level to evaluate on
    delay_profile: DelayProfileSchema = field(default_factory=DelayProfileSchema)  # the law of the inference delay
    method: MethodSchema = field(default_factory=MethodSchema)  # how a new chunk is sampled given the old one
    execute_policy: ExecutePolicySchema = field(default_factory=ExecutePolicySchema)  # actions run per chunk
    model: ModelSchema = field(default_factory=ModelSchema)  # the flow network's shape (must match the checkpoint)
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


def register_configs() -> None:
    """Put the schema into Hydra's ConfigStore (idempotent); rtc_sweep/conf/config.yaml builds on it."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=RtcSweepSchema)


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
    """The composed config (a DictConfig on the schema, or the schema object) as frozen runtime dataclasses."""
    from rtc_sweep.core.delays import DelayProfile
    from rtc_sweep.core.policy import ModelConfig
    from rtc_sweep.core.run_config import ExecutePolicy, RunConfig
    from rtc_sweep.core.samplers import MethodConfig

    if isinstance(cfg, DictConfig):
        # Merging onto the schema types a plain DictConfig too (a loaded .hydra/config.yaml, a test's dict).
        typed = OmegaConf.merge(OmegaConf.structured(RtcSweepSchema), cfg)
        schema = OmegaConf.to_object(typed)
    else:
        schema = cfg
    assert isinstance(schema, RtcSweepSchema), type(schema)

    delay = dataclasses.asdict(schema.delay_profile)
    for key in ("base_delays", "base_probs", "trace_ms"):
        if delay[key] is not None:
            delay[key] = tuple(delay[key])
    run = RunConfig(
        level=schema.level.name,
        seed=schema.seed,
        num_evals=schema.num_evals,
        num_flow_steps=schema.num_flow_steps,
        checkpoint=schema.checkpoint,
        delay=DelayProfile(**delay),
        method=MethodConfig(**dataclasses.asdict(schema.method)),
        execute=ExecutePolicy(**dataclasses.asdict(schema.execute_policy)),
        model=ModelConfig(**dataclasses.asdict(schema.model)),
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


def in_reference_grid(run: RunConfig) -> bool:
    """The RTC paper's fixed-delay grid: d <= s <= H - d (s >= 1), so that nothing starves or stretches."""
    d, s, H = run.delay.fixed_delay, run.execute.execute_horizon, run.model.action_chunk_size
    return d <= s <= H - d


def validate(job: JobConfig) -> None:
    """Every check that needs no compile; raises ``ConfigError`` naming the key."""
    from rtc_sweep.sweep.evaluate import validate as validate_run

    if job.reference_grid_only and (
        job.run.delay.mode != "fixed" or job.run.execute.mode not in ("fixed", "synchronous")
    ):
        raise ConfigError(
            "reference_grid_only",
            f"true needs delay_profile.mode=fixed and execute_policy.mode=fixed or synchronous (got "
            f"{job.run.delay.mode!r}, {job.run.execute.mode!r}); allowed: false otherwise",
        )
    validate_run(job.run)


# Runtime field -> the key users type (interface.md); everything else keeps its field name.
_USER_KEYS = {"delay": "delay_profile", "execute": "execute_policy", "level": "level.name"}


def config_columns(run: RunConfig) -> dict[str, Any]:
    """The run's config flattened to the dotted keys users type (``delay_profile.tail_cap``), for results.csv.

    Lists become JSON text so that a CSV cell holds them and they read back unambiguously.
    """
    out: dict[str, Any] = {}
    for f in dataclasses.fields(run):
        value = getattr(run, f.name)
        key = _USER_KEYS.get(f.name, f.name)
        if dataclasses.is_dataclass(value):
            for sub in dataclasses.fields(value):
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
    """Dotted keys of the schema's integer fields (where ``a-b`` can only mean a range)."""
    keys: set[str] = set()
    for name, hint in typing.get_type_hints(schema).items():
        if dataclasses.is_dataclass(hint):
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
