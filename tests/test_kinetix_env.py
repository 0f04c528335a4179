import jax
import jax.numpy as jnp
import pytest

from rtc_sweep.core import kinetix_env as ke
from rtc_sweep.errors import ConfigError


@pytest.mark.parametrize("name", ke.BENCHMARK_LEVELS)
def test_every_benchmark_level_loads_with_benchmark_shapes(name):
    level = ke.load_level(name)
    env = ke.make_env(level.static_params)
    obs, _ = env.reset(level)
    assert obs.shape == (679,)
    assert env.action_dim == 6
    assert level.params.dense_reward_scale == 0.0
    assert level.params.max_timesteps == 256


def test_level_by_path_equals_level_by_name(tmp_path):
    by_name = ke.load_level("grasp_easy")
    copy = tmp_path / "mine.json"
    copy.write_text((ke.LEVELS_DIR / "grasp_easy.json").read_text())
    by_path = ke.load_level(str(copy))
    assert by_path.name == "mine"
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), by_name.state, by_path.state)))


@pytest.mark.parametrize("bad", ["no_such_level", "missing/file.json"])
def test_unknown_level_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="level"):
        ke.load_level(bad)


def test_first_episode_bookkeeping_and_auto_reset():
    level = ke.load_level("grasp_easy")
    env = ke.make_env(level.static_params)
    params = ke.env_params(level, max_timesteps=20)

    @jax.jit
    def run(key, params):
        _obs, state = env.reset(level)

        def body(carry, k):
            state, first = carry
            _, state, info = env.step(k, state, jnp.zeros(6), level, params)
            return (state, first.update(info)), (info.done, state.timestep)

        (_, first), (done, timestep) = jax.lax.scan(body, (state, ke.FirstEpisode.init()), jax.random.split(key, 50))
        return first, done, timestep

    first, done, timestep = run(jax.random.key(0), params)
    # Traced params: max_timesteps=20 really ends the episode at 20 steps (or earlier on a goal/hazard).
    first_done = int(jnp.argmax(done))
    assert bool(first.finished)
    assert int(first.length) == first_done + 1 <= 20
    assert int(timestep[first_done]) == 0  # auto-reset to the level's initial state
