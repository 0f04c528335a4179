"""Small statistics helpers (pure numpy and the standard library, no JAX): the intervals, paired tests and power
of the results table and its summaries."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike


def wilson_interval(successes: int | float, n: int | float, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (``successes`` out of ``n``); z = 1.96 gives 95 %.

    Unlike the normal (Wald) interval it stays inside [0, 1] and is not degenerate at 0 or n successes, which
    matters for solve rates near 1. ``n = 0`` gives (nan, nan)::

        wilson_interval(0, 10)   -> (0.0, 0.2775)
        wilson_interval(81, 263) -> (0.2553, 0.3662)
    """
    n = float(n)
    if n <= 0:
        return float("nan"), float("nan")
    k = float(successes)
    if not 0 <= k <= n:
        raise ValueError(f"successes={successes} outside 0..n={n}")
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(centre - half, 0.0)  # exact at the ends (the formula gives 1 - 1e-16 at k = n)
    high = 1.0 if k == n else min(centre + half, 1.0)
    return float(low), float(high)


# ---------------------------------------------------------------------------------------------------------------
# Over seeds, paired tests and power (what aggregate reports). Pure numpy and the standard library.
#
# results.csv holds one row per job: the solve rate over its ``num_evals`` episodes, not the per-episode
# outcomes. So McNemar's test (which needs the discordant pairs) is out of reach; the paired analysis works on
# the per-seed differences instead: two methods run with the same seed see the same initial states, delay draws
# and flow noise (common random numbers), so their solve rates on one seed form a pair.

Z95 = 1.959963984540054
ALPHA = 0.05
POWER = 0.8
N_BOOTSTRAP = 2000


def solved_count(rate: float, n: int | float) -> int:
    """The number of solved episodes behind a job's solve rate (rate x n, rounded: the rate is k / n)."""
    return round(float(rate) * float(n))


def pooled_wilson(successes: ArrayLike, n: ArrayLike, z: float = Z95) -> tuple[float, float, float]:
    """(rate, low, high): the episodes of several jobs (seeds) pooled, with their Wilson interval.

    Seeds only change which episodes are drawn, so their episodes are draws of one binomial: with one seed this
    is still an interval, where the bootstrap over seeds has nothing to resample.
    """
    k, total = float(np.sum(successes)), float(np.sum(n))
    if total <= 0:
        return math.nan, math.nan, math.nan
    low, high = wilson_interval(k, total, z)
    return k / total, low, high


def bootstrap_mean_ci(values: ArrayLike, rng: np.random.Generator, n_boot: int = N_BOOTSTRAP) -> tuple[float, float]:
    """95 % percentile bootstrap CI of the mean over seeds (the point itself for one seed; NaNs dropped)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), float(x[0])
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def normal_sf(x: float) -> float:
    """P(Z > x) for a standard normal Z."""
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def normal_ppf(q: float) -> float:
    return NormalDist().inv_cdf(q)


_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def _normal_sf_array(x: np.ndarray) -> np.ndarray:
    return 0.5 * _erfc(x / math.sqrt(2.0))


@functools.lru_cache(maxsize=256)
def _chi_nodes(df: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes u = sqrt(V / df) and weights of V ~ chi-square(df): E f(u) = sum(weights * f(nodes))."""
    w = np.linspace(0.0, math.sqrt(df) + 12.0, 6001)
    # The density of W = sqrt(V), 2 w^(df-1) exp(-w^2 / 2) / (2^(df/2) Gamma(df/2)): finite at 0 for df = 1.
    log_w = np.log(np.where(w > 0, w, 1.0))
    log_pdf = math.log(2.0) + (df - 1) * log_w - w * w / 2 - (df / 2) * math.log(2.0) - math.lgamma(df / 2)
    pdf = np.where((w > 0) | (df == 1), np.exp(log_pdf), 0.0)
    simpson = np.ones_like(w)  # Simpson's rule over the (odd number of) nodes
    simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0
    weights = pdf * simpson
    return w / math.sqrt(df), weights / weights.sum()


def t_sf(t: float, df: int) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (T = Z / sqrt(V / df), integrated over V)."""
    if df < 1:
        raise ValueError(f"df={df}; allowed: >= 1")
    u, weights = _chi_nodes(int(df))
    return float(np.sum(weights * _normal_sf_array(t * u)))


@functools.lru_cache(maxsize=1024)
def t_ppf(q: float, df: int) -> float:
    """The q-quantile of Student's t (bisection on ``t_sf``)."""
    if not 0 < q < 1:
        raise ValueError(f"q={q}; allowed: 0 < q < 1")
    if q < 0.5:
        return -t_ppf(1 - q, df)
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > 1 - q:
        hi *= 2
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_sf(mid, df) > 1 - q else (lo, mid)
    return (lo + hi) / 2


