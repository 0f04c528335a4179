"""The persistent compilation cache: what a process compiles is loaded by the next one (any seed, delay profile,
execute horizon), and ``python -m rtc_sweep.warmup`` leaves nothing for a sweep's jobs to compile."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rtc_sweep.report.results import RESULTS_FILE, complete_results
from rtc_sweep.runtime import CompileLog, cache_dir, enable_compilation_cache
from rtc_sweep.warmup import command_line

TINY = ["checkpoint=random", "model=small", "num_evals=2", "max_timesteps=8", "method=naive"]


def entries(cache: Path) -> set[str]:
    """The programs in a cache folder (JAX writes ``<module>-<key>-cache``, and ``-atime`` files beside them)."""
    return {p.name for p in cache.glob("*-cache")}


def run(module: str, *args: str, cache: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache)}
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_cache_dir_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "shared"))
    assert cache_dir() == tmp_path / "shared"
    assert cache_dir(tmp_path / "key") == tmp_path / "key"
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    assert cache_dir().parts[-2:] == ("rtc_sweep", "jax")


def test_compile_log_sees_a_persistent_cache_hit(tmp_path: Path) -> None:
    import jax
    import jax.numpy as jnp

    from rtc_sweep.runtime import default_cache_dir

    def tiny_program(x: jax.Array) -> jax.Array:
        return jnp.sin(x) * 3.0 + 1.0

    try:
        enable_compilation_cache(tmp_path)
        with CompileLog() as first:
            jax.jit(tiny_program)(jnp.arange(3.0)).block_until_ready()
        jax.clear_caches()  # forget the in-memory executable: the next call must go to the disk
        with CompileLog() as second:
            jax.jit(tiny_program)(jnp.arange(3.0)).block_until_ready()
    finally:
        enable_compilation_cache(os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_cache_dir())
    assert [p.cache for p in first.programs if p.name == "tiny_program"] == ["miss"]
    assert [p.cache for p in second.programs if p.name == "tiny_program"] == ["hit"]
    assert not second.compiled() or all(p.name != "tiny_program" for p in second.compiled())


def test_the_rollout_program_is_named_rollout() -> None:
    """Its name is what the cache entries (``jit_rollout-<key>-cache``), the compile log and
    scripts/bench_compile.py know it by; the jitted wrapper must not rename it."""
    from rtc_sweep.core import timeline
    from rtc_sweep.core.options import MethodConfig

    spec = timeline.RolloutSpec(env=None, method=MethodConfig(), model=None, num_flow_steps=1, num_ticks=1,  # type: ignore[arg-type]
                                obs_dim=1, action_dim=1)  # fmt: skip
    assert timeline.make_rollout(spec).__name__ == "rollout"


def test_warmup_command_line_runs_here_and_writes_nowhere_of_the_sweep() -> None:
    args = command_line(["-m", "seed=0,1", "hydra/launcher=slurm", "hydra.launcher.warmup=true", "hydra.sweep.dir=x"],
                        "/tmp/scratch")  # fmt: skip
    assert args[0] == "-m" and "seed=0,1" in args
    assert "hydra/launcher=rtc_sweep_warmup" in args and "hydra.sweep.dir=/tmp/scratch/multirun" in args
    assert not any(a.startswith(("hydra/launcher=slurm", "hydra.launcher.", "hydra.sweep.dir=x")) for a in args)


@pytest.mark.slow
def test_second_process_with_other_seed_delays_and_horizon_loads_every_program(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    run("rtc_sweep", *TINY, f"hydra.run.dir={tmp_path / 'a'}", cache=cache, cwd=tmp_path)
    first = entries(cache)
    assert any(name.startswith("jit_rollout") for name in first), sorted(first)
    other = ["seed=7", "delay_profile=uniform", "execute_policy.execute_horizon=3"]
    run("rtc_sweep", *TINY, *other, f"hydra.run.dir={tmp_path / 'b'}", cache=cache, cwd=tmp_path)
    # Every program is written however small (runtime.enable_compilation_cache), so a program the second process
    # compiled instead of loading would be a new entry.
    assert entries(cache) == first, sorted(entries(cache) - first)
    assert complete_results(tmp_path / "b" / RESULTS_FILE)


@pytest.mark.slow
def test_warmup_then_a_two_job_sweep_compiles_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    out = run("rtc_sweep.warmup", *TINY, "seed=0,1", "-m", cache=cache, cwd=tmp_path)
    assert "1 distinct static specs compiled" in out.stdout + out.stderr
    warmed = entries(cache)
    assert any(name.startswith("jit_rollout") for name in warmed), sorted(warmed)
    assert not list(tmp_path.glob("multirun")), "the warm-up wrote a sweep folder"
    run("rtc_sweep", *TINY, "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}", "-m", cache=cache, cwd=tmp_path)
    assert entries(cache) == warmed, sorted(entries(cache) - warmed)
    assert len([p for p in (tmp_path / "sweep").glob(f"*/{RESULTS_FILE}") if complete_results(p)]) == 2


def test_a_refused_cache_entry_is_compiled_again_and_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import jax
    import jax.numpy as jnp

    from rtc_sweep import runtime
    from rtc_sweep.runtime import default_cache_dir

    def refused_program(x: jax.Array) -> jax.Array:
        return jnp.cos(x) * 2.0

    try:
        enable_compilation_cache(tmp_path)
        expected = jax.jit(refused_program)(jnp.arange(3.0))
        (entry,) = [p for p in tmp_path.glob("*-cache") if "refused_program" in p.name]
        entry.write_bytes(b"not an executable")  # what jaxlib makes of a program built for other CPU features
        jax.clear_caches()
        runtime._warned_rejection = False  # said once per process: maybe already by an earlier test
        with caplog.at_level("WARNING", logger="rtc_sweep"), CompileLog() as log:
            again = jax.jit(refused_program)(jnp.arange(3.0))
    finally:
        enable_compilation_cache(os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_cache_dir())
    assert [p.cache for p in log.programs if p.name == "refused_program"] == ["rejected"]
    assert jnp.array_equal(again, expected)
    assert len([r for r in caplog.records if "refuses" in r.getMessage()]) == 1


@pytest.mark.slurm
def test_slurm_warmup_job_runs_before_the_array(tmp_path: Path) -> None:
    from test_slurm import slurm_unavailable

    reason = slurm_unavailable()
    if reason:
        pytest.skip(reason)
    base = Path(os.environ.get("RTC_SWEEP_SLURM_DIR", tmp_path))
    sweep, cache = base / f"slurm_warm_{os.getpid()}", base / f"slurm_cache_{os.getpid()}"
    partition = os.environ.get("RTC_SWEEP_SLURM_PARTITION")
    run(
        "rtc_sweep", "-m", "hydra/launcher=slurm", "hydra.launcher.warmup=true",
        "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=4",
        "hydra.launcher.timeout_min=30", *([f"hydra.launcher.partition={partition}"] if partition else []),
        *TINY, "seed=0,1", f"hydra.sweep.dir={sweep}", cache=cache, cwd=tmp_path,
    )  # fmt: skip
    logs = [p.read_text() for p in (sweep / ".submitit").rglob("*_log.out") if "warmup_" in str(p)]
    assert any("distinct static specs compiled" in text for text in logs), logs
    assert any(name.startswith("jit_rollout") for name in entries(cache))
    assert len([p for p in sweep.glob(f"*/{RESULTS_FILE}") if complete_results(p)]) == 2
