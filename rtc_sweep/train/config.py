"""The config of ``python -m rtc_sweep.train``: one Hydra schema per task, made from its runtime dataclass, and the
one boundary where the composed config becomes that frozen dataclass, checked.

The app's own tree is ``rtc_sweep/train/conf/`` (``config.yaml``, ``task/<task>.yaml``). Its ``level`` and ``model``
groups are the evaluation app's, ``rtc_sweep/conf/level/`` and ``rtc_sweep/conf/model/``, one YAML file per option
for both apps. ``register`` makes two Hydra plugins known: a config source, ``rtc-shared://rtc_sweep/conf``
(``SharedGroups``), which shows those two groups of the evaluation tree and nothing else of it, and a search path
plugin (``SharedSearchPath``) that adds it behind this app's tree, and behind no other. So
``python -m rtc_sweep.train --help`` lists level, model and task (a ``hydra.searchpath`` of ``config.yaml`` would
compose, but Hydra's ``--help`` does not list its groups), ``model=small_tt`` or ``level=catapult`` mean the same
file in both apps, and no option exists twice (a ConfigStore copy of a file option would be merged into the
evaluation's own composition in a process that composes both: Hydra's "automatic schema matching").

Every task key is declared once, with its default and its comment: as a field of the task module's frozen runtime
dataclass (``PlanConfig`` in ``plan.py``, ``MixConfig`` in ``modes.py``, ``FlowBCConfig`` in ``flow_bc.py``,
``SelfImitationConfig``, ``PPOConfig``, ``CollectConfig``, ``DaggerConfig``). ``task_schema`` makes the task's Hydra
schema from it: its fields but the top-level ones (``PLUMBING``: ``run_dir``, ``level``, ``seed``, ``model``), a
nested dataclass (``optim``) as a schema of its own with the task's defaults, a field without default as ``???``, and
the few keys only the app reads (``Task.app_keys``: where the data or the run is, e.g. flow's ``task.run_path``),
declared below once. Each ``task/<task>.yaml`` extends its schema::

    # rtc_sweep/train/conf/task/plan.yaml
    defaults:
      - /task_schema_plan@_here_
      - _self_

so a misspelt key or a wrong type fails at composition naming the key, and the defaults the app composes are the
dataclass's by construction.

``to_runtime`` is the boundary: the composed config becomes the task's frozen runtime config (the network's spec
built by ``policy.model_from_config``, as the evaluation builds it, so ``model._target_=my_pkg.MyPolicy`` trains a
network of one's own) and is checked by ``validate``, once, before JAX compiles anything: every ``ConfigError``
names the key (``task.generations``) and the values allowed. The files a task reads are checked where it opens them,
before it compiles.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.core.config_store import ConfigStore
from hydra.core.object_type import ObjectType
from hydra.core.plugins import Plugins
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rtc_sweep.core import kinetix_env as ke
from rtc_sweep.core.network import NetworkConfig
from rtc_sweep.core.options import schema_type
from rtc_sweep.core.policy import model_from_config
from rtc_sweep.errors import ConfigError
from rtc_sweep.train.collect import CollectConfig, collect
from rtc_sweep.train.dagger import DaggerConfig, run_dagger
from rtc_sweep.train.dagger import check_config as check_dagger
from rtc_sweep.train.flow_bc import FlowBCConfig, OptimConfig, train_flow
from rtc_sweep.train.modes import MixConfig, run_mix
from rtc_sweep.train.plan import OBS_DTYPES, PlanConfig, run_plan
from rtc_sweep.train.ppo import PPOConfig, train_ppo
from rtc_sweep.train.relabel import RelabelConfig, run_relabel
from rtc_sweep.train.relabel import check_config as check_relabel
from rtc_sweep.train.self_imitation import SelfImitationConfig, run_self_imitation
from rtc_sweep.train.self_imitation import check_config as check_self_imitation

SCHEMA_NAME = "train_schema"
CONF = Path(__file__).resolve().parent / "conf"  # this app's tree
# The groups this app shares with the evaluation app, and the evaluation's tree they live in (SharedGroups).
SHARED_GROUPS = ("level", "model")
SHARED_CONF = Path(__file__).resolve().parents[1] / "conf"
SHARED_SOURCE = "rtc-shared://rtc_sweep/conf"
# Runtime fields the app fills from the top-level keys (run_dir, level.name, seed, model), not from task.<field>.
PLUMBING = ("run_dir", "level", "seed", "model")

Runtime = (
    SelfImitationConfig
    | FlowBCConfig
    | PPOConfig
    | CollectConfig
    | PlanConfig
    | MixConfig
    | DaggerConfig
    | RelabelConfig
)


@dataclasses.dataclass
class LevelSchema:
    name: str = MISSING  # a benchmark level (level=<name> picks its option) or a path to a level JSON (level.name=...)


@dataclasses.dataclass
class TrainSchema:
    level: LevelSchema = MISSING  # the level/ option (shared with the evaluation app)
    # The flow network: model._target_ (default the mixer) and its keys; a model/ option (shared with the evaluation
    # app), untyped, as a network of one's own brings keys of its own: policy.model_from_config checks them
    model: Any = MISSING
    task: Any = MISSING  # the task/ option: its keys typed by its schema (task_schema)
    seed: int = 0  # the whole run is a function of it
    run_dir: str | None = None  # the run's folder; null = the task's default under runs/ (Task.paths)
    progress: bool = True  # tqdm progress bars


# --- the keys only the app reads, per task -----------------------------------------------------------------------


@dataclasses.dataclass
class FlowKeys:
    run_path: str | None = None  # a run holding data/worlds_l_<level>.npz (a PPO run): task.data_path's default


@dataclasses.dataclass
class PPOKeys:
    run_name: str = "expert"  # run_dir's default: runs/logs-expert/<run_name>


@dataclasses.dataclass
class CollectKeys:
    run_path: str = MISSING  # the expert run (seed_<s>/<update>/...); the data goes to <run_path>/data/ (run_dir)


@dataclasses.dataclass(frozen=True)
class Where:
    """What a task's default folders are named after."""

    run_dir: str | None  # the top-level run_dir as given (null: the task's default)
    level: str  # the level's short name (grasp_easy)
    model: str  # the model option (small); a network of one's own: its class name


