"""The config tree: every option and preset composes and converts; every bad value fails naming its key, early."""

from __future__ import annotations

import ast
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rtc_sweep.errors import ConfigError
from rtc_sweep.sweep import config as config_module
from rtc_sweep.sweep.config import (
    RtcSweepSchema,
    command_line,
    config_columns,
    config_hash,
    expand_int_ranges,
    register_configs,
    to_job_config,
)
from rtc_sweep.sweep.launch import register_launcher

CONF = Path(__file__).resolve().parents[1] / "rtc_sweep" / "conf"
GROUPS = ("level", "delay_profile", "method", "execute_policy", "model", "experiment")
# Runs that must pass validation need a policy; the shipped ones may not exist where tests run.
RANDOM = "checkpoint=random"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture(scope="module", autouse=True)
def _registered() -> None:
    register_configs()
    register_launcher()


def compose_config(overrides: list[str], hydra: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=hydra)


def all_options() -> Iterator[tuple[str, str]]:
    for group in GROUPS:
        for option in options(group):
            yield group, option


def test_every_group_has_its_options() -> None:
    from rtc_sweep.core.kinetix_env import BENCHMARK_LEVELS

    assert set(options("level")) == set(BENCHMARK_LEVELS)
    assert set(options("method")) == {
        "naive", "realtime", "hard_masking", "bid", "training_time", "temporal_ensembling"
    }  # fmt: skip
    assert set(options("execute_policy")) == {"fixed", "adaptive", "synchronous"}
    assert set(options("model")) == {"default", "small", "small_tt"}
    assert {"fixed", "long_tail", "tail_controlled", "uniform", "trace_example", "lognormal", "pareto"} <= set(
        options("delay_profile")
    )
    assert {"tail_v1", "fixed_delay_sweep", "smoke", "tt_vs_rtc"} <= set(options("experiment"))


@pytest.mark.parametrize(("group", "option"), list(all_options()))
def test_option_composes_converts_and_validates(group: str, option: str) -> None:
    override = f"+experiment={option}" if group == "experiment" else f"{group}={option}"
    extra = ["model.simulated_delay=5"] if option == "training_time" else []
    cfg = compose_config([override, RANDOM, *extra])
    job = to_job_config(cfg)
    if group == "level":
        assert job.run.level == option
    if group == "method":
        assert job.run.method.name == option
    if group == "execute_policy":
        assert job.run.execute.mode == option
    config_module.validate(job)
    assert dataclasses.replace(job.run) == job.run  # frozen, comparable
    hash(job.run)


def test_default_config() -> None:
    job = to_job_config(compose_config([]))
    assert job.run.level == "grasp_easy"
    assert job.run.delay.name == "long_tail"
    assert job.run.method.name == "realtime"
    assert job.run.checkpoint is None
    config_module.validate(job)  # a shipped policy exists for the default level and model
    assert (job.video, job.resume, job.reference_grid_only) == (False, True, False)


def test_each_shipped_level_resolves_and_another_preset_is_named() -> None:
    config_module.validate(to_job_config(compose_config(["level=cartpole_thrust"])))  # shipped small
    config_module.validate(to_job_config(compose_config(["level=catapult", "model=default"])))
    with pytest.raises(ConfigError) as info:  # catapult's shipped policy is the default network's
        config_module.validate(to_job_config(compose_config(["level=catapult"])))
    assert info.value.key == "checkpoint"
    assert "model=default" in str(info.value)


def test_delay_profiles_match_the_presets() -> None:
    from rtc_sweep.core.delays import PRESETS

    for name in options("delay_profile"):
        assert to_job_config(compose_config([f"delay_profile={name}"])).run.delay == PRESETS[name], name


def test_models_match_the_presets() -> None:
    from rtc_sweep.core.policy import MODEL_PRESETS

    for name in options("model"):
        base, tt = name.removesuffix("_tt"), name.endswith("_tt")
        expected = dataclasses.replace(MODEL_PRESETS[base], simulated_delay=5 if tt else None)
        assert to_job_config(compose_config([f"model={name}"])).run.model == expected, name


