"""A real SLURM sweep through hydra-submitit: run scripts/local_slurm.sh (as root) first, then `pytest -m slurm`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rtc_sweep.report.results import RESULTS_FILE, complete_results

pytestmark = pytest.mark.slurm

TINY = ["+experiment=smoke", "num_evals=4", "max_timesteps=16"]


def slurm_unavailable() -> str | None:
    """Why no SLURM job can run here, or None when a node takes jobs."""
    if shutil.which("sinfo") is None:
        return "no SLURM here (sinfo not found): start a local one with `sudo scripts/local_slurm.sh`"
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        return f"sinfo failed ({out.stderr.strip()}): is slurmctld running? see scripts/local_slurm.sh"
    if not any(s.startswith(("idle", "mixed")) for s in out.stdout.split()):
        return f"no SLURM node is idle or mixed (states: {out.stdout.split()})"
    return None


def test_two_job_sweep_through_submitit_slurm(tmp_path: Path) -> None:
    reason = slurm_unavailable()
    if reason:
        pytest.skip(reason)
    # The sweep folder must be visible from the compute nodes: on a real cluster, point this at a shared disk.
    base = Path(os.environ.get("RTC_SWEEP_SLURM_DIR", tmp_path))
    sweep = base / f"slurm_sweep_{os.getpid()}"
    partition = os.environ.get("RTC_SWEEP_SLURM_PARTITION")
    cmd = [
        sys.executable, "-m", "rtc_sweep", "-m", "hydra/launcher=slurm",
        # A local SLURM has no GPUs to hand out and two small cores.
        "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=4",
        "hydra.launcher.timeout_min=30", *([f"hydra.launcher.partition={partition}"] if partition else []),
        *TINY, "seed=0,1", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-5000:]

    jobs = sorted(p.parent for p in sweep.glob("*/.hydra"))
    assert [p.name for p in jobs] == ["max_timesteps=16,num_evals=4,seed=0", "max_timesteps=16,num_evals=4,seed=1"]
    for job in jobs:
        rows = complete_results(job / RESULTS_FILE)
        assert rows is not None, job
        assert rows[0]["seed"] == job.name[-1]
    assert any((sweep / ".submitit").rglob("*_log.out")), "submitit wrote no SLURM logs"
    assert "2 jobs: 2 complete, 0 incomplete" in (sweep / "summary.md").read_text()
