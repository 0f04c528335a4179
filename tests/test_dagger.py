"""task=dagger on tiny shapes and the real Kinetix env: its layout, resuming, re-plans that start from the stored
states, and a fit that lowers the loss."""

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from rtc_sweep.core import kinetix_env as ke
from rtc_sweep.core.checkpoint import load_policy, save_policy
from rtc_sweep.core.policy import MODEL_PRESETS, init_params
from rtc_sweep.errors import ConfigError
from rtc_sweep.train import config as train_config
from rtc_sweep.train.dagger import (
    DaggerConfig,
    Snapshots,
    programs,
    record,
    run_dagger,
    select_states,
    tick_weights,
    warm_start,
)
from rtc_sweep.train.flow_bc import OptimConfig
from rtc_sweep.train.plan import PlanConfig

CONF = Path(__file__).resolve().parents[1] / "rtc_sweep" / "train" / "conf"
SMALL = MODEL_PRESETS["small"]
LEVEL = "grasp_easy"


def _plan_dir(path: Path) -> Path:
    """A task=plan folder: a plan of the level and demonstrations (a learnable obs -> action map: the fit's loss
    must fall)."""
    rng = np.random.default_rng(0)
    (path / "data").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(dataclasses.asdict(PlanConfig(run_dir=str(path), level=LEVEL))))
    plan = np.zeros((16, 6), np.float32)
    plan[:, :4] = rng.uniform(-0.5, 0.5, (16, 4))
    np.save(path / "plan.npy", plan)
    n = 2048
    obs = rng.normal(size=(n, 679)).astype(np.float32)
    done = np.zeros(n, bool)
    done[63::64] = True
    np.savez(path / "data" / f"worlds_l_{LEVEL}.npz", obs=obs.astype(np.float16), action=np.tanh(obs[:, :6]),
             done=done, solved=done, return_=done.astype(np.float32), length=np.ones(n, np.int32))  # fmt: skip
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("dagger")
    plan_dir = _plan_dir(root / "plan")
    policy = root / "bc.pkl"
    level = ke.load_level(LEVEL)
    obs_dim = ke.make_env(level.static_params).obs_dim(level.params)
    save_policy(policy, init_params(jax.random.key(0), obs_dim, 6, SMALL))
    cfg = DaggerConfig(
        run_dir=str(root / "run"),
        plan_dir=str(plan_dir),
        init_checkpoint=str(policy),
        level=LEVEL,
        model=SMALL,
        optim=OptimConfig(batch_size=64, warmup_steps=1, learning_rate=1e-3),
        num_iterations=1,
        rollout_envs=4,
        replan_every=4,  # states at ticks 4, 8, 12: the demos' median length (64) capped at num_ticks - 1
        num_states=2,
        replan_ticks=8,
        segment_ticks=4,
        population=4,
        noise_seeds=1,
        elite=2,
        generations=2,
        record_draws=2,
        epochs_per_iteration=1.0,
        eval_envs=4,
        num_ticks=16,
    )
    best = run_dagger(cfg, progress=False)
    return cfg, best