def test_each_option_schema_is_its_kinds_fields_of_the_runtime_dataclass() -> None:
    # One definition: a kind's schema is the runtime dataclass's fields that kind reads, in order, with its defaults.
    from rtc_sweep.core.delays import DelayProfile
    from rtc_sweep.core.options import EXECUTE_MODES, METHODS, MODES, OPTION_GROUPS, config_keys
    from rtc_sweep.core.policy import ModelConfig
    from rtc_sweep.core.run_config import ExecutePolicy
    from rtc_sweep.core.samplers import MethodConfig

    runtime = {"delay_profile": DelayProfile, "method": MethodConfig, "execute_policy": ExecutePolicy}
    kinds = {"delay_profile": MODES, "method": METHODS, "execute_policy": EXECUTE_MODES}
    for group in OPTION_GROUPS:
        keys = [f.name for f in config_keys(runtime[group.key])]
        assert keys == [f.name for f in dataclasses.fields(group.fields)], group.key  # the runtime class adds no key
        assert tuple(config_module.OPTION_SCHEMAS[group.key]) == tuple(group.keys) == kinds[group.key]
        read: set[str] = set()
        for kind, schema in config_module.OPTION_SCHEMAS[group.key].items():
            fields = dataclasses.fields(schema)
            assert [f.name for f in fields] == [k for k in keys if k in group.keys[kind]], (group.key, kind)
            defaults = runtime[group.key]()
            for f in fields:
                default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
                expected = kind if f.name == group.selector else getattr(defaults, f.name)
                assert default == (list(expected) if isinstance(expected, tuple) else expected), (kind, f.name)
            read |= set(group.keys[kind])
        assert read == set(keys), f"{group.key}: fields no kind reads: {set(keys) - read}"
    assert [f.name for f in dataclasses.fields(config_module.ModelSchema)] == [
        f.name for f in dataclasses.fields(ModelConfig)
    ]


def test_every_option_yaml_extends_its_kinds_schema() -> None:
    from rtc_sweep.core.options import OPTION_GROUPS

    for group in OPTION_GROUPS:
        for option in options(group.key):
            doc = OmegaConf.load(CONF / group.key / f"{option}.yaml")
            kind = compose_config([f"{group.key}={option}"])[group.key][group.selector]
            assert list(doc.defaults) == [f"/{group.schema_name(kind)}@_here_", "_self_"], (group.key, option)
            assert group.selector not in doc, f"{group.key}/{option}.yaml: its schema sets {group.selector}"


def test_every_schema_field_has_a_comment() -> None:
    from rtc_sweep.core import options as options_module
    from rtc_sweep.core import run_config

    for module, classes in (
        (config_module, lambda name: name.endswith("Schema")),
        (options_module, lambda name: name in ("DelayFields", "MethodConfig", "ExecutePolicy", "OptionGroup")),
        (run_config, lambda name: name == "RunConfig"),
    ):
        source = Path(module.__file__ or "").read_text()
        lines = source.splitlines()
        checked = 0
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and classes(node.name):
                for stmt in node.body:
                    if isinstance(stmt, ast.AnnAssign):
                        checked += 1
                        where = f"{node.name}.{ast.unparse(stmt.target)}"
                        assert "#" in lines[stmt.end_lineno - 1], f"{where} has no comment"
        assert checked, module


def test_tail_v1_is_exp_delta_matrix() -> None:
    cfg = compose_config(["+experiment=tail_v1"], hydra=True)
    job = to_job_config(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))
    assert (job.run.level, job.run.num_evals, job.run.execute.execute_horizon) == ("grasp_easy", 256, 1)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert dict(cfg.hydra.sweeper.params) == {
        "delay_profile": "long_tail,tail_controlled",
        "method": "naive,realtime",
        "seed": "range(0,5)",
    }