def _runs(*parts: str) -> str:
    return str(Path("runs", *parts))


# Each returns the runtime fields the app derives (run_dir, and what app keys stand for), consuming the app keys.
def _self_imitation_paths(keys: dict[str, Any], where: Where) -> dict[str, Any]:
    return {"run_dir": where.run_dir or _runs("self_imitation", f"{where.level}_{where.model}")}


def _flow_paths(keys: dict[str, Any], where: Where) -> dict[str, Any]:
    run_path = keys.pop("run_path")
    out = {"run_dir": where.run_dir or _runs("logs-bc", f"{where.level}_{where.model}")}
    if keys["data_path"] == MISSING:
        if run_path is None:
            raise ConfigError(
                "task.data_path", "missing; allowed: a dataset file or glob, or task.run_path=<a run with data/>"
            )
        out["data_path"] = str(Path(run_path) / "data" / f"worlds_l_{where.level}.npz")
    return out


def _ppo_paths(keys: dict[str, Any], where: Where) -> dict[str, Any]:
    run_name = keys.pop("run_name")
    return {"run_dir": where.run_dir or _runs("logs-expert", run_name)}


def _collect_paths(keys: dict[str, Any], where: Where) -> dict[str, Any]:
    run_path = keys.pop("run_path")
    if where.run_dir is None and run_path == MISSING:
        raise ConfigError("task.run_path", "missing; allowed: the expert run to collect from (a task=ppo run_dir)")
    return {"run_dir": where.run_dir or run_path}


def _plan_paths(keys: dict[str, Any], where: Where) -> dict[str, Any]:
    return {"run_dir": where.run_dir or _runs("plan", where.level)}


