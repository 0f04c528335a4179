"""The trainers on tiny shapes: files land in the documented layouts, losses are finite and go down, runs resume."""

import dataclasses
import json
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from rtc_sweep.core.checkpoint import load_policy
from rtc_sweep.core.policy import MODEL_PRESETS, flow_loss, velocity
from rtc_sweep.train import config as train_config
from rtc_sweep.train.collect import CollectConfig, collect
from rtc_sweep.train.flow_bc import (
    OBS_SCALE_FLOOR,
    FlowBCConfig,
    OptimConfig,
    Stream,
    chunk_at,
    fold_obs_norm,
    initial_params,
    learning_rate_schedule,
    make_optimizer,
    obs_normalizer,
    padded_stream,
    position_weights,
    split_episodes,
    train_flow,
    unfold_obs_norm,
)
from rtc_sweep.train.ppo import PPOConfig, train_ppo

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


def test_flow_bc_on_collected_data_resumes_and_loads(dataset, tmp_path, caplog):
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
    first = json.loads((tmp_path / "logs-bc" / "config.json").read_text())
    assert (first["num_epochs"], first["optim.batch_size"], first["resumed_with_changes"]) == (1, 16, [])
    with caplog.at_level(logging.WARNING, logger="rtc_sweep.train.io"):
        history = train_flow(dataclasses.replace(cfg, num_epochs=2), progress=False)
    assert [h["epoch"] for h in history] == [0, 1]
    # The resume under a longer schedule is said and recorded, not silently folded in.
    assert "num_epochs: 1 -> 2" in caplog.text
    record = json.loads((tmp_path / "logs-bc" / "config.json").read_text())
    assert record["num_epochs"] == 2
    assert record["resumed_with_changes"] == [{"epoch": 1, "num_epochs": [1, 2]}]
    params = load_policy(tmp_path / "logs-bc" / "1" / "policies" / POLICY, SMALL)
    assert params["in_proj"]["kernel"].shape == (6 + 679, 64)


def test_a_decaying_rate_reaches_its_final_fraction_at_the_last_step():
    cfg = OptimConfig(learning_rate=1e-3, warmup_steps=10, final_lr_fraction=0.1)
    schedule = learning_rate_schedule(cfg, total_steps=100)
    assert float(schedule(10)) == pytest.approx(1e-3)
    assert float(schedule(55)) == pytest.approx(0.55e-3, rel=1e-3)  # the cosine's midpoint
    assert float(schedule(100)) == pytest.approx(1e-4)
    constant = learning_rate_schedule(OptimConfig(learning_rate=1e-3, warmup_steps=10), total_steps=100)
    assert float(constant(100)) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match=r"task\.optim\.final_lr_fraction"):
        learning_rate_schedule(dataclasses.replace(cfg, final_lr_fraction=0.0), total_steps=100)
    with pytest.raises(ValueError, match="task=flow"):  # a route that does not know its length
        make_optimizer(cfg)


def test_flow_bc_with_a_decaying_rate_logs_it_per_epoch(dataset, tmp_path):
    _, path = dataset
    cfg = FlowBCConfig(
        data_path=str(path),
        run_dir=str(tmp_path / "decay"),
        model=SMALL,
        optim=OptimConfig(batch_size=16, warmup_steps=1, final_lr_fraction=0.25),
        num_epochs=2,
        max_steps_per_epoch=3,
    )
    history = train_flow(cfg, progress=False)
    rates = [h["learning_rate"] for h in history]
    assert rates[0] > rates[1] == pytest.approx(0.25 * cfg.optim.learning_rate)


def episodes_stream(n: int = 2048) -> Stream:
    """A learnable synthetic stream: actions a function of the observation, episodes of 64 steps."""
    obs = np.random.default_rng(0).normal(size=(n, 679)).astype(np.float32)
    done = np.zeros(n, bool)
    done[63::64] = True
    return Stream(obs, np.tanh(obs[:, :6]).astype(np.float32), done)


def bc_config(tmp_path: Path, stream: Stream, **changes) -> FlowBCConfig:
    """Flow BC on ``stream`` (written as a dataset), small network, batch 64, a high rate; ``changes`` on top."""
    data = tmp_path / "data.npz"
    np.savez(data, obs=np.asarray(stream.obs).astype(np.float16), action=stream.action, done=stream.done)
    optim = OptimConfig(batch_size=64, warmup_steps=1, learning_rate=1e-3)
    return FlowBCConfig(data_path=str(data), run_dir=str(tmp_path / "bc"), model=SMALL, optim=optim, **changes)


def test_flow_fit_lowers_the_loss_and_tt_rtc_fine_tunes_from_it(tmp_path):
    cfg = bc_config(tmp_path, episodes_stream(), num_epochs=1)
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


