"""The one module that talks to Kinetix (PyPI ``kinetix-env`` 3.0.2).

Everything else in rtc_sweep sees a small functional interface:

    level = load_level("grasp_easy")          # or a path to any level JSON
    env = make_env(level.static_params)       # symbolic flat obs (679), continuous actions (6)
    obs, state = env.reset(level)
    obs, state, step = env.step(key, state, action, level, env_params)

Differences from the benchmark's wrapper stack that matter, and why:

* kinetix-env 3.0.2 adds a dense distance reward unless ``dense_reward_scale == 0``; the benchmark's
  evaluation returns are sparse, so ``env_params`` sets it to 0.
* Its ``LogWrapper`` takes the env params as a *static* jit argument while ``EnvParams.__eq__`` ignores
  fields such as ``max_timesteps``, so a program compiled for other params is silently reused. We keep
  the params traced and do the episode bookkeeping ourselves (``FirstEpisode``).
* A relative level path without a leading ``./`` is looked up inside the kinetix package, so level
  files are always resolved to absolute paths here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


def _drop_grain_profiling_warning(record: logging.LogRecord) -> bool:
    # Kinetix imports Grain, which warns once that its profiler needs a newer jaxlib: nothing rtc_sweep uses.
    return "Grain multiprocess worker profiling" not in record.getMessage()


logging.getLogger("absl").addFilter(_drop_grain_profiling_warning)

from kinetix.environment.env import KinetixEnv  # noqa: E402  (after the log filter)
from kinetix.environment.env_state import EnvParams, EnvState, StaticEnvParams  # noqa: E402  (after the log filter)
from kinetix.environment.spaces import ContinuousActions, SymbolicObservations  # noqa: E402  (after the log filter)
from kinetix.util.saving import import_env_state_from_json  # noqa: E402  (after the log filter)

from rtc_sweep.errors import ConfigError  # noqa: E402

LEVELS_DIR = Path(__file__).resolve().parent.parent / "levels"

# The benchmark's order (reference-benchmark.md §1.3).
BENCHMARK_LEVELS: tuple[str, ...] = (
    "grasp_easy",
    "catapult",
    "cartpole_thrust",
    "hard_lunar_lander",
    "mjc_half_cheetah",
    "mjc_swimmer",
    "mjc_walker",
    "h17_unicycle",
    "chain_lander",
    "catcher_v3",
    "trampoline",
    "car_launch",
)

# The benchmark's "large" static parameters.
LARGE_ENV_PARAMS: dict[str, int] = {
    "num_polygons": 12,
    "num_circles": 4,
    "num_joints": 6,
    "num_thrusters": 2,
    "num_motor_bindings": 4,
    "num_thruster_bindings": 2,
}
FRAME_SKIP = 2
ACTION_NOISE_STD = 0.1
MAX_TIMESTEPS = 256


def large_static_params() -> StaticEnvParams:
    return StaticEnvParams(**LARGE_ENV_PARAMS, frame_skip=FRAME_SKIP)


def resolve_level(name_or_path: str | Path) -> Path:
    """A benchmark level name (``grasp_easy``) or a path to a level JSON -> an absolute path."""
    text = str(name_or_path)
    if text in BENCHMARK_LEVELS:
        return LEVELS_DIR / f"{text}.json"
    path = Path(text).expanduser()
    if path.suffix != ".json":
        raise ConfigError(
            "level", f"{text!r} is neither a benchmark level ({', '.join(BENCHMARK_LEVELS)}) nor a path to a .json file"
        )
    path = path.resolve()
    if not path.is_file():
        raise ConfigError("level", f"level file {path} does not exist")
    return path


def level_name(name_or_path: str | Path) -> str:
    """Short name of a level: the file stem (``grasp_easy``)."""
    return resolve_level(name_or_path).stem


@dataclasses.dataclass(frozen=True)
class Level:
    """A loaded level: the initial state every episode starts from, and its parameters."""

    name: str
    path: str
    state: EnvState  # the fixed initial state; reset is deterministic
    static_params: StaticEnvParams
    params: EnvParams


@functools.lru_cache(maxsize=32)
def _load_level_cached(path: str) -> Level:
    try:
        with open(path) as f:
            raw = json.load(f)
        state, static_params, params = import_env_state_from_json(raw)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError("level", f"could not load level file {path}: {e}") from e
    want = large_static_params()
    for field, value in LARGE_ENV_PARAMS.items():
        if getattr(static_params, field) != value:
            raise ConfigError(
                "level",
                f"{path}: {field}={getattr(static_params, field)}, but rtc_sweep uses the benchmark's large "
                f"static parameters ({field}={value})",
            )
    static_params = want.replace(screen_dim=(512, 512))
    params = params.replace(dense_reward_scale=0.0, max_timesteps=MAX_TIMESTEPS)
    return Level(name=Path(path).stem, path=path, state=state, static_params=static_params, params=params)


def load_level(name_or_path: str | Path) -> Level:
    """Load a level by benchmark name or JSON path (cached per process)."""
    return _load_level_cached(str(resolve_level(name_or_path)))


def env_params(level: Level, max_timesteps: int = MAX_TIMESTEPS) -> EnvParams:
    """The env params as a pytree of arrays: pass them as a traced argument, never as a static one."""
    return jax.tree.map(jnp.asarray, level.params.replace(max_timesteps=max_timesteps, dense_reward_scale=0.0))


class StepInfo(NamedTuple):
    reward: jax.Array  # [] float32, sparse: +1 goal, -1 hazard, 0 otherwise
    done: jax.Array  # [] bool, the episode ended at this step (the state has been reset)
    solved: jax.Array  # [] bool, the goal reward fired on this step
    distance: jax.Array  # [] float32, summed distance between goal pairs (for dense shaping)


@dataclasses.dataclass(frozen=True)
class Env:
    """Symbolic, continuous-action Kinetix with noisy actions and auto-reset to the level's initial state.

    Functions of one environment: vmap them for a batch.
    """

    kinetix: Any
    action_noise_std: float = ACTION_NOISE_STD

    @property
    def action_dim(self) -> int:
        return int(self.kinetix.action_space(None).shape[0])

    def obs_dim(self, params: EnvParams) -> int:
        return int(self.kinetix.observation_space(params).shape[0])

    def reset(self, level: Level | EnvState) -> tuple[jax.Array, EnvState]:
        """The level's initial state (reset is deterministic) and its observation."""
        state = level.state if isinstance(level, Level) else level
        return self.kinetix.get_obs(state), state

    def step(
        self, key: jax.Array, state: EnvState, action: jax.Array, level: Level | EnvState, params: EnvParams
    ) -> tuple[jax.Array, EnvState, StepInfo]:
        """Step with ``action`` (the commanded action, shape [6]); Gaussian noise is added here.

        ``level`` is the Level, or just its initial ``EnvState`` when it must be a traced jit argument (one
        compiled program then serves every level of the same static shapes).
        """
        noisy = action + self.action_noise_std * jax.random.normal(key, action.shape, action.dtype)
        obs, next_state, reward, done, info = self.kinetix.step_env(key, state, noisy, params)
        reset_state = level.state if isinstance(level, Level) else level
        next_state = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), reset_state, next_state)
        obs = jax.lax.select(done, self.kinetix.get_obs(reset_state), obs)
        return (
            obs,
            next_state,
            StepInfo(
                reward=jnp.asarray(reward, jnp.float32),
                done=jnp.asarray(done),
                solved=jnp.asarray(info["GoalR"]),
                distance=jnp.asarray(info["distance"], jnp.float32),
            ),
        )


