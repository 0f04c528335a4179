"""A sweep checks every job before it launches any (precheck.py); a user's own preset folder is picked up."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from rtc_sweep.sweep.config import command_line, register_configs
from rtc_sweep.sweep.launch import register_launcher
from rtc_sweep.sweep.precheck import JobComposer, Precheck, check_sweep, compose_job, sweep_jobs

CONF = Path(__file__).resolve().parents[1] / "rtc_sweep" / "conf"
# Jobs that must pass validation need a policy; the shipped ones may not exist where tests run.
RANDOM = "checkpoint=random"
BAD_KEY = "delay_profile.fixed_delay"
Compose = Callable[[list[str]], DictConfig]


@pytest.fixture(scope="module", autouse=True)
def _registered() -> None:
    register_configs()
    register_launcher()


@pytest.fixture
def multirun() -> Iterator[Compose]:
    """compose(args) -> the sweep's config as ``python -m rtc_sweep -m args`` hands it to the callbacks."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        assert hydra is not None

        def compose(args: list[str]) -> DictConfig:
            return hydra.compose_config("config", command_line(args), run_mode=RunMode.MULTIRUN)

        yield compose


def check(cfg: DictConfig) -> Precheck:
    result = check_sweep(cfg, isolate=False)
    assert result is not None
    return result


def test_one_invalid_job_among_valid_ones_is_named_with_its_overrides_and_key(multirun: Compose) -> None:
    cfg = multirun([RANDOM, "delay_profile=fixed", f"{BAD_KEY}=0,-1,2", "seed=0-2", "method=naive,realtime"])
    result = check(cfg)
    assert result.jobs == 18 and result.checked == 18
    assert [j.key for j in result.invalid] == [BAD_KEY] * 6
    first = result.invalid[0]
    assert first.index == 6  # Hydra's job number: fixed_delay=-1 is the second value of the outer loop
    assert first.overrides == (RANDOM, "delay_profile=fixed", f"{BAD_KEY}=-1", "seed=0", "method=naive")
    report = result.report()
    assert "invalid config in 6 of the sweep's 18 jobs" in report
    assert f"job #6 ({RANDOM} delay_profile=fixed {BAD_KEY}=-1 seed=0 method=naive): {BAD_KEY}: -1" in report


def test_a_job_that_does_not_compose_is_reported_too(multirun: Compose) -> None:
    result = check(multirun([RANDOM, "num_evals=16,many"]))
    assert [(j.index, j.key) for j in result.invalid] == [(1, None)]
    assert "num_evals" in result.invalid[0].message


def test_an_experiments_sweep_params_are_in_the_job_list_and_its_skips_are_not_errors(multirun: Compose) -> None:
    # fixed_delay_sweep sweeps s = 1..8 and fixed,synchronous from hydra.sweeper.params; the command line
    # narrows its methods and delays (as Hydra's BasicSweeper: a command-line key replaces the preset's).
    cfg = multirun(["+experiment=fixed_delay_sweep", RANDOM, "method=naive,bid", "delay_profile.fixed_delay=0,4"])
    jobs = sweep_jobs(cfg, GlobalHydra.instance().config_loader())
    assert jobs is not None and len(jobs) == 8 * 2 * 2 * 2
    assert {o.split("=")[0] for o in jobs[0]} >= {"execute_policy.execute_horizon", "execute_policy", "method"}
    start = time.perf_counter()
    result = check(cfg)
    assert result.invalid == ()
    # synchronous_naive_only: app.run skips synchronous x bid before validating; the precheck does too.
    assert result.checked == 64 - 16
    assert time.perf_counter() - start < 30


def test_tt_vs_rtc_skips_training_time_on_a_plain_model_as_app_run_does(multirun: Compose) -> None:
    result = check(multirun(["+experiment=tt_vs_rtc", RANDOM]))
    assert (result.jobs, result.checked, result.invalid) == (24, 20, ())
    # Without compatible_only, training_time on a model without simulated_delay is an error, named.
    result = check(multirun(["+experiment=tt_vs_rtc", RANDOM, "compatible_only=false"]))
    assert {j.key for j in result.invalid} == {"method.name"} and len(result.invalid) == 4


def test_fast_composition_equals_hydras(multirun: Compose) -> None:
    cfg = multirun(
        ["+experiment=tt_vs_rtc", "seed=0,1", "delay_profile.tail_cap=null,2", "execute_policy.starvation=hold"]
    )  # fmt: skip
    loader = GlobalHydra.instance().config_loader()
    jobs = sweep_jobs(cfg, loader)
    assert jobs is not None and len(jobs) == 96
    fast = JobComposer(cfg, loader)
    assert len({tuple(j) for j in jobs}) == 96
    for overrides in jobs[::7]:
        assert fast(overrides) == compose_job(cfg, overrides, loader), overrides
    assert len(fast.bases) == 6  # model x method
    # A key none of these methods reads (bid's) fails both ways, at composition.
    for overrides in jobs[:2]:
        for composer in (fast, lambda o: compose_job(cfg, o, loader)):
            with pytest.raises((HydraException, OmegaConfBaseException), match=r"method\.bid_k"):
                composer([*overrides, "method.bid_k=3"])


