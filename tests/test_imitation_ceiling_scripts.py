"""scripts/knn_policy.py and scripts/fit_error.py, the diagnostics of session 24 (the nearest recorded state played in
closed loop on the real env, and first-action errors of policies beside it), and session 25's first_action_probe.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "rtc_sweep" / "checkpoints" / "grasp_easy" / "small" / "policy.pkl"
OBS, ACT = 679, 6  # grasp_easy's observation and action sizes


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(ROOT / "scripts" / script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def rows(out: subprocess.CompletedProcess[str]) -> list[dict]:
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def recording(path: Path, episodes: int = 6, length: int = 10) -> None:
    """The same episode recorded ``episodes`` times: every state has an exact copy in the other episodes."""
    rng = np.random.default_rng(0)
    obs = np.tile(rng.normal(size=(length, OBS)), (episodes, 1))
    action = np.tile(np.tanh(rng.normal(size=(length, ACT))), (episodes, 1))
    done = np.tile(np.arange(length) == length - 1, episodes)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, obs=obs.astype(np.float16), action=action.astype(np.float32), done=done)


def test_fit_error_finds_the_exact_copy_and_measures_each_checkpoint(tmp_path):
    data = tmp_path / "data.npz"
    recording(data)
    out = rows(run("fit_error.py", str(data), "--model", "small", "--checkpoint", str(POLICY),
                   "--episodes", "2", "--states", "12"))  # fmt: skip
    assert len(out) == 2 and out[0]["states"] == out[1]["states"] == 12
    assert out[0]["mae"] == 0.0  # each held-out state's copy in another episode carries the same action
    assert out[1]["imitator"] == str(POLICY)
    assert 0.0 < out[1]["mae_mean"] < 2.0 and 0.0 < out[1]["mae_sample"] < 2.0
    assert out[1]["mae_mean"] != out[1]["mae_sample"]  # zero noise and unit noise give different first actions
    assert set(out[1]["mae_mean_by_tick"]) == {"0-7", "8-15"}  # episodes of 10 ticks


def test_knn_policy_plays_each_variant_on_the_real_env(tmp_path):
    run_dir = tmp_path / "plan"
    recording(run_dir / "data" / "worlds_l_grasp_easy.npz")
    config = {"run_dir": str(run_dir), "level": "grasp_easy", "segments": 2, "segment_ticks": 4, "unknown": 1}
    (run_dir / "config.json").write_text(json.dumps(config))
    out = rows(run("knn_policy.py", str(run_dir), "--envs", "4", "--k", "1", "3", "--tick-weights", "0", "1"))
    assert [(r["k"], r["tick_weight"]) for r in out] == [(1, 0.0), (3, 0.0), (1, 1.0), (3, 1.0)]
    # a flow policy playing some ticks, and noise on every action: one row per (noise, window)
    out += rows(run("knn_policy.py", str(run_dir), "--envs", "4", "--k", "1", "--noise", "0", "0.1", "--model", "small",
                    "--checkpoint", str(POLICY), "--policy-ticks", "0", "4", "--policy-ticks", "4", "8"))  # fmt: skip
    assert [(r["noise"], r["policy_ticks"]) for r in out[4:]] == [(0.0, [0, 4]), (0.0, [4, 8]), (0.1, [0, 4]),
                                                                  (0.1, [4, 8])]  # fmt: skip
    for r in out:
        assert r["table"] == 60 and 0.0 <= r["solved"] <= 1.0
        assert 0.0 <= r["mean_length"] <= 8.0  # first episodes that ended within the plan's 2 x 4 ticks (0: not)


def test_the_scripts_refuse_a_missing_input_naming_it(tmp_path):
    out = run("knn_policy.py", str(tmp_path))
    assert out.returncode == 2 and "run_dir:" in out.stderr and "data/*.npz" in out.stderr
    recording(tmp_path / "data" / "worlds_l_grasp_easy.npz")
    (tmp_path / "config.json").write_text(json.dumps({"run_dir": str(tmp_path), "level": "grasp_easy"}))
    out = run("knn_policy.py", str(tmp_path), "--checkpoint", str(POLICY))
    assert out.returncode == 2 and "--checkpoint and --policy-ticks: give both or neither" in out.stderr
    out = run("fit_error.py", str(tmp_path / "none.npz"))
    assert out.returncode == 2 and "recording:" in out.stderr and "not found" in out.stderr


def test_first_action_probe_fits_and_reports_by_tick(tmp_path):
    data = tmp_path / "data.npz"
    recording(data, episodes=8, length=12)
    out = rows(run("first_action_probe.py", str(data), "--steps", "301", "--width", "32", "--episodes", "2",
                   "--gain", "10", "--init-divide", "10", "--linear-ticks", "0", "3"))  # fmt: skip
    linear, out = out[:2], out[2:]
    assert [(r["tick"], r["fit_states"], r["held_states"]) for r in linear] == [(0, 6, 2), (3, 6, 2)]
    assert all(r["linear_mae"] < 1e-6 for r in linear)  # every held-out state has its copy among the fitted ones
    assert [r["step"] for r in out] == [0, 300]
    assert set(out[-1]["held_mae_by_tick"]) == {"0-7", "8-15"}  # episodes of 12 ticks
    # the held-out episodes are copies of the trained ones: the fit's error falls
    assert out[-1]["held_mae"] < 0.5 * out[0]["held_mae"]
    # the flow-matching objective (two (t, noise) draws per state): its first action from 5 Euler steps, fitted too
    flow = rows(run("first_action_probe.py", str(data), "--steps", "301", "--width", "32", "--episodes", "2",
                    "--objective", "flow", "--draws", "2"))  # fmt: skip
    assert [r["step"] for r in flow] == [0, 300] and flow[-1]["held_mae"] < 0.7 * flow[0]["held_mae"]
    # whole 4-action chunks, positions weighted 0.5**i, flow times only at the Euler steps': the first action fitted
    chunk = rows(run("first_action_probe.py", str(data), "--steps", "301", "--width", "32", "--episodes", "2",
                     "--objective", "flow", "--horizon", "4", "--position-decay", "0.5", "--time", "grid"))  # fmt: skip
    assert [r["step"] for r in chunk] == [0, 300] and chunk[-1]["held_mae"] < 0.7 * chunk[0]["held_mae"]
    bad = run("first_action_probe.py", str(data), "--gain", "0")
    assert bad.returncode == 2 and "--gain" in bad.stderr
    bad = run("first_action_probe.py", str(data), "--horizon", "0")
    assert bad.returncode == 2 and "--horizon" in bad.stderr
