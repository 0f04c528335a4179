import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from rtc_sweep.core import delays
from rtc_sweep.errors import ConfigError

MAX_DELAY = 32
N_STREAMS = 100
N_CYCLES = 1000  # a multiple of the example trace's 200 entries, so trace replay hits its law exactly
DT = 1000 / 30


@jax.jit
def draw_grid(arrays: delays.DelayArrays, seed_key: jax.Array, env_index: jax.Array, cycles: jax.Array) -> jax.Array:
    """Delays [env, cycle]; the one program every statistical test shares."""
    keys = jax.vmap(lambda i: delays.stream_key(seed_key, i, "env"))(env_index)
    return jax.vmap(lambda k: jax.vmap(lambda c: delays.draw_delay(arrays, k, c))(cycles))(keys)


def grid(profile: delays.DelayProfile, seed: int = 0, max_delay: int = MAX_DELAY) -> np.ndarray:
    out = draw_grid(profile.arrays(max_delay), jax.random.key(seed), jnp.arange(N_STREAMS), jnp.arange(N_CYCLES))
    return np.asarray(out)


def empirical(draws: np.ndarray, max_delay: int = MAX_DELAY) -> np.ndarray:
    assert draws.min() >= 0
    assert draws.max() <= max_delay
    return np.bincount(draws.ravel(), minlength=max_delay + 1) / draws.size


def law(profile: delays.DelayProfile, max_delay: int, measured_ms: np.ndarray | None = None) -> np.ndarray:
    """The exact pmf (float64, [max_delay + 1]) of one draw after spikes, spike drop and the cap: the tests' oracle.

    Trace mode: the empirical distribution of the (capped) trace ticks, which is also the law of one draw
    at a uniformly random offset. Mode measured: that of the measured ticks (``measured_ms``; 0 ticks when
    not given) convolved with the system law. Either way the law of the cycles after the warm-up (warmup_cycles).
    """
    if profile.mode == "measured":
        profile.validate()
        ms = np.zeros(1) if measured_ms is None else np.asarray(measured_ms, np.float64)
        measured = np.bincount(np.minimum(profile.measured_ticks(ms), max_delay), minlength=max_delay + 1)
        system = profile.system_profile()
        system_law = np.eye(max_delay + 1)[0] if system is None else law(system, max_delay)
        pmf = np.convolve(measured / measured.sum(), system_law)
        pmf[max_delay] += pmf[max_delay + 1 :].sum()
        pmf = pmf[: max_delay + 1]
    else:
        p_kept_spike = float(profile.p_spike) * (1.0 - float(profile.spike_drop_prob))
        pmf = (1.0 - p_kept_spike) * profile.base_pmf(max_delay)
        pmf[min(int(profile.d_spike), max_delay)] += p_kept_spike
    cap = profile.cap_ticks(max_delay)
    pmf[cap] += pmf[cap + 1 :].sum()
    pmf[cap + 1 :] = 0.0
    return pmf


# --- the law of one draw ------------------------------------------------------------------------------


def test_law_long_tail_and_tail_controlled_by_hand():
    np.testing.assert_allclose(law(delays.PRESETS["long_tail"], 6), [0.855, 0.095, 0, 0, 0.05, 0, 0], atol=1e-12)
    np.testing.assert_allclose(law(delays.PRESETS["tail_controlled"], 6), [0.855, 0.095, 0.05, 0, 0, 0, 0], atol=1e-12)


def test_law_spike_drop_and_fixed_and_uniform_by_hand():
    half_dropped = dataclasses.replace(delays.PRESETS["long_tail"], spike_drop_prob=0.5)
    np.testing.assert_allclose(law(half_dropped, 4), [0.9 * 0.975, 0.1 * 0.975, 0, 0, 0.025], atol=1e-12)
    np.testing.assert_allclose(law(delays.PRESETS["fixed"], 3), [0, 1, 0, 0])
    np.testing.assert_allclose(law(delays.PRESETS["uniform"], 5), [0.2] * 5 + [0])