def _mix_paths(keys: dict[str, Any], where: Where) -> dict[str, Any]:
    return {"run_dir": where.run_dir or _runs("mix", where.level)}


def _relabel_paths(keys: dict[str, Any], where: Where) -> dict[str, Any]:
    return {"run_dir": where.run_dir or _runs("relabel", f"{where.level}_{where.model}")}


def _dagger_paths(keys: dict[str, Any], where: Where) -> dict[str, Any]:
    return {"run_dir": where.run_dir or _runs("dagger", f"{where.level}_{where.model}")}


# --- validate's checks, per task ---------------------------------------------------------------------------------


def _at_least(cfg: Any, low: float, *keys: str, prefix: str = "task.") -> None:
    for key in keys:
        value = getattr(cfg, key)
        if value < low:
            raise ConfigError(f"{prefix}{key}", f"{value}; allowed: >= {low}")


def _positive(cfg: Any, *keys: str, prefix: str = "task.") -> None:
    for key in keys:
        value = getattr(cfg, key)
        if not value > 0:
            raise ConfigError(f"{prefix}{key}", f"{value}; allowed: > 0")


def _fraction(cfg: Any, key: str, *, open_low: bool = False, prefix: str = "task.") -> None:
    value = getattr(cfg, key)
    if not (value > 0.0 if open_low else value >= 0.0) or value > 1.0:
        raise ConfigError(f"{prefix}{key}", f"{value}; allowed: a fraction in {'(' if open_low else '['}0, 1]")


def _device_multiple(cfg: Any, *keys: str) -> None:
    n = jax.device_count()  # the rollouts shard their environments over the host devices
    for key in keys:
        value = getattr(cfg, key)
        if value % n:
            raise ConfigError(f"task.{key}", f"{value}; allowed: a multiple of the device count ({n})")


def _check_optim(cfg: OptimConfig, decays: bool = False) -> None:
    """``decays``: the task runs for a known number of steps (task=flow), so its rate may decay."""
    _positive(cfg, "learning_rate", "grad_norm_clip", prefix="task.optim.")
    _at_least(cfg, 0, "weight_decay", "warmup_steps", prefix="task.optim.")
    _at_least(cfg, 1, "batch_size", prefix="task.optim.")
    _fraction(cfg, "final_lr_fraction", open_low=True, prefix="task.optim.")
    if not decays and cfg.final_lr_fraction < 1.0:
        raise ConfigError(
            "task.optim.final_lr_fraction",
            f"{cfg.final_lr_fraction}; allowed: 1.0 (this task keeps the rate constant; task=flow may decay it)",
        )


def _check_self_imitation(cfg: SelfImitationConfig) -> None:
    check_self_imitation(cfg)  # self_imitation.check_config: its rollouts' settings (delay preset, horizons, sizes)
    _at_least(cfg, 0, "num_iterations", "patience", "init_perturb_scale", "noise_scale", "action_noise_std")
    _at_least(cfg, 0, "env_action_noise_std")
    _at_least(cfg, 1, "init_candidates", "num_flow_steps", "replay_iterations", "grad_steps")
    _fraction(cfg, "elite_fraction", open_low=True)


def _check_flow(cfg: FlowBCConfig) -> None:
    _at_least(cfg, 1, "num_epochs")
    if cfg.max_steps_per_epoch is not None and cfg.max_steps_per_epoch < 1:
        raise ConfigError("task.max_steps_per_epoch", f"{cfg.max_steps_per_epoch}; allowed: null or >= 1")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ConfigError("task.val_fraction", f"{cfg.val_fraction}; allowed: a share in [0, 1) (0: nothing held out)")
    _at_least(cfg, 1, "val_windows")
    if not cfg.obs_gain > 0:
        raise ConfigError("task.obs_gain", f"{cfg.obs_gain}; allowed: > 0")
    if cfg.obs_gain != 1.0 and not cfg.normalize_obs:
        raise ConfigError("task.obs_gain", f"{cfg.obs_gain} needs task.normalize_obs=true; allowed: 1 without it")
    if not 0.0 < cfg.position_decay <= 1.0:
        raise ConfigError("task.position_decay", f"{cfg.position_decay}; allowed: (0, 1] (1: equal weights)")


