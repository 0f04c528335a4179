"""The benchmark's flow policy: its MLP-mixer as a flax nnx module (``MixerPolicy``), over its checkpoint's layout.

The samplers see the mixer through ``rtc_sweep.core.network``'s interface (``FlowPolicy``: sizes and
``velocity``), like any other network; ``ModelConfig`` is its model spec, the static half that crosses ``jax.jit``
(``network`` explains the split). Its params are the layout the original benchmark pickles (reference-benchmark.md
§4.5): nested dicts, python int keys for list entries (``mlp_stack[i]``, ``time_mlp['layers'][0]`` and ``[2]``) and
``None`` for the biases and LayerNorm scales the original disables. That is the pure dict of the module's nnx state
(``network.params_of``) with those ``None`` entries added back (flax >= 0.11 leaves them out, the benchmark's 0.10
wrote them), so a checkpoint loads with no renaming and a saved one loads in the original's ``eval_flow``.

The module is built as the original's ``FlowPolicy`` (the same layers, names and order), and computes as the pure
functions it replaced did, operation for operation: the velocities are bit-identical and the compiled program is the
same (``scripts/bench_policy.py`` times both). ``velocity``, ``velocity_with_prefix`` and ``flow_loss`` keep their
functional signatures (params, config, ...) for the code that calls them.

Time convention (as the original): t = 0 is noise, t = 1 is data. The network takes either one flow time per
sample ([B]) or one per action position ([B, H]); the latter is what training-time RTC needs, and with all
positions sharing a time it gives the same velocity as the former.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rtc_sweep.core import network
from rtc_sweep.core.network import NetworkConfig, Params
from rtc_sweep.errors import ConfigError

MIXER_TARGET = "rtc_sweep.core.policy.MixerPolicy"  # model._target_ of the benchmark's network (the default)

# LayerNorm epsilon of flax's LayerNorm (the original's); PyTorch's default 1e-5 would not match.
_LN_EPS = 1e-6
# Sin-cos time embedding periods of the original.
_MIN_PERIOD = 4e-3
_MAX_PERIOD = 4.0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The mixer's model spec (``network.ModelSpec``): its sizes, and training-time RTC's ``simulated_delay``."""

    action_chunk_size: int = 8  # H: actions per chunk (the token axis of the mixer)
    channel_dim: int = 256  # C: width of each token, and of the time embedding
    channel_hidden_dim: int = 512  # hidden width of the channel-mixing MLP
    token_hidden_dim: int = 64  # hidden width of the token-mixing MLP (mixes across the H positions)
    num_layers: int = 4  # mixer blocks
    simulated_delay: int | None = None  # training-time RTC: train with prefixes of d ~ {0..D-1} actions; None = BC

    @property
    def target(self) -> str:
        return MIXER_TARGET

    def kwargs(self) -> dict[str, int]:
        """``MixerPolicy``'s keys (``simulated_delay`` is a training option: the network is the same)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "simulated_delay"}

    def build(self, obs_dim: int, action_dim: int, rngs: nnx.Rngs) -> MixerPolicy:
        return MixerPolicy(obs_dim, action_dim, rngs=rngs, **self.kwargs())

    def bind(self, params: Params, obs_dim: int, action_dim: int) -> MixerPolicy:
        definition = network.nnx_def(MixerPolicy, obs_dim, action_dim, tuple(self.kwargs().items()))
        return network.merge(definition, params)

    def init(self, key: jax.Array, obs_dim: int, action_dim: int) -> Params:
        return init_params(key, obs_dim, action_dim, self)

    def validate(self) -> None:
        for key in ("action_chunk_size", "channel_dim", "channel_hidden_dim", "token_hidden_dim", "num_layers"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key}", f"{getattr(self, key)}; allowed: >= 1")


MODEL_PRESETS: dict[str, ModelConfig] = {
    "default": ModelConfig(),
    "small": ModelConfig(channel_dim=64, channel_hidden_dim=128, token_hidden_dim=32, num_layers=2),
}


def model_from_config(node: Mapping[str, Any]) -> ModelConfig | NetworkConfig:
    """The model spec of a composed ``model`` node (plain values): ``ModelConfig`` for the mixer (no ``_target_``
    or ``MIXER_TARGET``), else ``network.network_config`` of the class ``_target_`` names, which gets only the
    mixer keys it declares. Every problem is a ``ConfigError`` naming ``model.<key>``, before anything compiles."""
    target = node.get("_target_") or MIXER_TARGET
    mixer_keys = [f.name for f in dataclasses.fields(ModelConfig)]
    if target != MIXER_TARGET and network.import_target(target) is not MixerPolicy:
        return network.network_config(target, node, ignore=mixer_keys)
    hints = typing.get_type_hints(ModelConfig)
    values = {}
    for key, value in node.items():
        if key == "_target_":
            continue
        if key not in mixer_keys:
            raise ConfigError(f"model.{key}", f"not a key of {MIXER_TARGET}; allowed: {', '.join(mixer_keys)}")
        values[key] = network.check_value(f"model.{key}", value, hints[key])
    return ModelConfig(**values)


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


class LayerNorm(nnx.LayerNorm):
    """The original's LayerNorm: flax's, without scale and bias, eps 1e-6 (PyTorch's 1e-5 would not match), the
    fast variance E[x²] - E[x]² clipped at 0.

    Computed with its statistics kept at [..., 1], as rtc_sweep's port always did: nnx's own call, whose statistics
    are [...] and reshaped, gives the same forward pass but a backward one (realtime's vjp, the training gradients)
    an ulp apart, which would change results.csv.
    """

    def __init__(self, features: int, rngs: nnx.Rngs):
        super().__init__(features, epsilon=_LN_EPS, use_scale=False, use_bias=False, rngs=rngs)

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        assert mask is None, "the mixer's LayerNorm takes no mask"
        mean = jnp.mean(x, axis=-1, keepdims=True)
        mean_sq = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        var = jnp.maximum(0.0, mean_sq - jnp.square(mean))
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon)


def _adaln(features: int, chunks: int, rngs: nnx.Rngs) -> nnx.Linear:
    # Zero kernel (and bias): every block starts as the identity.
    return nnx.Linear(features, chunks * features, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)


class MixerBlock(nnx.Module):
    """One adaLN-conditioned mixer block: token mixing across the H positions, then channel mixing."""

    def __init__(
        self, action_chunk_size: int, channel_dim: int, channel_hidden_dim: int, token_hidden_dim: int, rngs: nnx.Rngs
    ):
        H, C = action_chunk_size, channel_dim
        self.token_mix_in = nnx.Linear(H, token_hidden_dim, use_bias=False, rngs=rngs)
        self.token_mix_out = nnx.Linear(token_hidden_dim, H, use_bias=False, rngs=rngs)
        self.channel_mix_in = nnx.Linear(C, channel_hidden_dim, use_bias=False, rngs=rngs)
        self.channel_mix_out = nnx.Linear(channel_hidden_dim, C, use_bias=False, rngs=rngs)
        self.norm_1 = LayerNorm(C, rngs)
        self.norm_2 = LayerNorm(C, rngs)
        self.adaln_1 = _adaln(C, 3, rngs)
        self.adaln_2 = _adaln(C, 3, rngs)

    def __call__(self, x: jax.Array, cond: jax.Array, spread: _Spread) -> jax.Array:
        scale_1, shift_1, gate_1 = jnp.split(spread(self.adaln_1(cond)), 3, axis=-1)
        scale_2, shift_2, gate_2 = jnp.split(spread(self.adaln_2(cond)), 3, axis=-1)

        y = self.norm_1(x) * (1 + scale_1) + shift_1
        y = jnp.swapaxes(y, 1, 2)  # [B, C, H]: mix across the chunk's positions
        y = self.token_mix_out(nnx.gelu(self.token_mix_in(y)))  # nnx.gelu is the tanh form, as the original's
        y = jnp.swapaxes(y, 1, 2)  # [B, H, C]
        x = x + gate_1 * y

        y = self.norm_2(x) * (1 + scale_2) + shift_2
        y = self.channel_mix_out(nnx.gelu(self.channel_mix_in(y)))
        return x + gate_2 * y


class MixerPolicy(nnx.Module):
    """The benchmark's flow network (a ``network.FlowPolicy``), its layers named as the original's.

    Built from ``rngs`` it draws the original's initial law (lecun-normal kernels, zero biases, zero adaLN) from
    nnx's streams; ``ModelConfig.init(key)``, what ``checkpoint=random`` uses, is the benchmark's own draw from one
    key (``init_params``). ``network.params_of(policy)`` is its checkpoint (the benchmark's layout) and
    ``ModelConfig.bind(params, obs_dim, action_dim)`` the policy a checkpoint makes.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        *,
        rngs: nnx.Rngs,
        action_chunk_size: int = 8,
        channel_dim: int = 256,
        channel_hidden_dim: int = 512,
        token_hidden_dim: int = 64,
        num_layers: int = 4,
    ):
        C, H = channel_dim, action_chunk_size
        self.obs_dim, self.action_dim, self.action_chunk_size, self.channel_dim = obs_dim, action_dim, H, C
        self.in_proj = nnx.Linear(action_dim + obs_dim, C, rngs=rngs)  # rows: [x_t, obs]
        self.mlp_stack = nnx.List(
            [MixerBlock(H, C, channel_hidden_dim, token_hidden_dim, rngs) for _ in range(num_layers)]
        )
        self.time_mlp = nnx.Sequential(nnx.Linear(C, C, rngs=rngs), nnx.swish, nnx.Linear(C, C, rngs=rngs))
        self.final_norm = LayerNorm(C, rngs)
        self.final_adaln = _adaln(C, 2, rngs)
        self.out_proj = nnx.Linear(C, action_dim, rngs=rngs)

    def _network(self, obs: jax.Array, x_t: jax.Array, times: jax.Array, spread: _Spread) -> jax.Array:
        """The mixer, conditioned on K flow times per sample (times [B, K]) that ``spread`` assigns to positions.

        The adaLN projections are as wide as the mixer itself, so they are computed once per distinct time rather
        than once per position: K = 1 for the samplers, 2 for training-time RTC (t and the prefix's 1).
        """
        B, H, A = x_t.shape
        assert self.action_chunk_size == H, (x_t.shape, self.action_chunk_size)
        assert obs.shape[0] == B, (obs.shape, x_t.shape)
        emb = posemb_sincos(times, self.channel_dim)  # [B, K, C]
        cond = nnx.swish(self.time_mlp(emb))  # [B, K, C]: the original's trailing swish

        # in_proj sees [x_t, obs] at every position; being linear, it splits into the action part, per position,
        # and the observation part, once per sample and broadcast: the same sum, without H copies of the
        # observation's (wide) product.
        kernel, bias = self.in_proj.kernel[...], self.in_proj.bias
        assert bias is not None  # in_proj has a bias (nnx.Linear's default)
        x = _matmul(x_t, kernel[:A]) + bias[...]  # [B, H, C]
        x = x + _matmul(obs, kernel[A:])[:, None, :]
        for block in self.mlp_stack:
            x = block(x, cond, spread)

        scale, shift = jnp.split(spread(self.final_adaln(cond)), 2, axis=-1)
        x = self.final_norm(x) * (1 + scale) + shift
        return self.out_proj(x)  # [B, H, A]

    def velocity(self, obs: jax.Array, x_t: jax.Array, time: jax.Array) -> jax.Array:
        """Flow velocity v(obs, x_t, t): obs [B, O], x_t [B, H, A]; time [] or [B] (one flow time per sample) or
        [B, H] (one per action position, as training-time RTC has it). Returns [B, H, A]."""
        B, H, _ = x_t.shape
        time = network.batch_time(time, B)
        assert time.shape in ((B,), (B, H)), (time.shape, x_t.shape)
        return self._network(obs, x_t, time.reshape(B, -1), _identity)  # K = 1 broadcasts over positions

    def velocity_with_prefix(self, obs: jax.Array, x_t: jax.Array, time: jax.Array, prefix: jax.Array) -> jax.Array:
        """``velocity`` with flow time 1 at the ``prefix`` positions and ``time`` elsewhere (training-time RTC).

        time [] or [B]; prefix bool [H] or [B, H]. Equal to ``velocity(..., where(prefix, 1, time))`` at the cost
        of the per-sample network, not the per-position one.
        """
        B, H, _ = x_t.shape
        time = jnp.broadcast_to(jnp.asarray(time, jnp.float32), (B,))
        prefix = jnp.broadcast_to(prefix, (B, H))[:, :, None]  # [B, H, 1]
        times = jnp.stack([time, jnp.ones_like(time)], axis=1)  # [B, 2]: slot 0 = t, slot 1 = the prefix's 1
        return self._network(obs, x_t, times, lambda y: jnp.where(prefix, y[:, 1:2], y[:, 0:1]))


def _matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    # flax layout: kernel is [in, out]; contract x's last axis with the kernel's first (as nnx.Linear does).
    return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def velocity(params: Params, config: network.ModelSpec, obs: jax.Array, x_t: jax.Array, time: jax.Array) -> jax.Array:
    """Flow velocity v(obs, x_t, t) of the policy ``params`` make under ``config`` (any model spec).

    obs [B, O], x_t [B, H, A]; time [] or [B] (one flow time per sample) or [B, H] (one per action position,
    as training-time RTC has it). Returns [B, H, A].
    """
    policy = network.bind(config, params, obs.shape[-1], x_t.shape[-1])
    return policy.velocity(obs, x_t, network.batch_time(time, x_t.shape[0]))


def velocity_with_prefix(
    params: Params, config: network.ModelSpec, obs: jax.Array, x_t: jax.Array, time: jax.Array, prefix: jax.Array
) -> jax.Array:
    """``velocity`` with flow time 1 at the ``prefix`` positions and ``time`` elsewhere (training-time RTC).

    time [] or [B]; prefix bool [H] or [B, H]. Equal to ``velocity(..., where(prefix, 1, time))``; the mixer's costs
    the per-sample network, not the per-position one.
    """
    policy = network.bind(config, params, obs.shape[-1], x_t.shape[-1])
    return network.velocity_with_prefix(policy, obs, x_t, time, prefix)


# ---------------------------------------------------------------------------------------------------------------
# Training loss


def flow_loss(
    params: Params,
    config: network.ModelSpec,
    key: jax.Array,
    obs: jax.Array,
    actions: jax.Array,
    loss_mask: jax.Array | None = None,
    position_weight: jax.Array | None = None,
) -> jax.Array:
    """The benchmark's flow-matching BC loss (a scalar); training-time RTC's loss when ``simulated_delay`` is set.
    ``config`` is any model spec (the mixer's ``ModelConfig`` or a ``network.NetworkConfig``).

    obs [B, O], actions [B, H, A]. BC: t ~ U(0, 1) per sample, x_t = (1-t)·ε + t·a, target a - ε, MSE over
    all elements. Training-time RTC (D = simulated_delay): d ~ p(d) ∝ exp(-d) on {0..D-1} per sample; positions
    i < d get flow time 1 and the clean action, and the squared error is averaged over the other positions only.

    ``loss_mask`` [B, H] (1 = valid position) is an optional extra mask. The benchmark itself has none: it zeroes
    the actions after an episode's end and trains on those zeros, which is what ``loss_mask=None`` reproduces.
    Masked averages divide by (valid elements + 1e-8), valid elements counting the action dimension, so that with
    nothing masked they equal the plain MSE.

    ``position_weight`` [H] (mean 1) multiplies each chunk position's squared error; None: all 1 (the benchmark).
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
    if position_weight is not None:
        sq_err = sq_err * position_weight[None, :, None]
    if valid is None:
        return jnp.mean(sq_err)
    return jnp.sum(sq_err * valid[:, :, None]) / (jnp.sum(valid) * A + 1e-8)
