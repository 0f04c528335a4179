"""Synchronous chunked rollouts of a flow policy, sharded over the environment axis.

One cycle: sample a chunk of ``H`` actions at the current observation, run its first ``s`` actions,
repeat. With ``s = 1`` and no exploration this is the benchmark's naive evaluation at delay 0.

    ticks:   0 1 2 3 | 4 5 6 7 | ...      (s = 4)
    chunk:   c0[0..3]| c1[0..3]| ...      c_k is sampled at the observation of tick k·s

Environments auto-reset to the level's initial state, so one environment can play several episodes
in ``num_ticks`` ticks; only the first one counts for the solve rate (the benchmark's eval), and every
completed episode counts as data.

Kinetix's physics step runs on about one core whatever the batch, so the batch is split over the host
devices (``rtc_sweep.runtime.configure_host_devices``) with ``shard_map``: each device steps its own
slice of environments with no communication.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from rtc_sweep.core import kinetix_env as ke

# chunk_fn(params, obs [B, O], noise [B, H, A]) -> chunk [B, H, A]
ChunkFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class RolloutSpec:
    """The static part of a rollout (each distinct value compiles a program)."""

    num_envs: int  # environments in the whole batch (a multiple of the device count)
    num_ticks: int = 256  # controller steps per environment
    action_chunk_size: int = 8  # H
    execute_horizon: int = 1  # s, actions run from each chunk (1..H)
    record: bool = False  # return the per-tick transitions (obs, action, done, ...) as well as episode stats


class Exploration(NamedTuple):
    """Traced exploration knobs: one compiled rollout serves every value."""

    noise_scale: jax.Array  # [] float32, multiplies the flow sampler's initial noise (1 = the policy's own)
    action_noise_std: jax.Array  # [] float32, extra Gaussian noise on the commanded action (env noise comes on top)

    @staticmethod
    def none() -> Exploration:
        return Exploration(jnp.float32(1.0), jnp.float32(0.0))


class EpisodeStats(NamedTuple):
    """First-episode outcome per environment (what the benchmark's eval reads at the first done)."""

    solved: jax.Array  # [E] bool
    returns: jax.Array  # [E] float32
    length: jax.Array  # [E] int32
    finished: jax.Array  # [E] bool, the first episode ended within num_ticks


class Transitions(NamedTuple):
    """Per-tick records, time-major [T, E, ...] as in the benchmark's datasets (§3.4)."""

    obs: jax.Array  # [T, E, O] float16, the observation the action was chosen at
    action: jax.Array  # [T, E, A] float32, the commanded action (before the env's own noise)
    done: jax.Array  # [T, E] bool, the episode ended after this action
    solved: jax.Array  # [T, E] bool, the goal reward fired on this step
    return_: jax.Array  # [T, E] float32, the episode's return so far (the episode's return on done rows)
    length: jax.Array  # [T, E] int32, the episode's length so far (its length on done rows)
    keep: jax.Array  # [T, E] bool, the tick belongs to an episode that ended solved within the rollout


def host_mesh() -> Mesh:
    return jax.make_mesh((jax.device_count(),), ("env",), axis_types=(AxisType.Auto,))


def solved_episode_mask(done: jax.Array, solved: jax.Array) -> jax.Array:
    """[T, E] -> [T, E]: True on every tick of an episode that ended with the goal reward.

    Scanned backwards: each tick inherits the outcome of the next done at or after it; a trailing,
    unfinished episode inherits False.
    """

    def body(carry: jax.Array, x: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        d, s = x
        carry = jnp.where(d, s, carry)
        return carry, carry

    _, keep = jax.lax.scan(body, jnp.zeros_like(done[0]), (done, solved), reverse=True)
    return keep


def make_rollout(
    spec: RolloutSpec, env: ke.Env, level: ke.Level, chunk_fn: ChunkFn, mesh: Mesh | None = None
) -> Callable[..., tuple[EpisodeStats, Transitions | None]]:
    """Build ``rollout(params, env_params, key, exploration) -> (EpisodeStats, Transitions | None)``.

    The returned function is jitted; its environment axis is sharded over ``mesh`` (default: all host
    devices).
    """
    mesh = mesh or host_mesh()
    n_dev = mesh.devices.size
    if spec.num_envs % n_dev:
        raise ValueError(f"num_envs={spec.num_envs} must be a multiple of the device count {n_dev}")
    if not 1 <= spec.execute_horizon <= spec.action_chunk_size:
        raise ValueError(f"execute_horizon={spec.execute_horizon} must be in 1..{spec.action_chunk_size}")
    H, s = spec.action_chunk_size, spec.execute_horizon
    num_cycles = -(-spec.num_ticks // s)
    A = env.action_dim

    def local(params: Any, env_params: Any, keys: jax.Array, explore: Exploration) -> Any:
        E = keys.shape[0]  # environments on this device
        obs0, state0 = env.reset(level)
        state = jax.tree.map(lambda x: jnp.broadcast_to(x, (E, *x.shape)), state0)
        obs = jnp.broadcast_to(obs0, (E, *obs0.shape))
        step = jax.vmap(lambda k, st, a: env.step(k, st, a, level, env_params))

        def tick(carry: Any, x: tuple[jax.Array, jax.Array, jax.Array]) -> Any:
            state, obs, first, ret, length = carry
            action, k, t = x
            next_obs, state, info = step(k, state, action)
            active = t < spec.num_ticks
            first = jax.vmap(ke.FirstEpisode.update, in_axes=(0, 0, None))(first, info, active)
            ret = ret + info.reward
            length = length + 1
            rec = (obs.astype(jnp.float16), action, info.done & active, info.solved & active, ret, length)
            ret = jnp.where(info.done, 0.0, ret)
            length = jnp.where(info.done, 0, length)
            return (state, next_obs, first, ret, length), rec if spec.record else None

        def cycle(carry: Any, x: tuple[jax.Array, jax.Array]) -> Any:
            obs = carry[1]
            keys_c, c = x
            k_noise, k_act, k_env = jax.vmap(lambda k: jax.random.split(k, 3), out_axes=1)(keys_c)
            noise = jax.vmap(lambda k: jax.random.normal(k, (H, A)))(k_noise) * explore.noise_scale
            chunk = chunk_fn(params, obs, noise)  # [E, H, A]
            assert chunk.shape == (E, H, A), chunk.shape
            extra = jax.vmap(lambda k: jax.random.normal(k, (H, A)))(k_act) * explore.action_noise_std
            chunk = chunk + extra
            env_keys = jax.vmap(lambda k: jax.random.split(k, s), out_axes=1)(k_env)  # [s, E]
            ticks = c * s + jnp.arange(s)
            carry, recs = jax.lax.scan(tick, carry, (jnp.swapaxes(chunk[:, :s], 0, 1), env_keys, ticks))
            return carry, recs

        first0 = jax.vmap(lambda _: ke.FirstEpisode.init())(jnp.arange(E))
        carry0 = (state, obs, first0, jnp.zeros(E, jnp.float32), jnp.zeros(E, jnp.int32))
        cycle_keys = jax.vmap(lambda k: jax.random.split(k, num_cycles), out_axes=1)(keys)  # [C, E]
        (_, _, first, _, _), recs = jax.lax.scan(cycle, carry0, (cycle_keys, jnp.arange(num_cycles)))
        stats = EpisodeStats(first.solved, first.returns, first.length, first.finished)
        if not spec.record:
            return stats, None
        # [C, s, E, ...] -> [T, E, ...], dropping the ticks past num_ticks of the last cycle
        recs = jax.tree.map(lambda r: r.reshape(num_cycles * s, *r.shape[2:])[: spec.num_ticks], recs)
        obs_r, act_r, done_r, solved_r, ret_r, len_r = recs
        keep = solved_episode_mask(done_r, solved_r)
        return stats, Transitions(obs_r, act_r, done_r, solved_r, ret_r, len_r, keep)

    env_axis_first = P("env")
    time_major = P(None, "env")
    out_specs = (
        EpisodeStats(*(env_axis_first,) * 4),
        Transitions(*(time_major,) * 7) if spec.record else None,
    )
    sharded = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(), P(), env_axis_first, P()),
        out_specs=out_specs,
        check_vma=False,
    )

    @jax.jit
    def rollout(
        params: Any, env_params: Any, key: jax.Array, explore: Exploration
    ) -> tuple[EpisodeStats, Transitions | None]:
        keys = jax.random.split(key, spec.num_envs)
        keys = jax.lax.with_sharding_constraint(keys, NamedSharding(mesh, env_axis_first))
        return sharded(params, env_params, keys, explore)

    return rollout


def solved_episodes(tr: Transitions) -> dict[str, np.ndarray]:
    """The transitions of solved episodes, env-major and contiguous per episode: [N, ...] per key.

    Each kept episode ends with a ``done`` row, so chunk windows that cross an episode boundary are
    masked by the trainer exactly as in the benchmark's env-major streams.
    """
    keep = np.asarray(tr.keep).T.reshape(-1)  # env-major

    def pick(x: jax.Array) -> np.ndarray:
        x = np.asarray(x)
        return np.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:])[keep]

    return {
        "obs": pick(tr.obs),
        "action": pick(tr.action),
        "done": pick(tr.done),
        "solved": pick(tr.solved),
        "return_": pick(tr.return_),
        "length": pick(tr.length),
    }


def shortest_episodes(data: dict[str, np.ndarray], fraction: float) -> dict[str, np.ndarray]:
    """The shortest ``fraction`` of the episodes in an env-major stream of whole episodes (``solved_episodes``).

    All episodes of a level start from the same state, so among solved ones the short ones are the decisive
    ones: keeping them is the elite selection of the cross-entropy method. Ties at the cut-off length are
    kept, episodes keep their order, and at least one episode is kept when there is one.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    ends = np.flatnonzero(data["done"])
    if fraction == 1.0 or len(ends) == 0:
        return data
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    cutoff = np.sort(lengths)[max(1, int(np.ceil(fraction * len(lengths)))) - 1]
    episode = np.repeat(np.arange(len(ends)), lengths)
    keep = (lengths <= cutoff)[episode]
    return {k: v[keep] for k, v in data.items()}
