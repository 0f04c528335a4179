"""The frozen runtime configuration of one evaluation job (what the Hydra app converts its config into)."""

from __future__ import annotations

import dataclasses

from rtc_sweep.core.delays import DelayProfile
from rtc_sweep.core.policy import ModelConfig
from rtc_sweep.core.samplers import MethodConfig
from rtc_sweep.errors import ConfigError

EXECUTE_MODES = ("fixed", "adaptive", "synchronous")
ESTIMATORS = ("oracle", "max_recent")
STARVATION = ("zero", "hold")
MAX_BUFFER = 64  # capacity of the max_recent estimator's delay buffer (buffer_size is traced, up to this)


@dataclasses.dataclass(frozen=True)
class ExecutePolicy:
    # fixed: s_k = execute_horizon; adaptive: s_k = clip(max(d̂_k, s_min), 1, H); synchronous: inference blocks the
    # controller (the fallback for d_k ticks, then new[0 .. s-1]; L_k = d_k + s; timeline.md "Two baselines")
    mode: str = "fixed"  # fixed | adaptive | synchronous, as above
    execute_horizon: int = 1  # s, actions executed per chunk when mode=fixed or synchronous (1..H)
    s_min: int = 1  # adaptive: smallest execute horizon (1..H)
    estimator: str = "oracle"  # d̂_k: oracle (the true delay) or max_recent (max of the last buffer_size delays)
    buffer_size: int = 4  # max_recent: how many observed delays it remembers (>= 1)
    prior_delay: int = 0  # max_recent: the estimate before any delay has been observed (ticks, >= 0)
    starvation: str = "zero"  # action when the chunk runs dry: zero (the reference's padding) or hold (repeat last)

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


@dataclasses.dataclass(frozen=True)
class RunConfig:
    level: str = "grasp_easy"  # benchmark level name or path to a level JSON
    seed: int = 0  # the whole run is a function of it
    num_evals: int = 2048  # environments (episodes) per level
    num_flow_steps: int = 5  # Euler steps of the flow sampler
    # policy pickle; None = the shipped default for the level; "random" = init from seed; "rtc-assets:<run>/<step>"
    # (e.g. rtc-assets:bc/31) = the RTC paper's policy, model=default, fetched once into the cache (rtc_sweep/assets.py)
    checkpoint: str | None = None
    delay: DelayProfile = dataclasses.field(default_factory=DelayProfile)
    method: MethodConfig = dataclasses.field(default_factory=MethodConfig)
    execute: ExecutePolicy = dataclasses.field(default_factory=ExecutePolicy)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    action_noise_std: float = 0.1  # std of the Gaussian noise the env adds to every commanded action
    micro_batch: int = 512  # environments per compiled rollout call (memory bound), sharded over devices
    max_timesteps: int = 256  # T: ticks that count per environment
