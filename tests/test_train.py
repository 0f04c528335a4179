"""The trainers on tiny shapes: files land in the documented layouts, losses are finite and go down, runs resume."""

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from rtc_sweep.core.checkpoint import load_policy
from rtc_sweep.core.policy import MODEL_PRESETS
from rtc_sweep.errors import ConfigError
from rtc_sweep.train import config as train_config
from rtc_sweep.train.collect import CollectConfig, collect
from rtc_sweep.train.flow_bc import FlowBCConfig, OptimConfig, Stream, chunk_at, train_flow
from rtc_sweep.train.plan import PlanConfig, action_dims, run_plan
from rtc_sweep.train.ppo import PPOConfig, train_ppo
from rtc_sweep.train.rollout import shortest_episodes
from rtc_sweep.train.self_imitation import SelfImitationConfig, run_self_imitation

CONF = Path(__file__).resolve().parents[1] / "rtc_sweep" / "train" / "conf"
SMALL = MODEL_PRESETS["small"]
POLICY = "worlds_l_grasp_easy.pkl"


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory):
    cfg = PPOConfig(
        run_dir=str(tmp_path_factory.mktemp("logs-expert") / "tiny"),
        num_seeds=2,
        num_updates=4,
        log_interval=2,
        num_steps=16,
        num_envs=4,
        num_minibatches=2,
        num_epochs=3,
    )
    last = train_ppo(cfg, progress=False)
    return cfg, last


def test_ppo_writes_the_benchmark_layout_and_its_losses_go_down(ppo_run):
    cfg, last = ppo_run
    run = Path(cfg.run_dir)
    for seed in (0, 1):
        for update in (0, 2):
            stats = json.loads((run / f"seed_{seed}" / str(update) / "stats" / "worlds_l_grasp_easy.json").read_text())
            assert all(np.isfinite(v) for v in stats.values())
            for key in ("pg_loss", "v_loss", "clipfrac", "approx_kl", "loss", "grad_norm", "returned_episode_solved"):
                assert key in stats
            # Later passes over the same rollout fit it better.
            assert stats["v_loss_last_epoch"] < stats["v_loss_first_epoch"]
    with (run / "seed_1" / "2" / "policies" / POLICY).open("rb") as f:
        import pickle

        params = pickle.load(f)
    assert params["actor"]["layers"][0]["kernel"].shape == (4 * 679 + 6, 256)
    assert params["critic"]["layers"][4]["kernel"].shape == (256, 1)
    assert params["logstd"].shape == (6,)
    assert len(last) == 2


def test_ppo_resumes_after_its_last_block(ppo_run):
    cfg, _ = ppo_run
    train_ppo(dataclasses.replace(cfg, num_updates=6), progress=False)
    assert (Path(cfg.run_dir) / "seed_0" / "4" / "stats" / "worlds_l_grasp_easy.json").is_file()


@pytest.fixture(scope="module")
def dataset(ppo_run):
    cfg, _ = ppo_run
    out = collect(CollectConfig(run_dir=cfg.run_dir, num_envs=4, batch_size=32, num_steps=128), progress=False)
    return cfg, out


def test_collection_writes_benchmark_keys_time_major(dataset):
    cfg, path = dataset
    assert path == Path(cfg.run_dir) / "data" / "worlds_l_grasp_easy.npz"
    with np.load(path) as data:
        assert data["obs"].shape == (32, 4, 679)
        assert data["obs"].dtype == np.float32
        assert data["action"].shape == (32, 4, 6)
        for key, dtype in (("done", bool), ("solved", bool), ("return_", np.float32), ("length", np.int32)):
            assert data[key].shape == (32, 4)
            assert data[key].dtype == dtype
    selection = json.loads(path.with_suffix(".selection.json").read_text())
    # Tiny experts solve nothing: every seed is masked, and the mixture falls back to all of them.
    assert selection["all_masked"] == all(selection["masked"])
    assert len(selection["experts"]) == 2


def test_flow_bc_on_collected_data_resumes_and_loads(dataset, tmp_path):
    _, path = dataset
    cfg = FlowBCConfig(
        data_path=str(path),
        run_dir=str(tmp_path / "logs-bc"),
        model=SMALL,
        optim=OptimConfig(batch_size=16, warmup_steps=1),
        num_epochs=1,
    )
    history = train_flow(cfg, progress=False)
    assert np.isfinite(history[0]["loss"])
    history = train_flow(dataclasses.replace(cfg, num_epochs=2), progress=False)
    assert [h["epoch"] for h in history] == [0, 1]
    params = load_policy(tmp_path / "logs-bc" / "1" / "policies" / POLICY, SMALL)
    assert params["in_proj"]["kernel"].shape == (6 + 679, 64)


