"""The benchmark's MLP-mixer flow policy as pure JAX functions over its checkpoint's pure-dict params.

The params pytree *is* the layout the original benchmark pickles (reference-benchmark.md §4.5): nested dicts,
python int keys for list entries (``mlp_stack[i]``, ``time_mlp['layers'][0]`` and ``[2]``) and ``None`` for
the biases and LayerNorm scales the original disables. Keeping that layout, rather than a flax module, means a
checkpoint loads without a flax version that matches the one that wrote it, and nothing has to be renamed.

Time convention (as the original): t = 0 is noise, t = 1 is data. The network takes either one flow time per
sample ([B]) or one per action position ([B, H]); the latter is what training-time RTC needs, and with all
positions sharing a time it gives the same velocity as the former.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Params = dict[str, Any]

# LayerNorm epsilon of flax's LayerNorm (the original's); PyTorch's default 1e-5 would not match.
_LN_EPS = 1e-6
# Sin-cos time embedding periods of the original.
_MIN_PERIOD = 4e-3
_MAX_PERIOD = 4.0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    action_chunk_size: int = 8  # H: actions per chunk (the token axis of the mixer)
    channel_dim: int = 256  # C: width of each token, and of the time embedding
    channel_hidden_dim: int = 512  # hidden width of the channel-mixing MLP
    token_hidden_dim: int = 64  # hidden width of the token-mixing MLP (mixes across the H positions)
    num_layers: int = 4  # mixer blocks
    simulated_delay: int | None = None  # training-time RTC: train with prefixes of d ~ {0..D-1} actions; None = BC


MODEL_PRESETS: dict[str, ModelConfig] = {
    "default": ModelConfig(),
    "small": ModelConfig(channel_dim=64, channel_hidden_dim=128, token_hidden_dim=32, num_layers=2),
}


# ---------------------------------------------------------------------------------------------------------------
# Initialisation


def _dense(key: jax.Array, n_in: int, n_out: int, bias: bool, zero: bool = False) -> dict[str, jax.Array | None]:
    if zero:
        kernel = jnp.zeros((n_in, n_out), jnp.float32)
    else:
        kernel = jax.nn.initializers.lecun_normal()(key, (n_in, n_out), jnp.float32)
    return {"kernel": kernel, "bias": jnp.zeros((n_out,), jnp.float32) if bias else None}


def init_params(key: jax.Array, obs_dim: int, action_dim: int, config: ModelConfig) -> Params:
    """A fresh policy as the original initialises it: lecun_normal kernels, zero biases, zero adaLN kernels.

    The zero adaLN projections make every mixer block start as the identity.
    """
    C, H = config.channel_dim, config.action_chunk_size
    keys = iter(jax.random.split(key, 5 + 6 * config.num_layers))
    no_norm = {"scale": None, "bias": None}
    blocks = {
        i: {
            "token_mix_in": _dense(next(keys), H, config.token_hidden_dim, bias=False),
            "token_mix_out": _dense(next(keys), config.token_hidden_dim, H, bias=False),
            "channel_mix_in": _dense(next(keys), C, config.channel_hidden_dim, bias=False),
            "channel_mix_out": _dense(next(keys), config.channel_hidden_dim, C, bias=False),
            "norm_1": dict(no_norm),
            "norm_2": dict(no_norm),
            "adaln_1": _dense(next(keys), C, 3 * C, bias=True, zero=True),
            "adaln_2": _dense(next(keys), C, 3 * C, bias=True, zero=True),
        }
        for i in range(config.num_layers)
    }
    return {
        "in_proj": _dense(next(keys), action_dim + obs_dim, C, bias=True),
        "mlp_stack": blocks,
        "time_mlp": {"layers": {0: _dense(next(keys), C, C, bias=True), 2: _dense(next(keys), C, C, bias=True)}},
        "final_norm": dict(no_norm),
        "final_adaln": _dense(next(keys), C, 2 * C, bias=True, zero=True),
        "out_proj": _dense(next(keys), C, action_dim, bias=True),
    }


# ---------------------------------------------------------------------------------------------------------------
# Network


def _linear(p: dict[str, jax.Array | None], x: jax.Array) -> jax.Array:
    # flax layout: kernel is [in, out]; contract x's last axis with the kernel's first.
    y = jax.lax.dot_general(x, p["kernel"], (((x.ndim - 1,), (0,)), ((), ())))
    return y if p["bias"] is None else y + p["bias"]


def _layer_norm(x: jax.Array) -> jax.Array:
    # flax's fast variance, E[x²] - E[x]², clipped at 0, so that the numerics follow the original.
    mean = jnp.mean(x, axis=-1, keepdims=True)
    mean_sq = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    var = jnp.maximum(0.0, mean_sq - jnp.square(mean))
    return (x - mean) * jax.lax.rsqrt(var + _LN_EPS)


def _gelu(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=True)  # nnx.gelu is the tanh form


def posemb_sincos(t: jax.Array, dim: int) -> jax.Array:
    """Sin-cos embedding of flow time: [...] -> [..., dim], periods geometric from 4e-3 to 4."""
    # Angles reach ~1.6e3 rad at t = 1, where one float32 ulp already moves sin() by ~1e-4, so rounding matters:
    # the operation order and HIGHEST precision follow the original, and the frequencies are computed here, as one
    # constant, so that XLA cannot reassociate t·(2π/period) differently for different shapes of t.
    with jax.ensure_compile_time_eval():
        fraction = jnp.linspace(0.0, 1.0, dim // 2)
        period = _MIN_PERIOD * (_MAX_PERIOD / _MIN_PERIOD) ** fraction
        freq = 1.0 / period * 2 * jnp.pi  # [dim // 2]
    angle = jnp.einsum("...,j->...j", t, freq, precision=jax.lax.Precision.HIGHEST)
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=-1)


# Maps per-time adaLN outputs [B, K, X] onto the chunk's positions (anything broadcastable to [B, H, X]).
_Spread = Callable[[jax.Array], jax.Array]


def _identity(y: jax.Array) -> jax.Array:
    return y


def _mixer_block(p: Params, x: jax.Array, cond: jax.Array, spread: _Spread) -> jax.Array:
    scale_1, shift_1, gate_1 = jnp.split(spread(_linear(p["adaln_1"], cond)), 3, axis=-1)
    scale_2, shift_2, gate_2 = jnp.split(spread(_linear(p["adaln_2"], cond)), 3, axis=-1)

    y = _layer_norm(x) * (1 + scale_1) + shift_1
    y = jnp.swapaxes(y, 1, 2)  # [B, C, H]: mix across the chunk's positions
    y = _linear(p["token_mix_out"], _gelu(_linear(p["token_mix_in"], y)))
    y = jnp.swapaxes(y, 1, 2)  # [B, H, C]
    x = x + gate_1 * y

    y = _layer_norm(x) * (1 + scale_2) + shift_2
    y = _linear(p["channel_mix_out"], _gelu(_linear(p["channel_mix_in"], y)))
    return x + gate_2 * y


def _network(
    params: Params, config: ModelConfig, obs: jax.Array, x_t: jax.Array, times: jax.Array, spread: _Spread
) -> jax.Array:
    """The mixer, conditioned on K flow times per sample (times [B, K]) that ``spread`` assigns to positions.

    The adaLN projections are as wide as the mixer itself, so they are computed once per distinct time rather
    than once per position: K = 1 for the samplers, 2 for training-time RTC (t and the prefix's 1).
    """
    B, H, _ = x_t.shape
    assert config.action_chunk_size == H, (x_t.shape, config.action_chunk_size)
    assert obs.shape[0] == B, (obs.shape, x_t.shape)
    emb = posemb_sincos(times, config.channel_dim)  # [B, K, C]
    layers = params["time_mlp"]["layers"]
    cond = jax.nn.swish(_linear(layers[2], jax.nn.swish(_linear(layers[0], emb))))  # [B, K, C]

    # in_proj sees [x_t, obs] at every position; being linear, it splits into the action part, per position,
    # and the observation part, once per sample and broadcast: the same sum, without H copies of the
    # observation's (wide) product.
    A = x_t.shape[-1]
    kernel, bias = params["in_proj"]["kernel"], params["in_proj"]["bias"]
    x = _linear({"kernel": kernel[:A], "bias": bias}, x_t)  # [B, H, C]
    x = x + _linear({"kernel": kernel[A:], "bias": None}, obs)[:, None, :]
    for i in range(len(params["mlp_stack"])):
        x = _mixer_block(params["mlp_stack"][i], x, cond, spread)

    scale, shift = jnp.split(spread(_linear(params["final_adaln"], cond)), 2, axis=-1)
    x = _layer_norm(x) * (1 + scale) + shift
    return _linear(params["out_proj"], x)  # [B, H, A]


def velocity(params: Params, config: ModelConfig, obs: jax.Array, x_t: jax.Array, time: jax.Array) -> jax.Array:
    """Flow velocity v(obs, x_t, t).

    obs [B, O], x_t [B, H, A]; time [] or [B] (one flow time per sample) or [B, H] (one per action position,
    as training-time RTC has it). Returns [B, H, A].
    """
    B, H, _ = x_t.shape
    time = jnp.asarray(time, jnp.float32)
    if time.ndim == 0:
        time = jnp.broadcast_to(time, (B,))
    assert time.shape in ((B,), (B, H)), (time.shape, x_t.shape)
    return _network(params, config, obs, x_t, time.reshape(B, -1), _identity)  # K = 1 broadcasts over positions


def velocity_with_prefix(
    params: Params, config: ModelConfig, obs: jax.Array, x_t: jax.Array, time: jax.Array, prefix: jax.Array
) -> jax.Array:
    """``velocity`` with flow time 1 at the ``prefix`` positions and ``time`` elsewhere (training-time RTC).

    time [] or [B]; prefix bool [H] or [B, H]. Equal to ``velocity(..., where(prefix, 1, time))`` at the cost
    of the per-sample network, not the per-position one.
    """
    B, H, _ = x_t.shape
    time = jnp.broadcast_to(jnp.asarray(time, jnp.float32), (B,))
    prefix = jnp.broadcast_to(prefix, (B, H))[:, :, None]  # [B, H, 1]
    times = jnp.stack([time, jnp.ones_like(time)], axis=1)  # [B, 2]: slot 0 = t, slot 1 = the prefix's 1
    return _network(params, config, obs, x_t, times, lambda y: jnp.where(prefix, y[:, 1:2], y[:, 0:1]))


# ---------------------------------------------------------------------------------------------------------------
# Training loss


def simulated_delay_probs(max_delay: int) -> jax.Array:
    """Training-time RTC's delay distribution over {0..D-1}: p(d) ∝ exp(-d), e.g. D=5 -> [.636, .234, ...]."""
    return jax.nn.softmax(-jnp.arange(max_delay, dtype=jnp.float32))


def flow_loss(
    params: Params,
    config: ModelConfig,
    key: jax.Array,
    obs: jax.Array,
    actions: jax.Array,
    loss_mask: jax.Array | None = None,
) -> jax.Array:
    """The benchmark's flow-matching BC loss (a scalar); training-time RTC's loss when ``simulated_delay`` is set.

    obs [B, O], actions [B, H, A]. BC: t ~ U(0, 1) per sample, x_t = (1-t)·ε + t·a, target a - ε, MSE over
    all elements. Training-time RTC (D = simulated_delay): d ~ p(d) ∝ exp(-d) on {0..D-1} per sample; positions
    i < d get flow time 1 and the clean action, and the squared error is averaged over the other positions only.

    ``loss_mask`` [B, H] (1 = valid position) is an optional extra mask. The benchmark itself has none: it zeroes
    the actions after an episode's end and trains on those zeros, which is what ``loss_mask=None`` reproduces.
    Masked averages divide by (valid elements + 1e-8), valid elements counting the action dimension, so that with
    nothing masked they equal the plain MSE.
    """
    B, H, A = actions.shape
    time_key, noise_key, delay_key = jax.random.split(key, 3)
    t = jax.random.uniform(time_key, (B,))
    noise = jax.random.normal(noise_key, actions.shape)

    if config.simulated_delay is None:
        valid = None if loss_mask is None else loss_mask.astype(jnp.float32)  # [B, H]
        x_t = (1 - t[:, None, None]) * noise + t[:, None, None] * actions
        v = velocity(params, config, obs, x_t, t)
    else:
        logits = -jnp.arange(config.simulated_delay, dtype=jnp.float32)
        d = jax.random.categorical(delay_key, logits, shape=(B,))
        prefix = jnp.arange(H)[None, :] < d[:, None]  # [B, H]
        tau = jnp.where(prefix, 1.0, t[:, None])[:, :, None]  # [B, H, 1]: the prefix is clean actions
        x_t = (1 - tau) * noise + tau * actions
        v = velocity_with_prefix(params, config, obs, x_t, t, prefix)
        valid = (~prefix).astype(jnp.float32)
        if loss_mask is not None:
            valid = valid * loss_mask.astype(jnp.float32)

    sq_err = jnp.square(v - (actions - noise))  # [B, H, A]
    if valid is None:
        return jnp.mean(sq_err)
    return jnp.sum(sq_err * valid[:, :, None]) / (jnp.sum(valid) * A + 1e-8)