def paired_t_power(noncentrality: float, df: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided one-sample t-test at level ``alpha`` (exact, noncentral t).

    ``noncentrality`` = true mean / (sd / sqrt(n)) with ``df`` = n - 1 for n paired differences.
    """
    c = t_ppf(1 - alpha / 2, df)
    u, weights = _chi_nodes(int(df))
    tails = _normal_sf_array(c * u - noncentrality) + _normal_sf_array(c * u + noncentrality)
    return float(np.sum(weights * tails))


@functools.lru_cache(maxsize=1024)
def _noncentrality_for(df: int | None, alpha: float, power: float) -> float:
    """The noncentrality at which the two-sided test reaches ``power`` (df None: the z-test)."""
    if df is None:
        return normal_ppf(1 - alpha / 2) + normal_ppf(power)
    lo, hi = 0.0, 1.0
    while paired_t_power(hi, df, alpha) < power:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if paired_t_power(mid, df, alpha) < power else (lo, mid)
    return (lo + hi) / 2


def detectable_difference(
    sigma_episode: float, episodes: int, seeds: int, alpha: float = ALPHA, power: float = POWER
) -> float:
    """The smallest solve-rate difference the sweep's paired test detects with ``power`` at level ``alpha``.

    ``sigma_episode`` is the standard deviation of one episode's paired difference (solved under method a minus
    solved under method b, each 0 or 1), so one seed's difference of rates has sd sigma_episode / sqrt(episodes).
    ``seeds`` >= 2: the paired t-test over seeds (``paired_rate_test``), exact for normal per-seed differences
    (with hundreds of episodes per seed they are close to normal). ``seeds`` == 1: the z-test on the pooled
    counts, whose sigma_episode is the independent-arms one (``paired_rate_test`` says which it measured).
    """
    if seeds < 1 or episodes < 1 or not math.isfinite(sigma_episode):
        return math.nan
    df = seeds - 1 if seeds >= 2 else None
    return _noncentrality_for(df, alpha, power) * sigma_episode / math.sqrt(episodes * seeds)


def pooled_z_episodes(difference: float, sigma_independent: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """Episodes per method in all (over seeds) for the pooled z-test to detect ``difference``."""
    z = _noncentrality_for(None, alpha, power)
    return math.ceil((z * sigma_independent / difference) ** 2)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What it takes to detect ``difference`` with the paired test (power ``power``, level ``alpha``)."""

    difference: float
    sigma_episode: float
    episodes: int  # episodes per job in the sweep
    seeds: int  # seeds in the sweep
    seeds_needed: int  # at ``episodes`` episodes per job
    episodes_needed: int | None  # at ``seeds`` seeds (None with one seed: that test has no pairing to use)
    alpha: float = ALPHA
    power: float = POWER