def make_env(static_params: StaticEnvParams | None = None, action_noise_std: float = ACTION_NOISE_STD) -> Env:
    static_params = static_params or large_static_params().replace(screen_dim=(512, 512))
    default = EnvParams().replace(dense_reward_scale=0.0)
    kenv = KinetixEnv(
        action_type=ContinuousActions(default, static_params),
        observation_type=SymbolicObservations(default, static_params),
        static_env_params=static_params,
        auto_reset=False,
    )
    return Env(kinetix=kenv, action_noise_std=float(action_noise_std))


class FirstEpisode(NamedTuple):
    """Per-environment bookkeeping of the first episode (what the benchmark reads at the first done)."""

    running_return: jax.Array  # [] float32
    running_length: jax.Array  # [] int32
    finished: jax.Array  # [] bool, the first episode has ended
    solved: jax.Array  # [] bool
    returns: jax.Array  # [] float32
    length: jax.Array  # [] int32

    @staticmethod
    def init() -> FirstEpisode:
        return FirstEpisode(
            jnp.float32(0), jnp.int32(0), jnp.bool_(False), jnp.bool_(False), jnp.float32(0), jnp.int32(0)
        )

    def update(self, info: StepInfo, active: jax.Array | bool = True) -> FirstEpisode:
        """Account one step; ``active`` False leaves everything unchanged (ticks past the horizon)."""
        live = jnp.logical_and(active, ~self.finished)
        ret = self.running_return + jnp.where(live, info.reward, 0.0)
        length = self.running_length + live.astype(jnp.int32)
        ends = jnp.logical_and(live, info.done)
        return FirstEpisode(
            running_return=ret,
            running_length=length,
            finished=self.finished | ends,
            solved=jnp.where(ends, info.solved, self.solved),
            returns=jnp.where(ends, ret, self.returns),
            length=jnp.where(ends, length, self.length),
        )


def render_rollout(
    level: Level, params: EnvParams, actions: jax.Array, keys: jax.Array, action_noise_std: float = ACTION_NOISE_STD
) -> jax.Array:
    """Replay one environment with its executed ``actions`` [T, A] and per-tick action-noise ``keys`` [T] (the
    same draws as in the rollout, so the same trajectory) and render every state: uint8 frames [T, h, w, 3]."""
    from kinetix.render.renderer_pixels import make_render_pixels

    static = level.static_params.replace(downscale=2)
    env = make_env(level.static_params, action_noise_std)
    render = make_render_pixels(level.params, static)  # the renderer needs concrete (python) params

    def body(state: EnvState, xs: tuple[jax.Array, jax.Array]) -> tuple[EnvState, EnvState]:
        key, action = xs
        _, state, _ = env.step(key, state, action, level.state, params)
        return state, state

    @jax.jit
    def frames(actions: jax.Array, keys: jax.Array) -> jax.Array:
        _, states = jax.lax.scan(body, level.state, (keys, actions))
        pixels = jax.lax.map(render, states)  # [T, w, h, 3], x-major with y up
        return jnp.flip(jnp.swapaxes(pixels, 1, 2), axis=1).astype(jnp.uint8)

    return frames(actions, keys)
