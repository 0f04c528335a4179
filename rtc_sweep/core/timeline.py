"""The asynchronous execution timeline as a pure, jitted rollout (the contract: docs/timeline.md).

Every environment runs its own sequence of inference cycles. Cycle ``k`` starts at tick ``t_k``, observes
``o_{t_k}``, draws its true delay ``d_k`` (a stream keyed by seed, environment and cycle only: common random
numbers), tells the method ``d̂_k``, picks the execute horizon ``s_k`` and lasts ``L_k = max(s_k, d_k)`` ticks::

    tick      t_k        t_k+d_k                 t_k+L_k
              |--- cur[i] (or fallback if i >= valid) ---|--- new[i] ---|
              ^ observe, start inference   ^ new chunk lands            ^ next cycle: cur <- new[L_k:]

Why a scan over ticks and not over cycles: cycles of different environments end at different ticks. A scan
over cycles must step every environment for the longest cycle in the batch (masked), and with s = 1 and a
spike of 4 ticks somewhere in the batch that is 4x the env steps; env stepping is the expensive part on CPU
(measured 2966 env steps/s bare on 2 cores, 256 envs). A scan over ticks steps each environment exactly T
times and calls the sampler only on ticks where at least one environment of the (per-device) batch starts a
cycle (``lax.cond``); with fixed delays all environments stay in phase and the sampler runs once per ``s``
ticks, as in the reference. Measured (scripts/bench_rollout.py, small model, 256 envs, s = 2): naive at
0.97 of bare-env steps/s, RTC at 0.69; per-environment long_tail delays cost 1.02x (naive) and 0.96x (RTC)
the time of a fixed delay. The small model's chunk costs well under one batch env tick, so even a sampler
call on every tick would stay within the 1.5x budget, while the cycle scan would waste 2-4x env steps.

What the methods are told (timeline.md): ``prev`` is ``cur`` with the fallback the controller will run on
``valid_k <= i < d̂_k`` (``guidance_inputs``), and positions from ``max(valid_k, d̂_k)`` on are never a target
(``plan_length``, samplers.guidance_weights). On the reference grid both are no-ops, bit for bit.

The two baselines ride on the same scan. Synchronous execution (``execute_policy.mode=synchronous``, traced):
the cycle lasts ``d_k + s``, its first ``d_k`` ticks starve, ``new[j]`` runs at ``t_k + d_k + j``. Temporal
ensembling (``method=temporal_ensembling``, static: only its program carries the buffer): a ring of the last H
chunks, each with its observation and landing tick; a tick's action is the ``exp(-m·i)``-weighted mean of the
landed chunks covering it (``i`` = 0 for the oldest).

A deadline (``delay_profile.deadline`` = D, traced in ``DelayArrays.deadline``; none = a value no draw reaches): a
cycle whose delay exceeds D is abandoned at ``i = D``: it lasts ``L_k = D``, its chunk never lands (nor votes, under
temporal ensembling), and the next cycle starts at ``t_k + D`` from the observation there, with ``cur`` shifted by D
(what the controller still has; the fallback once it runs dry) and D pushed as the observed delay. With no deadline
every ``where`` on it selects the old values, bit for bit.

Training rolls out on this same scan (rtc_sweep/train/rollout.py), so a training log's solve rate is the
evaluation's by construction. What it adds is off by default, and off the program is the evaluation's, bit for
bit: a record of every tick's transition (``RolloutSpec.record_transitions``, static: the observation before the
tick's action, the commanded action, done, solved, the running return and length), the env state every few ticks
(``RolloutSpec.snapshot_every``, static: DAgger re-plans from those states), and exploration (``Exploration``,
traced, given or not: a scale on the flow sampler's initial noise and extra Gaussian noise on every commanded
action, from a stream of its own, so that the delay, flow-noise and env-noise draws stay those of the evaluation).

Static (one compile each): the method, the model sizes, the batch shape, ``T``, what is recorded, whether
exploration is given. Traced (one program serves a whole sweep): the delay profile's values, the execute policy
(mode, horizon, s_min, estimator, buffer size, starvation fallback), temporal ensembling's decay, the level's state
and params, the policy parameters, the seed and the exploration knobs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from rtc_sweep.core import delays as delays_lib
from rtc_sweep.core import kinetix_env
from rtc_sweep.core.kinetix_env import Env, FirstEpisode
from rtc_sweep.core.network import ModelSpec
from rtc_sweep.core.run_config import MAX_BUFFER, ExecutePolicy, RunConfig
from rtc_sweep.core.samplers import MethodConfig, noise_shape, sample_chunk

# Independent random streams, each then keyed by environment index (and cycle or tick): none depends on the
# method, the micro-batch size or the device count.
_FLOW_NOISE, _ACTION_NOISE, _INIT_NOISE, _EXPLORE_NOISE = 1, 2, 3, 4  # the delay stream's tag: delays.stream_key


class Exploration(NamedTuple):
    """Traced exploration knobs of a training rollout (one program serves every value). A rollout given none runs
    the evaluation's program; given ``Exploration.none()`` it runs another program with the same results."""

    noise_scale: jax.Array  # [] float32, multiplies the flow sampler's initial noise of every chunk (1 = the policy's)
    action_noise_std: jax.Array  # [] float32, extra Gaussian noise on every commanded action (the env's comes on top)

    @staticmethod
    def none() -> Exploration:
        return Exploration(jnp.float32(1.0), jnp.float32(0.0))