def test_fixed_delay_sweep_covers_the_paper_grid() -> None:
    from rtc_sweep.sweep.config import in_reference_grid

    cfg = compose_config(["+experiment=fixed_delay_sweep"], hydra=True)
    params = cfg.hydra.sweeper.params
    assert params["method"] == "naive,realtime,bid,hard_masking,temporal_ensembling"
    assert params["execute_policy"] == "fixed,synchronous"
    sync = to_job_config(compose_config(["+experiment=fixed_delay_sweep", "execute_policy=synchronous"]))
    assert (sync.run.execute.mode, sync.synchronous_naive_only, sync.run.delay.mode) == ("synchronous", True, "fixed")
    inside = []
    for d in range(5):
        for s in range(1, 9):
            job = to_job_config(compose_config(["+experiment=fixed_delay_sweep", f"delay_profile.fixed_delay={d}",
                                                f"execute_policy.execute_horizon={s}"]))  # fmt: skip
            assert job.reference_grid_only
            if in_reference_grid(job.run):
                inside.append((d, s))
    assert len(inside) == 24
    assert params["delay_profile.fixed_delay"] == "range(0,5)"
    assert params["execute_policy.execute_horizon"] == "range(1,9)"


def test_smoke_is_small_and_random() -> None:
    job = to_job_config(compose_config(["+experiment=smoke"]))
    assert job.run.checkpoint == "random"
    assert job.run.model.channel_dim == 64
    assert job.run.num_evals <= 16 and job.run.max_timesteps <= 64


def test_slurm_and_gpu_pool_launchers_compose() -> None:
    slurm = compose_config(["hydra/launcher=slurm"], hydra=True).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert slurm.gpus_per_node == 1 and slurm.max_num_timeout > 0 and slurm.additional_parameters.requeue
    pool = compose_config(["hydra/launcher=gpu_pool", "hydra.launcher.gpus=[0,1]"], hydra=True).hydra.launcher
    assert list(pool.gpus) == [0, 1] and pool.jobs_per_gpu == 1


def test_seed_ranges() -> None:
    assert expand_int_ranges(["seed=0-4"]) == ["seed=range(0,5)"]
    assert expand_int_ranges(["+seed=2-3", "delay_profile.fixed_delay=0-4"]) == [
        "+seed=range(2,4)",
        "delay_profile.fixed_delay=range(0,5)",
    ]
    # Not integer keys, or not a range: untouched.
    untouched = ["hydra.sweep.dir=2025-06", "level.name=a-b", "seed=3", "seed=range(0,5)", "seed=1,2"]
    assert expand_int_ranges(untouched) == untouched
    with pytest.raises(ConfigError, match="seed"):
        expand_int_ranges(["seed=4-2"])
    assert command_line(["a=1", "-m", "seed=0-1"]) == ["-m", "a=1", "seed=range(0,2)"]


def test_config_columns_and_hash() -> None:
    run = to_job_config(compose_config([])).run
    cols = config_columns(run)
    assert cols["delay_profile.name"] == "long_tail"
    assert cols["delay_profile.base_probs"] == "[0.9, 0.1]"
    assert cols["execute_policy.execute_horizon"] == 4
    assert cols["level.name"] == "grasp_easy"
    other = to_job_config(compose_config(["seed=1"])).run
    assert config_hash(run) == config_hash(to_job_config(compose_config([])).run)
    assert config_hash(run) != config_hash(other)


def test_converts_a_plain_dictconfig() -> None:
    # Aggregation reads a job's .hydra/config.yaml back without Hydra.
    cfg = compose_config(["seed=3", "delay_profile=tail_controlled"])
    plain = OmegaConf.create(OmegaConf.to_yaml(cfg))
    assert to_job_config(plain) == to_job_config(cfg)
    assert isinstance(OmegaConf.to_object(OmegaConf.structured(RtcSweepSchema)), RtcSweepSchema)