def test_law_lognormal_and_pareto_match_scipy():
    lognormal = delays.PRESETS["lognormal"]
    cdf = scipy.stats.lognorm(s=lognormal.sigma, scale=lognormal.median_ms).cdf
    edges = DT * np.arange(MAX_DELAY)
    want = np.diff(np.concatenate([[0.0], cdf(edges), [1.0]]))
    np.testing.assert_allclose(law(lognormal, MAX_DELAY), want, atol=1e-12)

    pareto = delays.PRESETS["pareto"]
    cdf = scipy.stats.pareto(b=pareto.alpha, scale=pareto.scale_ms).cdf
    want = np.diff(np.concatenate([[0.0], cdf(edges), [1.0]]))
    np.testing.assert_allclose(law(pareto, MAX_DELAY), want, atol=1e-12)
    assert law(pareto, MAX_DELAY)[1] == pytest.approx(1 - (20 / DT) ** 2)


def test_mass_beyond_max_delay_goes_to_max_delay():
    pareto = delays.PRESETS["pareto"]
    assert law(pareto, 3)[3] == pytest.approx((pareto.scale_ms / (2 * DT)) ** pareto.alpha)
    np.testing.assert_allclose(law(delays.DelayProfile(mode="fixed", fixed_delay=9), 4), [0, 0, 0, 0, 1])
    np.testing.assert_allclose(
        law(dataclasses.replace(delays.PRESETS["long_tail"], d_spike=9), 3), [0.855, 0.095, 0, 0.05]
    )
    for profile in delays.PRESETS.values():
        for max_delay in (0, 1, 5, MAX_DELAY):
            pmf = law(profile, max_delay)
            assert pmf.shape == (max_delay + 1,)
            assert pmf.sum() == pytest.approx(1.0)
            assert (pmf >= 0).all()


def test_law_of_trace_is_the_empirical_distribution_of_its_ticks():
    ticks = delays.PRESETS["trace_example"].trace_ticks()
    assert ticks.size == 200
    np.testing.assert_allclose(law(delays.PRESETS["trace_example"], MAX_DELAY), np.bincount(ticks, minlength=33) / 200)


# --- draws follow the law -----------------------------------------------------------------------------

ALL_PROFILES = {
    **{name: p for name, p in delays.PRESETS.items() if p.warmup_cycles == 0},  # law: after the warm-up
    "measured_placeholder_rtt": dataclasses.replace(delays.PRESETS["measured"], system="network_rtt", control_hz=50.0),
    "long_tail_half_dropped": dataclasses.replace(delays.PRESETS["long_tail"], spike_drop_prob=0.5),
    "lognormal_capped": dataclasses.replace(delays.PRESETS["lognormal"], tail_cap=3),
    "pareto_spiky": dataclasses.replace(delays.PRESETS["pareto"], p_spike=0.1, d_spike=12),
    "trace_capped": dataclasses.replace(delays.PRESETS["trace_example"], tail_cap=4),
    "fixed_spiky_capped": delays.DelayProfile(mode="fixed", fixed_delay=2, p_spike=0.2, d_spike=50, tail_cap=40),
}


@pytest.mark.parametrize("name", ALL_PROFILES)
def test_empirical_distribution_of_100k_draws_matches_law(name):
    profile = ALL_PROFILES[name]
    draws = grid(profile)
    emp, pmf = empirical(draws), law(profile, MAX_DELAY)
    n = draws.size
    assert 0.5 * np.abs(emp - pmf).sum() < 0.01
    np.testing.assert_array_less(np.abs(emp - pmf), 5 * np.sqrt(pmf * (1 - pmf) / n) + 1e-12)


def test_spike_drop_prob_one_removes_every_spike_and_cap_bounds_draws():
    long_tail = delays.PRESETS["long_tail"]
    all_dropped = grid(dataclasses.replace(long_tail, spike_drop_prob=1.0))
    assert not (all_dropped == 4).any()
    # A dropped spike keeps the base draw: exactly the delays of the same profile without spikes.
    np.testing.assert_array_equal(all_dropped, grid(dataclasses.replace(long_tail, p_spike=0.0)))
    for cap in (0, 1, 2, 3):
        capped = grid(dataclasses.replace(long_tail, tail_cap=cap))
        assert capped.max() == cap


# --- common random numbers ----------------------------------------------------------------------------


