"""`python -m rtc_sweep` end to end, the job logic around evaluate (skip, resume, video), and the gpu_pool launcher."""

from __future__ import annotations

import csv
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from rtc_sweep.io import VIDEO_FILE
from rtc_sweep.report.results import PARTIAL_DIR, RESULTS_FILE, SKIPPED_FILE, complete_results
from rtc_sweep.sweep.config import JobConfig, config_hash, register_configs, to_job_config
from rtc_sweep.sweep.launch import GpuSlots, register_launcher, run_on_gpus, visible_gpus

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "rtc_sweep" / "conf"
# The smallest real job: one compiled program shared (through JAX's persistent cache) by every test below.
TINY = ["+experiment=smoke", "num_evals=4", "max_timesteps=16"]


@pytest.fixture(scope="module", autouse=True)
def _registered() -> None:
    register_configs()
    register_launcher()


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def rtc_sweep(*args: str, cwd: Path, timeout: float = 900, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rtc_sweep", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, **kwargs
    )


def fake_row(job: JobConfig, solved: float = 0.5) -> dict[str, Any]:
    from rtc_sweep.report.results import IDENTIFYING_COLUMNS, METRIC_COLUMNS

    run = job.run
    row: dict[str, Any] = dict.fromkeys(METRIC_COLUMNS, 0.25)
    row.update(
        profile=run.delay.name, method=run.method.name, execute_policy=run.execute.mode, seed=run.seed,
        level=run.level, execute_horizon=run.execute.execute_horizon, num_evals=run.num_evals,
        returned_episode_solved=solved,
    )  # fmt: skip
    return {c: row[c] for c in (*IDENTIFYING_COLUMNS, *METRIC_COLUMNS)}


@pytest.fixture
def fake_evaluate(monkeypatch: pytest.MonkeyPatch) -> list[JobConfig]:
    """Replace evaluate (no compile); returns the list of runs it was called with."""
    import rtc_sweep.sweep.evaluate

    calls: list[Any] = []

    def evaluate(run: Any, progress: bool = True) -> dict[str, Any]:
        calls.append(run)
        return fake_row(JobConfig(run=run))

    monkeypatch.setattr(rtc_sweep.sweep.evaluate, "evaluate", evaluate)
    return calls


# ---------------------------------------------------------------------------------------------------------------
# The job around evaluate, in process


def test_results_row_layout_and_resume(tmp_path: Path, fake_evaluate: list[Any]) -> None:
    from rtc_sweep.report.results import IDENTIFYING_COLUMNS, METRIC_COLUMNS
    from rtc_sweep.sweep.app import run

    job = to_job_config(compose_config(["checkpoint=random", "seed=3"]))
    assert run(job, tmp_path) == 0.5
    with open(tmp_path / RESULTS_FILE) as f:
        header = next(csv.reader(f))
    n = len(IDENTIFYING_COLUMNS) + len(METRIC_COLUMNS)
    assert header[:n] == [*IDENTIFYING_COLUMNS, *METRIC_COLUMNS]
    assert {"delay_scope", "delay_profile.tail_cap", "method.max_guidance_weight", "config_hash"} <= set(header[n:])
    rows = complete_results(tmp_path / RESULTS_FILE, config_hash(job.run))
    assert rows is not None and rows[0]["seed"] == "3"

    # Same folder, same config: complete, so skipped.
    assert run(job, tmp_path) == 0.5
    assert len(fake_evaluate) == 1
    # Another config in the same folder (or a truncated file): recomputed.
    other = to_job_config(compose_config(["checkpoint=random", "seed=4"]))
    run(other, tmp_path)
    assert len(fake_evaluate) == 2
    (tmp_path / RESULTS_FILE).write_text((tmp_path / RESULTS_FILE).read_text()[:200])
    run(other, tmp_path)
    assert len(fake_evaluate) == 3
    # resume=false always recomputes.
    run(to_job_config(compose_config(["checkpoint=random", "seed=4", "resume=false"])), tmp_path)
    assert len(fake_evaluate) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".results")], "temporary files left behind"