def _check_ppo(cfg: PPOConfig) -> None:
    _at_least(cfg, 1, "num_seeds", "num_updates", "log_interval", "num_steps", "num_envs", "num_minibatches")
    _at_least(cfg, 1, "num_epochs", "layer_width")
    _device_multiple(cfg, "num_seeds")  # the seeds are sharded over the devices
    batch = cfg.num_steps * cfg.num_envs
    if batch % cfg.num_minibatches:
        raise ConfigError(
            "task.num_minibatches",
            f"{cfg.num_minibatches}; allowed: a divisor of task.num_steps x task.num_envs ({batch})",
        )
    _fraction(cfg, "gamma")
    _fraction(cfg, "gae_lambda")
    _positive(cfg, "clip_eps", "grad_norm_clip", "lr")
    _at_least(cfg, 0, "v_loss_coef", "rpo_alpha", "action_noise_std")


def _check_collect(cfg: CollectConfig) -> None:
    _at_least(cfg, 1, "num_envs", "batch_size", "num_steps")
    _fraction(cfg, "solve_rate_threshold")
    _at_least(cfg, 0, "action_noise_std")


def _check_plan(cfg: PlanConfig) -> None:
    _at_least(cfg, 1, "segments", "segment_ticks", "population", "noise_seeds", "elite", "generations")
    _at_least(cfg, 1, "eval_envs", "demo_envs")
    if cfg.elite > cfg.population:
        raise ConfigError("task.elite", f"{cfg.elite}; allowed: 1..task.population ({cfg.population})")
    _fraction(cfg, "smoothing", open_low=True)
    _at_least(cfg, 0, "init_std", "init_mean_std", "min_std", "distance_weight", "length_weight")
    _at_least(cfg, 0, "env_action_noise_std", "feedback_dims", "feedback_std", "gain_scale")
    _at_least(cfg, 2, "basis_envs")
    if cfg.obs_dtype not in OBS_DTYPES:
        raise ConfigError("task.obs_dtype", f"{cfg.obs_dtype}; allowed: {', '.join(OBS_DTYPES)}")


def _check_mix(cfg: MixConfig) -> None:
    _at_least(cfg, 1, "max_modes")
    _fraction(cfg, "min_solved")
    _at_least(cfg, 0, "min_distance")


def _check_dagger(cfg: DaggerConfig) -> None:
    try:
        check_dagger(cfg)  # dagger.check_config: its consistency rules, "<key>=<value> must ..."
    except ValueError as e:
        raise ConfigError(f"task.{str(e).split('=')[0]}", str(e)) from None


def _check_relabel(cfg: RelabelConfig) -> None:
    check_relabel(cfg)  # relabel.check_config: sizes and counts, "task.<key>"
    _check_optim(cfg.optim)


# --- the tasks ---------------------------------------------------------------------------------------------------


def _run_self_imitation(cfg: SelfImitationConfig, progress: bool) -> float:
    return float(run_self_imitation(cfg, progress)["returned_episode_solved"])


def _run_flow(cfg: FlowBCConfig, progress: bool) -> float:
    return float(train_flow(cfg, progress)[-1]["loss"])


def _run_ppo(cfg: PPOConfig, progress: bool) -> float:
    return float(max((s["returned_episode_solved"] for s in train_ppo(cfg, progress)), default=0.0))


def _run_collect(cfg: CollectConfig, progress: bool) -> float:
    path = collect(cfg, progress)
    return float(json.loads(path.with_suffix(".selection.json").read_text())["returned_episode_solved"])


def _run_plan(cfg: PlanConfig, progress: bool) -> float:
    return float(run_plan(cfg, progress)["plan"]["returned_episode_solved"])


def _run_mix(cfg: MixConfig, progress: bool) -> float:
    return float(len(run_mix(cfg)["kept"]))