def test_same_stream_and_cycle_give_the_same_draw_whatever_else():
    arrays = delays.PRESETS["long_tail"].arrays(MAX_DELAY)
    seed_key = jax.random.key(7)
    whole = np.asarray(draw_grid(arrays, seed_key, jnp.arange(N_STREAMS), jnp.arange(N_CYCLES)))
    key_57 = delays.stream_key(seed_key, 57, "env")
    alone = int(jax.jit(delays.draw_delay)(arrays, key_57, jnp.int32(300)))
    assert alone == whole[57, 300]
    # Other environments and other cycles in the batch, and their order, change nothing.
    shuffled_envs, shuffled_cycles = np.random.default_rng(0).permutation(N_STREAMS), np.arange(N_CYCLES)[::-1]
    shuffled = np.asarray(draw_grid(arrays, seed_key, jnp.asarray(shuffled_envs), jnp.asarray(shuffled_cycles)))
    np.testing.assert_array_equal(shuffled, whole[shuffled_envs][:, shuffled_cycles])


def test_cap_and_spike_drop_are_paired_with_the_uncapped_profile():
    long_tail = grid(delays.PRESETS["long_tail"])
    np.testing.assert_array_equal(grid(delays.PRESETS["tail_controlled"]), np.minimum(long_tail, 2))
    half = grid(dataclasses.replace(delays.PRESETS["long_tail"], spike_drop_prob=0.5))
    no_spikes = grid(dataclasses.replace(delays.PRESETS["long_tail"], p_spike=0.0))
    assert ((half == long_tail) | (half == no_spikes)).all()


def test_draws_look_independent_across_cycles_streams_and_seeds():
    profile = delays.PRESETS["uniform"]
    draws = grid(profile).astype(np.float64)
    tol = 5 / math.sqrt(draws.size)
    lag1 = np.corrcoef(draws[:, :-1].ravel(), draws[:, 1:].ravel())[0, 1]
    neighbour = np.corrcoef(draws[:-1].ravel(), draws[1:].ravel())[0, 1]
    other_seed = np.corrcoef(draws.ravel(), grid(profile, seed=1).ravel())[0, 1]
    assert abs(lag1) < tol
    assert abs(neighbour) < tol
    assert abs(other_seed) < tol
    # Joint law of consecutive cycles is the product law.
    both_zero = np.mean((draws[:, :-1] == 0) & (draws[:, 1:] == 0))
    assert both_zero == pytest.approx(0.04, abs=5 * math.sqrt(0.04 * 0.96 / draws.size))


def test_stream_keys_per_env_and_shared_for_batch():
    seed_key = jax.random.key(3)
    env_keys = jax.vmap(lambda i: delays.stream_key(seed_key, i, "env"))(jnp.arange(4))
    data = np.asarray(jax.random.key_data(env_keys))
    assert len({row.tobytes() for row in data}) == 4
    np.testing.assert_array_equal(data[2], jax.random.key_data(delays.stream_key(seed_key, 2, "env")))
    batch = jax.vmap(lambda i: delays.stream_key(seed_key, i, "batch"))(jnp.arange(4))
    assert len({row.tobytes() for row in np.asarray(jax.random.key_data(batch))}) == 1
    # The delay stream is not the seed key itself, which other streams derive from.
    assert not np.array_equal(
        jax.random.key_data(delays.stream_key(seed_key, 0, "batch")), jax.random.key_data(seed_key)
    )
    with pytest.raises(ConfigError, match=r"delay_profile\.scope"):
        delays.stream_key(seed_key, 0, "global")


def test_draw_inside_a_scan_matches_the_vmapped_draws():
    arrays = delays.PRESETS["pareto"].arrays(MAX_DELAY)
    key = delays.stream_key(jax.random.key(0), 5, "env")

    @jax.jit
    def scanned(arrays: delays.DelayArrays, key: jax.Array) -> jax.Array:
        def body(cycle: jax.Array, _: None) -> tuple[jax.Array, jax.Array]:
            return cycle + 1, delays.draw_delay(arrays, key, cycle)

        return jax.lax.scan(body, jnp.int32(0), None, length=50)[1]

    out = scanned(arrays, key)
    assert out.dtype == jnp.int32
    vmapped = jax.jit(jax.vmap(delays.draw_delay, in_axes=(None, None, 0)))(arrays, key, jnp.arange(50))
    np.testing.assert_array_equal(out, vmapped)


# --- one program for every profile --------------------------------------------------------------------


