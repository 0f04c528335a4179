"""The sampler interface: config validation, one compile for every delay, per-environment delays, method identities."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rtc_sweep.core.policy import ModelConfig, Params, init_params
from rtc_sweep.core.samplers import (
    METHODS,
    MethodConfig,
    get_prefix_weights,
    nfe_per_chunk,
    noise_shape,
    sample_chunk,
)
from rtc_sweep.errors import ConfigError

TINY = ModelConfig(channel_dim=16, channel_hidden_dim=32, token_hidden_dim=8, num_layers=1)
B, H, OBS, A = 3, TINY.action_chunk_size, 5, 2
STEPS = 3

REALTIME = MethodConfig("realtime", prefix_attention_schedule="linear")
HARD = MethodConfig("hard_masking")
BID = MethodConfig("bid", n_samples=4)
BID_WEAK = MethodConfig("bid", n_samples=4, bid_k=2, weak_checkpoint="weak.pkl")
TRAINING_TIME = MethodConfig("training_time")


@functools.cache
def _params(seed: int = 0) -> Params:
    # Every leaf random (numpy, on init_params's shapes): a fresh policy's zero adaLN would make time irrelevant.
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: init_params(jax.random.key(0), OBS, A, TINY))
    return jax.tree.map(
        lambda s: jnp.asarray(rng.normal(0.0, s.shape[0] ** -0.5 if len(s.shape) == 2 else 0.3, s.shape), jnp.float32),
        shapes,
    )


@functools.cache
def _inputs() -> dict[str, jax.Array]:
    k_obs, k_prev = jax.random.split(jax.random.key(1))
    return {"obs": jax.random.normal(k_obs, (B, OBS)), "prev_chunk": jax.random.normal(k_prev, (B, H, A))}


def _noise(method: MethodConfig, seed: int = 2) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), noise_shape(method, B, H, A))


_sample = jax.jit(sample_chunk, static_argnums=(0, 2, 8))


def _call(
    method: MethodConfig, d: Any, end: Any, noise: jax.Array | None = None, prev_chunk: jax.Array | None = None
) -> jax.Array:
    weak = _params(1) if method.bid_k is not None else None
    inputs = _inputs()
    noise = _noise(method) if noise is None else noise
    prev = inputs["prev_chunk"] if prev_chunk is None else prev_chunk
    return _sample(method, _params(), TINY, inputs["obs"], noise, prev, jnp.asarray(d), jnp.asarray(end), STEPS, weak)


# --- config -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"name": "rtc"}, "method.name"),
        ({"prefix_attention_schedule": "cosine"}, "method.prefix_attention_schedule"),
        ({"n_samples": 0}, "method.n_samples"),
        ({"max_guidance_weight": 0.0}, "method.max_guidance_weight"),
        ({"name": "bid", "n_samples": 4, "bid_k": 5, "weak_checkpoint": "w.pkl"}, "method.bid_k"),
        ({"name": "bid", "bid_k": 0, "weak_checkpoint": "w.pkl"}, "method.bid_k"),
        ({"name": "bid", "bid_k": 2}, "method.bid_k"),
        ({"name": "bid", "weak_checkpoint": "w.pkl"}, "method.weak_checkpoint"),
    ],
)
def test_validate_rejects(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match="allowed") as err:
        MethodConfig(**kwargs).validate()
    assert err.value.key == key


@pytest.mark.parametrize("name", METHODS)
def test_validate_accepts_every_method(name: str) -> None:
    MethodConfig(name).validate()
    BID_WEAK.validate()


def test_noise_shape_and_nfe() -> None:
    assert noise_shape(BID, 7, 8, 6) == (4, 7, 8, 6)
    assert noise_shape(REALTIME, 7, 8, 6) == (7, 8, 6)
    assert nfe_per_chunk(MethodConfig("naive"), 5) == 5
    assert nfe_per_chunk(TRAINING_TIME, 5) == 5
    assert nfe_per_chunk(REALTIME, 5) == nfe_per_chunk(HARD, 5) == 10
    assert nfe_per_chunk(BID, 5) == 20
    assert nfe_per_chunk(BID_WEAK, 5, has_weak=True) == 40


def test_prefix_weights_batched_rows_equal_scalar() -> None:
    starts, ends = jnp.array([0, 2, 5, 3]), jnp.array([8, 6, 2, 3])
    for schedule in ("exp", "linear", "ones", "zeros"):
        w = get_prefix_weights(starts, ends, 8, schedule)
        assert w.shape == (4, 8)
        for i in range(4):
            np.testing.assert_array_equal(w[i], get_prefix_weights(starts[i], ends[i], 8, schedule))
    # The worked example of reference-benchmark.md §5.4 (d=2, s=3, H=8).
    np.testing.assert_allclose(get_prefix_weights(2, 5, 8, "exp"), [1, 1, 0.488, 0.189, 0.041, 0, 0, 0], atol=1e-3)


# --- one compile, per-environment delays ----------------------------------------------------------------------


@pytest.mark.parametrize("method", [REALTIME, BID_WEAK, TRAINING_TIME], ids=lambda m: m.name)
def test_one_compile_serves_every_delay(method: MethodConfig) -> None:
    traces = 0

    def counted(*args: Any) -> jax.Array:
        nonlocal traces
        traces += 1  # Python side effect: runs once per trace, i.e. once per compiled program
        return sample_chunk(*args)

    sample = jax.jit(counted, static_argnums=(0, 2, 8))
    weak = _params(1) if method.bid_k is not None else None
    inputs = _inputs()

    def call(d: np.ndarray, end: np.ndarray) -> jax.Array:
        return sample(method, _params(), TINY, inputs["obs"], _noise(method), inputs["prev_chunk"], d, end, STEPS, weak)

    for d, end in [(0, 7), (1, 6), (3, 4), (5, 3)]:
        call(np.int32(d), np.int32(end))
    assert traces == 1
    for ds, ends in [([0, 1, 2], [7, 6, 5]), ([4, 0, 3], [4, 4, 4])]:
        call(np.array(ds, np.int32), np.array(ends, np.int32))
    assert traces == 2  # a [B] delay is a second shape, not a program per value


@pytest.mark.parametrize("method", [REALTIME, HARD, BID_WEAK, TRAINING_TIME], ids=lambda m: m.name)
def test_per_env_delays_equal_rowwise_scalar_runs(method: MethodConfig) -> None:
    ds, ends = np.array([0, 2, 4], np.int32), np.array([7, 5, 3], np.int32)
    batched = _call(method, ds, ends)
    assert batched.shape == (B, H, A)
    for i in range(B):
        row = _call(method, ds[i], ends[i])[i]
        np.testing.assert_allclose(batched[i], row, atol=1e-5, rtol=0)
    if method.name != "bid":  # bid's pick among 4 candidates may well not depend on d here
        # the rows do differ, so the delays are really per row
        assert not np.allclose(batched, _call(method, ds[1], ends[1]), atol=1e-5)


# --- identities between methods -------------------------------------------------------------------------------


def test_guidance_with_no_prefix_is_naive() -> None:
    # end = 0 puts every weight to 0: the guided sampler must reduce to plain Euler.
    naive = _call(MethodConfig("naive"), 0, 0)
    np.testing.assert_allclose(_call(REALTIME, 2, 0), naive, atol=1e-6, rtol=0)


def test_hard_masking_ignores_configured_schedule() -> None:
    a = _call(dataclasses.replace(HARD, prefix_attention_schedule="ones"), 2, 5)
    b = _call(dataclasses.replace(REALTIME, prefix_attention_schedule="zeros"), 2, 5)
    np.testing.assert_array_equal(a, b)


def test_guidance_pulls_prefix_towards_prev() -> None:
    prev = _inputs()["prev_chunk"]
    naive = _call(MethodConfig("naive"), 0, 0)
    guided = _call(REALTIME, 3, 6)
    assert np.abs(guided[:, :3] - prev[:, :3]).mean() < np.abs(naive[:, :3] - prev[:, :3]).mean()


def test_training_time_with_zero_delay_is_naive() -> None:
    np.testing.assert_allclose(_call(TRAINING_TIME, 0, 8), _call(MethodConfig("naive"), 0, 0), atol=1e-6, rtol=0)


def test_training_time_reads_prev_only_in_the_prefix() -> None:
    prev = _inputs()["prev_chunk"]
    changed_tail = prev.at[:, 2:].set(7.0)
    np.testing.assert_array_equal(_call(TRAINING_TIME, 2, 8), _call(TRAINING_TIME, 2, 8, prev_chunk=changed_tail))
    changed_head = prev.at[:, 1].set(7.0)
    assert not np.allclose(
        _call(TRAINING_TIME, 2, 8)[:, 2:], _call(TRAINING_TIME, 2, 8, prev_chunk=changed_head)[:, 2:]
    )


def test_bid_returns_the_candidate_closest_to_prev() -> None:
    noise = _noise(BID)
    out = _call(BID, 2, 5, noise=noise)
    inputs = _inputs()
    candidates = [
        _call(MethodConfig("naive"), 0, 0, noise=noise[j]) for j in range(BID.n_samples)
    ]  # each sample is a naive draw from its own noise
    w = get_prefix_weights(2, 5, H, "exp")
    losses = np.stack([np.sum(np.linalg.norm(c - inputs["prev_chunk"], axis=-1) * w, axis=-1) for c in candidates])
    expected = np.stack(candidates)[np.argmin(losses, axis=0), np.arange(B)]
    np.testing.assert_allclose(out, expected, atol=1e-6, rtol=0)


def test_bid_needs_weak_params_with_k() -> None:
    inputs = _inputs()
    with pytest.raises(ValueError, match="weak_params"):
        sample_chunk(BID_WEAK, _params(), TINY, inputs["obs"], _noise(BID_WEAK), inputs["prev_chunk"], 1, 5, STEPS)