def _run_relabel(cfg: RelabelConfig, progress: bool) -> float:
    return float(run_relabel(cfg, progress)["returned_episode_solved"])


def _run_dagger(cfg: DaggerConfig, progress: bool) -> float:
    return float(run_dagger(cfg, progress)["returned_episode_solved"])


@dataclasses.dataclass(frozen=True)
class Task:
    """One ``task=<name>``: the runtime dataclass whose fields are its keys, and what the app adds around it."""

    name: str  # task.name: which task a composed config is (task/flow_tt.yaml is a flow task)
    config: type  # the task module's frozen runtime dataclass; its fields but PLUMBING are task.<field>
    paths: Callable[[dict[str, Any], Where], dict[str, Any]]  # the fields the app derives (run_dir: its default)
    check: Callable[[Any], None]  # validate's checks of the task's own values
    run: Callable[[Any, bool], float]  # run it (progress bars or not); returns its headline number
    app_keys: type | None = None  # keys only the app reads (no runtime field), declared once above

    @property
    def schema_name(self) -> str:
        return f"task_schema_{self.name}"


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("self_imitation", SelfImitationConfig, _self_imitation_paths, _check_self_imitation, _run_self_imitation),
        Task("flow", FlowBCConfig, _flow_paths, _check_flow, _run_flow, FlowKeys),
        Task("ppo", PPOConfig, _ppo_paths, _check_ppo, _run_ppo, PPOKeys),
        Task("collect", CollectConfig, _collect_paths, _check_collect, _run_collect, CollectKeys),
        Task("plan", PlanConfig, _plan_paths, _check_plan, _run_plan),
        Task("mix", MixConfig, _mix_paths, _check_mix, _run_mix),
        Task("dagger", DaggerConfig, _dagger_paths, _check_dagger, _run_dagger),
        Task("relabel", RelabelConfig, _relabel_paths, _check_relabel, _run_relabel),
    )
}
_TASK_OF_CONFIG: dict[type, Task] = {t.config: t for t in TASKS.values()}


# --- the schemas -------------------------------------------------------------------------------------------------


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return MISSING  # a field without default: required (???)


