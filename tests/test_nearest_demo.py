"""scripts/nearest_demo.py, the diagnostic of session 17: the nearest recorded state's tick and label."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "nearest_demo.py"
_spec = importlib.util.spec_from_file_location("nearest_demo", SCRIPT)
assert _spec is not None and _spec.loader is not None
nearest_demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nearest_demo)


def recording(episodes: int, length: int, seed: int, tick_shift: int = 0) -> dict[str, np.ndarray]:
    """Episodes whose observation names the tick (dimension 1, and a jittered wave of it in dimension 2) and whose
    label is a function of the tick; dimension 0 is constant. ``tick_shift``: the rows' ticks (and labels) are
    that far ahead of what their observations say, as for a learner that runs late."""
    rng = np.random.default_rng(seed)
    tick = np.tile(np.arange(length), episodes)
    obs = np.zeros((tick.size, 3), np.float16)
    obs[:, 0] = 1.0
    obs[:, 1] = tick
    obs[:, 2] = np.sin(tick / 2.0) + rng.normal(0.0, 0.01, tick.size)
    label_tick = tick + tick_shift
    action = np.stack([np.sin(label_tick / 3.0), np.cos(label_tick / 5.0)], 1).astype(np.float32)
    done = np.zeros(tick.size, bool)
    done[length - 1 :: length] = True
    return {"obs": obs, "action": action, "done": done, "tick": label_tick.astype(np.int32)}


def test_on_the_demonstrations_the_nearest_state_has_the_same_tick_and_label():
    demos = recording(60, 20, seed=0)
    rows = nearest_demo.compare(demos, recording(10, 20, seed=1), holdout=10, samples=150, seed=0)
    assert [r["states"] for r in rows] == ["held-out demonstrations", "queries"]
    for r in rows:
        assert r["varying_dims"] == 2  # the constant dimension is left out
        assert r["same_tick"] > 0.95 and r["label_mae"] < 0.02


def test_a_learner_running_late_is_seen_at_the_wrong_tick_with_other_labels():
    demos = recording(60, 20, seed=0)
    base, late = nearest_demo.compare(demos, recording(10, 20, seed=1, tick_shift=3), holdout=10, samples=150, seed=0)
    assert base["same_tick"] > 0.95
    assert late["within_one_tick"] < 0.05
    assert late["label_mae"] > 10 * base["label_mae"]


def test_the_ticks_of_a_recording_restart_after_each_done():
    done = np.array([False, False, True, False, True, False])
    assert nearest_demo.episode_ticks(done).tolist() == [0, 1, 2, 0, 1, 0]


def test_the_command_prints_the_table_and_refuses_a_file_without_labels(tmp_path):
    demos, queries, bad = tmp_path / "demos.npz", tmp_path / "queries.npz", tmp_path / "bad.npz"
    np.savez(demos, **{k: v for k, v in recording(30, 20, seed=0).items() if k != "tick"})
    np.savez(queries, **recording(5, 20, seed=1))
    np.savez(bad, obs=np.zeros((4, 2), np.float16), tick=np.zeros(4, np.int32))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)

    ok = run("--demos", str(demos), "--queries", str(queries), "--holdout", "5", "--samples", "50")
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0] == "| states | n | same tick | within one tick | label MAE |"
    assert lines[2].startswith("| held-out demonstrations | 50 |") and lines[3].startswith("| queries | 50 |")
    refused = run("--demos", str(demos), "--queries", str(bad))
    assert refused.returncode == 2 and "--queries" in refused.stderr and "action" in refused.stderr
    absent = run("--demos", str(tmp_path / "none.npz"), "--queries", str(queries))
    assert absent.returncode == 2 and "--demos" in absent.stderr