def test_dagger_writes_its_layout_and_the_fit_lowers_the_loss(tiny):
    cfg, best = tiny
    run = Path(cfg.run_dir)
    policy = f"worlds_l_{LEVEL}.pkl"
    for path in ("config.json", "best.json", "state.pkl", f"0/policies/{policy}", "0/stats.json",
                 f"1/policies/{policy}", "1/stats.json", "1/replans.npz", f"1/data/worlds_l_{LEVEL}.npz"):  # fmt: skip
        assert (run / path).is_file(), path
    assert json.loads((run / "best.json").read_text()) == best
    assert set(best) == {"iteration", "returned_episode_solved", "policy"} and (run / best["policy"]).is_file()
    stats = json.loads((run / "1" / "stats.json").read_text())
    assert stats["replan"]["states"] == 2 and len(stats["replan"]["generations"]) == 2
    assert 0.0 <= stats["replan"]["replan_solved"] <= 1.0 and 0.0 <= stats["eval"]["returned_episode_solved"] <= 1.0
    assert set(stats["wall_s"]) == {"collect", "replan", "record", "fit", "eval", "total"}
    assert stats["data"]["aggregate_transitions"] == 2048 + stats["data"]["recovery_transitions"]
    assert stats["fit"]["grad_steps_this_iteration"] == 32  # one pass over 2048 transitions in batches of 64
    assert stats["fit"]["loss_last"] < 0.8 * stats["fit"]["loss_first"]
    with np.load(run / "1" / "data" / f"worlds_l_{LEVEL}.npz") as data:
        assert set(data.files) == {"obs", "action", "done", "solved", "return_", "length"}
        assert data["obs"].dtype == np.float16
        if data["done"].size:  # solved recoveries only, each ending on its done row
            assert data["done"][-1] and data["solved"][data["done"]].all()
    with np.load(run / "1" / "replans.npz") as rp:
        assert rp["plan"].shape == (2, 2, 6) and set(rp["tick"]) <= {4, 8, 12}
    assert stats["collect"]["max_state_tick"] == 15
    load_policy(run / "1" / "policies" / policy, SMALL)


def test_dagger_resumes_after_its_last_iteration(tiny):
    cfg, _ = tiny
    run = Path(cfg.run_dir)
    first = (run / "1" / "stats.json").read_text()
    run_dagger(dataclasses.replace(cfg, num_iterations=2), progress=False)
    assert (run / "1" / "stats.json").read_text() == first  # continued, not restarted
    second = json.loads((run / "2" / "stats.json").read_text())
    assert second["fit"]["grad_steps"] == 32 + second["fit"]["grad_steps_this_iteration"]
    assert second["data"]["aggregate_transitions"] >= json.loads(first)["data"]["aggregate_transitions"]
    record = json.loads((run / "config.json").read_text())
    assert record["num_iterations"] == 2 and record["resumed_with_changes"] == [
        {"iteration": 2, "num_iterations": [1, 2]}
    ]


