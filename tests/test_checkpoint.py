"""Policy files (round trip, plain-pickle readability, clear errors) and the network's contract around them."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rtc_sweep.core.checkpoint import infer_dims, infer_model_config, load_policy, save_policy
from rtc_sweep.core.policy import (
    MODEL_PRESETS,
    ModelConfig,
    Params,
    flow_loss,
    init_params,
    velocity,
    velocity_with_prefix,
)
from rtc_sweep.errors import ConfigError

TINY = ModelConfig(channel_dim=16, channel_hidden_dim=32, token_hidden_dim=8, num_layers=2)
OBS, A = 5, 3
BENCHMARK_POLICY = Path(__file__).resolve().parent / "data" / "conformance" / "small" / "policy.pkl"


def _live_params(seed: int = 0, config: ModelConfig = TINY) -> Params:
    """A policy whose every leaf is random (a fresh one's zero adaLN would make flow time irrelevant).

    Drawn with numpy on init_params's shapes: no per-leaf compile of jax's random ops, which on a loaded CPU
    took seconds per test.
    """
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: init_params(jax.random.key(0), OBS, A, config))
    return jax.tree.map(
        lambda s: jnp.asarray(rng.normal(0.0, s.shape[0] ** -0.5 if len(s.shape) == 2 else 0.3, s.shape), jnp.float32),
        shapes,
    )


_velocity = jax.jit(velocity, static_argnums=1)
_flow_loss = jax.jit(flow_loss, static_argnums=1)


def _walk(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """(key path, leaf) pairs, None leaves included (jax.tree drops them)."""
    if isinstance(tree, dict):
        return [item for k in sorted(tree, key=str) for item in _walk(tree[k], (*path, k))]
    return [(path, tree)]


# --- files --------------------------------------------------------------------------------------------------


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    params = _live_params()
    path = tmp_path / "nested" / "policies" / "level.pkl"
    save_policy(path, params)
    loaded = load_policy(path, TINY, OBS, A)
    before, after = _walk(params), _walk(loaded)
    assert [p for p, _ in before] == [p for p, _ in after]
    for (p, x), (_, y) in zip(before, after, strict=True):
        if x is None:
            assert y is None, p
        else:
            assert y.dtype == jnp.float32, p
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(p))
    assert [f.name for f in path.parent.iterdir()] == ["level.pkl"]  # no temp file left behind


def test_saved_file_is_plain_pickle_of_dicts_numpy_and_none(tmp_path: Path) -> None:
    path = tmp_path / "p.pkl"
    save_policy(path, _live_params())
    with path.open("rb") as f:
        raw = pickle.load(f)
    assert set(raw) == {"in_proj", "mlp_stack", "time_mlp", "final_norm", "final_adaln", "out_proj"}
    assert set(raw["mlp_stack"]) == {0, 1}
    assert set(raw["time_mlp"]["layers"]) == {0, 2}
    assert raw["mlp_stack"][0]["token_mix_in"]["bias"] is None
    assert raw["final_norm"] == {"scale": None, "bias": None}
    for _, leaf in _walk(raw):
        assert leaf is None or (type(leaf) is np.ndarray and leaf.dtype == np.float32 and leaf.flags.writeable)


def test_save_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "p.pkl"
    save_policy(path, _live_params(0))
    save_policy(path, _live_params(1))
    np.testing.assert_array_equal(load_policy(path)["out_proj"]["bias"], _live_params(1)["out_proj"]["bias"])


def test_loads_the_benchmarks_jax_pickle() -> None:
    params = load_policy(BENCHMARK_POLICY)
    config = infer_model_config(params)
    assert config == ModelConfig(channel_dim=64, channel_hidden_dim=128, token_hidden_dim=32, num_layers=2)
    assert infer_dims(params) == (679, 6)
    assert isinstance(params["in_proj"]["kernel"], jax.Array)
    assert params["mlp_stack"][1]["norm_2"]["scale"] is None


def test_mismatched_model_names_file_key_and_shapes() -> None:
    with pytest.raises(ConfigError) as err:
        load_policy(BENCHMARK_POLICY, MODEL_PRESETS["default"])
    msg = str(err.value)
    assert err.value.key == "checkpoint"
    assert "policy.pkl" in msg
    assert "at ['final_adaln']['kernel']: expected shape (256, 512), found (64, 128)" in msg
    assert "at ['mlp_stack']: missing keys [2, 3]" in msg


def test_mismatched_layer_count_and_dims() -> None:
    small = MODEL_PRESETS["small"]
    with pytest.raises(ConfigError, match=r"missing keys \[2, 3\]"):
        load_policy(BENCHMARK_POLICY, ModelConfig(channel_dim=64, channel_hidden_dim=128, token_hidden_dim=32))
    with pytest.raises(ConfigError, match=r"\['in_proj'\]\['kernel'\]: expected shape \(686, 64\)"):
        load_policy(BENCHMARK_POLICY, small, obs_dim=680, action_dim=6)
    load_policy(BENCHMARK_POLICY, small, obs_dim=679, action_dim=6)


def test_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_policy(tmp_path / "nope.pkl")
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"in_proj": Path("x")}))
    with pytest.raises(ConfigError, match=r"pathlib.*PosixPath|not a policy"):
        load_policy(evil)
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"weights": [1, 2]}))
    with pytest.raises(ConfigError, match="layout"):
        load_policy(other)


# --- the network --------------------------------------------------------------------------------------------


def _batch(seed: int = 1, B: int = 4) -> tuple[jax.Array, jax.Array]:
    k_obs, k_x = jax.random.split(jax.random.key(seed))
    return jax.random.normal(k_obs, (B, OBS)), jax.random.normal(k_x, (B, TINY.action_chunk_size, A))


def test_per_position_time_equal_to_scalar_time_gives_identical_velocity() -> None:
    params = _live_params()
    obs, x_t = _batch()
    t = jnp.array([0.0, 0.3, 0.71, 1.0])
    per_sample = _velocity(params, TINY, obs, x_t, t)
    per_position = _velocity(params, TINY, obs, x_t, jnp.broadcast_to(t[:, None], (4, TINY.action_chunk_size)))
    np.testing.assert_allclose(per_sample, per_position, atol=1e-6, rtol=0)
    shared = _velocity(params, TINY, obs, x_t, jnp.float32(0.3))
    np.testing.assert_allclose(shared[1], per_sample[1], atol=1e-6, rtol=0)
    # and per-position time is really used
    mixed = jnp.broadcast_to(t[:, None], (4, 8)).at[:, :2].set(1.0)
    assert not np.allclose(_velocity(params, TINY, obs, x_t, mixed), per_sample, atol=1e-4)


def test_velocity_with_prefix_is_per_position_velocity() -> None:
    params = _live_params()
    obs, x_t = _batch()
    t = jnp.array([0.0, 0.3, 0.71, 0.9])
    prefix = jnp.arange(8)[None] < jnp.array([0, 1, 3, 8])[:, None]  # [B, H]
    per_position = _velocity(params, TINY, obs, x_t, jnp.where(prefix, 1.0, t[:, None]))
    fast = jax.jit(velocity_with_prefix, static_argnums=1)(params, TINY, obs, x_t, t, prefix)
    np.testing.assert_allclose(fast, per_position, atol=1e-6, rtol=0)


def test_fresh_policy_blocks_start_as_identity() -> None:
    # Zero adaLN: gates are 0, so time cannot matter before training.
    params = jax.jit(init_params, static_argnums=(1, 2, 3))(jax.random.key(0), OBS, A, TINY)
    obs, x_t = _batch()
    np.testing.assert_array_equal(
        _velocity(params, TINY, obs, x_t, jnp.zeros(4)), _velocity(params, TINY, obs, x_t, jnp.ones(4))
    )


def test_flow_loss_is_finite_and_differentiable() -> None:
    params = _live_params()
    obs, actions = _batch(2)
    loss, grads = jax.jit(jax.value_and_grad(flow_loss), static_argnums=1)(
        params, TINY, jax.random.key(0), obs, actions
    )
    assert loss.shape == ()
    assert np.isfinite(loss)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_training_time_loss_with_no_delay_is_bc_loss() -> None:
    params = _live_params()
    obs, actions = _batch(2)
    key = jax.random.key(5)
    bc = _flow_loss(params, TINY, key, obs, actions)
    tt = _flow_loss(params, ModelConfig(**{**TINY.__dict__, "simulated_delay": 1}), key, obs, actions)
    np.testing.assert_allclose(tt, bc, rtol=1e-6)
    ones = jnp.ones(actions.shape[:2])
    np.testing.assert_allclose(_flow_loss(params, TINY, key, obs, actions, ones), bc, rtol=1e-6)


def test_training_time_loss_formula() -> None:
    # §9: d ~ p(d) ∝ exp(-d); prefix positions get time 1 and the clean action and are left out of the average.
    params = _live_params()
    obs, actions = _batch(2)
    B, H, _ = actions.shape
    tt = ModelConfig(**{**TINY.__dict__, "simulated_delay": 5})
    key = jax.random.key(5)
    mask = jnp.ones((B, H)).at[:, 6:].set(0)
    time_key, noise_key, delay_key = jax.random.split(key, 3)
    t = jax.random.uniform(time_key, (B,))
    noise = jax.random.normal(noise_key, actions.shape)
    probs = jax.nn.softmax(-jnp.arange(5, dtype=jnp.float32))  # p(d) ∝ exp(-d) on {0..4}
    d = jax.random.categorical(delay_key, jnp.log(probs), shape=(B,))
    prefix = jnp.arange(H)[None] < d[:, None]  # [B, H]
    tau = jnp.where(prefix, 1.0, t[:, None])
    x_t = (1 - tau[..., None]) * noise + tau[..., None] * actions
    err = jnp.square(_velocity(params, TINY, obs, x_t, tau) - (actions - noise)).sum(-1)  # [B, H]
    keep = (~prefix) * mask
    expected = (err * keep).sum() / (keep.sum() * A)
    np.testing.assert_allclose(_flow_loss(params, tt, key, obs, actions, mask), expected, rtol=1e-5)
    np.testing.assert_allclose(probs, [0.636, 0.234, 0.086, 0.032, 0.012], atol=1e-3)


def test_saved_checkpoint_is_readable_by_others(tmp_path):
    import os
    import stat

    path = tmp_path / "p.pkl"
    save_policy(path, {"w": np.zeros((2,), np.float32), "b": None})
    old = os.umask(0o022)
    os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~old
    assert not [p for p in tmp_path.iterdir() if p.name != "p.pkl"]  # no temporary left behind