def test_normalized_observations_are_folded_into_a_checkpoint_that_reads_raw_ones(tmp_path):
    rng = np.random.default_rng(1)
    stream = episodes_stream()
    # dimensions far from zero, one wide, one that barely moves (its scale floored), one constant
    offset = np.zeros(679, np.float32)
    offset[:3], offset[3], offset[4] = 5.0, 40.0, -3.0
    widths = np.ones(679, np.float32)
    widths[3], widths[4], widths[5] = 20.0, 0.003, 0.0
    raw = stream._replace(obs=(stream.obs * widths + offset).astype(np.float32))
    cfg = bc_config(tmp_path, raw, num_epochs=2, max_steps_per_epoch=16, normalize_obs=True)
    history = train_flow(cfg, progress=False)
    assert history[-1]["loss_last"] < 0.8 * history[0]["loss_first"]
    assert json.loads((tmp_path / "bc" / "config.json").read_text())["normalize_obs"] is True
    with np.load(tmp_path / "bc" / "obs_norm.npz") as f:
        mean, scale = f["mean"], f["scale"]
    data = np.asarray(raw.obs).astype(np.float16).astype(np.float64)
    np.testing.assert_allclose(mean[:6], data[:, :6].mean(0), rtol=1e-3, atol=1e-3)
    assert scale[3] == pytest.approx(data[:, 3].std(), rel=1e-3) and scale[4] == scale[5] == OBS_SCALE_FLOOR
    # the checkpoint reads raw observations: the same velocity as the trained weights on standardised ones
    folded = load_policy(tmp_path / "bc" / "1" / "policies" / POLICY, SMALL, 679, 6)
    trained = unfold_obs_norm(folded, mean, scale, 6)
    obs = jnp.asarray(data[:4], jnp.float32)
    x_t = jnp.asarray(rng.normal(size=(4, SMALL.action_chunk_size, 6)), jnp.float32)
    v_raw = velocity(folded, SMALL, obs, x_t, jnp.full((4,), 0.3))
    v_norm = velocity(trained, SMALL, (obs - mean) / scale, x_t, jnp.full((4,), 0.3))
    np.testing.assert_allclose(np.asarray(v_raw), np.asarray(v_norm), rtol=1e-3, atol=1e-3)
    back = fold_obs_norm(trained, mean, scale, 6)
    np.testing.assert_allclose(back["in_proj"]["kernel"], folded["in_proj"]["kernel"], rtol=1e-5, atol=1e-6)
    # a resume continues from the unfolded weights and the same statistics
    more = train_flow(dataclasses.replace(cfg, num_epochs=3), progress=False)
    assert [h["epoch"] for h in more] == [0, 1, 2] and np.isfinite(more[-1]["loss"])
    # without in_proj to fold into, the error names the key before training
    with pytest.raises(ValueError, match=r"task\.normalize_obs"):
        fold_obs_norm({"out_proj": {}}, mean, scale, 6)


def test_obs_gain_starts_from_the_same_function_and_scales_the_folded_statistics(tmp_path):
    rng = np.random.default_rng(2)
    one = FlowBCConfig(data_path="", run_dir="", model=SMALL, normalize_obs=True)
    ten = dataclasses.replace(one, obs_gain=10.0)
    key = jax.random.key(3)
    start_one, start_ten = initial_params(one, key, 679, 6), initial_params(ten, key, 679, 6)
    z = jnp.asarray(rng.normal(size=(4, 679)), jnp.float32)
    x_t = jnp.asarray(rng.normal(size=(4, SMALL.action_chunk_size, 6)), jnp.float32)
    v_one = velocity(start_one, SMALL, z, x_t, jnp.full((4,), 0.3))
    v_ten = velocity(start_ten, SMALL, 10.0 * z, x_t, jnp.full((4,), 0.3))
    np.testing.assert_allclose(np.asarray(v_ten), np.asarray(v_one), rtol=1e-4, atol=1e-5)
    assert not np.allclose(start_ten["in_proj"]["kernel"][6:], start_one["in_proj"]["kernel"][6:])
    np.testing.assert_array_equal(start_ten["in_proj"]["kernel"][:6], start_one["in_proj"]["kernel"][:6])  # x_t rows
    # a run with it folds scale / gain, so its checkpoints still read raw observations
    stream = episodes_stream()
    cfg = bc_config(tmp_path, stream, num_epochs=1, max_steps_per_epoch=4, normalize_obs=True, obs_gain=10.0)
    train_flow(cfg, progress=False)
    assert json.loads((tmp_path / "bc" / "config.json").read_text())["obs_gain"] == 10.0
    with np.load(tmp_path / "bc" / "obs_norm.npz") as f:
        half = np.asarray(stream.obs).astype(np.float16)
        np.testing.assert_allclose(f["scale"], obs_normalizer(half)[1] / 10.0, rtol=1e-5)


