"""A flow policy of one's own: a plain MLP over the flattened chunk, plugged in with ``model._target_``.

    PYTHONPATH=examples python -m rtc_sweep model._target_=my_policy.MyPolicy checkpoint=random \\
        +model.hidden_dim=128 num_evals=16 max_timesteps=32

Any ``nnx.Module`` works the same way (``rtc_sweep/core/network.py``): its constructor takes ``obs_dim`` and
``action_dim`` (the level's), ``rngs`` (from the run's seed) and its own keys, ``action_chunk_size`` among them;
it has those three sizes as attributes and ``velocity(obs [B, O], x_t [B, H, A], time [B] or [B, H]) -> [B, H, A]``.
The samplers need nothing else. Its keys are the ``model`` keys of a run (``+model.hidden_dim=128``, or a
``model/<name>.yaml`` option in a ``--config-dir``), checked against the constructor's signature before anything
compiles; the mixer's keys of the composed preset (``channel_dim``, ...) are not passed to it.

Training it and saving it for ``checkpoint=<file>``, in Python::

    from rtc_sweep.core import network
    from rtc_sweep.core.checkpoint import save_policy
    from rtc_sweep.core.policy import flow_loss

    spec = network.network_config("my_policy.MyPolicy", {"hidden_dim": 128})  # the static half (hashable)
    params = spec.init(jax.random.key(0), obs_dim, action_dim)  # the traced half: a dict of arrays
    loss, grads = jax.value_and_grad(flow_loss)(params, spec, key, obs, actions)  # the benchmark's flow loss
    save_policy("my_policy.pkl", params)  # then: model._target_=my_policy.MyPolicy checkpoint=my_policy.pkl
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from flax import nnx


def time_embedding(t: jax.Array, dim: int) -> jax.Array:
    """Sin-cos features of flow time: [...] -> [..., dim], periods from 1/64 to 4."""
    freq = 2 * jnp.pi / (4.0 * (1 / 256) ** jnp.linspace(0.0, 1.0, dim // 2))
    angle = t[..., None] * freq
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=-1)


class MyPolicy(nnx.Module):
    """v(obs, x_t, t) by an MLP on [flattened x_t, obs, one time embedding per action position].

    Per-position times ([B, H]) are what training-time RTC gives the network (its executed prefix at t = 1); with
    one time per sample every position gets that time.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        *,
        rngs: nnx.Rngs,
        action_chunk_size: int = 8,
        hidden_dim: int = 256,
        depth: int = 2,
        time_dim: int = 16,
    ):
        self.obs_dim, self.action_dim, self.action_chunk_size = obs_dim, action_dim, action_chunk_size
        self.time_dim = time_dim
        flat = action_chunk_size * action_dim
        widths = [flat + obs_dim + action_chunk_size * time_dim, *[hidden_dim] * depth]
        self.hidden = nnx.List([nnx.Linear(i, o, rngs=rngs) for i, o in itertools.pairwise(widths)])
        self.out = nnx.Linear(widths[-1], flat, rngs=rngs)

    def velocity(self, obs: jax.Array, x_t: jax.Array, time: jax.Array) -> jax.Array:
        B, H, A = x_t.shape
        t = jnp.broadcast_to(time[:, None], (B, H)) if time.ndim == 1 else time  # [B, H]
        h = jnp.concatenate([x_t.reshape(B, H * A), obs, time_embedding(t, self.time_dim).reshape(B, -1)], axis=-1)
        for layer in self.hidden:
            h = nnx.gelu(layer(h))
        return self.out(h).reshape(B, H, A)
