"""Typed Hydra schemas of ``python -m rtc_sweep.train`` and their conversion into frozen runtime configs.

The YAML tree is ``conf/train`` (``config.yaml``, ``model/<preset>.yaml``, ``task/<task>.yaml``); each YAML
extends a schema registered here, so a typo or a wrong type fails at composition and names the key.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from rtc_sweep.core import kinetix_env as ke
from rtc_sweep.core.policy import ModelConfig
from rtc_sweep.errors import ConfigError
from rtc_sweep.train.collect import CollectConfig, collect
from rtc_sweep.train.flow_bc import FlowBCConfig, OptimConfig, train_flow
from rtc_sweep.train.modes import MixConfig, run_mix
from rtc_sweep.train.plan import PlanConfig, run_plan
from rtc_sweep.train.ppo import PPOConfig, train_ppo
from rtc_sweep.train.self_imitation import SelfImitationConfig, run_self_imitation


@dataclasses.dataclass
class ModelSchema:
    action_chunk_size: int = 8  # H: actions per chunk
    channel_dim: int = 256  # width of each token and of the time embedding
    channel_hidden_dim: int = 512  # hidden width of the channel-mixing MLP
    token_hidden_dim: int = 64  # hidden width of the token-mixing MLP
    num_layers: int = 4  # mixer blocks
    simulated_delay: int | None = None  # training-time RTC: max simulated delay D (prefixes d in 0..D-1); null = BC


@dataclasses.dataclass
class OptimSchema:
    learning_rate: float = 3e-4  # peak AdamW learning rate (constant after warm-up)
    grad_norm_clip: float = 10.0  # global gradient-norm clip
    weight_decay: float = 1e-2  # AdamW weight decay (all params)
    warmup_steps: int = 1000  # linear warm-up, gradient steps
    batch_size: int = 512  # (obs, chunk) samples per gradient step


@dataclasses.dataclass
class SelfImitationSchema:
    name: str = "self_imitation"
    num_iterations: int = 60  # collect-fit-evaluate iterations after iteration 0
    patience: int = 10  # stop after this many iterations without a better solve rate
    init_checkpoint: str | None = None  # start from this policy file instead of random candidates
    init_candidates: int = 3  # random initialisations tried for iteration 0 (the best solver starts)
    init_perturb_scale: float = 0.5  # std of the init perturbation, in units of 1/sqrt(fan_in)
    collect_envs: int = 512  # environments per collection (a multiple of the device count)
    collect_execute_horizon: int = 1  # s while collecting (1..H)
    noise_scale: float = 1.2  # collection: scale of the flow sampler's initial noise (1 = the policy's own)
    action_noise_std: float = 0.05  # collection: extra Gaussian noise on each commanded action
    env_action_noise_std: float = 0.1  # the env's own action noise (collection and evaluation)
    num_flow_steps: int = 5  # Euler steps of the naive sampler
    replay_iterations: int = 4  # the fit sees the solved episodes of this many latest iterations
    elite_fraction: float = 1.0  # keep only this shortest fraction of each collection's solved episodes
    grad_steps: int = 600  # gradient steps per iteration
    eval_envs: int = 512  # first episodes per iteration's evaluation (naive, d=0, s=1)
    num_ticks: int = 256  # ticks per environment in every rollout
    optim: OptimSchema = dataclasses.field(default_factory=lambda: OptimSchema(warmup_steps=200))


@dataclasses.dataclass
class FlowSchema:
    name: str = "flow"
    run_path: str | None = None  # the run holding data/worlds_l_<level>.npz (a PPO run); or give data_path
    data_path: str | None = None  # the dataset file or a glob of several; null = <run_path>/data/worlds_l_<level>.npz
    num_epochs: int = 32  # passes over the data
    load_dir: str | None = None  # initialise from <load_dir>/policies/worlds_l_<level>.pkl (fresh optimiser)
    max_steps_per_epoch: int | None = None  # cap on gradient steps per epoch (quick runs)
    optim: OptimSchema = dataclasses.field(default_factory=OptimSchema)


@dataclasses.dataclass
class PPOSchema:
    name: str = "ppo"
    run_name: str = "expert"  # the run folder under runs/logs-expert/ (ignored when run_dir is set)
    num_seeds: int = 2  # independent experts, sharded over the host devices (the benchmark: 8 on GPUs)
    num_updates: int = 1000  # PPO updates per seed
    log_interval: int = 20  # updates per jitted block; stats and checkpoints after each
    num_steps: int = 256  # rollout length per update
    num_envs: int = 256  # environments per seed
    num_minibatches: int = 8  # minibatches per epoch
    num_epochs: int = 4  # passes over each rollout
    gamma: float = 0.995  # discount
    gae_lambda: float = 0.9  # GAE λ
    clip_eps: float = 0.2  # PPO ratio clip, and value clip
    v_loss_coef: float = 0.5  # weight of the (clipped) value loss
    rpo_alpha: float = 0.3  # RPO: U(-α, α) added to the action mean at loss time
    layer_width: int = 256  # hidden width of the actor and critic MLPs
    grad_norm_clip: float = 1.0  # global gradient-norm clip
    lr: float = 3e-4  # Adam learning rate (constant)
    action_noise_std: float = 0.1  # the env's action noise


@dataclasses.dataclass
class CollectSchema:
    name: str = "collect"
    run_path: str = MISSING  # the expert run (seed_<s>/<update>/...); data goes to <run_path>/data/
    num_envs: int = 128  # environments, each following one expert of the mixture
    batch_size: int = 256  # steps per environment per jitted call
    num_steps: int = 1_000_000  # transitions wanted (rounded up to whole batches)
    solve_rate_threshold: float = 0.65  # experts below it are masked out of the mixture
    action_noise_std: float = 0.1  # the env's action noise


@dataclasses.dataclass
class PlanSchema:
    name: str = "plan"
    segments: int = 16  # piecewise-constant actions in a plan
    segment_ticks: int = 8  # ticks per segment
    population: int = 256  # candidate plans per generation
    noise_seeds: int = 2  # env-noise draws each candidate is scored over
    elite: int = 32  # best candidates the next generation's mean and std come from
    generations: int = 25
    init_std: float = 0.6  # sampling std of generation 0
    init_mean_std: float = 0.0  # initial mean: 0 = zeros, > 0 = a seeded random plan of this std (distinct modes)
    min_std: float = 0.02  # added to the std every generation
    smoothing: float = 0.7  # weight of the elite's statistics in each update
    distance_weight: float = 0.3  # shaping: minus this times the closest goal-target approach
    length_weight: float = 0.002  # among solved episodes, shorter is better
    env_action_noise_std: float = 0.1  # the env's own action noise
    eval_envs: int = 512  # noise draws the final plan is measured over
    demo_envs: int = 2048  # environments the final plan is recorded on (solved episodes kept)


@dataclasses.dataclass
class MixSchema:
    name: str = "mix"
    plans: str = MISSING  # glob of finished task=plan run folders of this level (one mode each)
    min_solved: float = 0.8  # a plan must solve at least this fraction of its measuring episodes
    min_distance: float = 0.25  # RMS action distance below which two plans count as one mode
    max_modes: int = 8  # keep at most this many modes


@dataclasses.dataclass
class LevelSchema:
    name: str = "grasp_easy"  # benchmark level name or path to a level JSON


@dataclasses.dataclass
class TrainSchema:
    level: LevelSchema = MISSING
    seed: int = 0  # the whole run is a function of it
    run_dir: str | None = None  # output folder; null = runs/<task>/<level>_<model> (flow: runs/logs-bc/<level>_<model>)
    progress: bool = True  # tqdm progress bars
    model: ModelSchema = MISSING
    task: Any = MISSING


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainSchema)
    cs.store(group="level", name="level_schema", node=LevelSchema)
    cs.store(group="model", name="model_schema", node=ModelSchema)
    cs.store(group="task", name="self_imitation_schema", node=SelfImitationSchema)
    cs.store(group="task", name="flow_schema", node=FlowSchema)
    cs.store(group="task", name="ppo_schema", node=PPOSchema)
    cs.store(group="task", name="collect_schema", node=CollectSchema)
    cs.store(group="task", name="plan_schema", node=PlanSchema)
    cs.store(group="task", name="mix_schema", node=MixSchema)


def _optim(o: Any) -> OptimConfig:
    return OptimConfig(**{f.name: getattr(o, f.name) for f in dataclasses.fields(OptimConfig)})


def model_config(m: Any) -> ModelConfig:
    return ModelConfig(**{f.name: getattr(m, f.name) for f in dataclasses.fields(ModelConfig)})


def default_run_dir(task: str, level: str, model_choice: str) -> str:
    return str(Path("runs") / task / f"{ke.level_name(level)}_{model_choice}")


Runtime = SelfImitationConfig | FlowBCConfig | PPOConfig | CollectConfig | PlanConfig | MixConfig


def _fields(cls: type, node: Any, skip: set[str]) -> dict[str, Any]:
    return {f.name: getattr(node, f.name) for f in dataclasses.fields(cls) if f.name not in skip}


def to_runtime(cfg: Any, model_choice: str) -> Runtime:
    """The composed DictConfig -> the frozen config of its task."""
    task = cfg.task
    model = model_config(cfg.model)
    if task.name == "self_imitation":
        if not 0.0 < task.elite_fraction <= 1.0:
            raise ConfigError("task.elite_fraction", f"{task.elite_fraction}; allowed: a fraction in (0, 1]")
        common = {"run_dir", "level", "model", "optim", "seed"}
        fields = {f.name for f in dataclasses.fields(SelfImitationConfig)} - common
        return SelfImitationConfig(
            run_dir=cfg.run_dir or default_run_dir("self_imitation", cfg.level.name, model_choice),
            level=cfg.level.name,
            model=model,
            optim=_optim(task.optim),
            seed=cfg.seed,
            **{k: getattr(task, k) for k in fields},
        )
    if task.name == "flow":
        name = ke.level_name(cfg.level.name)
        tt = "_tt" if model.simulated_delay else ""
        if task.data_path is None and task.run_path is None:
            raise ConfigError("task.run_path", "set task.run_path (a run with data/) or task.data_path")
        return FlowBCConfig(
            data_path=task.data_path or str(Path(task.run_path) / "data" / f"worlds_l_{name}.npz"),
            # a training-time RTC fine-tune gets its own folder: sharing the BC run's would "resume" that run
            run_dir=cfg.run_dir or default_run_dir("logs-bc", cfg.level.name, model_choice + tt),
            level=cfg.level.name,
            model=model,
            optim=_optim(task.optim),
            num_epochs=task.num_epochs,
            seed=cfg.seed,
            load_dir=task.load_dir,
            max_steps_per_epoch=task.max_steps_per_epoch,
        )
    if task.name == "ppo":
        run_dir = cfg.run_dir or str(Path("runs") / "logs-expert" / task.run_name)
        return PPOConfig(
            run_dir=run_dir,
            level=cfg.level.name,
            seed=cfg.seed,
            **_fields(PPOConfig, task, {"run_dir", "level", "seed"}),
        )
    if task.name == "plan":
        for key in ("segments", "segment_ticks", "population", "noise_seeds", "elite", "eval_envs", "demo_envs"):
            if getattr(task, key) < 1:
                raise ConfigError(f"task.{key}", f"{getattr(task, key)}; allowed: >= 1")
        if task.elite > task.population:
            raise ConfigError("task.elite", f"{task.elite}; allowed: 1..task.population ({task.population})")
        if not 0.0 < task.smoothing <= 1.0:
            raise ConfigError("task.smoothing", f"{task.smoothing}; allowed: a fraction in (0, 1]")
        run_dir = cfg.run_dir or str(Path("runs") / "plan" / ke.level_name(cfg.level.name))
        return PlanConfig(
            run_dir=run_dir,
            level=cfg.level.name,
            seed=cfg.seed,
            **_fields(PlanConfig, task, {"run_dir", "level", "seed"}),
        )
    if task.name == "mix":
        if task.max_modes < 1:
            raise ConfigError("task.max_modes", f"{task.max_modes}; allowed: >= 1")
        if not 0.0 <= task.min_solved <= 1.0:
            raise ConfigError("task.min_solved", f"{task.min_solved}; allowed: a fraction in [0, 1]")
        run_dir = cfg.run_dir or str(Path("runs") / "mix" / ke.level_name(cfg.level.name))
        return MixConfig(run_dir=run_dir, level=cfg.level.name, **_fields(MixConfig, task, {"run_dir", "level"}))
    if task.name == "collect":
        run_dir = cfg.run_dir or task.run_path
        skip = {"run_dir", "level", "seed"}
        return CollectConfig(run_dir=run_dir, level=cfg.level.name, seed=cfg.seed, **_fields(CollectConfig, task, skip))
    raise ConfigError("task.name", f"{task.name!r}; allowed: self_imitation, ppo, collect, flow, plan, mix")


def run(runtime: Runtime, progress: bool = True) -> float:
    """Run one task; returns its headline number (solve rate, or the flow trainer's last epoch loss)."""
    if isinstance(runtime, SelfImitationConfig):
        return float(run_self_imitation(runtime, progress)["returned_episode_solved"])
    if isinstance(runtime, PPOConfig):
        last = train_ppo(runtime, progress)
        return float(max((s["returned_episode_solved"] for s in last), default=0.0))
    if isinstance(runtime, PlanConfig):
        return float(run_plan(runtime, progress)["plan"]["returned_episode_solved"])
    if isinstance(runtime, MixConfig):
        return float(len(run_mix(runtime)["kept"]))
    if isinstance(runtime, CollectConfig):
        path = collect(runtime, progress)
        return float(json.loads(path.with_suffix(".selection.json").read_text())["returned_episode_solved"])
    return float(train_flow(runtime, progress)[-1]["loss"])