class ExecuteArrays(NamedTuple):
    """The execute policy as traced arrays (see run_config.ExecutePolicy), and temporal ensembling's decay."""

    adaptive: jax.Array  # [] bool
    synchronous: jax.Array  # [] bool: inference blocks the controller (L_k = d_k + s)
    execute_horizon: jax.Array  # [] int32
    s_min: jax.Array  # [] int32
    oracle: jax.Array  # [] bool
    buffer_size: jax.Array  # [] int32, 1..MAX_BUFFER
    prior_delay: jax.Array  # [] int32
    hold: jax.Array  # [] bool: starvation repeats the last executed action (else zeros)
    te_decay: jax.Array  # [] float32: temporal ensembling's m (method.te_decay); read only by that method

    @staticmethod
    def from_config(cfg: ExecutePolicy, te_decay: float = MethodConfig.te_decay) -> ExecuteArrays:
        assert 1 <= cfg.buffer_size <= MAX_BUFFER, cfg.buffer_size  # evaluate.validate names the key
        return ExecuteArrays(
            adaptive=jnp.asarray(cfg.mode == "adaptive"),
            synchronous=jnp.asarray(cfg.mode == "synchronous"),
            execute_horizon=jnp.int32(cfg.execute_horizon),
            s_min=jnp.int32(cfg.s_min),
            oracle=jnp.asarray(cfg.estimator == "oracle"),
            buffer_size=jnp.int32(cfg.buffer_size),
            prior_delay=jnp.int32(cfg.prior_delay),
            hold=jnp.asarray(cfg.starvation == "hold"),
            te_decay=jnp.float32(te_decay),
        )


@dataclasses.dataclass(frozen=True)
class RolloutSpec:
    """The static part of a rollout: everything here costs a compile."""

    env: Env
    method: MethodConfig  # its te_decay is traced (ExecuteArrays.te_decay) and reset here, out of the static key
    model: ModelSpec  # the network's static half (core/network.py): the mixer's ModelConfig or a user's
    num_flow_steps: int
    num_ticks: int  # T
    obs_dim: int
    action_dim: int
    record_actions: bool = False  # also return the executed actions and starvation flags per tick (tests, video)
    record_transitions: bool = False  # also return every tick's transition (PerEnv.record: training's data)
    # > 0: also return the env state after every this many ticks, num_snapshots times (PerEnv.snapshots: DAgger)
    snapshot_every: int = 0
    num_snapshots: int = 0

    def __post_init__(self) -> None:
        # One program for every te_decay: the rollout reads it from ExecuteArrays, so it must not key the cache.
        object.__setattr__(self, "method", dataclasses.replace(self.method, te_decay=MethodConfig.te_decay))
        every, n = self.snapshot_every, self.num_snapshots
        if every < 0 or n < 0 or (every > 0) != (n > 0) or every * n > self.num_ticks:
            raise ValueError(f"snapshot_every={every}, num_snapshots={n}: both 0, or both >= 1 with a product <= T")

    @property
    def ensembling(self) -> bool:
        return self.method.name == "temporal_ensembling"


class Record(NamedTuple):
    """Every tick's transition (``RolloutSpec.record_transitions``), env-major [B, T, ...]. Episodes auto-reset, so
    one environment may play several; the running values restart after each ``done``."""

    obs: jax.Array  # [B, T, O] float16, the observation at tick t, before its action (a cycle starting at t sees it)
    action: jax.Array  # [B, T, A] float32, the commanded action (exploration noise included, the env's not)
    done: jax.Array  # [B, T] bool, the episode ended with this tick's step
    solved: jax.Array  # [B, T] bool, the goal reward fired on this tick's step
    return_: jax.Array  # [B, T] float32, the episode's return so far (its return on done rows)
    length: jax.Array  # [B, T] int32, the episode's length so far (its length on done rows)