def test_one_compile_serves_every_profile_and_mode():
    traces = 0

    @jax.jit
    def mean_delay(arrays: delays.DelayArrays, key: jax.Array) -> jax.Array:
        nonlocal traces
        traces += 1
        return jnp.mean(jax.vmap(lambda c: delays.draw_delay(arrays, key, c))(jnp.arange(64)))

    key = jax.random.key(0)
    profiles = [*delays.PRESETS.values(), *ALL_PROFILES.values(), delays.DelayProfile(mode="trace", trace_ms=(5.0,))]
    reference = jax.tree.map(lambda x: (x.shape, x.dtype, x.weak_type), delays.PRESETS["fixed"].arrays(MAX_DELAY))
    for profile in profiles:
        arrays = profile.arrays(MAX_DELAY)
        assert jax.tree.map(lambda x: (x.shape, x.dtype, x.weak_type), arrays) == reference, profile.name
        mean_delay(arrays, key).block_until_ready()
    assert traces == 1


# --- trace replay -------------------------------------------------------------------------------------


def test_ms_to_ticks_is_a_ceiling_that_keeps_exact_multiples():
    exact = [k * DT for k in range(200)]
    np.testing.assert_array_equal(delays.ms_to_ticks(exact, DT), np.arange(200))
    np.testing.assert_array_equal(delays.ms_to_ticks([100.0, 200.0, 1000.0], DT), [3, 6, 30])
    np.testing.assert_array_equal(
        delays.ms_to_ticks([0.0, 0.001, 33.0, 33.34, 99.999, 100.001], DT), [0, 1, 1, 2, 3, 4]
    )
    np.testing.assert_array_equal(delays.ms_to_ticks([10.0, 10.5, 20.0], 10.0), [1, 2, 2])


def test_trace_replays_cyclically_from_a_random_offset_per_stream():
    n = 10
    profile = delays.DelayProfile(name="ramp", mode="trace", trace_ms=tuple(k * DT for k in range(n)))
    arrays = profile.arrays(MAX_DELAY)
    seed_key = jax.random.key(11)
    draws = np.asarray(draw_grid(arrays, seed_key, jnp.arange(N_STREAMS), jnp.arange(N_CYCLES)))
    offsets = draws[:, 0]
    # The ramp's tick k sits at entry k, so a stream's first draw is its offset.
    np.testing.assert_array_equal(draws, (offsets[:, None] + np.arange(N_CYCLES)[None, :]) % n)
    assert set(offsets.tolist()) == set(range(n))
    # The offset belongs to the stream, not to the call: a later cycle alone continues the same walk.
    key_3 = delays.stream_key(seed_key, 3, "env")
    assert int(jax.jit(delays.draw_delay)(arrays, key_3, 123)) == (offsets[3] + 123) % n

    capped = np.asarray(
        draw_grid(
            dataclasses.replace(profile, tail_cap=4).arrays(MAX_DELAY),
            seed_key,
            jnp.arange(N_STREAMS),
            jnp.arange(N_CYCLES),
        )
    )
    np.testing.assert_array_equal(capped, np.minimum(draws, 4))


def test_trace_file_with_header_equals_inline_trace(tmp_path):
    values = [45.5, 50.0, 100.0, 210.25, 0.0]
    path = tmp_path / "lat.csv"
    path.write_text("latency_ms\n" + "\n".join(map(str, values)) + "\n\n")
    from_file = delays.DelayProfile(mode="trace", trace_path=str(path))
    inline = delays.DelayProfile(mode="trace", trace_ms=tuple(values))
    np.testing.assert_array_equal(from_file.trace_ticks(), [2, 2, 3, 7, 0])
    for a, b in zip(from_file.arrays(MAX_DELAY), inline.arrays(MAX_DELAY), strict=True):
        np.testing.assert_array_equal(a, b)


def test_shipped_trace_resolves_independently_of_the_working_directory():
    resolved = delays.resolve_trace_path(delays.PRESETS["trace_example"].trace_path or "")
    assert resolved.is_absolute()
    assert resolved == delays.DATA_DIR / "example_trace.csv"
    assert resolved.read_text().splitlines()[0] == "latency_ms"


# --- validation ---------------------------------------------------------------------------------------

