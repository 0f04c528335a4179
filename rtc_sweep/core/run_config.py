"""The frozen runtime configuration of one evaluation job (what the Hydra app converts its config into).

The options it is made of (delay profile, method, execute policy) are declared in core/options.py; ``ExecutePolicy``
and its constants are re-exported here, where the rollout has always imported them from.
"""

from __future__ import annotations

import dataclasses

from rtc_sweep.core.delays import DelayProfile
from rtc_sweep.core.network import ModelSpec
from rtc_sweep.core.options import ESTIMATORS as ESTIMATORS
from rtc_sweep.core.options import EXECUTE_MODES as EXECUTE_MODES
from rtc_sweep.core.options import MAX_BUFFER as MAX_BUFFER
from rtc_sweep.core.options import RESOLVED, ExecutePolicy
from rtc_sweep.core.options import STARVATION as STARVATION
from rtc_sweep.core.policy import ModelConfig
from rtc_sweep.core.samplers import MethodConfig


@dataclasses.dataclass(frozen=True)
class RunConfig:
    level: str = "grasp_easy"  # benchmark level name or path to a level JSON
    seed: int = 0  # the whole run is a function of it
    num_evals: int = 256  # environments (episodes) per level (the app's default; the benchmark uses 2048)
    num_flow_steps: int = 5  # Euler steps of the flow sampler
    # policy pickle; None = the shipped default for the level; "random" = init from seed; "rtc-assets:<run>/<step>"
    # (e.g. rtc-assets:bc/31) = the RTC paper's policy, model=default, fetched once into the cache (rtc_sweep/assets.py)
    checkpoint: str | None = None  # as above, as typed (results.csv shows it; the loader opens checkpoint_file)
    delay: DelayProfile = dataclasses.field(default_factory=DelayProfile)  # delay_profile: the inference delay's law
    method: MethodConfig = dataclasses.field(default_factory=MethodConfig)  # method: how a new chunk is sampled
    execute: ExecutePolicy = dataclasses.field(default_factory=ExecutePolicy)  # execute_policy: actions per chunk
    model: ModelSpec = dataclasses.field(default_factory=ModelConfig)  # model: the mixer's shape, or a NetworkConfig
    action_noise_std: float = 0.1  # std of the Gaussian noise the env adds to every commanded action
    micro_batch: int = 512  # environments per compiled rollout call (memory bound), sharded over devices
    max_timesteps: int = 256  # T: ticks that count per environment
    # Filled by the boundary (sweep/evaluate.py: validate) from the keys above, not keys themselves: the files the
    # loaders open, found once (`~` expanded, relative paths made absolute, shipped and rtc-assets policies located)
    checkpoint_file: str | None = dataclasses.field(default=None, compare=False, metadata=RESOLVED)  # or "random"
    weak_checkpoint_file: str | None = dataclasses.field(default=None, compare=False, metadata=RESOLVED)  # bid's
