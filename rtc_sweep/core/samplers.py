"""Every execution method as one sampler: ``(prev chunk, delay, horizon) -> new chunk``.

The method kind, the flow steps and the shapes are static (each costs a compile). The inference delay d and
the prefix attention horizon are traced int arrays of shape [] or [B], so one compiled program serves a
whole sweep over delays and execute horizons, with a different delay in every environment of a batch. They
are only ever compared against ``arange(H)``, never used to slice. So is the optional ``plan_length``: where the
previous chunk ran short of a plan (a stretched cycle under random delays, timeline.md "What the methods are
told"), positions from ``plan_length`` on are never a target.

Numerics follow the original benchmark (reference-benchmark.md §5.3-5.6 and §9); the conformance vectors in
``tests/data/conformance`` pin them.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from rtc_sweep.core import network
from rtc_sweep.core.network import FlowPolicy, ModelSpec, Params

# The method's config is declared with the other options (JAX-free, so the Hydra schema is built from it).
from rtc_sweep.core.options import METHODS, SCHEDULES, MethodConfig


def get_prefix_weights(start: jax.Array | int, end: jax.Array | int, total: int, schedule: str) -> jax.Array:
    """Guidance weight of each chunk position, as the original: start = d, end = H - s, total = H.

    ``start`` and ``end`` may be traced, of shape [] (returns [total]) or [B] (returns [B, total])::

        start=2, end=6, total=10, "linear":
          i:  0   1   2    3    4    5    6   7   8   9
          w:  1   1  4/5  3/5  2/5  1/5   0   0   0   0
              └ d ┘  └── decays ───────┘  └─ s, free ──┘

    ``start`` is first clipped to ``end``. "zeros" keeps only the frozen [0, start) (hard masking); "ones"
    weights all of [0, end); "exp" reshapes the linear ramp as w·(e^w - 1)/(e - 1).
    """
    start = jnp.minimum(jnp.asarray(start), jnp.asarray(end))[..., None]  # [..., 1]
    end = jnp.asarray(end)[..., None]
    idx = jnp.arange(total)
    shape = (*jnp.broadcast_shapes(start.shape[:-1], end.shape[:-1]), total)
    if schedule == "ones":
        w = jnp.ones(shape)
    elif schedule == "zeros":
        w = (idx < start).astype(jnp.float32)
    elif schedule in ("linear", "exp"):
        w = jnp.clip((start - 1 - idx) / (end - start + 1) + 1, 0, 1)
        if schedule == "exp":
            w = w * jnp.expm1(w) / (jnp.e - 1)
    else:
        raise ValueError(f"Invalid schedule: {schedule!r}; allowed: {', '.join(SCHEDULES)}")
    return jnp.broadcast_to(jnp.where(idx >= end, 0, w), shape)


def guidance_weights(
    method: MethodConfig,
    inference_delay: jax.Array | int,
    prefix_attention_horizon: jax.Array | int,
    total: int,
    plan_length: jax.Array | int | None = None,
) -> jax.Array:
    """How much each position of the previous chunk is a target: realtime's and hard masking's guidance weights,
    bid's backward-loss weights. [total], or [B, total] when an argument is [B].

    The reference's ``get_prefix_weights(d, H - s, H, schedule)`` (exp for bid, zeros for hard masking), then 0
    from ``plan_length`` on: those positions of ``prev`` carry no plan (timeline.md "What the methods are told").
    ``plan_length=None``, or any value >= H - s, leaves the reference's weights bit for bit.
    """
    schedule = {"hard_masking": "zeros", "bid": "exp"}.get(method.name, method.prefix_attention_schedule)
    w = get_prefix_weights(inference_delay, prefix_attention_horizon, total, schedule)
    if plan_length is None:
        return w
    has_plan = jnp.arange(total) < jnp.asarray(plan_length)[..., None]  # [total] or [B, total]
    return jnp.where(has_plan, w, 0.0)


def noise_shape(method: MethodConfig, batch: int, H: int, A: int) -> tuple[int, ...]:
    """Shape of the noise ``sample_chunk`` takes: [n_samples, B, H, A] for bid, [B, H, A] otherwise."""
    return (method.n_samples, batch, H, A) if method.name == "bid" else (batch, H, A)


def nfe_per_chunk(method: MethodConfig, num_flow_steps: int, has_weak: bool = False) -> int:
    """Network evaluations per chunk and observation; a vjp (forward + backward) counts as 2 (temporal ensembling
    samples naively: its averaging happens in the executor)."""
    if method.name in ("realtime", "hard_masking"):
        return 2 * num_flow_steps
    if method.name == "bid":
        return method.n_samples * num_flow_steps * (2 if has_weak else 1)
    return num_flow_steps


def _euler(step: Callable[[jax.Array, jax.Array, float], jax.Array], x0: jax.Array, num_flow_steps: int) -> jax.Array:
    # The flow time is carried and incremented by dt, as in the original, so that t matches it to the last bit.
    dt = 1 / num_flow_steps

    def body(carry: tuple[jax.Array, jax.Array], _: None) -> tuple[tuple[jax.Array, jax.Array], None]:
        x, t = carry
        return (step(x, t, dt), t + dt), None

    (x, _), _ = jax.lax.scan(body, (x0, jnp.zeros((), jnp.float32)), length=num_flow_steps)
    return x


def _velocity(policy: FlowPolicy, obs: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
    # The Euler loop carries one flow time for the batch; the interface takes one per sample.
    return policy.velocity(obs, x, network.batch_time(t, x.shape[0]))


def _naive(policy: FlowPolicy, obs: jax.Array, noise: jax.Array, num_flow_steps: int) -> jax.Array:
    return _euler(lambda x, t, dt: x + dt * _velocity(policy, obs, x, t), noise, num_flow_steps)


def _guidance_weight(t: jax.Array, beta: float) -> jax.Array:
    # ΠGDM's weight, (1-t)/t · (t² + (1-t)²)/(1-t)², capped at β; at t = 0 the ratio is +inf and becomes β.
    inv_r2 = (t**2 + (1 - t) ** 2) / ((1 - t) ** 2)
    c = jnp.nan_to_num((1 - t) / t, posinf=beta)
    return jnp.minimum(c * inv_r2, beta)


def _realtime(
    policy: FlowPolicy,
    obs: jax.Array,
    noise: jax.Array,
    prev_chunk: jax.Array,
    weights: jax.Array,
    beta: float,
    num_flow_steps: int,
) -> jax.Array:
    w = weights[..., None]  # [H, 1] or [B, H, 1]

    def step(x: jax.Array, t: jax.Array, dt: float) -> jax.Array:
        def denoise(x: jax.Array) -> tuple[jax.Array, jax.Array]:
            v = _velocity(policy, obs, x, t)
            return x + v * (1 - t), v

        # The samples are independent, so one vjp of the batch gives every sample's own e^T·∂f/∂x (the
        # original vmaps a per-sample vjp; same numbers, one program).
        x_1, vjp_fn, v = jax.vjp(denoise, x, has_aux=True)
        (correction,) = vjp_fn((prev_chunk - x_1) * w)  # [B, H, A]
        return x + dt * (v + _guidance_weight(t, beta) * correction)

    return _euler(step, noise, num_flow_steps)


def _training_time(
    policy: FlowPolicy,
    obs: jax.Array,
    noise: jax.Array,
    prev_chunk: jax.Array,
    inference_delay: jax.Array,
    num_flow_steps: int,
    plan_length: jax.Array | None = None,
) -> jax.Array:
    B, H, _ = noise.shape
    prefix = jnp.arange(H) < jnp.asarray(inference_delay)[..., None]  # [H] or [B, H]
    if plan_length is not None:  # a position without a plan is never a clean prefix
        prefix = prefix & (jnp.arange(H) < jnp.asarray(plan_length)[..., None])
    prefix = jnp.broadcast_to(prefix, (B, H))

    def step(x: jax.Array, t: jax.Array, dt: float) -> jax.Array:
        # The frozen prefix enters as clean actions at flow time 1, as the network saw it in training. As in the
        # original, the returned prefix is prev + dt·v rather than prev; the executor runs prev there anyway.
        x = jnp.where(prefix[:, :, None], prev_chunk, x)
        return x + dt * network.velocity_with_prefix(policy, obs, x, t, prefix)

    return _euler(step, noise, num_flow_steps)


def _bid(
    policy: FlowPolicy,
    obs: jax.Array,
    noise: jax.Array,
    prev_chunk: jax.Array,
    weights: jax.Array,
    num_flow_steps: int,
    bid_k: int | None,
    weak_policy: FlowPolicy | None,
) -> jax.Array:
    n, B, H, A = noise.shape
    obs_n = jnp.tile(obs, (n, 1))  # [(n B), O], sample-major like the noise

    def draw(p: FlowPolicy) -> jax.Array:
        return _naive(p, obs_n, noise.reshape(n * B, H, A), num_flow_steps).reshape(n, B, H, A)

    def backward_loss(chunks: jax.Array) -> jax.Array:
        err = jnp.linalg.norm(chunks - prev_chunk, axis=-1)  # [n, B, H]
        return jnp.sum(err * weights, axis=-1)  # [n, B]

    strong = draw(policy)
    loss = backward_loss(strong)
    if bid_k is not None:
        assert weak_policy is not None
        weak = draw(weak_policy)  # same noise, as the original's shared rng
        strong_idx = jax.lax.top_k(-loss.T, bid_k)[1].T  # [k, B]
        weak_idx = jax.lax.top_k(-backward_loss(weak).T, bid_k)[1].T  # [k, B]
        a_plus = jnp.take_along_axis(strong, strong_idx[:, :, None, None], axis=0)  # [k, B, H, A]
        a_minus = jnp.take_along_axis(weak, weak_idx[:, :, None, None], axis=0)  # [k, B, H, A]
        forward_loss = jnp.sum(
            jnp.linalg.norm(strong[:, None] - a_plus[None], axis=-1)
            - jnp.linalg.norm(strong[:, None] - a_minus[None], axis=-1),  # [n, k, B, H]
            axis=(1, 3),
        )  # [n, B]
        loss = loss + forward_loss / n
    best = jnp.argmin(loss, axis=0)  # [B]
    return jnp.take_along_axis(strong, best[None, :, None, None], axis=0)[0]  # [B, H, A]


def sample_chunk(
    method: MethodConfig,
    params: Params,
    model: ModelSpec,
    obs: jax.Array,
    noise: jax.Array,
    prev_chunk: jax.Array,
    inference_delay: jax.Array,
    prefix_attention_horizon: jax.Array,
    num_flow_steps: int,
    weak_params: Params | None = None,
    plan_length: jax.Array | None = None,
) -> jax.Array:
    """A new action chunk [B, H, A] for observations obs [B, O], from the policy ``params`` make under ``model``
    (a model spec, static: ``network.bind`` joins the two inside the trace; every sampler below sees only the
    ``network.FlowPolicy`` interface).

    ``noise`` has ``noise_shape(method, B, H, A)``. ``prev_chunk`` [B, H, A] is the previous chunk already
    shifted to line up with the new one (its executed-and-gone head removed, zeros after its end).
    ``inference_delay`` (d) and ``prefix_attention_horizon`` (H - s) are int arrays of shape [] or [B]; naive
    ignores both (and so does temporal_ensembling, whose sampler is naive), training_time uses only d.
    ``weak_params``: bid's weak policy, used iff ``method.bid_k`` is set. ``plan_length`` ([] or [B], optional):
    positions ``>= plan_length`` of ``prev_chunk`` carry no plan and are never a target (``guidance_weights``;
    training_time keeps them out of its clean prefix); None, as the reference, weights the whole chunk.
    """
    B, H, A = prev_chunk.shape
    assert noise.shape == noise_shape(method, B, H, A), (noise.shape, method.name, prev_chunk.shape)
    assert obs.shape[0] == B, (obs.shape, prev_chunk.shape)
    d = jnp.asarray(inference_delay)
    end = jnp.asarray(prefix_attention_horizon)
    assert d.shape in ((), (B,)), d.shape
    assert end.shape in ((), (B,)), end.shape
    if plan_length is not None:
        assert jnp.shape(plan_length) in ((), (B,)), jnp.shape(plan_length)

    policy = network.bind(model, params, obs.shape[-1], A)
    if method.name in ("naive", "temporal_ensembling"):
        return _naive(policy, obs, noise, num_flow_steps)
    if method.name in ("realtime", "hard_masking"):
        weights = guidance_weights(method, d, end, H, plan_length)  # [H] or [B, H]
        return _realtime(policy, obs, noise, prev_chunk, weights, method.max_guidance_weight, num_flow_steps)
    if method.name == "bid":
        if (method.bid_k is None) != (weak_params is None):
            raise ValueError("bid: the forward contrast needs both method.bid_k and weak_params, or neither")
        weights = guidance_weights(method, d, end, H, plan_length)
        weak = None if weak_params is None else network.bind(model, weak_params, obs.shape[-1], A)
        return _bid(policy, obs, noise, prev_chunk, weights, num_flow_steps, method.bid_k, weak)
    if method.name == "training_time":
        return _training_time(policy, obs, noise, prev_chunk, d, num_flow_steps, plan_length)
    raise ValueError(f"unknown method {method.name!r}; allowed: {', '.join(METHODS)}")
