"""task=plan (the cross-entropy search, open-loop and with feedback) and task=mix, on the real env (tiny shapes)."""

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from rtc_sweep.train.plan import PlanConfig, _no_feedback, _programs, action_dims, run_plan


def test_plan_search_writes_its_layout_and_resumes(tmp_path, caplog):
    import jax
    import jax.numpy as jnp

    from rtc_sweep.core import kinetix_env as ke

    used = action_dims(ke.load_level("grasp_easy"), 6)
    assert used.tolist() == [True, True, True, True, False, False]  # four motor bindings, no thrusters
    cfg = PlanConfig(run_dir=str(tmp_path / "plan"), population=4, elite=2, generations=2, segments=2,
                     segment_ticks=4, eval_envs=4, demo_envs=4, init_mean_std=0.5)  # fmt: skip
    stats = run_plan(cfg, progress=False)
    run = tmp_path / "plan"
    history = json.loads((run / "cem.json").read_text())
    assert [h["generation"] for h in history] == [0, 1]
    assert all(np.isfinite(h["elite_closest"]) and h["elite_closest"] > 0 for h in history)
    plan = np.load(run / "plan.npy")
    assert plan.shape == (8, 6) and np.abs(plan).max() <= 1.0 and not plan[:, ~used].any()
    assert (plan[:4] == plan[0]).all()  # piecewise constant over segment_ticks
    assert stats["plan"]["episodes"] == 4 and 0.0 <= stats["plan"]["returned_episode_solved"] <= 1.0
    with np.load(run / "data" / "worlds_l_grasp_easy.npz") as data:
        assert set(data.files) == {"obs", "action", "done", "solved", "return_", "length"}
    with caplog.at_level(logging.INFO, logger="rtc_sweep.train.io"):
        run_plan(dataclasses.replace(cfg, generations=3), progress=False)  # resumes after generation 1
    resumed = json.loads((run / "cem.json").read_text())
    assert resumed[:2] == history and resumed[2]["generation"] == 2
    record = json.loads((run / "config.json").read_text())
    assert record["generations"] == 3  # the settings the state came from
    # A longer search is what a resume is for: recorded, said at INFO, not warned about.
    assert record["resumed_with_changes"] == [{"generation": 2, "generations": [2, 3]}]
    assert "generations: 2 -> 3" in caplog.text and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rtc_sweep.train.io"):
        run_plan(dataclasses.replace(cfg, generations=4, smoothing=0.5), progress=False)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "smoothing: 0.7 -> 0.5" in warned[0] and "generations: 3 -> 4" in warned[0]
    record = json.loads((run / "config.json").read_text())
    assert record["resumed_with_changes"][1] == {"generation": 3, "generations": [3, 4], "smoothing": [0.7, 0.5]}

    # Feedback: the open-loop plan continued as a controller that reacts to the state (closed-loop demonstrations).
    fb = dataclasses.replace(cfg, run_dir=str(tmp_path / "feedback"), feedback_dims=3, init_plan=str(run),
                             basis_envs=4, feedback_std=0.5)  # fmt: skip
    stats = run_plan(fb, progress=False)
    with np.load(tmp_path / "feedback" / "basis.npz") as basis:
        assert basis["obs_bar"].shape[0] == 8 and basis["directions"].shape[0] == 3 and (basis["spread"] > 0).all()
        norms = np.linalg.norm(basis["directions"], axis=1)
        assert np.allclose(norms[norms > 0], 1.0, atol=1e-4)  # principal directions (zero rows: none observed)
    gains = np.load(tmp_path / "feedback" / "gains.npy")
    assert gains.shape == (3, 6) and np.abs(gains).sum() > 0 and not gains[:, ~used].any()
    assert stats["feedback_dims"] == 3 and stats["demonstrations"]["environments"] == 4
    with np.load(tmp_path / "feedback" / "data" / "worlds_l_grasp_easy.npz") as data:
        assert set(data.files) == {"obs", "action", "done", "solved", "return_", "length"}
    # A gentler controller from the same search: measured and recorded with its gains scaled, the search untouched.
    state = (tmp_path / "feedback" / "state.npz").read_bytes()
    with caplog.at_level(logging.INFO, logger="rtc_sweep.train.io"):
        caplog.clear()
        half = run_plan(dataclasses.replace(fb, gain_scale=0.5), progress=False)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # an expected change, said at INFO
    assert np.allclose(np.load(tmp_path / "feedback" / "gains.npy"), 0.5 * gains)
    assert half["gain_scale"] == 0.5 and stats["gain_scale"] == 1.0
    assert (tmp_path / "feedback" / "state.npz").read_bytes() == state
    # The same recording at full precision (task.obs_dtype): what float16 keeps of it is the float16 recording.
    with np.load(tmp_path / "feedback" / "data" / "worlds_l_grasp_easy.npz") as data:
        half_obs, half_action = data["obs"], data["action"]
    run_plan(dataclasses.replace(fb, gain_scale=0.5, obs_dtype="float32"), progress=False)
    with np.load(tmp_path / "feedback" / "data" / "worlds_l_grasp_easy.npz") as data:
        assert data["obs"].dtype == np.float32 and half_obs.dtype == np.float16
        assert (data["obs"].astype(np.float16) == half_obs).all() and (data["action"] == half_action).all()
    # (These tiny searches solve nothing, so the files above may hold no episode: the recorder itself keeps full
    # precision, which float16 would have rounded.)
    record = _programs(cfg)[3]
    gains, basis = _no_feedback(4, 0, 6, 8, half_obs.shape[1])
    tr = record(jnp.zeros((4, 2, 6)), gains, jax.random.split(jax.random.key(0), 4), basis)
    assert tr.obs.dtype == jnp.float32 and (tr.obs != tr.obs.astype(jnp.float16)).any()
    with pytest.raises(FileNotFoundError, match=r"task\.init_plan"):
        run_plan(dataclasses.replace(fb, run_dir=str(tmp_path / "f2"), init_plan=str(tmp_path / "none")))