BAD_VALUES = [
    ({"name": ""}, "name"),
    ({"mode": "gaussian"}, "mode"),
    ({"scope": "global"}, "scope"),
    ({"fixed_delay": -1}, "fixed_delay"),
    ({"fixed_delay": 1.5}, "fixed_delay"),
    ({"base_delays": (0, -1), "base_probs": (0.5, 0.5)}, "base_delays"),
    ({"base_delays": (), "base_probs": ()}, "base_delays"),
    ({"base_delays": (0, 1, 2)}, "base_probs"),
    ({"base_probs": (1.1, -0.1)}, "base_probs"),
    ({"base_probs": (0.5, 0.4)}, "base_probs"),
    ({"base_probs": (0.9, 0.1 + 2e-6)}, "base_probs"),
    ({"p_spike": -0.1}, "p_spike"),
    ({"p_spike": 1.5}, "p_spike"),
    ({"spike_drop_prob": -0.01}, "spike_drop_prob"),
    ({"spike_drop_prob": 1.01}, "spike_drop_prob"),
    ({"d_spike": -1}, "d_spike"),
    ({"tail_cap": -1}, "tail_cap"),
    ({"dt_ms": 0.0}, "dt_ms"),
    ({"dt_ms": -33.3}, "dt_ms"),
    ({"dt_ms": float("nan")}, "dt_ms"),
    ({"median_ms": 0.0}, "median_ms"),
    ({"median_ms": -1.0}, "median_ms"),
    ({"sigma": 0.0}, "sigma"),
    ({"sigma": -0.5}, "sigma"),
    ({"scale_ms": 0.0}, "scale_ms"),
    ({"alpha": 0.0}, "alpha"),
    ({"alpha": -2.0}, "alpha"),
    ({"mode": "trace"}, "trace_ms"),
    ({"mode": "trace", "trace_ms": (1.0,), "trace_path": "example_trace.csv"}, "trace_path"),
    ({"mode": "trace", "trace_ms": ()}, "trace_ms"),
    ({"mode": "trace", "trace_ms": (10.0, -5.0)}, "trace_ms"),
    ({"mode": "trace", "trace_ms": (10.0, float("nan"))}, "trace_ms"),
    ({"mode": "trace", "trace_ms": ("fast",)}, "trace_ms"),
    ({"mode": "trace", "trace_ms": (1.0,) * (delays.TRACE_MAX_LEN + 1)}, "trace_ms"),
    ({"mode": "trace", "trace_ms": (1.0,), "p_spike": 0.05}, "p_spike"),
    ({"mode": "trace", "trace_path": "no/such/trace.csv"}, "trace_path"),
    ({"control_hz": 0.0}, "control_hz"),
    ({"control_hz": 50.0, "dt_ms": 40.0}, "control_hz"),
    ({"deadline": 0}, "deadline"),
    ({"deadline": 1.5}, "deadline"),
    ({"mode": "measured", "batch": 0}, "batch"),
    ({"mode": "measured", "calls": 0}, "calls"),
    ({"mode": "measured", "calls": delays.TRACE_MAX_LEN + 1}, "calls"),
    ({"mode": "measured", "latency_scale": 0.0}, "latency_scale"),
    ({"mode": "measured", "system": "gremlins"}, "system"),
    ({"mode": "measured", "system": "trace_example"}, "system"),
    ({"mode": "measured", "p_spike": 0.1}, "p_spike"),
    ({"batch": 4}, "batch"),  # measured-mode keys elsewhere
    ({"calls": 50}, "calls"),
    ({"latency_scale": 2.0}, "latency_scale"),
    ({"system": "stalls"}, "system"),
    ({"warmup_cycles": -1}, "warmup_cycles"),
    ({"warmup_factor": 0.5}, "warmup_factor"),
    ({"mode": "loglogistic", "alpha": 0.0}, "alpha"),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD_VALUES, ids=[f"{f}:{k}" for k, f in BAD_VALUES])
def test_every_bad_value_is_a_config_error_naming_its_field(kwargs, field):
    profile = delays.DelayProfile(**kwargs)
    with pytest.raises(ConfigError, match=rf"^delay_profile\.{field}: .*allowed") as err:
        profile.validate()
    assert err.value.key == f"delay_profile.{field}"
    # Everything that builds arrays validates first, before any jax work.
    with pytest.raises(ConfigError, match=rf"delay_profile\.{field}"):
        profile.arrays(MAX_DELAY)
    with pytest.raises(ConfigError, match=rf"delay_profile\.{field}"):
        law(profile, MAX_DELAY)