def test_position_decay_weights_the_chunk_positions_and_is_recorded(tmp_path):
    assert position_weights(8, 1.0) is None  # the benchmark's equal weights
    w = np.asarray(position_weights(8, 0.5))
    np.testing.assert_allclose(w.mean(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(w[1:] / w[:-1], 0.5, rtol=1e-6)
    params = initial_params(FlowBCConfig(data_path="", run_dir="", model=SMALL), jax.random.key(0), 5, 2)
    rng = np.random.default_rng(0)
    obs = jnp.asarray(rng.normal(size=(16, 5)), jnp.float32)
    actions = jnp.asarray(rng.normal(size=(16, SMALL.action_chunk_size, 2)), jnp.float32)
    key = jax.random.key(1)
    plain = flow_loss(params, SMALL, key, obs, actions)
    ones = jnp.ones(SMALL.action_chunk_size)
    np.testing.assert_allclose(flow_loss(params, SMALL, key, obs, actions, position_weight=ones), plain, rtol=1e-6)
    # all the weight on position 0: the other positions' targets no longer count
    first = jnp.zeros(SMALL.action_chunk_size).at[0].set(SMALL.action_chunk_size)
    other = actions.at[:, 1:].set(0.0)
    np.testing.assert_allclose(
        flow_loss(params, SMALL, key, obs, other, position_weight=first),
        flow_loss(params, SMALL, key, obs, actions, position_weight=first),
        rtol=1e-6,
    )
    assert not np.isclose(float(flow_loss(params, SMALL, key, obs, other)), float(plain))
    cfg = bc_config(tmp_path, episodes_stream(), num_epochs=2, max_steps_per_epoch=8, position_decay=0.5)
    history = train_flow(cfg, progress=False)
    assert history[-1]["loss"] < history[0]["loss_first"]
    assert json.loads((tmp_path / "bc" / "config.json").read_text())["position_decay"] == 0.5


def test_held_out_episodes_are_whole_never_trained_on_and_their_loss_is_logged(tmp_path):
    stream = episodes_stream()  # 32 episodes of 64 steps
    tagged = stream._replace(obs=np.arange(2048, dtype=np.float32)[:, None])  # each step's own tag
    train, val = split_episodes(tagged, 0.25, seed=0)
    assert val is not None and val.obs.shape[0] == 8 * 64 and train.obs.shape[0] == 24 * 64
    tags = val.obs[:, 0].astype(int)
    assert not set(tags) & set(train.obs[:, 0].astype(int).tolist())
    starts = tags[::64]
    assert (starts % 64 == 0).all() and (tags.reshape(8, 64) == starts[:, None] + np.arange(64)).all()
    assert val.done.reshape(8, 64)[:, -1].all() and val.done.sum() == 8
    with pytest.raises(ValueError, match=r"task\.val_fraction"):
        split_episodes(stream, 0.01, seed=0)  # rounds to no episode
    cfg = bc_config(tmp_path, stream, num_epochs=3, max_steps_per_epoch=8, val_fraction=0.25)
    history = train_flow(cfg, progress=False)
    val_losses = [h["val_loss"] for h in history]
    assert all(np.isfinite(val_losses)) and val_losses[-1] < val_losses[0]
    assert json.loads((tmp_path / "bc" / "config.json").read_text())["val_fraction"] == 0.25
    assert json.loads((tmp_path / "bc" / "2" / "stats.json").read_text())["val_loss"] == val_losses[-1]


def test_chunks_are_masked_from_the_first_done_on():
    action = jnp.arange(10, dtype=jnp.float32)[:, None] + 1.0  # [N, 1]
    done = jnp.zeros(10, bool).at[3].set(True)
    stream = Stream(jnp.zeros((10, 2)), action, done)
    _, chunks = chunk_at(stream, jnp.array([0, 4]), 4)
    np.testing.assert_array_equal(chunks[0, :, 0], [1, 2, 3, 0])  # the benchmark zeroes the done step too
    np.testing.assert_array_equal(chunks[1, :, 0], [5, 6, 7, 8])


def test_a_growing_stream_is_padded_to_a_power_of_two_with_done_so_no_window_reaches_past_its_data():
    rng = np.random.default_rng(0)
    parts = [
        (rng.normal(size=(m, 3)).astype(np.float16), rng.normal(size=(m, 2)).astype(np.float32), np.arange(m) % 5 == 4)
        for m in (3000, 2000)
    ]
    stream, n = padded_stream(parts)
    assert n == 5000 and stream.obs.shape == (8192, 3) and stream.action.shape == (8192, 2)
    np.testing.assert_array_equal(np.asarray(stream.action[:n]), np.concatenate([p[1] for p in parts]))
    np.testing.assert_array_equal(np.asarray(stream.obs[3000:n]), parts[1][0])
    assert bool(stream.done[n:].all()) and not bool(stream.done[n - 2])
    _, chunks = chunk_at(stream, jnp.array([n - 2]), 4)  # a window running off the data keeps only what is real
    assert np.asarray(chunks[0, 2:]).tolist() == [[0.0, 0.0], [0.0, 0.0]] and bool(jnp.any(chunks[0, 0] != 0))
    assert padded_stream(parts[:1])[0].obs.shape[0] == 4096  # never below 4096: small data shares one program


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