def test_outside_reference_grid_is_skipped(tmp_path: Path, fake_evaluate: list[Any]) -> None:
    from rtc_sweep.sweep.app import run

    outside = ["+experiment=fixed_delay_sweep", "checkpoint=random", "delay_profile.fixed_delay=3",
               "execute_policy.execute_horizon=1"]  # fmt: skip
    assert run(to_job_config(compose_config(outside)), tmp_path / "a") is None
    assert "skipped" in (tmp_path / "a" / SKIPPED_FILE).read_text()
    assert not (tmp_path / "a" / RESULTS_FILE).exists()
    inside = [*outside[:-1], "execute_policy.execute_horizon=3"]
    assert run(to_job_config(compose_config(inside)), tmp_path / "b") == 0.5
    assert len(fake_evaluate) == 1


def test_fixed_delay_sweep_runs_synchronous_with_naive_only(tmp_path: Path, fake_evaluate: list[Any]) -> None:
    from rtc_sweep.sweep.app import run

    grid = ["+experiment=fixed_delay_sweep", "checkpoint=random", "delay_profile.fixed_delay=2",
            "execute_policy.execute_horizon=3"]  # fmt: skip
    for i, method in enumerate(("realtime", "bid", "temporal_ensembling")):
        assert run(to_job_config(compose_config([*grid, "execute_policy=synchronous", f"method={method}"])),
                   tmp_path / f"skip{i}") is None  # fmt: skip
        assert "synchronous" in (tmp_path / f"skip{i}" / SKIPPED_FILE).read_text()
    assert not fake_evaluate
    assert run(to_job_config(compose_config([*grid, "execute_policy=synchronous", "method=naive"])), tmp_path / "a")
    assert run(to_job_config(compose_config([*grid, "method=temporal_ensembling"])), tmp_path / "b")
    assert [(r.execute.mode, r.method.name) for r in fake_evaluate] == [
        ("synchronous", "naive"), ("fixed", "temporal_ensembling")
    ]  # fmt: skip


def test_training_time_on_a_plain_model_is_skipped_in_tt_vs_rtc(tmp_path: Path, fake_evaluate: list[Any]) -> None:
    from rtc_sweep.errors import ConfigError
    from rtc_sweep.sweep.app import run

    plain = ["+experiment=tt_vs_rtc", "model=small", "method=training_time", "checkpoint=random"]
    assert run(to_job_config(compose_config(plain)), tmp_path / "a") is None
    assert "model.simulated_delay" in (tmp_path / "a" / SKIPPED_FILE).read_text()
    assert not fake_evaluate
    with pytest.raises(ConfigError, match="simulated_delay"):  # outside the experiment it stays an error
        run(to_job_config(compose_config(plain[1:])), tmp_path / "b")
    assert run(to_job_config(compose_config([*plain, "model=small_tt"])), tmp_path / "c") == 0.5
    assert len(fake_evaluate) == 1