BAD_FILES = {
    "non_numeric": "latency_ms\n40.0\nslow\n",
    "header_only": "latency_ms\n",
    "empty": "",
    "negative": "40.0\n-3.0\n",
    "infinite": "40.0\ninf\n",
    "not_utf8": b"\xff\xfe\x00garbage",
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_trace_files_are_config_errors(tmp_path, case):
    path = tmp_path / "trace.csv"
    content = BAD_FILES[case]
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ConfigError, match=r"^delay_profile\.trace_path: .*allowed"):
        delays.DelayProfile(mode="trace", trace_path=str(path)).validate()


def test_a_directory_is_an_unreadable_trace(tmp_path):
    with pytest.raises(ConfigError, match=r"^delay_profile\.trace_path: cannot read"):
        delays.DelayProfile(mode="trace", trace_path=str(tmp_path)).validate()


def test_a_trace_file_is_read_once_by_resolved_and_home_expands(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    path = tmp_path / "lat.csv"
    path.write_text("latency_ms\n45.5\n100.0\n")
    profile = delays.DelayProfile(mode="trace", trace_path="~/lat.csv")
    loaded = profile.resolved()
    path.unlink()  # nothing after resolved() opens the file
    assert loaded == profile and hash(loaded) == hash(profile)  # the file's values are no config key
    loaded.validate()
    np.testing.assert_array_equal(loaded.trace_ticks(), [2, 3])
    inline = delays.DelayProfile(mode="trace", trace_ms=(45.5, 100.0))
    for a, b in zip(loaded.arrays(MAX_DELAY), inline.arrays(MAX_DELAY), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(law(loaded, MAX_DELAY), law(inline, MAX_DELAY))
    with pytest.raises(ConfigError, match=r"^delay_profile\.trace_path: cannot read"):
        profile.validate()  # the profile without the values: the file is gone
    with pytest.raises(ConfigError, match=r"^delay_profile\.trace_path: cannot read"):
        profile.resolved()
    assert inline.resolved() is inline and delays.PRESETS["long_tail"].resolved() is delays.PRESETS["long_tail"]


def test_a_profile_is_checked_once_and_a_replaced_copy_anew():
    profile = delays.DelayProfile(mode="fixed", fixed_delay=2)
    profile.validate()
    profile.arrays(MAX_DELAY)  # validates again: at once
    bad = dataclasses.replace(profile, fixed_delay=-1)
    with pytest.raises(ConfigError, match=r"delay_profile\.fixed_delay"):
        bad.arrays(MAX_DELAY)


def test_presets_are_the_yaml_options(tmp_path):
    # One definition: PRESETS is read from rtc_sweep/conf/delay_profile/ (sweep/test_config checks Hydra composes
    # the same); an option's mode is that of the schema it extends.
    files = sorted(delays.PRESETS_DIR.glob("*.yaml"))
    assert [p.stem for p in files] == list(delays.PRESETS)
    assert delays.PRESETS["long_tail"] == delays.DelayProfile(
        name="long_tail", mode="mixture", base_delays=(0, 1), base_probs=(0.9, 0.1), p_spike=0.05, d_spike=4
    )
    assert delays.PRESETS["tail_controlled"] == dataclasses.replace(
        delays.PRESETS["long_tail"], name="tail_controlled", tail_cap=2
    )
    assert delays.PRESETS["pi0_4g"] == delays.DelayProfile(name="pi0_4g", mode="trace", trace_ms=(73.0,), control_hz=50)
    own = tmp_path / "mine.yaml"  # a user's option without a schema names its mode
    own.write_text("name: mine\nmode: fixed\nfixed_delay: 3\n")
    assert delays.read_preset(own) == delays.DelayProfile(name="mine", mode="fixed", fixed_delay=3)


def test_presets_are_valid_named_and_hashable():
    assert set(delays.PRESETS) == {
        "fixed",
        "long_tail",
        "tail_controlled",
        "uniform",
        "trace_example",
        "lognormal",
        "pareto",
        *(f"pi0_{p}" for p in ("datacenter_gpu", "rtx4090", "jetson_thor", "5g", "4g", "slow_cloud")),
        "warmup",
        "stalls",
        "network_rtt",
        *(f"spread_{p}" for p in ("deterministic", "low_jitter", "bursty", "heavy_tail")),
        "measured",
    }
    for name, profile in delays.PRESETS.items():
        profile.validate()
        assert profile.name == name
        hash(profile)
    assert hash(delays.DelayProfile(base_delays=[0, 1], base_probs=[0.5, 0.5]))  # type: ignore[arg-type]


def test_bad_max_delay_is_rejected():
    with pytest.raises(ValueError, match="max_delay"):
        delays.PRESETS["long_tail"].arrays(-1)


# --- measured mode, the log-logistic law, warm-up ------------------------------------------------------


def test_measured_replays_its_ticks_like_the_trace_of_the_same_ms():
    ms = np.array([3.0, 19.9, 20.0, 20.1, 41.0, 95.0])
    measured = delays.DelayProfile(mode="measured", control_hz=50.0)
    trace = delays.DelayProfile(mode="trace", trace_ms=tuple(ms), control_hz=50.0)
    np.testing.assert_array_equal(measured.measured_ticks(ms), [1, 1, 1, 2, 3, 5])
    key, envs, cycles = jax.random.key(1), jnp.arange(8), jnp.arange(16)
    np.testing.assert_array_equal(
        np.asarray(draw_grid(measured.arrays(MAX_DELAY, measured_ms=ms), key, envs, cycles)),
        np.asarray(draw_grid(trace.arrays(MAX_DELAY), key, envs, cycles)),
    )
    np.testing.assert_allclose(law(measured, MAX_DELAY, ms), law(trace, MAX_DELAY))
    scaled = dataclasses.replace(measured, latency_scale=2.0)
    np.testing.assert_array_equal(scaled.measured_ticks(ms), [1, 2, 2, 3, 5, 10])


def test_measured_with_a_system_part_adds_the_iid_draw():
    ms = np.full(64, 30.0)  # 2 ticks at 50 Hz, always
    profile = delays.DelayProfile(mode="measured", control_hz=50.0, system="spread_bursty")
    draws = np.asarray(
        draw_grid(profile.arrays(MAX_DELAY, measured_ms=ms), jax.random.key(0), jnp.arange(256), jnp.arange(64))
    )
    assert set(np.unique(draws)) == {3, 7}  # 2 + (1 or 5)
    assert abs((draws == 7).mean() - 0.25) < 0.02
    np.testing.assert_allclose(law(profile, 10, ms), np.eye(11)[3] * 0.75 + np.eye(11)[7] * 0.25)


def test_loglogistic_discretisation_is_exact():
    p = delays.PRESETS["network_rtt"]  # median 30 ms, alpha 5, 20 ms ticks
    pmf = law(p, 8)
    assert pmf[0] == 0
    assert pmf[1] == pytest.approx(1 / (1 + (20.0 / 30.0) ** -5.0))
    assert pmf[2] == pytest.approx(1 / (1 + (40.0 / 30.0) ** -5.0) - 1 / (1 + (20.0 / 30.0) ** -5.0))


def test_warmup_cycles_are_slower_then_the_law_holds():
    profile = delays.PRESETS["warmup"]  # 2 ticks, the first 3 cycles x4
    draws = grid(profile)
    assert (draws[:, :3] == 8).all() and (draws[:, 3:] == 2).all()
    none = grid(dataclasses.replace(profile, warmup_cycles=0))
    assert (none == 2).all()


def test_control_hz_sets_the_period_of_every_ms_mode():
    at50 = delays.PRESETS["pi0_4g"]  # 73 ms
    assert at50.period_ms == 20.0
    assert at50.trace_ticks().tolist() == [4]
    assert dataclasses.replace(at50, control_hz=30.0).trace_ticks().tolist() == [3]
    assert dataclasses.replace(at50, control_hz=None).trace_ticks().tolist() == [3]  # dt_ms default, 30 Hz


def test_deadline_is_a_traced_array():
    a = delays.DelayProfile(deadline=3).arrays(MAX_DELAY)
    b = delays.DelayProfile().arrays(MAX_DELAY)
    assert int(a.deadline) == 3 and int(b.deadline) == delays.NO_DEADLINE
    assert a.deadline.dtype == b.deadline.dtype and a.deadline.shape == b.deadline.shape