def _schema(cls: type, name: str, defaults: Any = None, skip: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """``cls``'s fields but ``skip`` as schema fields, in their order, with the defaults of ``defaults`` (an instance;
    None: the class's own); a dataclass field becomes a nested schema with its default's values, after the others."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, Any, Any]] = []
    nested_fields: list[tuple[str, Any, Any]] = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        value = _default_of(f) if defaults is None else getattr(defaults, f.name)
        hint = hints[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            nested = _make(f"{name}{f.name.title()}", _schema(hint, f"{name}{f.name.title()}", value))
            nested_fields.append((f.name, nested, dataclasses.field(default_factory=nested)))
        elif isinstance(value, tuple | list):
            out.append((f.name, schema_type(hint), dataclasses.field(default_factory=_list_of(value))))
        else:
            out.append((f.name, schema_type(hint), dataclasses.field(default=value)))
    return out + nested_fields


def _list_of(value: tuple[Any, ...] | list[Any]) -> Callable[[], list[Any]]:
    return lambda: list(value)


def _make(name: str, fields: list[tuple[str, Any, Any]]) -> type:
    schema = dataclasses.make_dataclass(name, fields)
    schema.__module__ = __name__
    globals()[name] = schema  # a composed config holds it as a node's type and pickles it by name
    return schema


def task_schema(task: Task) -> type:
    """The Hydra schema of ``task=<name>``: ``name``, the runtime dataclass's fields but PLUMBING, the app keys."""
    name = "".join(p.capitalize() for p in task.name.split("_")) + "Task"  # SelfImitationTask
    fields = [("name", str, dataclasses.field(default=task.name))]
    fields += _schema(task.config, name, skip=PLUMBING)
    if task.app_keys is not None:
        fields += _schema(task.app_keys, name)
    return _make(name, fields)


TASK_SCHEMAS: dict[str, type] = {name: task_schema(task) for name, task in TASKS.items()}


class SharedGroups(ConfigSource):
    """``rtc-shared://<folder>``: the ``SHARED_GROUPS`` of a config tree (``<folder>`` relative to the folder that
    holds the ``rtc_sweep`` package), and nothing else of it: the training app's search path entry for the level and
    model options of the evaluation tree. The files are read as Hydra's ``file://`` source reads them."""

    @staticmethod
    def scheme() -> str:
        return "rtc-shared"

    def _root(self) -> Path:
        return SHARED_CONF.parents[1] / self.path

    @staticmethod
    def _shared(config_path: str) -> bool:
        return config_path.strip("/").split("/")[0] in SHARED_GROUPS

    def load_config(self, config_path: str) -> ConfigResult:
        name = self._normalize_file_name(config_path)
        path = self._root() / name
        if not (self._shared(name) and path.is_file()):
            raise ConfigLoadError(f"Config not found : {path}")
        text = path.read_text(encoding="utf-8")
        return ConfigResult(
            config=OmegaConf.create(text),
            path=f"{self.scheme()}://{self.path}",
            provider=self.provider,
            header=ConfigSource._get_header_dict(text[:512]),
        )

    def available(self) -> bool:
        return self._root().is_dir()

    def is_group(self, config_path: str) -> bool:
        return (config_path.strip("/") == "" or self._shared(config_path)) and (self._root() / config_path).is_dir()

    def is_config(self, config_path: str) -> bool:
        name = self._normalize_file_name(config_path)
        return self._shared(name) and (self._root() / name).is_file()

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        if not self.is_group(config_path):
            return []
        files: list[str] = []
        for entry in os.listdir(self._root() / config_path):
            path = os.path.join(config_path, entry) if config_path else entry
            if self._shared(path):
                self._list_add_result(files=files, file_path=path, file_name=entry, results_filter=results_filter)
        return sorted(set(files))


class SharedSearchPath(SearchPathPlugin):
    """Adds ``SHARED_SOURCE`` to the search path of a composition whose primary tree is this app's (``CONF``, as
    ``python -m rtc_sweep.train`` or ``initialize_config_dir`` name it), after it; any other app's is left alone."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        mains = [e.path for e in search_path.get_path() if e.provider == "main" and e.path]
        if any(_is_train_tree(path) for path in mains):
            search_path.append(provider="rtc_sweep.train", path=SHARED_SOURCE, anchor=SearchPathQuery(provider="main"))


def _is_train_tree(path: str) -> bool:
    scheme, _, where = path.rpartition("://")
    if scheme == "pkg":
        return where.replace("/", ".").strip(".") == "rtc_sweep.train.conf"
    return scheme in ("", "file") and os.path.realpath(where) == os.path.realpath(CONF)


def register() -> None:
    """Make the app's config known to Hydra (idempotent): the schemas in its ConfigStore, outside the groups so that
    ``--help`` lists the options only (the root one, which ``config.yaml`` builds on, and one per task, which
    ``task/<task>.yaml`` extends), and the plugins that add the shared groups to its search path."""
    store = ConfigStore.instance()
    store.store(name=SCHEMA_NAME, node=TrainSchema)
    for name, task in TASKS.items():
        store.store(name=task.schema_name, node=TASK_SCHEMAS[name])
    Plugins.instance().register(SharedGroups)
    Plugins.instance().register(SharedSearchPath)


# --- the boundary ------------------------------------------------------------------------------------------------


def to_runtime(cfg: DictConfig | Mapping[str, Any], model_choice: str) -> Runtime:
    """The composed config as its task's frozen runtime config, validated (``validate``): the one boundary, before
    JAX compiles anything. ``model_choice`` is the model option picked (``HydraConfig``'s ``runtime.choices``), which
    default folders are named after. Raises ``ConfigError`` naming the key."""
    return validate(convert(cfg, model_choice))


def convert(cfg: DictConfig | Mapping[str, Any], model_choice: str) -> Runtime:
    """The composed config (or a plain one: a loaded ``.hydra/config.yaml``, typed here) as its task's runtime
    dataclass: ``task.<key>`` its fields, the top-level keys its PLUMBING ones, the app keys turned into paths."""
    top = _typed(TrainSchema, cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg)), "")
    name = top.task.get("name") if isinstance(top.task, DictConfig) else None
    if name not in TASKS:
        raise ConfigError("task.name", f"{name!r}; allowed: {', '.join(TASKS)} (task=<name>)")
    task = TASKS[name]
    container = OmegaConf.to_container(_typed(TASK_SCHEMAS[name], top.task, "task."), throw_on_missing=False)
    assert isinstance(container, dict)
    values: dict[str, Any] = {str(k): v for k, v in container.items() if k != "name"}
    if OmegaConf.is_missing(top.level, "name"):
        raise ConfigError("level.name", "missing; allowed: level=<a benchmark level> or level.name=<a level JSON>")
    level: str = top.level.name
    fields = {f.name for f in dataclasses.fields(task.config)}
    model = None
    label = model_choice
    if "model" in fields:
        node = OmegaConf.to_container(top.model, resolve=True) if isinstance(top.model, DictConfig) else top.model
        if not isinstance(node, dict):
            raise ConfigError("model", f"{node!r}; allowed: a model option (model=<name>) or its keys")
        # ModelConfig for the mixer, network.NetworkConfig for a class of one's own
        model = model_from_config({str(k): v for k, v in node.items()})
        if isinstance(model, NetworkConfig):
            label = model._target_.rpartition(".")[2]
        if task.config is FlowBCConfig and model.simulated_delay and not label.endswith("_tt"):
            label += "_tt"  # a training-time RTC fine-tune gets its own folder: sharing the BC run's would resume it
    where = Where(run_dir=top.run_dir, level=_level_name(level), model=label)
    values.update(task.paths(values, where))
    for key, value in values.items():
        if value == MISSING:
            raise ConfigError(f"task.{key}", f"missing; allowed: a value (task.{key}=...)")
    hints = typing.get_type_hints(task.config)
    for key, value in values.items():
        hint = hints[key]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
            values[key] = hint(**value)  # optim: OptimConfig
    plumbing = {"level": level, "seed": top.seed, "model": model}
    values.update({k: v for k, v in plumbing.items() if k in fields})
    runtime: Runtime = task.config(**values)
    return runtime


def _typed(schema: type, node: Any, prefix: str) -> DictConfig:
    """``node`` merged onto ``schema``: a wrong type or an unknown key (a plain config) as a ConfigError."""
    try:
        typed = OmegaConf.merge(OmegaConf.structured(schema), node)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{prefix}{e.full_key}", " ".join(str(e).split("\n")[0].split())) from e
    assert isinstance(typed, DictConfig)
    return typed


def _level_name(level: str) -> str:
    try:
        return ke.level_name(level)
    except ConfigError as e:
        raise ConfigError("level.name", e.message) from None


def validate(cfg: Runtime) -> Runtime:
    """Every check of a task's values that needs no compile, once, at the boundary (``to_runtime``): the level, the
    network's keys, the optimiser's and the task's own (``Task.check``). Raises ``ConfigError`` naming the key and the
    values allowed; returns ``cfg``."""
    task = _TASK_OF_CONFIG.get(type(cfg))
    if task is None:
        raise TypeError(f"{type(cfg).__name__} is not a task config; allowed: {', '.join(map(str, _TASK_OF_CONFIG))}")
    _level_name(cfg.level)
    if isinstance(cfg, SelfImitationConfig | FlowBCConfig | DaggerConfig):
        cfg.model.validate()  # model.<key>
        _check_optim(cfg.optim, decays=isinstance(cfg, FlowBCConfig))
    task.check(cfg)
    return cfg


def run(runtime: Runtime, progress: bool = True) -> float:
    """Run one task; returns its headline number (a solve rate, the flow trainer's last epoch loss, modes kept)."""
    return _TASK_OF_CONFIG[type(runtime)].run(runtime, progress)