def test_video_calls_render_video(tmp_path: Path, fake_evaluate: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import rtc_sweep.sweep.evaluate
    from rtc_sweep.sweep.app import run

    rendered: list[Path] = []

    def render_video(cfg: Any, path: Path) -> Path:
        Path(path).write_bytes(b"mp4")
        rendered.append(Path(path))
        return Path(path)

    monkeypatch.setattr(rtc_sweep.sweep.evaluate, "render_video", render_video, raising=False)
    run(to_job_config(compose_config(["checkpoint=random", "video=true"])), tmp_path)
    assert rendered == [tmp_path / VIDEO_FILE] and (tmp_path / VIDEO_FILE).is_file()


# ---------------------------------------------------------------------------------------------------------------
# The command line


def test_help_lists_groups_and_examples(tmp_path: Path) -> None:
    out = rtc_sweep("--help", cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    for text in ("delay_profile: fixed", "method: bid", "experiment: fixed_delay_sweep", "seed=0-4", "gpu_pool",
                 "synchronous", "temporal_ensembling", "te_decay"):  # fmt: skip
        assert text in out.stdout, text


def test_help_and_cfg_show_only_the_chosen_options_keys(tmp_path: Path) -> None:
    for flag in ("--cfg=job", "--help"):
        out = rtc_sweep(flag, "delay_profile=long_tail", "method=naive", cwd=tmp_path, timeout=120)
        assert out.returncode == 0, out.stderr
        delay = out.stdout.split("delay_profile:\n", 1)[1].split("\nmethod:", 1)[0]  # the delay_profile node
        assert "base_delays:" in delay and "p_spike: 0.05" in delay, delay
        for key in ("sigma", "median_ms", "scale_ms", "alpha", "trace_path", "trace_ms", "calls", "dt_ms"):
            assert f"{key}:" not in delay, (flag, key)
        assert "n_samples" not in out.stdout and "max_guidance_weight" not in out.stdout, flag
    # A key of another option fails at composition, naming it, before anything runs.
    out = rtc_sweep("method=naive", "method.n_samples=4", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert out.returncode != 0 and "method.n_samples" in out.stderr, out.stderr
    assert not (tmp_path / "run").exists()


def test_bad_value_exits_early_naming_the_key(tmp_path: Path) -> None:
    start = time.perf_counter()
    out = rtc_sweep("num_evals=0", "checkpoint=random", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=300)
    assert out.returncode == 2
    assert "num_evals" in out.stdout + out.stderr
    assert "evaluating" not in out.stdout + out.stderr
    assert not (tmp_path / "run" / RESULTS_FILE).exists()
    assert time.perf_counter() - start < 120  # imports only; a compile would take minutes on CPU


def test_bash_completion(tmp_path: Path) -> None:
    install = rtc_sweep("-sc", "install=bash", cwd=tmp_path, timeout=120)
    assert install.returncode == 0 and "complete" in install.stdout and "rtc_sweep" in install.stdout
    env = {**os.environ, "COMP_LINE": "rtc_sweep delay_profile=", "COMP_POINT": "24"}
    query = rtc_sweep("-sc", "query=bash", cwd=tmp_path, timeout=120, env=env)
    assert "delay_profile=long_tail" in query.stdout.split(), query.stdout + query.stderr


# ---------------------------------------------------------------------------------------------------------------
# End to end (real evaluate; the first one compiles the program the others load from the cache)


def test_smoke_run_writes_results(tmp_path: Path) -> None:
    out = rtc_sweep(*TINY, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    job_dir = tmp_path / "run"
    rows = complete_results(job_dir / RESULTS_FILE)
    assert rows is not None and len(rows) == 1
    assert 0.0 <= float(rows[0]["returned_episode_solved"]) <= 1.0
    assert rows[0]["resumed_envs"] == "0" and not (job_dir / PARTIAL_DIR).exists()  # removed once the row is written
    assert (job_dir / ".hydra" / "config.yaml").is_file()
    assert "returned_episode_solved=" in (job_dir / "rtc_sweep.log").read_text()


def test_sweep_killed_then_resumed_and_aggregated(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = [*TINY, "delay_profile=long_tail,tail_controlled", "seed=0-1", f"hydra.sweep.dir={sweep}", "-m"]
    cmd = [sys.executable, "-m", "rtc_sweep", *args]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 900
        while len(list(sweep.glob(f"*/{RESULTS_FILE}"))) < 2:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "the sweep made no progress"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = sorted(sweep.glob(f"*/{RESULTS_FILE}"))
    assert 2 <= len(done) < 4
    kept, corrupted = done[0], done[1]
    corrupted.write_text(corrupted.read_text()[:150])
    kept_mtime = kept.stat().st_mtime_ns

    out = rtc_sweep(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    jobs = sorted(p.parent for p in sweep.glob("*/.hydra"))
    assert [p.name for p in jobs] == [  # named by the overrides, the preset left out
        f"delay_profile={profile},max_timesteps=16,num_evals=4,seed={seed}"
        for profile in ("long_tail", "tail_controlled")
        for seed in (0, 1)
    ]
    assert all(complete_results(p / RESULTS_FILE) for p in jobs)
    assert kept.stat().st_mtime_ns == kept_mtime, "a complete job was recomputed"
    assert out.stdout.count("already complete") + out.stderr.count("already complete") == 1

    with open(sweep / "results_all.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    summary = (sweep / "summary.md").read_text()
    assert "4 jobs: 4 complete, 0 incomplete" in summary
    assert (sweep / "summary.csv").is_file() and (sweep / "solved.png").is_file()
    assert (sweep / "report.html").is_file()


# ---------------------------------------------------------------------------------------------------------------
# gpu_pool: GPU assignment, tested without GPUs


def test_slots_go_to_the_least_busy_gpu() -> None:
    slots = GpuSlots([3, 5], jobs_per_gpu=2)
    assert slots.capacity == 4
    assert [slots.acquire() for _ in range(3)] == [3, 5, 3]
    slots.release(3)
    assert slots.acquire() == 3  # tie (1 and 1): the GPU listed first
    assert slots.acquire() == 5  # 3 holds its 2 jobs
    with pytest.raises(RuntimeError):
        GpuSlots([0]).release(0)
    with pytest.raises(ValueError, match="twice"):
        GpuSlots([0, 0])


def test_acquire_blocks_until_a_gpu_is_free() -> None:
    slots = GpuSlots([0])
    slots.acquire()
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(slots.acquire()))
    waiter.start()
    time.sleep(0.2)
    assert got == []
    slots.release(0)
    waiter.join(timeout=5)
    assert got == [0]


@pytest.mark.parametrize(("gpus", "per_gpu"), [([0, 1], 1), ([0, 1, 2], 2), ([7], 1)])
def test_run_on_gpus_never_oversubscribes(gpus: list[int], per_gpu: int) -> None:
    lock = threading.Lock()
    running: dict[int, int] = dict.fromkeys(gpus, 0)
    peak = {"total": 0, "per_gpu": 0}

    def run_one(task: int, gpu: int) -> tuple[int, int]:
        with lock:
            running[gpu] += 1
            peak["total"] = max(peak["total"], sum(running.values()))
            peak["per_gpu"] = max(peak["per_gpu"], running[gpu])
        time.sleep(0.02)
        with lock:
            running[gpu] -= 1
        return task, gpu

    out = run_on_gpus(list(range(12)), GpuSlots(gpus, per_gpu), run_one)
    assert [t for t, _ in out] == list(range(12))
    assert {g for _, g in out} == set(gpus)
    assert peak["per_gpu"] <= per_gpu
    assert peak["total"] == len(gpus) * per_gpu


def test_visible_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus() == [2, 3]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1234")
    with pytest.raises(ValueError, match="indices"):
        visible_gpus()


TOY_APP = """
import json, os, time
from pathlib import Path
import hydra
from hydra.core.hydra_config import HydraConfig
from rtc_sweep.sweep.launch import register_launcher

@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg):
    start = time.time()
    time.sleep(0.5)
    out = Path(HydraConfig.get().runtime.output_dir)
    info = {"gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}
    (out / "gpu.json").write_text(json.dumps(info))
    return info["gpu"]

if __name__ == "__main__":
    register_launcher()
    main()
"""


def test_gpu_pool_launcher_gives_each_job_one_gpu(tmp_path: Path) -> None:
    (tmp_path / "toy.py").write_text(TOY_APP)
    sweep = tmp_path / "sweep"
    out = subprocess.run(
        [sys.executable, "toy.py", "-m", "hydra/launcher=gpu_pool", "hydra.launcher.gpus=[0,1]", "+x=1,2,3,4,5",
         f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    infos = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/gpu.json"))]
    assert len(infos) == 5
    assert {i["gpu"] for i in infos} == {"0", "1"}
    for gpu in ("0", "1"):
        spans = sorted((i["start"], i["end"]) for i in infos if i["gpu"] == gpu)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans)), spans
