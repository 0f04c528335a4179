"""scripts/flow_noise_scale.py, the diagnostic of session 15: one row per flow-noise scale, on the real env."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "flow_noise_scale.py"
POLICY = ROOT / "rtc_sweep" / "checkpoints" / "grasp_easy" / "small" / "policy.pkl"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900)


def test_each_scale_gives_one_row_from_the_same_compiled_job():
    out = run("--level", "grasp_easy", "--model", "small", "--checkpoint", str(POLICY),
              "--envs", "8", "--ticks", "16", "--scales", "1", "0")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [r["noise_scale"] for r in rows] == [1.0, 0.0]
    for r in rows:
        assert 0.0 <= r["solved"] <= 1.0
        assert 1.0 <= r["mean_length"] <= 16.0  # first episodes, cut at the 16 ticks asked for


def test_an_unknown_model_is_refused_naming_the_option_and_the_presets():
    out = run("--level", "grasp_easy", "--model", "huge", "--checkpoint", str(POLICY))
    assert out.returncode == 2
    assert "--model: 'huge' is not one of" in out.stderr and "small" in out.stderr
