"""The network interface (core/network.py): the mixer as an nnx module over the benchmark's layout, a user's own
network through ``model._target_`` (examples/my_policy.py), one compile per shape, and the errors at the boundary."""

from __future__ import annotations

import dataclasses
import functools
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rtc_sweep.core import network
from rtc_sweep.core.checkpoint import load_policy, save_policy
from rtc_sweep.core.policy import MIXER_TARGET, MixerPolicy, ModelConfig, Params, init_params, velocity
from rtc_sweep.core.samplers import MethodConfig, noise_shape, sample_chunk
from rtc_sweep.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))  # my_policy, as PYTHONPATH=examples makes it for the app

from my_policy import MyPolicy  # noqa: E402

TINY = ModelConfig(channel_dim=16, channel_hidden_dim=32, token_hidden_dim=8, num_layers=2)
OBS, A, B = 5, 3, 4
H = TINY.action_chunk_size
BENCHMARK_POLICY = ROOT / "tests" / "data" / "conformance" / "small" / "policy.pkl"
STEPS = 3
_sample = jax.jit(sample_chunk, static_argnums=(0, 2, 8))


def _random_like(tree: Any, seed: int) -> Any:
    """Every leaf random (numpy on the tree's shapes): a fresh mixer's zero adaLN would hide the time."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.3, s.shape), jnp.float32), tree)


@functools.cache
def _mixer_params(seed: int = 0) -> Params:
    return _random_like(jax.eval_shape(lambda: init_params(jax.random.key(0), OBS, A, TINY)), seed)


@functools.cache
def _my_spec(**keys: Any) -> network.NetworkConfig:
    return network.network_config("my_policy.MyPolicy", {"hidden_dim": 16, "time_dim": 4, **keys})


def _inputs() -> dict[str, jax.Array]:
    k_obs, k_prev, k_x = jax.random.split(jax.random.key(1), 3)
    return {
        "obs": jax.random.normal(k_obs, (B, OBS)),
        "prev": jax.random.normal(k_prev, (B, H, A)),
        "x": jax.random.normal(k_x, (B, H, A)),
    }


def _walk(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """(key path, leaf) pairs, None leaves included (jax.tree drops them)."""
    if isinstance(tree, dict):
        return [item for k in sorted(tree, key=str) for item in _walk(tree[k], (*path, k))]
    return [(path, tree)]


# --- the mixer: an nnx module over the benchmark's layout --------------------------------------------------------


def test_mixer_state_is_the_benchmark_layout() -> None:
    # The pure dict of a MixerPolicy's nnx state, None entries added back, is the tree init_params makes (the one
    # the benchmark pickles): the same keys (int ones for lists), the same None leaves, the same shapes.
    module = MixerPolicy(OBS, A, rngs=nnx.Rngs(0), **TINY.kwargs())
    ours = [(path, None if leaf is None else tuple(leaf.shape)) for path, leaf in _walk(network.params_of(module))]
    benchmark = jax.eval_shape(lambda: init_params(jax.random.key(0), OBS, A, TINY))
    assert ours == [(path, None if leaf is None else tuple(leaf.shape)) for path, leaf in _walk(benchmark)]
    assert network.params_of(module)["mlp_stack"][1]["norm_2"] == {"scale": None, "bias": None}


def test_benchmark_checkpoint_round_trips_through_the_module(tmp_path: Path) -> None:
    # The benchmark's own pickle -> an nnx module -> its state -> the same file content, bit for bit.
    params = load_policy(BENCHMARK_POLICY)
    model = ModelConfig(channel_dim=64, channel_hidden_dim=128, token_hidden_dim=32, num_layers=2)
    module = model.bind(params, 679, 6)
    assert isinstance(module, MixerPolicy) and isinstance(module, network.FlowPolicy)
    assert (module.action_chunk_size, module.obs_dim, module.action_dim) == (8, 679, 6)
    save_policy(tmp_path / "again.pkl", module)  # a module saves as its params
    for (path_a, a), (path_b, b) in zip(_walk(params), _walk(load_policy(tmp_path / "again.pkl")), strict=True):
        assert path_a == path_b
        assert (a is None and b is None) or np.array_equal(a, b), path_a


def test_functional_velocity_is_the_module_velocity() -> None:
    params, x = _mixer_params(), _inputs()
    module = TINY.bind(params, OBS, A)
    t = jnp.linspace(0.1, 0.9, B)
    np.testing.assert_array_equal(
        jax.jit(velocity, static_argnums=1)(params, TINY, x["obs"], x["x"], t),
        jax.jit(lambda p, o, x, t: TINY.bind(p, OBS, A).velocity(o, x, t))(params, x["obs"], x["x"], t),
    )
    np.testing.assert_allclose(module.velocity(x["obs"], x["x"], t), velocity(params, TINY, x["obs"], x["x"], t))


def test_bind_rejects_params_of_another_shape() -> None:
    params = dict(_mixer_params())
    del params["final_adaln"]
    with pytest.raises(ValueError, match="do not fit the network"):
        TINY.bind(params, OBS, A)


@pytest.mark.parametrize(
    "model", [TINY, pytest.param("my", id="my_policy")], ids=lambda m: "mixer" if isinstance(m, ModelConfig) else m
)
def test_one_compile_for_every_checkpoint_of_a_shape(model: Any) -> None:
    # The spec is static, the params traced: two different policies of the same shape share one program.
    spec = _my_spec() if model == "my" else model
    method = MethodConfig("realtime")
    x = _inputs()
    noise = jax.random.normal(jax.random.key(3), noise_shape(method, B, H, A))
    before = _sample._cache_size()  # jit's cache is shared by every jit of sample_chunk with these options
    outs = []
    for seed in (0, 1):
        params = _random_like(jax.eval_shape(lambda: spec.init(jax.random.key(0), OBS, A)), seed)
        outs.append(_sample(method, params, spec, x["obs"], noise, x["prev"], jnp.int32(1), jnp.int32(5), STEPS))
    assert _sample._cache_size() == before + 1
    assert not np.array_equal(outs[0], outs[1])


# --- a network of one's own ----------------------------------------------------------------------------------------


def test_user_network_is_sampled_through_its_velocity() -> None:
    spec = _my_spec()
    params = spec.init(jax.random.key(0), OBS, A)
    policy = spec.bind(params, OBS, A)
    assert isinstance(policy, MyPolicy) and isinstance(policy, network.FlowPolicy)
    x = _inputs()
    noise = jax.random.normal(jax.random.key(3), (B, H, A))
    got = _sample(MethodConfig("naive"), params, spec, x["obs"], noise, x["prev"], jnp.int32(0), jnp.int32(H), STEPS)
    expected, t = noise, 0.0
    for _ in range(STEPS):  # Euler, as the sampler: one flow time per sample
        expected = expected + (1 / STEPS) * policy.velocity(x["obs"], expected, jnp.full((B,), t, jnp.float32))
        t += 1 / STEPS
    np.testing.assert_allclose(got, expected, atol=1e-5)
    for name in ("realtime", "hard_masking", "bid", "training_time"):
        method = MethodConfig(name, n_samples=3)
        noise = jax.random.normal(jax.random.key(4), noise_shape(method, B, H, A))
        d, end = jnp.arange(B, dtype=jnp.int32) % 3, jnp.full((B,), H - 2, jnp.int32)
        out = _sample(method, params, spec, x["obs"], noise, x["prev"], d, end, STEPS)
        assert out.shape == (B, H, A) and bool(jnp.isfinite(out).all()), name


def test_prefix_velocity_without_a_fast_path_uses_per_position_times() -> None:
    spec = _my_spec()
    policy = spec.bind(_random_like(jax.eval_shape(lambda: spec.init(jax.random.key(0), OBS, A)), 2), OBS, A)
    assert not hasattr(policy, "velocity_with_prefix")
    x, t = _inputs(), jnp.array([0.0, 0.3, 0.6, 0.9])
    prefix = jnp.arange(H)[None] < jnp.array([0, 1, 3, 8])[:, None]
    np.testing.assert_array_equal(
        network.velocity_with_prefix(policy, x["obs"], x["x"], t, prefix),
        policy.velocity(x["obs"], x["x"], jnp.where(prefix, 1.0, t[:, None])),
    )


def test_user_network_checkpoint_round_trip(tmp_path: Path) -> None:
    spec = _my_spec()
    params = spec.init(jax.random.key(5), OBS, A)
    save_policy(tmp_path / "mine.pkl", params)
    loaded = load_policy(tmp_path / "mine.pkl", spec, OBS, A)
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params), strict=True))
    with pytest.raises(ConfigError, match=r"checkpoint: .*does not fit") as e:
        load_policy(tmp_path / "mine.pkl", _my_spec(hidden_dim=8), OBS, A)
    assert "expected shape" in str(e.value)
    with pytest.raises(ConfigError, match="checkpoint"):
        load_policy(tmp_path / "mine.pkl", spec, OBS, A + 1)
    with pytest.raises(ConfigError, match="needs obs_dim and action_dim"):
        load_policy(tmp_path / "mine.pkl", spec)


def test_user_spec_is_a_static_value() -> None:
    from rtc_sweep.core.run_config import RunConfig
    from rtc_sweep.sweep.config import MIXER_TARGET as SCHEMA_MIXER_TARGET
    from rtc_sweep.sweep.config import config_columns

    assert SCHEMA_MIXER_TARGET == MIXER_TARGET  # the schema names the mixer without importing JAX
    spec = _my_spec()
    again = network.network_config("my_policy.MyPolicy", {"time_dim": 4, "hidden_dim": 16})  # any key order
    assert spec == again and hash(spec) == hash(again) and spec != _my_spec(hidden_dim=8)
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert spec.kwargs() == {"action_chunk_size": 8, "hidden_dim": 16, "depth": 2, "time_dim": 4}
    assert spec.simulated_delay is None
    columns = {k: v for k, v in config_columns(RunConfig(model=spec)).items() if k.startswith("model.")}
    assert columns == {
        "model._target_": "my_policy.MyPolicy",
        "model.action_chunk_size": 8,
        "model.hidden_dim": 16,
        "model.depth": 2,
        "model.time_dim": 4,
        "model.simulated_delay": None,
    }


# --- the boundary: model._target_ and its keys, checked before anything compiles ------------------------------------


class NoChunkSize(nnx.Module):
    def __init__(self, obs_dim: int, action_dim: int, *, rngs: nnx.Rngs, width: int = 4):
        self.w = nnx.Linear(obs_dim, action_dim, rngs=rngs)

    def velocity(self, obs: jax.Array, x_t: jax.Array, time: jax.Array) -> jax.Array:
        return x_t


class WrongShape(MyPolicy):
    def velocity(self, obs: jax.Array, x_t: jax.Array, time: jax.Array) -> jax.Array:
        return super().velocity(obs, x_t, time)[:, :-1]


def _model(*overrides: str) -> Any:
    from sweep_folders import compose_config

    from rtc_sweep.sweep.config import register_configs, to_job_config

    register_configs()
    return to_job_config(compose_config(list(overrides))).run.model


@pytest.mark.parametrize(
    ("overrides", "key", "says"),
    [
        (["model._target_=nope.Nope"], "model._target_", "cannot import nope"),
        (["model._target_=my_policy.Missing"], "model._target_", "my_policy has no Missing"),
        (["model._target_=my_policy.time_embedding"], "model._target_", "not an nnx.Module class"),
        (["model._target_=MyPolicy"], "model._target_", "not a dotted path"),
        (["model._target_=test_policy_interface.NoChunkSize"], "model._target_", "takes no action_chunk_size"),
        (["model._target_=my_policy.MyPolicy", "+model.hiden=3"], "model.hiden", "allowed: action_chunk_size, "),
        (["model._target_=my_policy.MyPolicy", "+model.hidden_dim=abc"], "model.hidden_dim", "allowed: int"),
        (["model._target_=my_policy.MyPolicy", "+model.obs_dim=3"], "model.obs_dim", "given by the runner"),
        (["model._target_=my_policy.MyPolicy", "model.action_chunk_size=0"], "model.action_chunk_size", ">= 1"),
        (["+model.chanel_dim=3"], "model.chanel_dim", "allowed: action_chunk_size, channel_dim, "),
        (["model.channel_dim=abc"], "model.channel_dim", "allowed: int"),
    ],
)
def test_bad_model_keys_name_the_key(overrides: list[str], key: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        _model(*overrides)
    assert e.value.key == key and says in e.value.message, str(e.value)


def test_model_keys_reach_the_class() -> None:
    assert _model() == ModelConfig(channel_dim=64, channel_hidden_dim=128, token_hidden_dim=32, num_layers=2)
    assert _model(f"model._target_={MIXER_TARGET}", "model.num_layers=3").num_layers == 3
    mine = _model("model._target_=my_policy.MyPolicy", "+model.hidden_dim=32", "model.action_chunk_size=4")
    # The preset's mixer keys (channel_dim, ...) stay behind; the class's own and the shared H come through.
    assert mine.kwargs() == {"action_chunk_size": 4, "hidden_dim": 32, "depth": 2, "time_dim": 16}


def test_a_network_that_does_not_fit_the_interface_is_refused_before_compiling() -> None:
    network.check_policy(_my_spec(), OBS, A)
    with pytest.raises(ConfigError, match=r"model._target_: .*velocity returned shape \(2, 7, 3\); expected"):
        network.check_policy(network.network_config("test_policy_interface.WrongShape", {}), OBS, A)


# --- the app, end to end --------------------------------------------------------------------------------------------


def _app(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(EXAMPLES), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "rtc_sweep", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_bad_target_stops_the_app_before_anything_compiles(tmp_path: Path) -> None:
    out = _app("model._target_=my_policy.MyPolicyy", "checkpoint=random", f"hydra.run.dir={tmp_path / 'run'}",
               cwd=tmp_path, timeout=300)  # fmt: skip
    log = out.stdout + out.stderr
    assert out.returncode == 2, log
    assert "model._target_: 'my_policy.MyPolicyy': my_policy has no MyPolicyy" in log
    assert "evaluating" not in log and not (tmp_path / "run" / "results.csv").exists()


def test_own_network_runs_through_the_app(tmp_path: Path) -> None:
    from rtc_sweep.report.results import RESULTS_FILE, complete_results

    out = _app(
        "model._target_=my_policy.MyPolicy", "+model.hidden_dim=32", "checkpoint=random", "num_evals=2",
        "max_timesteps=8", "micro_batch=2", "progress=false", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    rows = complete_results(tmp_path / "run" / RESULTS_FILE)
    assert rows is not None and len(rows) == 1
    row = rows[0]
    assert (row["model._target_"], row["model.hidden_dim"], row["model"], row["method"]) == (
        "my_policy.MyPolicy", "32", "custom", "realtime",
    )  # fmt: skip
    assert "model.channel_dim" not in row  # the preset's mixer keys are not the network's
    assert 0.0 <= float(row["returned_episode_solved"]) <= 1.0


def test_spec_fields_are_dataclass_fields() -> None:
    spec = _my_spec()
    assert [f.name for f in dataclasses.fields(spec)] == [
        "_target_", "action_chunk_size", "hidden_dim", "depth", "time_dim", "simulated_delay",
    ]  # fmt: skip
