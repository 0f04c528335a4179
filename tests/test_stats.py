"""Intervals, the paired test and power (stats.py): known binomial cases, scipy where present, simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rtc_sweep.report import stats


def test_wilson_interval_known_cases() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81 of 263 -> 0.2553 to 0.3662; 0 of 10 -> 0 to 0.2775.
    assert stats.wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert stats.wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=5e-5)
    assert stats.wilson_interval(10, 10)[1] == 1.0
    # 255 of 256, the one-seed cell: an interval of about ±0.01, not a point.
    lo, hi = stats.wilson_interval(255, 256)
    assert lo == pytest.approx(0.9783, abs=5e-4) and hi == pytest.approx(0.9993, abs=5e-4)
    assert all(math.isnan(v) for v in stats.wilson_interval(0, 0))


def test_wilson_covers_a_known_rate() -> None:
    rng = np.random.default_rng(0)
    p, n = 0.9, 256
    k = rng.binomial(n, p, size=4000)
    covered = [lo <= p <= hi for lo, hi in (stats.wilson_interval(int(x), n) for x in k)]
    assert np.mean(covered) == pytest.approx(0.95, abs=0.012)


def test_pooled_wilson_pools_the_episodes_of_all_seeds() -> None:
    rate, lo, hi = stats.pooled_wilson([60, 62, 58, 64], [64, 64, 64, 64])
    assert rate == pytest.approx(244 / 256)
    assert (lo, hi) == stats.wilson_interval(244, 256)
    assert stats.solved_count(0.99609375, 256) == 255


def test_t_distribution_matches_scipy() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 4, 9, 40):
        for t in (0.3, 1.5, 4.0, 15.0):
            assert stats.t_sf(t, df) == pytest.approx(scipy_stats.t.sf(t, df), rel=1e-6, abs=1e-12)
        assert stats.t_ppf(0.975, df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-7)
        c = scipy_stats.t.ppf(0.975, df)
        exact = scipy_stats.nct.sf(c, df, 2.5) + scipy_stats.nct.cdf(-c, df, 2.5)
        assert stats.paired_t_power(2.5, df) == pytest.approx(exact, rel=1e-6)


def _cells(pa: float, pb: float, c: float) -> np.ndarray:
    """P(a, b) for episodes where, with probability c, both methods see the same uniform (common random numbers)."""
    p11 = c * min(pa, pb) + (1 - c) * pa * pb
    return np.array([p11, pa - p11, pb - p11, 1 - pa - pb + p11])


def _sigma(cells: np.ndarray) -> float:
    _, p10, p01, _ = cells
    diff = p10 - p01
    return math.sqrt(p10 + p01 - diff * diff)


def _simulate(cells: np.ndarray, seeds: int, episodes: int, sweeps: int, seed: int) -> float:
    """The rejection rate at alpha 0.05 of paired_rate_test over simulated sweeps."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(episodes, cells, size=(sweeps, seeds))  # [sweep, seed, cell]
    k_a, k_b = counts[..., 0] + counts[..., 1], counts[..., 0] + counts[..., 2]
    rejected = [stats.paired_rate_test(a, b, episodes).p_value < stats.ALPHA for a, b in zip(k_a, k_b, strict=True)]
    return float(np.mean(rejected))


@pytest.mark.parametrize(("seeds", "episodes", "concordance"), [(5, 256, 0.8), (3, 512, 0.5), (1, 256, 0.0)])
def test_power_holds_in_simulation(seeds: int, episodes: int, concordance: float) -> None:
    """A difference planted at the stated detectable size is found about 80 % of the time; none, 5 %."""
    pa = 0.8
    delta = 0.05
    for _ in range(20):  # the paired sd depends on the planted difference: iterate to the fixed point
        cells = _cells(pa, pa - delta, concordance)
        sigma = _sigma(cells) if seeds >= 2 else math.sqrt(pa * (1 - pa) + (pa - delta) * (1 - pa + delta))
        delta = stats.detectable_difference(sigma, episodes, seeds)
    cells = _cells(pa, pa - delta, concordance)
    assert _simulate(cells, seeds, episodes, 2000, seed=1) == pytest.approx(stats.POWER, abs=0.035)
    null = _simulate(_cells(pa, pa, concordance), seeds, episodes, 2000, seed=2)
    assert null <= stats.ALPHA + 0.02  # at most its size (the variance floor makes the t-test a little conservative)


def test_paired_variance_is_measured_over_seeds() -> None:
    rng = np.random.default_rng(3)
    cells = _cells(0.8, 0.75, 0.9)
    counts = rng.multinomial(256, cells, size=40)
    test = stats.paired_rate_test(counts[:, 0] + counts[:, 1], counts[:, 0] + counts[:, 2], 256)
    assert test.test == "paired t" and test.sigma_source == "paired"
    assert test.sigma_episode == pytest.approx(_sigma(cells), rel=0.2)
    assert test.sigma_episode < test.sigma_independent  # common random numbers: the pairing helps
    assert test.ci_low < 0.05 < test.ci_high


def test_one_seed_falls_back_to_the_pooled_z_test() -> None:
    test = stats.paired_rate_test([200], [180], 256)
    assert test.test == "pooled z" and test.sigma_source == "independent"
    assert test.p_value == test.p_pooled_z
    pa, pb = 200 / 256, 180 / 256
    p_bar = (pa + pb) / 2
    z = (pa - pb) / math.sqrt(2 * p_bar * (1 - p_bar) / 256)
    assert test.p_value == pytest.approx(math.erfc(z / math.sqrt(2)))


def test_identical_methods_have_no_difference() -> None:
    test = stats.paired_rate_test([256, 256], [256, 256], 256)
    assert test.diff == 0 and test.p_value == 1.0


def test_plan_is_the_least_that_suffices() -> None:
    sigma, episodes = 0.4, 256
    plan = stats.plan(0.05, sigma, episodes, seeds=3)
    assert stats.detectable_difference(sigma, episodes, plan.seeds_needed) <= 0.05
    assert stats.detectable_difference(sigma, episodes, plan.seeds_needed - 1) > 0.05
    assert plan.episodes_needed is not None
    assert stats.detectable_difference(sigma, plan.episodes_needed, 3) <= 0.05
    assert stats.detectable_difference(sigma, plan.episodes_needed - 1, 3) > 0.05
    assert stats.plan(0.05, sigma, episodes, seeds=1).episodes_needed is None
    n = stats.pooled_z_episodes(0.05, sigma)
    assert stats.detectable_difference(sigma, n, 1) <= 0.05 < stats.detectable_difference(sigma, n - 1, 1)