class Snapshots(NamedTuple):
    """The env after ticks ``snapshot_every · (j + 1)``, ``j < num_snapshots`` (``RolloutSpec.snapshot_every``),
    env-major [B, S, ...]."""

    state: Any  # the Kinetix EnvState, leaves [B, S, ...]
    obs: jax.Array  # [B, S, O] float16, the observation there (what the next tick's action is chosen at)
    live: jax.Array  # [B, S] bool, the first episode had not ended yet
    tick: jax.Array  # [B, S] int32, ticks the first episode has run (its elapsed time)


class Setup(NamedTuple):
    """A job's rollout apart from the policy: the static spec and the traced values the rollout takes."""

    spec: RolloutSpec
    level: kinetix_env.Level
    env_params: Any
    delay_arrays: delays_lib.DelayArrays
    execute: ExecuteArrays


def setup(cfg: RunConfig, record_actions: bool = False, record_transitions: bool = False, snapshot_every: int = 0,
          num_snapshots: int = 0) -> Setup:  # fmt: skip
    """The rollout of a checked ``RunConfig`` (its delay resolved), built one way for evaluation
    (sweep/evaluate.py: ``prepare``) and training (train/rollout.py): the level, the env with the job's action
    noise, ``max_timesteps`` ticks, the method, the delay law and the execute policy. Mode measured: the delay
    arrays are a placeholder until its latencies are measured (evaluate does)."""
    level = kinetix_env.load_level(cfg.level)
    env = kinetix_env.make_env(level.static_params, action_noise_std=cfg.action_noise_std)
    spec = RolloutSpec(
        env=env,
        method=cfg.method,
        model=cfg.model,
        num_flow_steps=cfg.num_flow_steps,
        num_ticks=cfg.max_timesteps,
        obs_dim=env.obs_dim(level.params),
        action_dim=env.action_dim,
        record_actions=record_actions,
        record_transitions=record_transitions,
        snapshot_every=snapshot_every,
        num_snapshots=num_snapshots,
    )
    return Setup(
        spec=spec,
        level=level,
        env_params=kinetix_env.env_params(level, cfg.max_timesteps),
        delay_arrays=cfg.delay.arrays(cfg.max_timesteps),
        execute=ExecuteArrays.from_config(cfg.execute, te_decay=cfg.method.te_decay),
    )


