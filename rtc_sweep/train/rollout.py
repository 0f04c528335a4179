"""Training's rollouts of a flow policy: the evaluation's asynchronous timeline (core/timeline.py), with exploration
and a record of transitions.

A training rollout *is* an evaluation job. ``measurement(...)`` names it as a ``RunConfig`` (method naive, a delay
law, a fixed execute horizon, ``micro_batch = num_evals``) and ``make_rollout(run)`` runs ``core.timeline`` on it
with what ``sweep.evaluate.evaluate(run)`` uses: ``timeline.setup``, the env indices ``0 .. num_evals - 1`` in one
batch padded to the device count, the seed's streams. So the first-episode solve rate a training log reports for a
policy and seed ``s`` is ``returned_episode_solved`` of ``evaluate(replace(run, seed=s, checkpoint=<its file>))``,
bit for bit (tests/test_rollout_engine.py), and a policy is collected and measured under the very delay law, with
the very execute policy, it is then evaluated on.

Collection adds what evaluation leaves off: exploration (``Exploration``: a scale on the flow sampler's initial
noise, extra noise on every commanded action; traced) and the per-tick transitions (``record=True``). Without
exploration the rollout is the evaluation's program. With no delay (``delay_profile=None``: d = 0) and execute
horizon ``s`` the timeline is synchronous chunking: sample a chunk at the current observation, run its first ``s``
actions, repeat; with ``s = 1`` the benchmark's naive evaluation::

    ticks:   0 1 2 3 | 4 5 6 7 | ...      (s = 4, d = 0)
    chunk:   c0[0..3]| c1[0..3]| ...      c_k is sampled at the observation of tick k·s

With a delay law (``delay_profile=long_tail``) cycle ``k`` runs the old chunk for ``d_k`` ticks and the new one
after, as docs/timeline.md says.

The timeline is more general than the synchronous chunk loop training used before (kept in scripts/bench_train.py
as the reference), and costs about the same: self-imitation's collection (512 envs x 256 ticks, d = 0, s = 1,
exploration, transitions recorded, 2 host devices) ran at 0.99x the loop's speed (1810 vs 1830 env steps/s, one
run on 2 shared cores).

Environments auto-reset to the level's initial state, so one environment can play several episodes in
``num_ticks`` ticks; only the first one counts for the solve rate (the benchmark's eval), and every completed
episode counts as data. Kinetix's physics step runs on about one core whatever the batch, so the environment axis
is sharded over the host devices (``rtc_sweep.runtime.configure_host_devices``; timeline.make_rollout).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh

from rtc_sweep.core import timeline
from rtc_sweep.core.delays import PRESETS, DelayProfile
from rtc_sweep.core.policy import ModelConfig, Params
from rtc_sweep.core.run_config import ExecutePolicy, RunConfig
from rtc_sweep.core.samplers import MethodConfig
from rtc_sweep.core.timeline import Exploration as Exploration
from rtc_sweep.errors import ConfigError

# Every inference takes no time: the benchmark's naive evaluation (``delay_profile=None`` below).
NO_DELAY = DelayProfile(name="none", mode="fixed", fixed_delay=0)


def delay_profile(name: str | None, key: str = "delay_profile") -> DelayProfile:
    """A named delay preset (rtc_sweep/conf/delay_profile/<name>.yaml, e.g. ``long_tail``), its trace read and
    checked; ``None``: no delay. Raises ConfigError(``key``)."""
    if name is None:
        return NO_DELAY
    allowed = sorted(n for n, p in PRESETS.items() if p.mode != "measured")
    if name not in allowed:
        raise ConfigError(key, f"{name!r}; allowed: null (no delay) or a preset: {', '.join(allowed)}")
    profile = PRESETS[name].resolved()
    profile.validate()
    return profile


def measurement(
    level: str,
    model: ModelConfig,
    num_envs: int,
    num_ticks: int,
    num_flow_steps: int,
    action_noise_std: float,
    delay: str | None = None,
    execute_horizon: int = 1,
    seed: int = 0,
) -> RunConfig:
    """The evaluation job a training rollout is: the naive method, the delay preset ``delay`` (None: d = 0), a
    fixed execute horizon, ``num_envs`` environments in one micro-batch, ``num_ticks`` ticks, the env's
    ``action_noise_std``; its checkpoint is the policy in memory (give ``checkpoint=<file>`` to ``evaluate`` it).
    Raises ConfigError naming the RunConfig key (``delay_profile``, ``execute_policy.execute_horizon``)."""
    execute = ExecutePolicy(mode="fixed", execute_horizon=execute_horizon)
    execute.validate(model.action_chunk_size)
    return RunConfig(
        level=level,
        seed=seed,
        num_evals=num_envs,
        num_flow_steps=num_flow_steps,
        delay=delay_profile(delay),
        method=MethodConfig(name="naive"),
        execute=execute,
        model=model,
        action_noise_std=action_noise_std,
        micro_batch=num_envs,
        max_timesteps=num_ticks,
    )


Arr = jax.Array | np.ndarray  # on the device, or the host's numpy copy


class EpisodeStats(NamedTuple):
    """First-episode outcome per environment (what the benchmark's eval reads at the first done), numpy [E]."""

    solved: Arr  # [E] bool
    returns: Arr  # [E] float32
    length: Arr  # [E] int32
    finished: Arr  # [E] bool, the first episode ended within num_ticks


class Transitions(NamedTuple):
    """Per-tick records, time-major [T, E, ...] as in the benchmark's datasets (§3.4)."""

    obs: Arr  # [T, E, O] float16 (plan.py's: float32), the observation the action was chosen at (the env's then)
    action: Arr  # [T, E, A] float32, the commanded action (before the env's own noise)
    done: Arr  # [T, E] bool, the episode ended after this action
    solved: Arr  # [T, E] bool, the goal reward fired on this step
    return_: Arr  # [T, E] float32, the episode's return so far (the episode's return on done rows)
    length: Arr  # [T, E] int32, the episode's length so far (its length on done rows)
    keep: Arr  # [T, E] bool, the tick belongs to an episode that ended solved within the rollout


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


def _solved_episode_mask_np(done: np.ndarray, solved: np.ndarray) -> np.ndarray:
    """``solved_episode_mask`` on the host: each tick takes ``solved`` of the next done at or after it."""
    T = done.shape[0]
    at = np.where(done, np.arange(T)[:, None], T)  # [T, E]: the tick of each done, T elsewhere
    next_done = np.minimum.accumulate(at[::-1], axis=0)[::-1]
    padded = np.concatenate([solved, np.zeros((1, *solved.shape[1:]), bool)])  # row T: no done ahead
    return np.take_along_axis(padded, next_done, axis=0)


def rollout_seed(seed: int | jax.Array) -> int:
    """The integer seed of a rollout (``RunConfig.seed``): an int as it is, a PRNG key drawn to one in [0, 2^31)."""
    if isinstance(seed, jax.Array) and jnp.issubdtype(seed.dtype, jax.dtypes.prng_key):
        return int(jax.random.randint(seed, (), 0, np.iinfo(np.int32).max))
    return int(seed)


@dataclasses.dataclass(frozen=True)
class Rollout:
    """The timeline program of an evaluation job ``run`` with, optionally, training's additions; see make_rollout."""

    run: RunConfig
    record: bool = False
    snapshot_every: int = 0
    num_snapshots: int = 0

    @functools.cached_property
    def setup(self) -> timeline.Setup:
        return timeline.setup(self.run, record_transitions=self.record, snapshot_every=self.snapshot_every,
                              num_snapshots=self.num_snapshots)  # fmt: skip

    def per_env(self, params: Params, seed: int | jax.Array, explore: Exploration | None = None) -> timeline.PerEnv:
        """The timeline's per-environment results (numpy, the padding environments dropped) for ``seed``."""
        s = self.setup
        fn = timeline.make_rollout(s.spec, self.run.delay.scope == "batch")
        idx = np.arange(timeline.batch_size(self.run), dtype=np.int32)  # numpy: each device gets its shard
        args = (params, None, s.level.state, s.env_params, s.delay_arrays, s.execute, jnp.int32(rollout_seed(seed)))
        out = fn(*args, idx) if explore is None else fn(*args, idx, explore=explore)
        n = self.run.num_evals
        return jax.tree.map(lambda x: np.asarray(x)[:n], out)

    def __call__(
        self, params: Params, seed: int | jax.Array, explore: Exploration | None = None
    ) -> tuple[EpisodeStats, Transitions | None]:
        """First-episode stats per environment, and with ``record`` the transitions (time-major numpy views)."""
        out = self.per_env(params, seed, explore)
        return episode_stats(out), transitions(out)


def episode_stats(out: timeline.PerEnv) -> EpisodeStats:
    first = out.first
    return EpisodeStats(first.solved, first.returns, first.length, first.finished)


def transitions(out: timeline.PerEnv) -> Transitions | None:
    """The recorded transitions of a rollout's (numpy) results, time-major views; None when not recorded."""
    if out.record is None:
        return None
    r = jax.tree.map(lambda x: np.swapaxes(x, 0, 1), out.record)
    keep = _solved_episode_mask_np(r.done, r.solved)
    return Transitions(r.obs, r.action, r.done, r.solved, r.return_, r.length, keep)


def delay_stats(out: timeline.PerEnv) -> dict[str, float]:
    """What the delay law did in a rollout (sweep/evaluate.py's metrics of the same names, over the first T ticks)."""
    d = out.cycle_delay[out.cycle_delay >= 0]
    n = max(int(out.n_cycles.sum()), 1)
    return {
        "d_mean": float(d.mean()) if d.size else 0.0,
        "d_max": float(d.max()) if d.size else 0.0,
        "p_late": float(out.n_late.sum() / n),
        "starved_ticks": float(np.mean(out.starved_ticks)),
        "mean_cycle_length": float(out.sum_cycle_length.sum() / n),
    }


def make_rollout(run: RunConfig, record: bool = False, snapshot_every: int = 0, num_snapshots: int = 0) -> Rollout:
    """``rollout(params, seed, explore=None) -> (EpisodeStats, Transitions | None)`` for the job ``run`` (see
    ``measurement``): ``run.num_evals`` environments, any count (padded to the device count as evaluate pads), the
    int ``seed`` (or a PRNG key, drawn to one: ``rollout_seed``). ``record``: also the transitions;
    ``snapshot_every``/``num_snapshots``: also the env states (``rollout.per_env(...).snapshots``). ``run.delay``
    must be resolved (``delay_profile`` gives it so); mode measured has no latencies here. Compiled once per job
    shape, whatever the seed, the policy and the exploration values."""
    if run.delay.mode == "measured":
        raise ConfigError("delay_profile", "mode measured times the job's sampler first: evaluate it, not train on it")
    run.method.validate()
    run.execute.validate(run.model.action_chunk_size)
    return Rollout(run, record, snapshot_every, num_snapshots)


def solved_episodes(tr: Transitions) -> dict[str, np.ndarray]:
    """The transitions of solved episodes, env-major and contiguous per episode: [N, ...] per key.

    Each kept episode ends with a ``done`` row, so chunk windows that cross an episode boundary are
    masked by the trainer exactly as in the benchmark's env-major streams.
    """
    keep = np.asarray(tr.keep).T.reshape(-1)  # env-major

    def pick(x: Arr) -> np.ndarray:
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