def test_flow_fit_lowers_the_loss_and_tt_rtc_fine_tunes_from_it(tmp_path):
    rng = np.random.default_rng(0)
    n = 2048
    obs = rng.normal(size=(n, 679)).astype(np.float32)
    action = np.tanh(obs[:, :6]).astype(np.float32)
    done = np.zeros(n, bool)
    done[63::64] = True
    data = tmp_path / "data.npz"
    np.savez(data, obs=obs.astype(np.float16), action=action, done=done)
    cfg = FlowBCConfig(
        data_path=str(data),
        run_dir=str(tmp_path / "bc"),
        model=SMALL,
        optim=OptimConfig(batch_size=64, warmup_steps=1, learning_rate=1e-3),
        num_epochs=1,
    )
    (stats,) = train_flow(cfg, progress=False)
    assert stats["loss_last"] < 0.8 * stats["loss_first"]
    tt = dataclasses.replace(
        cfg,
        run_dir=str(tmp_path / "tt"),
        model=dataclasses.replace(SMALL, simulated_delay=5),
        load_dir=str(tmp_path / "bc" / "0"),
        max_steps_per_epoch=4,
    )
    (tt_stats,) = train_flow(tt, progress=False)
    assert np.isfinite(tt_stats["loss"])
    assert (tmp_path / "tt" / "0" / "policies" / POLICY).is_file()


def test_chunks_are_masked_from_the_first_done_on():
    action = jnp.arange(10, dtype=jnp.float32)[:, None] + 1.0  # [N, 1]
    done = jnp.zeros(10, bool).at[3].set(True)
    stream = Stream(jnp.zeros((10, 2)), action, done)
    _, chunks = chunk_at(stream, jnp.array([0, 4]), 4)
    np.testing.assert_array_equal(chunks[0, :, 0], [1, 2, 3, 0])  # the benchmark zeroes the done step too
    np.testing.assert_array_equal(chunks[1, :, 0], [5, 6, 7, 8])


def test_the_elite_is_the_shortest_whole_episodes():
    done = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 1], bool)  # episodes of lengths 3, 1, 4, 2
    data = {"done": done, "action": np.arange(10.0)}
    half = shortest_episodes(data, 0.5)
    np.testing.assert_array_equal(half["action"], [3, 8, 9])  # lengths 1 and 2, in their order
    np.testing.assert_array_equal(half["done"], [True, False, True])
    assert shortest_episodes(data, 0.01)["action"].tolist() == [3.0]  # at least one episode
    assert shortest_episodes(data, 1.0) is data
    with pytest.raises(ValueError, match="fraction"):
        shortest_episodes(data, 0.0)


def test_elite_fraction_out_of_range_names_the_key():
    train_config.register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["task=self_imitation", "model=small", "task.elite_fraction=1.5"])
    with pytest.raises(ConfigError, match=r"task\.elite_fraction"):
        train_config.to_runtime(cfg, "small")


def test_self_imitation_writes_iterations_and_resumes(tmp_path):
    cfg = SelfImitationConfig(
        run_dir=str(tmp_path / "si"),
        model=SMALL,
        optim=OptimConfig(batch_size=8, warmup_steps=1),
        num_iterations=1,
        init_candidates=2,
        collect_envs=8,
        eval_envs=4,
        num_ticks=48,
        grad_steps=3,
        elite_fraction=0.5,
    )
    best = run_self_imitation(cfg, progress=False)
    run = tmp_path / "si"
    assert (run / "0" / "policies" / POLICY).is_file()
    stats = json.loads((run / "1" / "stats.json").read_text())
    assert 0.0 <= stats["eval"]["returned_episode_solved"] <= 1.0
    assert all(np.isfinite(v) for v in stats["fit"].values())
    with np.load(run / "1" / "data" / "worlds_l_grasp_easy.npz") as data:
        assert set(data.files) == {"obs", "action", "done", "solved", "return_", "length"}
        assert data["obs"].dtype == np.float16
        if data["done"].size:  # only solved episodes are kept, each ending on its done row
            assert data["done"][-1] and data["solved"][data["done"]].all()
    assert json.loads((run / "best.json").read_text()) == best
    run_self_imitation(dataclasses.replace(cfg, num_iterations=2), progress=False)
    assert (run / "2" / "stats.json").is_file()
    load_policy(run / "2" / "policies" / POLICY, SMALL)


def test_plan_search_writes_its_layout_and_resumes(tmp_path):
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
    run_plan(dataclasses.replace(cfg, generations=3), progress=False)  # resumes after generation 1
    resumed = json.loads((run / "cem.json").read_text())
    assert resumed[:2] == history and resumed[2]["generation"] == 2

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


@pytest.mark.parametrize("task", ["self_imitation", "ppo", "collect", "flow", "flow_tt", "plan", "mix"])
def test_every_task_config_composes(task):
    train_config.register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[f"task={task}", "model=small"]
            + (["task.run_path=runs/x"] if task in ("collect", "flow", "flow_tt") else [])
            + (["task.plans=runs/p*"] if task == "mix" else []),
        )
    runtime = train_config.to_runtime(cfg, "small")
    assert runtime.level == "grasp_easy"
    if task == "flow_tt":
        assert runtime.model.simulated_delay == 5
        assert runtime.num_epochs == 8
        assert runtime.run_dir == str(Path("runs") / "logs-bc" / "grasp_easy_small_tt")  # not the BC run's folder


def test_a_config_typo_fails_at_composition():
    train_config.register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"), pytest.raises(Exception, match="grad_stepz"):
        compose("config", overrides=["task.grad_stepz=3"])


def test_device_count_is_two_for_sharding():
    assert jax.device_count() == 2