def _fake_plan_run(run: Path, plan: np.ndarray, solved: float, lengths: list[int], obs_value: float) -> None:
    """A finished task=plan folder by hand: plan.npy, stats.json and demonstrations of the given episode lengths."""
    (run / "data").mkdir(parents=True)
    np.save(run / "plan.npy", plan.astype(np.float32))
    (run / "stats.json").write_text(json.dumps({"plan": {"returned_episode_solved": solved}}))
    n = sum(lengths)
    done = np.zeros(n, bool)
    done[np.cumsum(lengths) - 1] = True
    obs = np.full((n, 3), obs_value, np.float16)
    np.savez(run / "data" / "worlds_l_grasp_easy.npz", obs=obs, action=np.zeros((n, 6), np.float32), done=done,
             solved=done, return_=done.astype(np.float32), length=np.ones(n, np.int32))  # fmt: skip


def test_mix_keeps_distinct_solving_plans_and_balances_episodes(tmp_path):
    from rtc_sweep.train.modes import MixConfig, run_mix, split_episodes

    T = 8
    a = np.zeros((T, 6))
    b = np.zeros((T, 6))
    b[:, :4] = 0.8  # far from a on the used (motor) dimensions
    near_a = a.copy()
    near_a[:, 0] = 0.1  # RMS distance 0.05 over 4 used dims: the same mode as a
    off_dims = a.copy()
    off_dims[:, 4:] = 1.0  # differs only on dimensions grasp_easy does not use: the same mode
    _fake_plan_run(tmp_path / "plan_s0", a, 0.99, [3, 4, 5], 0.0)
    _fake_plan_run(tmp_path / "plan_s1", b, 0.95, [2, 2], 1.0)
    _fake_plan_run(tmp_path / "plan_s2", near_a, 0.97, [4], 0.0)
    _fake_plan_run(tmp_path / "plan_s3", off_dims, 0.90, [4], 0.0)
    _fake_plan_run(tmp_path / "plan_s4", -b, 0.50, [4], 0.0)  # distinct but does not solve
    cfg = MixConfig(run_dir=str(tmp_path / "mix"), plans=str(tmp_path / "plan_s*"), min_solved=0.8, min_distance=0.25)
    report = run_mix(cfg)
    assert [Path(r).name for r in report["kept"]] == ["plan_s0", "plan_s1"]
    why = {Path(c["run"]).name: c["decision"] for c in report["candidates"]}
    assert why["plan_s2"].startswith("same mode") and why["plan_s3"].startswith("same mode")
    assert "min_solved" in why["plan_s4"]
    assert report["kept_plan_distance"][0][1] == pytest.approx(0.8)
    assert report["kept_obs_distance"][0][1] > 0  # the modes' states differ too
    with np.load(tmp_path / "mix" / "data" / "worlds_l_grasp_easy.npz") as f:
        merged = {k: f[k] for k in f.files}
    eps = split_episodes(merged)
    assert report["episodes_per_mode"] == 2 and len(eps) == 4  # two episodes from each kept mode
    assert [s.stop - s.start for s in eps] == [3, 4, 2, 2]
    assert json.loads((tmp_path / "mix" / "modes.json").read_text())["transitions"] == 11
    with pytest.raises(FileNotFoundError, match=r"task.plans"):
        run_mix(MixConfig(run_dir=str(tmp_path / "m2"), plans=str(tmp_path / "nothing*")))


