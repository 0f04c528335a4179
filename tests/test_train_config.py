"""The training app's config: its own groups and the shared ones, every task's schema made from its runtime
dataclass (so the defaults are the dataclass's), one validation naming the key, and a network of one's own trained
through ``model._target_``. Real Hydra composition and the real command lines, in subprocesses."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from rtc_sweep.errors import ConfigError
from rtc_sweep.train import config as train_config

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rtc_sweep"
TRAIN_CONF = PACKAGE / "train" / "conf"
EVAL_CONF = PACKAGE / "conf"
EXAMPLES = ROOT / "examples"
# What each task needs besides its defaults (the keys without one), as a command line gives it.
REQUIRED = {
    "self_imitation": [],
    "flow": ["task.run_path=runs/x"],
    "flow_tt": ["task.data_path=runs/x/data/worlds_l_grasp_easy.npz"],
    "ppo": [],
    "collect": ["task.run_path=runs/x"],
    "plan": [],
    "mix": ["task.plans=runs/p*"],
    "dagger": ["task.init_checkpoint=x.pkl", "task.plan_dir=runs/p"],
    "relabel": ["task.init_checkpoint=x.pkl", "task.expert_dir=runs/p"],
}


def compose_train(overrides: list[str]) -> Any:
    train_config.register()
    with initialize_config_dir(config_dir=str(TRAIN_CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def sources() -> list[str]:
    """The schemes of the config sources of the composition in progress (inside ``initialize_config_dir``)."""
    return [s.scheme() for s in GlobalHydra.instance().config_loader().get_sources()]


def runtime_of(overrides: list[str], model: str = "small") -> Any:
    return train_config.to_runtime(compose_train(overrides), model)


def cli(module: str, args: list[str], cwd: Path, pythonpath: list[Path] = ()) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def help_groups(out: str) -> dict[str, list[str]]:
    """The ``== Configuration groups ==`` section of ``--help``: group -> its options."""
    section = out.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    groups = {}
    for line in section.splitlines():
        if ": " in line and not line.startswith("Compose"):
            group, options = line.split(": ", 1)
            groups[group] = options.split(", ")
    return groups


def test_each_apps_help_lists_its_own_groups_and_the_shared_ones(tmp_path: Path) -> None:
    evaluation = cli("rtc_sweep", ["--help"], tmp_path)
    training = cli("rtc_sweep.train", ["--help"], tmp_path)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    assert training.returncode == 0, training.stderr[-3000:]
    eval_groups, train_groups = help_groups(evaluation.stdout), help_groups(training.stdout)
    assert set(eval_groups) == {"delay_profile", "execute_policy", "experiment", "level", "method", "model"}
    assert set(train_groups) == {"level", "model", "task"}
    # The shared groups: the same options in both apps; no schema listed as an option.
    for group in ("level", "model"):
        assert train_groups[group] == eval_groups[group] == sorted(p.stem for p in (EVAL_CONF / group).glob("*.yaml"))
    assert train_groups["task"] == sorted(p.stem for p in (TRAIN_CONF / "task").glob("*.yaml"))
    assert "python -m rtc_sweep.train task=plan" in training.stdout  # its own examples, not the evaluation's
    # The footer says what each task does: every task option has its line there.
    footer = training.stdout.split("Tasks (rtc_sweep/train/<module>.py):", 1)[1].split("Examples:", 1)[0]
    names = [re.split(r"\s{2,}", line.strip(), maxsplit=1)[0] for line in footer.splitlines() if line.strip()]
    described = {name for line in names for name in line.split(", ")}  # "ppo, collect" share a line
    assert described >= set(train_groups["task"]), set(train_groups["task"]) - described


def test_the_shared_level_and_model_options_exist_once_and_ship_in_the_wheel() -> None:
    for group in ("level", "model"):
        files = sorted(PACKAGE.rglob(f"{group}/*.yaml"))
        assert files and {p.parent for p in files} == {EVAL_CONF / group}, files  # no copy in the training tree
    assert not (TRAIN_CONF / "level").exists() and not (TRAIN_CONF / "model").exists()
    train_config.register()
    with initialize_config_dir(config_dir=str(TRAIN_CONF), version_base="1.3"):
        assert "rtc-shared" in sources()  # where the training app finds them: the evaluation tree's two groups only
    # The training app composes exactly those files.
    for name in ("grasp_easy", "catapult"):
        assert OmegaConf.to_container(compose_train([f"level={name}"]).level) == OmegaConf.to_container(
            OmegaConf.load(EVAL_CONF / "level" / f"{name}.yaml")
        )
    assert compose_train(["model=small_tt"]).model.simulated_delay == 5  # small_tt extends small, as in evaluation
    # package-data ships both trees (setuptools globs from the package folder).
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["rtc_sweep"]
    shipped = {p for pattern in data for p in PACKAGE.glob(pattern)}
    assert set(PACKAGE.glob("conf/**/*.yaml")) | set(TRAIN_CONF.rglob("*.yaml")) <= shipped


def test_the_training_app_leaves_the_evaluations_composition_alone() -> None:
    # In one process (a notebook, this test session) both apps compose from the same level and model files; the
    # training app adds them to its own search path only, and no copy of them is stored anywhere Hydra would merge.
    from rtc_sweep.sweep.config import register_configs

    train_config.register()
    register_configs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with initialize_config_dir(config_dir=str(EVAL_CONF), version_base="1.3"):
            cfg = compose("config", overrides=["model=small_tt", "level=catapult", "checkpoint=random"])
            assert "rtc-shared" not in sources()
    assert not [w for w in caught if "ConfigStore schema" in str(w.message)]
    assert cfg.model.simulated_delay == 5 and cfg.level.name == "catapult"
    assert compose_train(["model=small_tt"]).model == cfg.model


@pytest.mark.parametrize("task", list(REQUIRED))
def test_every_task_composes_on_the_command_line(task: str, tmp_path: Path) -> None:
    out = cli("rtc_sweep.train", [f"task={task}", *REQUIRED[task], "--cfg", "job"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    job = OmegaConf.create(out.stdout)
    assert job.task.name == ("flow" if task == "flow_tt" else task)
    assert job.model._target_ == "rtc_sweep.core.policy.MixerPolicy" and job.level.name == "grasp_easy"
    assert not (tmp_path / "runs").exists()  # composing runs nothing


@pytest.mark.parametrize("task", list(REQUIRED))
def test_every_tasks_schema_is_its_runtime_dataclass(task: str) -> None:
    spec = train_config.TASKS["flow" if task == "flow_tt" else task]
    schema = {f.name for f in dataclasses.fields(train_config.TASK_SCHEMAS[spec.name])}
    runtime_fields = {f.name for f in dataclasses.fields(spec.config)}
    app_keys = {f.name for f in dataclasses.fields(spec.app_keys)} if spec.app_keys else set()
    assert schema == {"name"} | (runtime_fields - set(train_config.PLUMBING)) | app_keys
    # The defaults the app composes are the dataclass's, nested ones (optim) included.
    runtime = runtime_of([f"task={task}", *REQUIRED[task]])
    assert type(runtime) is spec.config
    given = {o.split("=")[0].removeprefix("task.") for o in REQUIRED[task]}
    for f in dataclasses.fields(spec.config):
        if f.name in set(train_config.PLUMBING) | given or f.name == "data_path":
            continue
        if task == "flow_tt" and f.name == "num_epochs":
            assert runtime.num_epochs == 8  # flow_tt's own setting
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        assert getattr(runtime, f.name) == default, f.name
    # The top-level keys' defaults are the dataclass's too: seed, level, and the network where the task has one.
    defaults = {f.name: f for f in dataclasses.fields(spec.config)}
    if "seed" in defaults:
        assert runtime.seed == defaults["seed"].default == 0
    assert runtime.level == defaults["level"].default == "grasp_easy"
    if "model" in defaults and task != "flow_tt":
        assert runtime.model == defaults["model"].default


def test_the_defaults_that_disagreed_are_the_command_lines() -> None:
    # Before the schemas were made from the dataclasses, these defaults were declared twice, differently; the value
    # every command line (and the shipped runs) used is the one both now hold.
    si = runtime_of(["task=self_imitation"])
    assert (si.init_candidates, si.collect_envs) == (3, 512)
    ppo = runtime_of(["task=ppo"])
    assert (ppo.num_seeds, ppo.seed) == (2, 0)
    assert ppo == train_config.PPOConfig(run_dir=ppo.run_dir)


@pytest.mark.parametrize(
    ("overrides", "key", "allowed"),
    [
        (["task=plan", "task.generations=0"], "task.generations", "allowed: >= 1"),
        (["task=plan", "task.elite=300"], "task.elite", "allowed: 1..task.population (256)"),
        (["task=plan", "task.smoothing=1.5"], "task.smoothing", "allowed: a fraction in (0, 1]"),
        (["task=plan", "task.gain_scale=-0.5"], "task.gain_scale", "allowed: >= 0"),
        (["task=plan", "task.obs_dtype=float64"], "task.obs_dtype", "allowed: float16, float32"),
        (["task=mix", "task.plans=p", "task.min_solved=2"], "task.min_solved", "allowed: a fraction in [0, 1]"),
        (["task=ppo", "task.num_minibatches=7"], "task.num_minibatches", "a divisor of"),
        (["task=ppo", "task.num_seeds=3"], "task.num_seeds", "a multiple of the device count"),
        (["task=self_imitation", "task.elite_fraction=0"], "task.elite_fraction", "(0, 1]"),
        (["task=self_imitation", "task.optim.batch_size=0"], "task.optim.batch_size", "allowed: >= 1"),
        (["task=flow", "task.run_path=r", "task.optim.final_lr_fraction=0"], "task.optim.final_lr_fraction", "(0, 1]"),
        (["task=self_imitation", "task.optim.final_lr_fraction=0.1"], "task.optim.final_lr_fraction", "allowed: 1.0"),
        (["task=flow", "task.run_path=r", "task.num_epochs=0"], "task.num_epochs", "allowed: >= 1"),
        (["task=flow", "task.run_path=r", "task.obs_gain=10"], "task.obs_gain", "needs task.normalize_obs"),
        (["task=flow", "task.run_path=r", "task.normalize_obs=true", "task.obs_gain=0"], "task.obs_gain", "> 0"),
        (["task=flow", "task.run_path=r", "task.position_decay=0"], "task.position_decay", "(0, 1]"),
        (["task=flow", "task.run_path=r", "task.position_decay=1.5"], "task.position_decay", "(0, 1]"),
        (["task=flow", "task.run_path=r", "task.val_fraction=1.0"], "task.val_fraction", "allowed: a share in [0, 1)"),
        (["task=flow"], "task.data_path", "task.run_path="),
        (["task=collect"], "task.run_path", "the expert run"),
        (["task=mix"], "task.plans", "missing"),
        (["task=flow", "task.run_path=r", "model.channel_dim=0"], "model.channel_dim", "allowed: >= 1"),
        (["task=flow", "task.run_path=r", "+model.width=3"], "model.width", "allowed: action_chunk_size"),
        (["task=plan", "level.name=nowhere"], "level.name", "neither a benchmark level"),
    ],
)
def test_a_bad_value_names_its_key_and_the_values_allowed(overrides: list[str], key: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as e:
        runtime_of(overrides)
    assert e.value.key == key and allowed in e.value.message, str(e.value)


def test_a_saved_config_converts_as_the_composed_one() -> None:
    # A run's .hydra/config.yaml is plain YAML: typed again by the schemas on the way in.
    cfg = compose_train(["task=flow_tt", "task.data_path=d.npz", "level=catapult", "seed=3"])
    saved = OmegaConf.create(OmegaConf.to_yaml(cfg))
    assert train_config.to_runtime(saved, "small") == train_config.to_runtime(cfg, "small")
    saved.task.num_epochs = "many"
    with pytest.raises(ConfigError, match=r"task\.num_epochs"):
        train_config.to_runtime(saved, "small")
    saved.task.num_epochs = 8
    saved.task.grad_stepz = 3
    with pytest.raises(ConfigError, match=r"task\.grad_stepz"):
        train_config.to_runtime(saved, "small")


def test_a_bad_value_stops_the_command_before_anything_runs(tmp_path: Path) -> None:
    out = cli("rtc_sweep.train", ["task=plan", "task.generations=0", f"run_dir={tmp_path / 'plan'}"], tmp_path)
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
    assert "invalid config: task.generations: 0; allowed: >= 1" in out.stdout + out.stderr
    assert not (tmp_path / "plan").exists()


def test_a_typo_or_a_wrong_type_fails_at_composition() -> None:
    with pytest.raises(Exception, match="generationz"):
        compose_train(["task=plan", "task.generationz=3"])
    with pytest.raises(Exception, match="generations"):
        compose_train(["task=plan", "task.generations=many"])
    with pytest.raises(Exception, match="weight_decai"):
        compose_train(["task=flow", "task.optim.weight_decai=0"])


def test_a_network_of_ones_own_is_trained_by_the_training_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rtc_sweep.core.checkpoint import load_policy
    from rtc_sweep.core.network import NetworkConfig, network_config

    rng = np.random.default_rng(0)
    n = 256
    obs = rng.normal(size=(n, 679)).astype(np.float32)
    done = np.zeros(n, bool)
    done[31::32] = True
    data = tmp_path / "data.npz"
    np.savez(data, obs=obs.astype(np.float16), action=np.tanh(obs[:, :6]).astype(np.float32), done=done)
    user = ["model._target_=my_policy.MyPolicy", "+model.hidden_dim=16", "+model.depth=1"]
    monkeypatch.syspath_prepend(str(EXAMPLES))
    runtime = runtime_of(["task=flow", f"task.data_path={data}", *user])
    assert isinstance(runtime.model, NetworkConfig) and runtime.model.kwargs()["hidden_dim"] == 16
    assert runtime.run_dir == str(Path("runs") / "logs-bc" / "grasp_easy_MyPolicy")  # not the mixer's folder
    run = tmp_path / "bc"
    args = ["task=flow", f"task.data_path={data}", *user, "task.num_epochs=1", "task.max_steps_per_epoch=2",
            "task.optim.batch_size=8", "task.optim.warmup_steps=1", f"run_dir={run}", "progress=false"]  # fmt: skip
    out = cli("rtc_sweep.train", args, tmp_path, pythonpath=[EXAMPLES])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    spec = network_config("my_policy.MyPolicy", {"hidden_dim": 16, "depth": 1})
    params = load_policy(run / "0" / "policies" / "worlds_l_grasp_easy.pkl", spec, 679, 6)
    assert params["out"]["kernel"].shape == (16, 8 * 6)