# Each case: overrides, and the key the error must name. The first group fails at composition (type, key, option);
# the rest after conversion, in validate.
BAD = [
    (["method=nonexistent"], "method"),
    (["level=atlantis"], "level"),
    (["foo=1"], "foo"),
    (["method.nme=realtime"], "method.nme"),
    (["num_evals=many"], "num_evals"),
    (["seed=1.5"], "seed"),
    (["video=maybe"], "video"),
    (["delay_profile.base_probs=oops"], "delay_profile.base_probs"),
    (["method.name=psychic"], "method.name"),
    (["delay_profile.fixed_delay=-1", "delay_profile=fixed"], "delay_profile.fixed_delay"),
    (["delay_profile.base_probs=[0.5,0.4]"], "delay_profile.base_probs"),
    (["execute_policy.execute_horizon=9"], "execute_policy.execute_horizon"),
    (["num_evals=0"], "num_evals"),
    (["num_flow_steps=0"], "num_flow_steps"),
    (["micro_batch=0"], "micro_batch"),
    (["level.name=atlantis"], "level"),
    (["level.name=/nonexistent/level.json"], "level"),
    (["delay_profile.p_spike=1.5"], "delay_profile.p_spike"),
    (["delay_profile.tail_cap=-1"], "delay_profile.tail_cap"),
    (["delay_profile.dt_ms=0"], "delay_profile.dt_ms"),  # not a key of mode mixture
    (["delay_profile.sigma=-1"], "delay_profile.sigma"),  # not a key of long_tail's mode (mixture)
    (["delay_profile=lognormal", "delay_profile.sigma=-1"], "delay_profile.sigma"),
    (["delay_profile=lognormal", "delay_profile.dt_ms=0"], "delay_profile.dt_ms"),
    (["delay_profile.mode=gaussian"], "delay_profile.mode"),
    (["delay_profile.scope=world"], "delay_profile.scope"),
    (["delay_profile=trace_example", "delay_profile.trace_path=null", "delay_profile.trace_ms=[]"],
     "delay_profile.trace_ms"),
    (["delay_profile=trace_example", "delay_profile.trace_path=no/such/trace.csv"], "delay_profile.trace_path"),
    (["execute_policy=adaptive", "execute_policy.estimator=psychic"], "execute_policy.estimator"),
    (["execute_policy=adaptive", "execute_policy.buffer_size=0"], "execute_policy.buffer_size"),
    (["execute_policy=adaptive", "execute_policy.s_min=0"], "execute_policy.s_min"),
    (["execute_policy.mode=sometimes"], "execute_policy.mode"),
    (["method.prefix_attention_schedule=cubic"], "method.prefix_attention_schedule"),
    (["method.max_guidance_weight=0"], "method.max_guidance_weight"),
    (["method=training_time"], "method.name"),
    (["method=bid", "method.bid_k=4"], "method.bid_k"),
    (["method=temporal_ensembling", "method.te_decay=-0.1"], "method.te_decay"),
    (["method=temporal_ensembling", "execute_policy=synchronous"], "execute_policy.mode"),
    (["execute_policy=synchronous", "execute_policy.execute_horizon=0"], "execute_policy.execute_horizon"),
    (["model.action_chunk_size=0"], "model.action_chunk_size"),
    (["reference_grid_only=true"], "reference_grid_only"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "key"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_value_fails_naming_the_key_before_any_compile(
    overrides: list[str], key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rtc_sweep.sweep.evaluate
    from rtc_sweep.sweep.app import run

    def no_evaluate(*args: object, **kwargs: object) -> None:
        raise AssertionError("evaluate reached: the bad value was not caught before compiling")

    monkeypatch.setattr(rtc_sweep.sweep.evaluate, "evaluate", no_evaluate)
    start = time.perf_counter()
    try:
        cfg = compose_config([RANDOM, *overrides])
    except (HydraException, OmegaConfBaseException) as e:
        chain = f"{e} {e.__cause__}"
        assert key in chain, chain
        return
    with pytest.raises(ConfigError) as info:
        run(to_job_config(cfg), tmp_path / "job")
    assert info.value.key == key, info.value
    assert key in str(info.value)
    assert not (tmp_path / "job" / "results.csv").exists()
    assert time.perf_counter() - start < 20


# A key that the chosen option does not read: not in its schema, so an error at composition that names it.
OTHER_OPTIONS_KEYS = [
    (["method=naive", "method.n_samples=4"], "method.n_samples"),
    (["method=realtime", "method.te_decay=0.1"], "method.te_decay"),
    (["method=hard_masking", "method.prefix_attention_schedule=linear"], "method.prefix_attention_schedule"),
    (["delay_profile=long_tail", "delay_profile.sigma=0.3"], "delay_profile.sigma"),
    (["delay_profile=fixed", "delay_profile.base_delays=[1]"], "delay_profile.base_delays"),
    (["delay_profile=trace_example", "delay_profile.p_spike=0.1"], "delay_profile.p_spike"),
    (["delay_profile=long_tail", "delay_profile.calls=10"], "delay_profile.calls"),
    (["execute_policy=adaptive", "execute_policy.execute_horizon=2"], "execute_policy.execute_horizon"),
    (["execute_policy=fixed", "execute_policy.s_min=2"], "execute_policy.s_min"),
    (["execute_policy=synchronous", "execute_policy.estimator=max_recent"], "execute_policy.estimator"),
]


@pytest.mark.parametrize(("overrides", "key"), OTHER_OPTIONS_KEYS, ids=[" ".join(o) for o, _ in OTHER_OPTIONS_KEYS])
def test_a_key_of_another_option_is_an_error_naming_it(overrides: list[str], key: str) -> None:
    with pytest.raises((HydraException, OmegaConfBaseException)) as info:
        compose_config([RANDOM, *overrides])
    assert key in f"{info.value} {info.value.__cause__}"
    named = config_module.unknown_key(info.value)  # what a sweep's precheck reports: the key, the option's keys
    assert named is not None and named.key == key
    assert "allowed keys: " in named.message and key.split(".")[-1] not in named.message, named.message


def test_conversion_checks_each_groups_keys_against_its_kind() -> None:
    # What composition cannot check: a changed selector, an option without a schema (a user's YAML), a loaded config.
    with pytest.raises(ConfigError) as info:
        to_job_config(compose_config(["delay_profile=long_tail", "delay_profile.mode=lognormal"]))
    assert info.value.key == "delay_profile.mode" and "mixture" in info.value.message
    plain = OmegaConf.create(OmegaConf.to_yaml(compose_config(["delay_profile=fixed"])))
    plain.delay_profile.sigma = 0.3
    with pytest.raises(ConfigError) as info:
        to_job_config(plain)
    assert info.value.key == "delay_profile.sigma" and "fixed_delay" in info.value.message  # the allowed keys
    plain = OmegaConf.create(OmegaConf.to_yaml(compose_config(["delay_profile=fixed"])))
    plain.delay_profile.fixed_delay = "soon"
    with pytest.raises(ConfigError) as info:
        to_job_config(plain)
    assert info.value.key == "delay_profile.fixed_delay"
    # A key an option does not carry keeps the runtime default, as when the schema had every key.
    from rtc_sweep.core.delays import DelayProfile
    from rtc_sweep.core.run_config import ExecutePolicy

    run = to_job_config(compose_config(["delay_profile=long_tail", "execute_policy=adaptive"])).run
    assert (run.delay.sigma, run.delay.calls) == (DelayProfile.sigma, DelayProfile.calls)
    assert run.execute.execute_horizon == ExecutePolicy.execute_horizon == 4


def test_home_and_relative_paths_are_resolved_once_at_the_boundary_and_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import shutil

    import jax
    import numpy as np

    from rtc_sweep.core.checkpoint import load_policy
    from rtc_sweep.core.delays import ms_to_ticks
    from rtc_sweep.sweep.evaluate import CHECKPOINTS_DIR, prepare

    monkeypatch.setenv("HOME", str(tmp_path))  # what ~ means: a real file under a temporary home
    shipped = CHECKPOINTS_DIR / "grasp_easy" / "small" / "policy.pkl"
    (tmp_path / "policies").mkdir()
    shutil.copy(shipped, tmp_path / "policies" / "policy.pkl")
    trace = tmp_path / "lat.csv"
    trace.write_text("latency_ms\n40\n110.5\n20\n")
    # Quoted, as in a YAML preset (bash itself expands an unquoted checkpoint=~/...; Hydra's grammar refuses it).
    overrides = ["checkpoint='~/policies/policy.pkl'", "delay_profile=trace_example",
                 "delay_profile.trace_path='~/lat.csv'", "method=bid", "method.bid_k=2",
                 f"method.weak_checkpoint={os.path.relpath(shipped)}"]  # fmt: skip
    job = to_job_config(compose_config(overrides))
    resolved = config_module.validate(job)
    run = resolved.run
    assert run.checkpoint_file == str(tmp_path / "policies" / "policy.pkl")
    assert run.weak_checkpoint_file == str(shipped.absolute())
    # The keys stay as typed: results.csv and the config hash are those of the config (resume, aggregation).
    assert (run.checkpoint, run.delay.trace_path) == ("~/policies/policy.pkl", "~/lat.csv")
    assert config_hash(run) == config_hash(job.run) and config_columns(run) == config_columns(job.run)
    trace.unlink()  # read once, at the boundary: nothing after it opens the file
    prep = prepare(run)
    expected_ticks = ms_to_ticks([40, 110.5, 20], run.delay.period_ms)
    np.testing.assert_array_equal(np.asarray(prep.delay_arrays.trace_ticks)[:3], expected_ticks)
    assert int(prep.delay_arrays.trace_len) == 3
    reference = load_policy(shipped, run.model)
    for got, want in zip(jax.tree.leaves(prep.params), jax.tree.leaves(reference), strict=True):
        np.testing.assert_array_equal(got, want)
    assert prep.weak_params is not None


def test_missing_checkpoint_file_fails_naming_it(tmp_path: Path) -> None:
    job = to_job_config(compose_config([f"checkpoint={tmp_path / 'nope.pkl'}"]))
    with pytest.raises(ConfigError) as info:
        config_module.validate(job)
    assert info.value.key == "checkpoint"


def test_tt_vs_rtc_crosses_models_and_methods_and_skips_the_incompatible_pair() -> None:
    cfg = compose_config(["+experiment=tt_vs_rtc"], hydra=True)
    assert dict(cfg.hydra.sweeper.params) == {
        "model": "small,small_tt",
        "method": "naive,realtime,training_time",
        "delay_profile.fixed_delay": "range(1,5)",
    }
    tt = to_job_config(compose_config(["+experiment=tt_vs_rtc", "model=small_tt", "method=training_time"]))
    assert (tt.compatible_only, tt.run.model.simulated_delay, tt.run.execute.execute_horizon) == (True, 5, 4)
    assert tt.run.model == dataclasses.replace(to_job_config(compose_config([])).run.model, simulated_delay=5)


def test_the_apps_top_level_defaults_are_the_runtime_defaults():
    """RtcSweepSchema's own keys (seed, num_evals, ...) default to what RunConfig defaults to: one value each."""
    from rtc_sweep.core.run_config import RunConfig
    from rtc_sweep.sweep.config import RtcSweepSchema

    runtime = {f.name: f.default for f in dataclasses.fields(RunConfig) if f.default is not dataclasses.MISSING}
    schema = {f.name: f.default for f in dataclasses.fields(RtcSweepSchema) if f.default is not dataclasses.MISSING}
    shared = sorted(set(runtime) & set(schema) - {"checkpoint"})
    assert {"seed", "num_evals", "num_flow_steps", "max_timesteps", "micro_batch", "action_noise_std"} <= set(shared)
    assert {k: schema[k] for k in shared} == {k: runtime[k] for k in shared}


def test_a_sweep_jobs_folder_is_one_path_component_however_its_values_look() -> None:
    def subdir(*overrides: str) -> str:
        return str(compose_config(list(overrides), hydra=True).hydra.sweep.subdir)

    assert subdir(RANDOM, "seed=1") == "checkpoint=random,seed=1"
    # A checkpoint path used to nest the job's folder inside folders named runs/, a/, ...
    assert subdir("checkpoint=runs/a/policy.pkl", "seed=1") == "checkpoint=runs%2Fa%2Fpolicy.pkl,seed=1"
    long_a = subdir(f"checkpoint={'x' * 300}/a.pkl", "seed=1")
    long_b = subdir(f"checkpoint={'x' * 300}/b.pkl", "seed=1")
    assert "/" not in long_a and len(long_a.encode()) <= config_module.JOB_DIR_MAX_BYTES
    assert long_a != long_b and long_a[:-12] == long_b[:-12]  # cut alike, told apart by the hash
    assert subdir(f"checkpoint={'x' * 300}/a.pkl", "seed=1") == long_a  # a rerun finds the same folder