def test_the_nominal_observation_holds_after_the_basis_episodes_end():
    """A controller that keeps an episode alive past the nominal's end (balancing) is corrected around the last
    observed mean state, not around zeros; while episodes live, obs_bar is their mean."""
    import types

    import jax

    from rtc_sweep.train.plan import _basis

    T, E, D = 6, 2, 3
    obs = np.arange(T * E * D, dtype=np.float32).reshape(T, E, D)
    done = np.zeros((T, E), bool)
    done[1, 0] = True  # environment 0's first episode ends at tick 1, environment 1's at tick 2
    done[2, 1] = True

    def record(*_: object) -> types.SimpleNamespace:
        return types.SimpleNamespace(obs=obs, done=done)

    cfg = PlanConfig(run_dir="unused", segments=3, segment_ticks=2, feedback_dims=2, basis_envs=E)
    basis = _basis(cfg, record, np.zeros((3, 6), np.float32), jax.random.key(0), D)
    bar = basis["obs_bar"]
    assert np.allclose(bar[0], obs[0].mean(0)) and np.allclose(bar[1], obs[1].mean(0))
    assert np.allclose(bar[2], obs[2, 1])  # only environment 1 is still in its first episode
    assert np.allclose(bar[3:], obs[2, 1])  # no episode alive: the last mean holds


def test_the_survival_term_ranks_unsolved_episodes_by_how_long_they_last():
    from rtc_sweep.train.plan import _score

    cfg = PlanConfig(run_dir="unused", segments=4, segment_ticks=8, survival_weight=1.0)  # T = 32
    solved, near = np.array([0.0, 0.0, 1.0]), np.array([1.0, 1.0, 1.0])
    length = np.array([10.0, 0.0, 20.0])  # the second never ended: length 0, lasted T
    lasted = np.array([10.0, 32.0, 20.0])
    score = _score(cfg, solved, length, near, lasted)
    assert score[1] - score[0] == pytest.approx(22 / 32)  # lasting longer is better when unsolved
    assert score[2] > score[1]  # solving still beats any survival
    off = _score(PlanConfig(run_dir="unused", segments=4, segment_ticks=8), solved, length, near, lasted)
    assert off[0] == off[1]  # 0 by default: the open-loop searches score as before