def batch_size(cfg: RunConfig) -> int:
    """Environments per rollout call: ``micro_batch`` (at most ``num_evals``) rounded up to the device count. The
    envs past ``num_evals`` of the last call are padding (their results are dropped)."""
    n_dev = len(jax.devices())
    return max(n_dev, -(-min(cfg.micro_batch, cfg.num_evals) // n_dev) * n_dev)


class PerEnv(NamedTuple):
    """Per-environment results of a rollout, [B] unless noted."""

    first: FirstEpisode
    cycle_delay: jax.Array  # [B, T] int32: d_k of the cycle that starts at that tick, -1 where none starts
    n_cycles: jax.Array
    n_violate: jax.Array  # cycles with d_k > valid_k (the chunk runs dry)
    n_late: jax.Array  # cycles with d_k > s_k
    n_under: jax.Array  # cycles with d_k > d̂_k
    n_abandoned: jax.Array  # cycles with d_k > deadline (the chunk was abandoned, a new inference started)
    sum_execute_horizon: jax.Array
    sum_cycle_length: jax.Array
    starved_ticks: jax.Array
    max_delta: jax.Array  # max_t ||a_t - a_{t-1}||
    max_ddelta: jax.Array  # max_t ||a_t - 2 a_{t-1} + a_{t-2}||
    actions: jax.Array | None  # [B, T, A] executed (pre-noise) actions, when record_actions
    starved: jax.Array | None  # [B, T] bool, when record_actions
    source: jax.Array | None  # [B, T, 2] int32, when record_actions: (cycle of the chunk, index in it) per
    # executed action; cycle -1 is the initial chunk, (-2, -2) a starved tick; temporal ensembling: the newest of
    # the chunks that voted
    record: Record | None = None  # when record_transitions
    snapshots: Snapshots | None = None  # when snapshot_every


_NESTED = ("first", "record", "snapshots")
_OPTIONAL = ("actions", "starved", "source")


def per_env_arrays(per_env: PerEnv) -> dict[str, np.ndarray]:
    """An evaluation's per-environment results as named numpy arrays (``first.solved``, ``n_cycles``, ...), for a
    file; ``per_env_from_arrays`` rebuilds them. Recorded transitions and snapshots are refused (evaluation never
    records them)."""
    if per_env.record is not None or per_env.snapshots is not None:
        raise ValueError("per_env_arrays: results with recorded transitions or snapshots are not stored")
    out = {f"first.{k}": np.asarray(v) for k, v in per_env.first._asdict().items()}
    out.update({k: np.asarray(v) for k, v in per_env._asdict().items() if k not in _NESTED and v is not None})
    return out


def per_env_from_arrays(arrays: Any) -> PerEnv:
    """``per_env_arrays``' inverse (any mapping of names to arrays, e.g. an opened .npz); KeyError when a required
    name is missing."""
    first_fields: dict[str, Any] = {k: np.asarray(arrays[f"first.{k}"]) for k in FirstEpisode._fields}
    first = FirstEpisode(**first_fields)
    rest: dict[str, Any] = {
        k: None if k in _OPTIONAL and k not in arrays else np.asarray(arrays[k])
        for k in PerEnv._fields
        if k not in _NESTED
    }
    return PerEnv(first=first, **rest)


class _Ensemble(NamedTuple):
    """Temporal ensembling's ring of the last chunks (slot ``k % n``; the initial chunk is cycle -1)."""

    chunks: jax.Array  # [B, n, H, A]
    obs_tick: jax.Array  # [B, n] tick of the chunk's observation: chunk[i] is planned for obs_tick + i
    land: jax.Array  # [B, n] tick from which it votes (obs_tick + d)
    end: jax.Array  # [B, n] first tick it no longer votes at (obs_tick + H; the initial chunk: when cycle 0 lands)
    cycle: jax.Array  # [B, n] cycle that sampled it; -1 the initial chunk, -2 an empty slot


class _Carry(NamedTuple):
    env_state: Any
    obs: jax.Array  # [B, O]
    cur: jax.Array  # [B, H, A], cur[i] is planned for tick t_k + i
    valid: jax.Array  # [B] real entries of cur
    new: jax.Array  # [B, H, A], the chunk of the running cycle (lands at i = d)
    i: jax.Array  # [B] ticks since the running cycle started
    d: jax.Array  # [B] true delay of the running cycle
    cycle_len: jax.Array  # [B] L of the running cycle
    k: jax.Array  # [B] cycles started so far
    buf: jax.Array  # [B, MAX_BUFFER] observed delays, ring buffer
    cur_src: jax.Array  # [B, 2] provenance of cur[0]: (cycle that sampled it, index in that chunk)
    last: jax.Array  # [B, A] last executed action
    last2: jax.Array  # [B, A] the one before
    stats: PerEnv
    ensemble: _Ensemble | None  # temporal ensembling only
    episode: tuple[jax.Array, jax.Array] | None  # record_transitions only: the running episode's return and length


def shift_left(chunk: jax.Array, n: jax.Array) -> jax.Array:
    """``chunk[n:]`` padded with zeros to length H, per row, for a traced ``n`` ([B])::

    chunk  a0 a1 a2 a3 a4 a5 a6 a7      n = 3
    out    a3 a4 a5 a6 a7 0  0  0
    """
    H = chunk.shape[1]
    src = jnp.arange(H)[None, :] + n[:, None]  # [B, H]
    taken = jnp.take_along_axis(chunk, jnp.clip(src, 0, H - 1)[..., None], axis=1)
    return jnp.where((src < H)[..., None], taken, 0.0)


def _row(chunk: jax.Array, i: jax.Array) -> jax.Array:
    """``chunk[b, i[b]]`` for a traced ``i`` (clipped; the caller masks out-of-range)."""
    H = chunk.shape[1]
    return jnp.take_along_axis(chunk, jnp.clip(i, 0, H - 1)[:, None, None], axis=1)[:, 0]


def guidance_inputs(
    cur: jax.Array, valid: jax.Array, d_hat: jax.Array, last: jax.Array, hold: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """What RTC-style methods are told about ``cur`` (timeline.md "What the methods are told"): ``(prev, plan)``.

    ``prev[i] = cur[i]`` for ``i < valid``; for ``valid <= i < d̂`` the fallback the controller will run there
    (hold: the last executed action, which is ``cur[valid - 1]``, or ``last`` when ``valid = 0``; zero: zeros),
    frozen like the rest of the prefix. ``plan = max(valid, d̂)`` [B]: from there on ``prev`` carries no plan
    and gets no weight. When ``d̂ <= valid`` (every cycle of the reference grid), ``prev`` is ``cur`` bit for bit.
    Worked case (H = 8, hold, valid = 2, d̂ = 3)::

        cur   c0 c1 0  0  0  0  0  0
        prev  c0 c1 c1 0  0  0  0  0     plan = 3: weight 0 on 3..7
    """
    H = cur.shape[1]
    held = jnp.where((valid > 0)[:, None], _row(cur, valid - 1), last)
    fallback = jnp.where(hold, held, 0.0)  # [B, A]
    idx = jnp.arange(H)[None, :]
    fill = (idx >= valid[:, None]) & (idx < d_hat[:, None])  # [B, H]
    prev = jnp.where(fill[..., None], fallback[:, None, :], cur)
    return prev, jnp.maximum(valid, d_hat)


def ensemble_action(ens: _Ensemble, t: jax.Array, decay: jax.Array) -> jax.Array:
    """Temporal ensembling at tick ``t``: the mean of every landed chunk's prediction for ``t``, with ACT's
    weights ``exp(-m·i)``, ``i`` the chunk's rank among the voters, 0 for the oldest. [B, A]; zeros where no
    chunk votes (the caller runs the fallback there: exactly the starved ticks)."""
    H = ens.chunks.shape[2]
    voter = (ens.cycle >= -1) & (ens.land <= t) & (t < ens.end)  # [B, n]
    idx = jnp.clip(t - ens.obs_tick, 0, H - 1)
    pred = jnp.take_along_axis(ens.chunks, idx[:, :, None, None], axis=2)[:, :, 0]  # [B, n, A]
    older = voter[:, None, :] & (ens.cycle[:, None, :] < ens.cycle[:, :, None])  # [B, j, l]: l votes, older than j
    rank = jnp.sum(older, axis=-1)  # [B, n]
    w = jnp.where(voter, jnp.exp(-decay * rank), 0.0)
    total = jnp.sum(w, axis=-1)
    return jnp.sum(w[..., None] * pred, axis=1) / jnp.where(total > 0, total, 1.0)[:, None]


def stream_keys(seed: jax.Array, env_index: jax.Array, stream: int) -> jax.Array:
    """The per-environment keys of one of the streams above: [B] key arrays."""
    base = jax.random.key(seed)
    return jax.vmap(lambda e: jax.random.fold_in(jax.random.fold_in(base, stream), e))(env_index)


def env_keys(seed: jax.Array, env_index: jax.Array, scope_batch: bool) -> tuple[jax.Array, ...]:
    """Per-environment stream keys (delay, flow noise, action noise, initial-chunk noise): [B] key arrays."""
    base = jax.random.key(seed)
    per_env = lambda stream: stream_keys(seed, env_index, stream)
    scope = "batch" if scope_batch else "env"
    delay = jax.vmap(lambda e: delays_lib.stream_key(base, e, scope))(env_index)
    return delay, per_env(_FLOW_NOISE), per_env(_ACTION_NOISE), per_env(_INIT_NOISE)


def _noise(spec: RolloutSpec, keys: jax.Array) -> jax.Array:
    """Flow noise for a batch from per-env keys: [B, H, A], or [n, B, H, A] for BID."""
    H, A = spec.model.action_chunk_size, spec.action_dim
    shape = noise_shape(spec.method, 1, H, A)
    per_env = jax.vmap(lambda key: jax.random.normal(key, shape))(keys)  # [B, ...shape with batch 1]
    if len(shape) == 4:  # BID: [B, n, 1, H, A] -> [n, B, H, A]
        return jnp.moveaxis(per_env[:, :, 0], 0, 1)
    return per_env[:, 0]


def rollout(
    spec: RolloutSpec,
    params: Any,
    weak_params: Any,
    level_state: Any,
    env_params: Any,
    delay_arrays: Any,
    execute: ExecuteArrays,
    seed: jax.Array,
    env_index: jax.Array,
    *,
    scope_batch: bool = False,
    injected_delays: jax.Array | None = None,
    explore: Exploration | None = None,
) -> PerEnv:
    """Roll out ``len(env_index)`` environments for ``spec.num_ticks`` ticks. Pure; jit it (see make_rollout).

    ``injected_delays`` [B, K] replaces the delay draws (cycle k of env b gets ``injected_delays[b, k]``): tests.
    ``explore``: training's exploration (none: the evaluation's program).
    """
    H, A, T = spec.model.action_chunk_size, spec.action_dim, spec.num_ticks
    B = env_index.shape[0]
    delay_keys, flow_keys, action_keys, init_keys = env_keys(seed, env_index, scope_batch)
    naive = dataclasses.replace(spec.method, name="naive")

    def noise(s: RolloutSpec, keys: jax.Array) -> jax.Array:
        n = _noise(s, keys)
        return n if explore is None else n * explore.noise_scale

    obs0, state0 = jax.vmap(lambda _: spec.env.reset(level_state))(env_index)
    zeros_i = jnp.zeros((B,), jnp.int32)
    init_chunk = sample_chunk(
        naive, params, spec.model, obs0, noise(dataclasses.replace(spec, method=naive), init_keys),
        jnp.zeros((B, H, A)), zeros_i, zeros_i, spec.num_flow_steps,
    )  # fmt: skip
    explore_keys = None if explore is None else stream_keys(seed, env_index, _EXPLORE_NOISE)

    def draw(k: jax.Array) -> jax.Array:
        if injected_delays is not None:
            return jnp.take_along_axis(injected_delays, jnp.clip(k, 0, injected_delays.shape[1] - 1)[:, None], 1)[:, 0]
        return jax.vmap(delays_lib.draw_delay, in_axes=(None, 0, 0))(delay_arrays, delay_keys, k)

    sync = execute.synchronous
    # Injected-delay callers may pass no delay arrays: then there is no deadline either.
    deadline = jnp.int32(delays_lib.NO_DEADLINE) if delay_arrays is None else delay_arrays.deadline

    def tick(c: _Carry, t: jax.Array) -> tuple[_Carry, tuple[jax.Array, ...]]:
        # 1. The running cycle ends: cur <- new shifted by L (synchronous: by s, as new[0 .. s-1] ran after the
        # d ticks of blocking), the delay becomes observed.
        boundary = c.i >= c.cycle_len  # [B]; at t = 0 every env has i = L = 0
        ended = boundary & (c.k > 0)
        # An abandoned cycle (past its deadline) is the only one that ends before its chunk lands: d > L. It leaves
        # cur shifted by L (what the controller still had) and reports L as the delay it saw.
        dropped = c.d > c.cycle_len
        shift = c.cycle_len - jnp.where(sync, c.d, 0)
        landed_cur = shift_left(c.new, shift)
        kept_cur = shift_left(c.cur, c.cycle_len)
        cur = jnp.where(ended[:, None, None], jnp.where(dropped[:, None, None], kept_cur, landed_cur), c.cur)
        landed_src = jnp.stack([c.k - 1, shift], axis=1)
        kept_src = c.cur_src + jnp.stack([jnp.zeros_like(c.i), c.cycle_len], axis=1)
        cur_src = jnp.where(ended[:, None], jnp.where(dropped[:, None], kept_src, landed_src), c.cur_src)
        kept_valid = jnp.maximum(c.valid - c.cycle_len, 0)
        valid = jnp.where(ended, jnp.where(dropped, kept_valid, jnp.maximum(H - shift, 0)), c.valid)
        slot = (c.k - 1) % MAX_BUFFER
        seen = jnp.where(dropped, c.cycle_len, c.d)
        pushed = c.buf.at[jnp.arange(B), slot].set(jnp.where(ended, seen, c.buf[jnp.arange(B), slot]))

        # 2. A new cycle starts where one ended: draw d_k, estimate d̂_k, pick s_k, sample the new chunk.
        d_new = draw(c.k)
        n_seen = jnp.minimum(c.k, execute.buffer_size)  # delays observed so far, up to the buffer size
        age = (c.k[:, None] - 1 - jnp.arange(MAX_BUFFER)[None, :]) % MAX_BUFFER  # slot j holds cycle k-1-age
        recent = jnp.arange(MAX_BUFFER)[None, :] < n_seen[:, None]
        in_window = jnp.take_along_axis(recent, age, axis=1)
        buffered_max = jnp.max(jnp.where(in_window, pushed, -1), axis=1)
        d_hat = jnp.where(execute.oracle, d_new, jnp.where(n_seen > 0, buffered_max, execute.prior_delay))
        s_new = jnp.where(execute.adaptive, jnp.clip(jnp.maximum(d_hat, execute.s_min), 1, H), execute.execute_horizon)
        s_new = jnp.broadcast_to(s_new, (B,))
        horizon = H - s_new  # prefix attention horizon
        # Synchronous: nothing of cur runs while inference blocks, so nothing is frozen (d̂ = 0 for the sampler).
        d_told = jnp.where(sync, 0, d_hat)
        prev, plan_length = guidance_inputs(cur, valid, d_told, c.last, execute.hold)

        def run_sampler(_: None) -> jax.Array:
            return sample_chunk(
                spec.method, params, spec.model, c.obs, noise(spec, jax.vmap(jax.random.fold_in)(flow_keys, c.k)),
                prev, d_told, horizon, spec.num_flow_steps, weak_params, plan_length=plan_length,
            )  # fmt: skip

        sampled = jax.lax.cond(jnp.any(boundary), run_sampler, lambda _: c.new, None)
        new = jnp.where(boundary[:, None, None], sampled, c.new)
        d = jnp.where(boundary, d_new, c.d)
        abandon = d_new > deadline  # this cycle's chunk will miss the deadline: it lasts D ticks
        length = jnp.where(abandon, deadline, jnp.where(sync, d_new + s_new, jnp.maximum(s_new, d_new)))
        cycle_len = jnp.where(boundary, length, c.cycle_len)
        i = jnp.where(boundary, 0, c.i)
        ensemble = c.ensemble
        if ensemble is not None:  # the new chunk joins the ring now and votes from t + d on
            n_slots = ensemble.cycle.shape[1]
            put = boundary[:, None] & (jnp.arange(n_slots)[None, :] == (c.k % n_slots)[:, None])  # [B, n]
            # Cycle 0's chunk supersedes the initial one (both are drawn from o_0): that one stops when it lands.
            superseded = (boundary & (c.k == 0) & ~abandon)[:, None] & (ensemble.cycle == -1)
            ensemble = _Ensemble(
                chunks=jnp.where(put[:, :, None, None], sampled[:, None], ensemble.chunks),
                obs_tick=jnp.where(put, t, ensemble.obs_tick),
                land=jnp.where(put, t + d_new[:, None], ensemble.land),
                end=jnp.where(put, t + H, jnp.where(superseded, t + d_new[:, None], ensemble.end)),
                cycle=jnp.where(put, jnp.where(abandon, -2, c.k)[:, None], ensemble.cycle),  # abandoned: no vote
            )

        # 3. Execute tick t: the old chunk until the new one lands at i = d, the fallback if the old one ran dry.
        # Synchronous: the fallback until it lands, then new[i - d].
        arrived = i >= d
        runnable = jnp.where(sync, 0, valid)  # entries of cur the controller may run while the new chunk is out
        starved = ~arrived & (i >= runnable)
        fallback = jnp.where(execute.hold, c.last, 0.0)
        offset = jnp.where(sync, d, 0)
        if ensemble is None:
            planned = _row(new, i - offset)
            action = jnp.where(arrived[:, None], planned, jnp.where(starved[:, None], fallback, _row(cur, i)))
        else:  # every landed chunk covering t votes; none does exactly on the starved ticks
            action = jnp.where(starved[:, None], fallback, ensemble_action(ensemble, t, execute.te_decay))

        if explore_keys is not None:  # exploration: extra noise on the commanded action, a stream of its own
            extra_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(explore_keys, t)
            extra = jax.vmap(lambda k: jax.random.normal(k, (A,)))(extra_keys)
            action = action + explore.action_noise_std * extra  # type: ignore[union-attr]

        tick_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(action_keys, t)
        obs, env_state, info = jax.vmap(spec.env.step, in_axes=(0, 0, 0, None, None))(
            tick_keys, c.env_state, action, level_state, env_params
        )

        st = c.stats
        delta = jnp.linalg.norm(action - c.last, axis=-1)
        ddelta = jnp.linalg.norm(action - 2 * c.last + c.last2, axis=-1)
        stats = st._replace(
            first=jax.vmap(FirstEpisode.update)(st.first, info),
            n_cycles=st.n_cycles + boundary,
            n_violate=st.n_violate + (boundary & (d_new > jnp.where(sync, 0, valid))),
            n_late=st.n_late + (boundary & (d_new > s_new)),
            n_under=st.n_under + (boundary & (d_new > d_hat)),
            n_abandoned=st.n_abandoned + (boundary & abandon),
            sum_execute_horizon=st.sum_execute_horizon + jnp.where(boundary, s_new, 0),
            sum_cycle_length=st.sum_cycle_length + jnp.where(boundary, cycle_len, 0),
            starved_ticks=st.starved_ticks + starved,
            max_delta=jnp.where(t >= 1, jnp.maximum(st.max_delta, delta), st.max_delta),
            max_ddelta=jnp.where(t >= 2, jnp.maximum(st.max_ddelta, ddelta), st.max_ddelta),
        )
        episode = c.episode
        outputs: tuple[jax.Array, ...] = (jnp.where(boundary, d_new, -1),)
        if spec.record_actions:
            new_src = jnp.stack([c.k + boundary - 1, i - offset], axis=1)
            old_src = cur_src + jnp.stack([jnp.zeros_like(i), i], axis=1)
            source = jnp.where(arrived[:, None], new_src, jnp.where(starved[:, None], -2, old_src))
            outputs += (action, starved, source)
        if episode is not None:  # record_transitions
            ret, length = episode[0] + info.reward, episode[1] + 1
            outputs += (c.obs.astype(jnp.float16), action, info.done, info.solved, ret, length)
            episode = (jnp.where(info.done, 0.0, ret), jnp.where(info.done, 0, length))
        carry = _Carry(
            env_state=env_state, obs=obs, cur=cur, valid=valid, new=new, i=i + 1, d=d, cycle_len=cycle_len,
            k=c.k + boundary, buf=pushed, cur_src=cur_src, last=action, last2=c.last, stats=stats, ensemble=ensemble,
            episode=episode,
        )  # fmt: skip
        return carry, outputs

    zf = jnp.zeros((B,), jnp.float32)
    stats0 = PerEnv(
        first=jax.vmap(lambda _: FirstEpisode.init())(env_index),
        cycle_delay=jnp.zeros((0,)), n_cycles=zeros_i, n_violate=zeros_i, n_late=zeros_i, n_under=zeros_i,
        n_abandoned=zeros_i, sum_execute_horizon=zeros_i, sum_cycle_length=zeros_i, starved_ticks=zeros_i, max_delta=zf,
        max_ddelta=zf,
        actions=None, starved=None, source=None,
    )  # fmt: skip
    ensemble0 = None
    if spec.ensembling:
        # At most H landed chunks cover a tick (one observation per tick, the initial one superseded by cycle 0's),
        # so a ring of H slots never overwrites a voter; 2 when H = 1, where the initial chunk and cycle 0's coexist.
        n_slots = max(H, 2)
        initial = jnp.arange(n_slots) == n_slots - 1  # slot (-1) % n
        ensemble0 = _Ensemble(
            chunks=jnp.where(initial[None, :, None, None], init_chunk[:, None], 0.0),
            obs_tick=jnp.zeros((B, n_slots), jnp.int32),
            land=jnp.zeros((B, n_slots), jnp.int32),
            end=jnp.full((B, n_slots), H, jnp.int32),
            cycle=jnp.broadcast_to(jnp.where(initial, -1, -2), (B, n_slots)).astype(jnp.int32),
        )
    carry0 = _Carry(
        env_state=state0, obs=obs0, cur=init_chunk, valid=jnp.full((B,), H, jnp.int32), new=init_chunk,
        i=zeros_i, d=zeros_i, cycle_len=zeros_i, k=zeros_i, buf=jnp.zeros((B, MAX_BUFFER), jnp.int32),
        cur_src=jnp.stack([jnp.full((B,), -1, jnp.int32), zeros_i], axis=1),
        last=jnp.zeros((B, A)), last2=jnp.zeros((B, A)), stats=stats0, ensemble=ensemble0,
        episode=(zf, zeros_i) if spec.record_transitions else None,
    )  # fmt: skip
    snapshots = None
    if spec.snapshot_every:  # the same ticks, scanned in blocks that end on the snapshot ticks, then the rest
        S, every = spec.num_snapshots, spec.snapshot_every

        def block(c: _Carry, ts: jax.Array) -> tuple[_Carry, Any]:
            c, outs = jax.lax.scan(tick, c, ts)
            first = c.stats.first
            snap = (c.env_state, c.obs.astype(jnp.float16), ~first.finished, first.running_length)
            return c, (outs, snap)

        head = jnp.arange(S * every).reshape(S, every)
        carry, (head_outs, snap) = jax.lax.scan(block, carry0, head)
        final, tail_outs = jax.lax.scan(tick, carry, jnp.arange(S * every, T))
        outputs = jax.tree.map(
            lambda h, r: jnp.concatenate([h.reshape(S * every, *h.shape[2:]), r]), head_outs, tail_outs
        )
        snapshots = Snapshots(*jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), snap))
    else:
        final, outputs = jax.lax.scan(tick, carry0, jnp.arange(T))
    stats = final.stats._replace(cycle_delay=outputs[0].T, snapshots=snapshots)  # env-major, like every other field
    rest = outputs[1:]
    if spec.record_actions:
        actions, starved, source = (jnp.swapaxes(x, 0, 1) for x in rest[:3])
        stats = stats._replace(actions=actions, starved=starved, source=source)
        rest = rest[3:]
    if spec.record_transitions:
        stats = stats._replace(record=Record(*(jnp.swapaxes(x, 0, 1) for x in rest)))
    return stats


@functools.lru_cache(maxsize=16)
def make_rollout(spec: RolloutSpec, scope_batch: bool = False, sharded: bool = True) -> Any:
    """``rollout`` jitted for ``spec``, with the environment axis sharded over all local devices:
    ``fn(params, weak_params, level_state, env_params, delay_arrays, execute, seed, env_index, explore=None)``.

    shard_map rather than automatic partitioning: each device decides on its own whether any of *its*
    environments needs a new chunk this tick, and nothing crosses devices inside the scan. Without ``explore``
    the program is the evaluation's; with it, another one (compiled once for every value of the knobs).
    """
    devices = jax.devices()

    def run(*args: Any, explore: Exploration | None = None) -> PerEnv:
        fn: Callable[..., PerEnv] = functools.partial(rollout, spec, scope_batch=scope_batch)
        rep, env = PartitionSpec(), PartitionSpec("env")
        in_specs: tuple[PartitionSpec, ...] = (rep, rep, rep, rep, rep, rep, rep, env)
        if explore is not None:
            fn = lambda *a: rollout(spec, *a[:-1], scope_batch=scope_batch, explore=a[-1])
            args, in_specs = (*args, explore), (*in_specs, rep)
        if sharded and len(devices) > 1:
            fn = jax.shard_map(
                fn,
                mesh=Mesh(np.array(devices), ("env",)),
                in_specs=in_specs,
                out_specs=env,  # every output is env-major
                check_vma=False,
            )
        return fn(*args)

    run.__name__ = run.__qualname__ = "rollout"  # the program's name in logs, profiles and the compile cache
    return jax.jit(run)