def test_a_replan_is_played_from_the_stored_state(tiny):
    cfg, _ = tiny
    progs = programs(dataclasses.replace(cfg, max_state_tick=15))  # the run's own compiled programs
    params = load_policy(Path(cfg.run_dir) / "0" / "policies" / f"worlds_l_{LEVEL}.pkl", SMALL)
    snaps = progs.collect(params, 3)
    sel = select_states(snaps, 2, np.random.default_rng(0))
    states = jax.tree.map(lambda x: np.asarray(x)[sel["block"], sel["env"]], snaps.state)
    assert (sel["tick"] > 0).all()
    np.testing.assert_array_equal(np.asarray(states.timestep), sel["tick"])  # mid-episode states, clock included
    plans = np.zeros((2, cfg.replan_ticks // cfg.segment_ticks, 6), np.float32)
    rec = record(cfg, progs, jax.tree.map(jax.numpy.asarray, states), sel["tick"], plans, plans + 0.5, sel["valid"],
                 jax.random.key(4))  # fmt: skip
    tr = rec.transitions
    first_obs = np.asarray(tr.obs[0]).reshape(2, 2 * cfg.record_draws, -1)  # [state, (plan, draw), O]
    for s in range(2):
        for j in range(2 * cfg.record_draws):
            np.testing.assert_array_equal(first_obs[s, j], sel["obs"][s])
    np.testing.assert_array_equal(np.asarray(tr.action[0]).reshape(2, 2, -1, 6)[:, 1], 0.5)  # the second plan
    reset_obs = np.asarray(ke.make_env(progs.level.static_params).reset(progs.level)[0]).astype(np.float16)
    assert not np.array_equal(sel["obs"][0], reset_obs)  # not the level's reset state
    # The recorded lengths continue the episode's clock from the state's tick.
    np.testing.assert_array_equal(np.asarray(tr.length[0]).reshape(2, -1)[:, 0], sel["tick"] + 1)
    assert rec.solved.shape == (2, 2) and rec.chosen.shape == (2,)


def test_states_are_drawn_where_replans_have_solved():
    zero = np.array([0.0])
    replans = [{"tick": np.array([8, 8, 40]), "best_solved": np.array([0.5, 0.0, 0.0])},
               {"tick": np.array([40]), "replan_solved": zero, "nominal_solved": zero}]  # fmt: skip
    assert tick_weights(replans) == {8: 2 / 4, 40: 1 / 4}
    E = 400  # snapshots at ticks 8 and 40 of E failed episodes and of one solved one
    live = np.ones((2, E + 1), bool)
    tick = np.array([[8] * (E + 1), [40] * (E + 1)])
    snaps = Snapshots(None, np.zeros((2, E + 1, 1), np.float16), live, tick, np.arange(E + 1) == E)
    sel = select_states(snaps, 200, np.random.default_rng(0), {8: 0.5, 40: 0.05})
    assert sel["failed"].all() and sel["valid"].all()
    assert (sel["tick"] == 8).mean() > 0.85  # weighted 10:1 towards tick 8
    few = select_states(snaps, 2 * (E + 1) + 3, np.random.default_rng(0))
    assert few["valid"].sum() == 2 * (E + 1) and not few["failed"][2 * E : 2 * E + 2].any()  # solved ones last


def test_warm_start_is_the_plans_remainder_per_segment():
    plan = np.arange(12, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    ws = warm_start(plan, np.array([4, 10]), horizon=4, segment_ticks=2)
    np.testing.assert_array_equal(ws[0, :, 0], [4.5, 6.5])
    np.testing.assert_array_equal(ws[1, :, 0], [10.5, 0.0])  # zeros after the plan's end


def test_dagger_config_composes_and_checks():
    train_config.register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["task=dagger", "level=catapult", "task.init_checkpoint=x.pkl",
                                           "task.plan_dir=runs/p"])  # fmt: skip
        bad = compose("config", overrides=["task=dagger", "task.init_checkpoint=x.pkl", "task.plan_dir=p",
                                           "task.elite=64"])  # fmt: skip
    runtime = train_config.to_runtime(cfg, "small")
    assert isinstance(runtime, DaggerConfig)
    assert runtime.run_dir == str(Path("runs") / "dagger" / "catapult_small")
    assert runtime.optim.warmup_steps == 100 and runtime.population == 32
    with pytest.raises(ConfigError, match=r"task\.elite"):
        train_config.to_runtime(bad, "small")


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_a_recording_is_read_at_its_own_precision(tmp_path, dtype):
    """A float32 recording (task.obs_dtype=float32) is not rounded to float16 on its way into the fit; the fit's
    stream keeps float32 when the re-plans' float16 states join it."""
    from rtc_sweep.train.dagger import _load_data
    from rtc_sweep.train.flow_bc import padded_stream

    obs = np.linspace(-1.0, 1.0, 12, dtype=np.float64).reshape(4, 3) + 1e-4  # differs from its float16 rounding
    path = tmp_path / "d.npz"
    np.savez(path, obs=obs.astype(dtype), action=np.zeros((4, 2)), done=np.array([0, 1, 0, 1], bool))
    data = _load_data(path)
    want = np.float16 if dtype == np.float16 else np.float32
    assert data.obs.dtype == want and data.action.dtype == np.float32
    np.testing.assert_array_equal(data.obs, obs.astype(dtype).astype(want))
    replans = (np.zeros((2, 3), np.float16), np.zeros((2, 2), np.float32), np.array([0, 1], bool))
    stream, n = padded_stream([(data.obs, data.action, data.done), replans])
    assert n == 6 and stream.obs.dtype == want
    np.testing.assert_array_equal(np.asarray(stream.obs[:4]), data.obs)
