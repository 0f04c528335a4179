"""task=relabel (DAgger with a feedback plan as the expert) on tiny shapes and the real Kinetix env: the labels are
the controller's actions at the learner's states, the layout, resuming, a fit that lowers the loss."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from rtc_sweep.core import kinetix_env as ke
from rtc_sweep.core.checkpoint import save_policy
from rtc_sweep.core.policy import MODEL_PRESETS, init_params
from rtc_sweep.train.flow_bc import OptimConfig
from rtc_sweep.train.plan import action_dims
from rtc_sweep.train.relabel import Expert, RelabelConfig, label, load_expert, run_relabel

SMALL = MODEL_PRESETS["small"]
LEVEL = "grasp_easy"
D = 679  # the large levels' symbolic observation


def test_label_takes_each_first_episode_up_to_its_done_or_the_plan_end():
    rng = np.random.default_rng(0)
    plan = rng.uniform(-1, 1, (3, 2)).astype(np.float32)  # 3 segments of 2 ticks: T = 6
    gains = rng.normal(size=(1, 2)).astype(np.float32)
    direction = np.array([[1.0, 0.0, 0.0]], np.float32)
    expert = Expert(plan, 2, gains, np.zeros((6, 3), np.float32), direction, np.array([0.5], np.float32))
    T, E = 8, 3
    obs = rng.normal(size=(T, E, 3)).astype(np.float16)
    done = np.zeros((T, E), bool)
    done[2, 0] = done[5, 0] = True  # env 0: first episode ticks 0..2
    done[7, 1] = True  # env 1: runs past the plan's 6 ticks: cut at tick 5
    #                    env 2: never done: cut at tick 5 too
    data = label(expert, obs, done, num_ticks=T)
    assert data["tick"].tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]
    assert np.flatnonzero(data["done"]).tolist() == [2, 8, 14]
    o = obs.astype(np.float32)[1, 2]  # env 2 at tick 1
    want = np.clip(plan[0] + np.tanh((o[0] / 0.5) * gains[0]), -1, 1)
    np.testing.assert_allclose(data["action"][10], want, rtol=1e-5, atol=1e-6)
    open_loop = expert._replace(gains=np.zeros((0, 2), np.float32))
    np.testing.assert_array_equal(label(open_loop, obs, done, T)["action"][10], plan[0])


def _expert_dir(path: Path) -> Path:
    """A finished feedback task=plan folder: plan, gains, basis and demonstrations of a learnable obs -> action map."""
    rng = np.random.default_rng(0)
    (path / "data").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"segment_ticks": 4, "feedback_dims": 2}))
    mean = np.zeros((2, 6), np.float32)
    mean[:, :4] = rng.uniform(-0.5, 0.5, (2, 4))
    np.savez(path / "state.npz", mean=mean, std=np.ones_like(mean), generation=np.int64(1),
             gain_mean=rng.normal(size=(2, 6)).astype(np.float32), gain_std=np.ones((2, 6), np.float32))  # fmt: skip
    directions = np.linalg.qr(rng.normal(size=(D, 2)))[0].T.astype(np.float32)
    np.savez(path / "basis.npz", obs_bar=np.zeros((8, D), np.float32), directions=directions,
             spread=np.ones(2, np.float32))  # fmt: skip
    n = 1024
    obs = rng.normal(size=(n, D)).astype(np.float32)
    done = np.zeros(n, bool)
    done[63::64] = True
    np.savez(path / "data" / f"worlds_l_{LEVEL}.npz", obs=obs.astype(np.float16), action=np.tanh(obs[:, :6]),
             done=done, solved=done, return_=done.astype(np.float32), length=np.ones(n, np.int32))  # fmt: skip
    return path


def test_relabel_writes_its_layout_labels_the_learners_states_and_resumes(tmp_path):
    expert_dir = _expert_dir(tmp_path / "plan")
    level = ke.load_level(LEVEL)
    policy = tmp_path / "bc.pkl"
    save_policy(policy, init_params(jax.random.key(0), D, 6, SMALL))
    cfg = RelabelConfig(run_dir=str(tmp_path / "run"), expert_dir=str(expert_dir), init_checkpoint=str(policy),
                        level=LEVEL, optim=OptimConfig(batch_size=64, warmup_steps=1, learning_rate=1e-3),
                        num_iterations=2, rollout_envs=4, eval_envs=4, num_ticks=8, fit_block=16,
                        epochs_per_iteration=1.0)  # fmt: skip
    best = run_relabel(cfg, progress=False)
    run = tmp_path / "run"
    assert json.loads((run / "best.json").read_text()) == best
    stats = [json.loads((run / str(i) / "stats.json").read_text()) for i in (0, 1, 2)]
    for i in (0, 1, 2):
        assert (run / str(i) / "policies" / f"worlds_l_{LEVEL}.pkl").is_file()
    with np.load(run / "1" / "data" / f"worlds_l_{LEVEL}.npz") as f:
        data = {k: f[k] for k in f.files}
    # Four first episodes (one per environment), each cut at its done or at the plan's 8 ticks, labelled by the
    # controller at the learner's own observations.
    assert int(data["done"].sum()) == 4 and data["tick"].max() <= 7 and (data["tick"][1:][data["done"][:-1]] == 0).all()
    used = action_dims(level, 6)
    expert = load_expert(expert_dir)
    expert = expert._replace(plan=expert.plan * used, gains=expert.gains * used)
    np.testing.assert_allclose(data["action"], expert.actions(data["obs"], data["tick"]), atol=1e-6)
    assert not data["action"][:, ~used].any()
    assert stats[1]["collect"]["aggregate_transitions"] == 1024 + len(data["done"])
    assert stats[1]["collect"]["label_ticks"] == 8  # the demos' median episode (64 ticks), capped at num_ticks
    assert stats[2]["fit"]["loss_last"] < stats[1]["fit"]["loss_first"]  # the fit learns
    assert stats[2]["fit"]["grad_steps"] == stats[1]["fit"]["grad_steps"] + stats[2]["fit"]["grad_steps_this_iteration"]
    run_relabel(RelabelConfig(**{**cfg.__dict__, "num_iterations": 3}), progress=False)  # resumes after iteration 2
    assert json.loads((run / "1" / "stats.json").read_text()) == stats[1]
    assert json.loads((run / "3" / "stats.json").read_text())["iteration"] == 3
    with pytest.raises(FileNotFoundError, match=r"task\.expert_dir"):
        run_relabel(RelabelConfig(**{**cfg.__dict__, "expert_dir": str(tmp_path / "none")}), progress=False)