def plan(
    difference: float, sigma_episode: float, episodes: int, seeds: int, alpha: float = ALPHA, power: float = POWER
) -> Plan:
    """Seeds needed at this many episodes per job, and episodes per job needed at this many seeds (>= 2).

    Plans for the paired t-test over seeds (at least 2 seeds: one seed cannot measure the paired variance).
    """
    if difference <= 0 or not math.isfinite(sigma_episode):
        raise ValueError(f"difference={difference}, sigma_episode={sigma_episode}; allowed: > 0, finite")
    if sigma_episode == 0:
        return Plan(difference, sigma_episode, episodes, seeds, 2, 1 if seeds >= 2 else None, alpha, power)
    z = _noncentrality_for(None, alpha, power)
    s = max(2, math.floor((z * sigma_episode / difference) ** 2 / episodes))  # the z-test's answer, a lower bound
    while detectable_difference(sigma_episode, episodes, s, alpha, power) > difference:
        s += 1 if s < 64 else max(1, s // 16)
    needed_n = None
    if seeds >= 2:
        needed_n = math.ceil((_noncentrality_for(seeds - 1, alpha, power) * sigma_episode / difference) ** 2 / seeds)
    return Plan(difference, sigma_episode, episodes, seeds, s, needed_n, alpha, power)


@dataclasses.dataclass(frozen=True)
class PairedTest:
    """Method a against method b on the same seeds: the solve-rate difference a - b, its interval and test."""

    n_seeds: int
    episodes: int  # per job (seed)
    diff: float  # pooled over seeds: (solved by a - solved by b) / episodes
    ci_low: float  # 95 % interval of the difference, from the same test
    ci_high: float
    p_value: float  # two-sided, of ``test``
    test: str  # "paired t" (over seeds, >= 2) | "pooled z" (one seed)
    p_pooled_z: float  # the two-proportion z-test on the pooled counts, arms treated as independent
    sigma_episode: float  # sd of one episode's paired difference: measured over seeds, or the independent one
    sigma_source: str  # "paired" | "independent"
    sigma_independent: float  # sqrt(pa (1 - pa) + pb (1 - pb)): the sd with the arms independent (pooled z)
    mde: float  # smallest difference ``test`` detects at 80 % power, alpha 0.05 (detectable_difference)


def paired_rate_test(k_a: Sequence[float], k_b: Sequence[float], episodes: int, alpha: float = ALPHA) -> PairedTest:
    """The paired comparison of two methods' solved counts per seed (``k_a[i]``, ``k_b[i]`` of ``episodes``).

    Per-episode outcomes are not in results.csv, so McNemar's test is not available; instead:

    * two seeds or more: the paired t-test on the per-seed differences of solve rates d_i (n - 1 degrees of
      freedom). It measures the paired variance, so the common random numbers' correlation counts. The variance
      is floored at its least possible value given the two rates, (|d| - d^2) / episodes, so that seeds that
      happen to agree exactly do not make the test certain;
    * one seed: the two-proportion z-test on the counts, treating the arms as independent: with common random
      numbers the arms are positively correlated, so this overstates the variance and the test is conservative.

    ``p_pooled_z`` (that second test) is given for every number of seeds.
    """
    a, b = np.asarray(k_a, dtype=np.float64), np.asarray(k_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0 or episodes < 1:
        raise ValueError("k_a and k_b need one count per seed, the same seeds, and episodes >= 1")
    s, n = a.size, float(episodes)
    pa, pb = a.sum() / (s * n), b.sum() / (s * n)
    diff = pa - pb
    # The pooled z-test (H0: equal rates), with the unpooled standard error for its interval.
    p_bar = (pa + pb) / 2
    se0 = math.sqrt(2 * p_bar * (1 - p_bar) / (s * n))
    p_z = 1.0 if diff == 0 else (0.0 if se0 == 0 else 2 * normal_sf(abs(diff) / se0))
    sigma_ind = math.sqrt(pa * (1 - pa) + pb * (1 - pb))
    if s == 1:
        se = sigma_ind / math.sqrt(n)
        half = Z95 * se
        return PairedTest(
            1, episodes, float(diff), float(diff - half), float(diff + half), p_z, "pooled z", p_z, sigma_ind,
            "independent", sigma_ind, detectable_difference(sigma_ind, episodes, 1),
        )  # fmt: skip
    d = (a - b) / n
    var_seed = max(float(d.var(ddof=1)), (abs(diff) - diff * diff) / n)
    sd_seed = math.sqrt(var_seed)
    df = s - 1
    if sd_seed == 0:  # both methods solve all (or none) of every episode: no difference, no variance
        p_t, half = 1.0, 0.0
    else:
        t = float(d.mean()) / (sd_seed / math.sqrt(s))
        p_t = min(1.0, 2 * t_sf(abs(t), df))
        half = t_ppf(1 - alpha / 2, df) * sd_seed / math.sqrt(s)
    sigma = sd_seed * math.sqrt(n)
    return PairedTest(
        s, episodes, float(diff), float(diff - half), float(diff + half), p_t, "paired t", p_z, sigma, "paired",
        sigma_ind, detectable_difference(sigma, episodes, s),
    )  # fmt: skip


def mean_over_strata(
    estimates: ArrayLike, variances: ArrayLike, bounds: tuple[float, float], z: float = Z95
) -> tuple[float, float, float, float]:
    """(mean, se, low, high): the unweighted mean of L independent estimates and its normal interval.

    The strata (levels) weigh the same, so var(mean) = sum(variances) / L^2; the interval mean ± z se is clipped
    to ``bounds`` ((0, 1) for a rate, (-1, 1) for a difference of rates)::

        mean_over_strata([0.9, 0.5], [0.09 / 100, 0.25 / 100], (0, 1))  -> (0.7, 0.0292, 0.643, 0.757)
    """
    x, v = np.asarray(estimates, dtype=np.float64), np.asarray(variances, dtype=np.float64)
    if x.shape != v.shape or x.ndim != 1 or x.size == 0:
        raise ValueError("estimates and variances need one value per stratum, at least one stratum")
    mean = float(x.mean())
    se = math.sqrt(float(v.sum())) / x.size
    return mean, se, max(bounds[0], mean - z * se), min(bounds[1], mean + z * se)