def test_a_key_of_another_option_is_reported_with_the_options_keys(multirun: Compose) -> None:
    # The sweep's own config composes (the default method, realtime, reads the key); its naive jobs do not.
    result = check(multirun([RANDOM, "method=realtime,naive", "method.max_guidance_weight=3", "seed=0,1"]))
    assert (result.jobs, result.checked) == (4, 2)
    key = "method.max_guidance_weight"
    assert [(j.index, j.key) for j in result.invalid] == [(2, key), (3, key)]
    assert "not a key of method name naive; allowed keys: name" in result.invalid[0].message
    assert f"job #2 ({RANDOM} method=naive {key}=3 seed=0): {key}: not a key" in result.report()


def test_a_hundred_job_sweep_with_one_bad_value_is_reported_in_seconds(multirun: Compose) -> None:
    start = time.perf_counter()
    result = check(multirun([RANDOM, "delay_profile=fixed", f"{BAD_KEY}=0,1,2,3,-1", "seed=0-19"]))
    seconds = time.perf_counter() - start
    assert result.jobs == 100 and len(result.invalid) == 20
    assert {j.key for j in result.invalid} == {BAD_KEY}
    assert "invalid config in 20 of the sweep's 100 jobs" in result.report()
    assert seconds < 20, seconds  # a few seconds on a laptop; no compile


def run_app(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-m", "rtc_sweep", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.parametrize("launcher", ["basic", "slurm"])
def test_invalid_job_stops_the_sweep_before_any_job_runs(tmp_path: Path, launcher: str) -> None:
    sweep = tmp_path / "sweep"
    extra = ["hydra/launcher=slurm"] if launcher == "slurm" else []  # validated in a child: no JAX in the submitter
    start = time.perf_counter()
    # Job #0 (fixed_delay=1) is valid: without the precheck it would run (and compile) before #2 fails.
    out = run_app(
        ["-m", *extra, RANDOM, "delay_profile=fixed", f"{BAD_KEY}=1,-1", "seed=0-1", f"hydra.sweep.dir={sweep}"],
        tmp_path,
    )
    seconds = time.perf_counter() - start
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"job #2 ({RANDOM} delay_profile=fixed {BAD_KEY}=-1 seed=0): {BAD_KEY}: -1" in out.stderr
    assert "job #3 " in out.stderr and "job #0 " not in out.stderr
    assert not sweep.exists(), sorted(sweep.rglob("*"))  # no job folder, no log, no multirun.yaml
    assert "Launching" not in out.stdout + out.stderr
    assert seconds < 120


USER_PROFILE = """\
# A user's own delay law, next to the shipped ones.
name: my_profile
mode: fixed
fixed_delay: 3
"""

USER_SWEEP = """\
# @package _global_
defaults:
  - override /delay_profile: my_profile

checkpoint: random
hydra:
  mode: MULTIRUN
  sweeper:
    params:
      delay_profile.fixed_delay: 2,-5
      seed: 0,1
"""


@pytest.fixture
def presets(tmp_path: Path) -> Path:
    folder = tmp_path / "my_presets"
    (folder / "delay_profile").mkdir(parents=True)
    (folder / "experiment").mkdir()
    (folder / "delay_profile" / "my_profile.yaml").write_text(USER_PROFILE)
    (folder / "experiment" / "my_sweep.yaml").write_text(USER_SWEEP)
    return folder


def test_a_users_preset_folder_is_picked_up_with_config_dir(presets: Path, tmp_path: Path) -> None:
    out = run_app(["--config-dir", str(presets), "delay_profile=my_profile", "--cfg", "job"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "name: my_profile" in out.stdout and "fixed_delay: 3" in out.stdout
    # The shipped options stay available next to the user's.
    out = run_app(["--config-dir", str(presets), "delay_profile=long_tail", "--cfg", "job"], tmp_path)
    assert out.returncode == 0 and "name: long_tail" in out.stdout, out.stderr[-3000:]
    # Or by hydra.searchpath, e.g. set once in a user's own experiment or on the command line.
    out = run_app([f"hydra.searchpath=[file://{presets}]", "delay_profile=my_profile", "--cfg", "job"], tmp_path)
    assert out.returncode == 0 and "fixed_delay: 3" in out.stdout, out.stderr[-3000:]


def test_a_users_experiment_sweeps_and_is_prechecked(presets: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    out = run_app(["--config-dir", str(presets), "+experiment=my_sweep", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"job #2 ({BAD_KEY}=-5 seed=0 +experiment=my_sweep): {BAD_KEY}: -5" in out.stderr
    assert "of the sweep's 4 jobs" in out.stderr
    assert not sweep.exists()


SUBMITTER = f"""
import sys
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from rtc_sweep.sweep.config import register_configs
from rtc_sweep.sweep.launch import register_launcher
from rtc_sweep.sweep.precheck import check_sweep
register_configs(); register_launcher()
with initialize_config_dir(config_dir={str(CONF)!r}, version_base="1.3"):
    args = ["hydra/launcher=gpu_pool", "{RANDOM}", "delay_profile=fixed", "{BAD_KEY}=0,-1", "seed=0,1"]
    result = check_sweep(GlobalHydra.instance().hydra.compose_config("config", args, run_mode=RunMode.MULTIRUN))
print(len(result.invalid), "jax" in sys.modules)
"""


def test_with_a_launcher_that_runs_jobs_elsewhere_the_submitter_never_imports_jax(tmp_path: Path) -> None:
    # gpu_pool and slurm: Kinetix starts a JAX backend when imported; the submitting process must not hold a GPU.
    out = subprocess.run([sys.executable, "-c", SUBMITTER], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["2", "False"]
