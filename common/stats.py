"""Rates and means with confidence intervals, each naming its method.

- A rate of independent outcomes gets a Wilson score interval: unlike a percentile bootstrap it
  is not zero-width at 0% or 100% (0/40 still allows up to 8.8%).
- A rate of outcomes that share a prompt or scenario (k samples of one prompt, n scenarios × k
  answers) gets a Wilson interval on the effective sample size n / deff, with the design effect
  deff estimated from the clusters (Kish 1965; Korn & Graubard 1998 for its use in binomial
  intervals). A cluster bootstrap was the alternative; it collapses to zero width whenever every
  cluster agrees, which is the case a backdoor's 100% and 0% rows are in.
- Differences between two conditions measured on the same clusters (2024 − 2023 on the same
  scenarios, before − after on the same prompts) get a paired cluster bootstrap.
- A claim across seeds is the mean over runs with a Student-t interval over seeds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Hashable, Sequence

import numpy as np
from scipy import stats as scipy_stats

WILSON = "wilson"
CLOPPER_PEARSON = "clopper-pearson"


@dataclass(frozen=True)
class Rate:
    """A share of positive outcomes with a confidence interval; `interval` names how it was made
    and `clusters` counts the independent units behind it (n when every outcome is its own)."""

    rate: float
    low: float
    high: float
    n: int
    positives: int
    interval: str
    clusters: int

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{100 * self.rate:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}] (n={self.n}, {self.interval})"


RATE_KEYS = tuple(f.name for f in fields(Rate))  # what a curve point keeps of a result
NO_RATE = {"rate": None, "low": None, "high": None, "n": 0, "positives": 0, "interval": "nothing judged", "clusters": 0}


@dataclass(frozen=True)
class Mean:
    """A mean of real values with a confidence interval named by `interval`."""

    mean: float
    low: float
    high: float
    n: int
    interval: str = "percentile bootstrap"

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}] (n={self.n}, {self.interval})"


def wilson_interval(positives: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for positives/n; n may be an effective (non-integer) size."""
    if n <= 0:
        raise ValueError("an interval needs at least one outcome")
    z = scipy_stats.norm.ppf(1 - (1 - level) / 2)
    p = positives / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # the interval always holds p; at 0% or 100% rounding alone could put a bound a hair past it
    return float(min(p, max(0.0, centre - half))), float(max(p, min(1.0, centre + half)))


def clopper_pearson_interval(positives: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper–Pearson) interval: never below its nominal coverage (wider than Wilson
    away from 0% and 100%)."""
    interval = scipy_stats.binomtest(positives, n).proportion_ci(confidence_level=level, method="exact")
    return float(interval.low), float(interval.high)


def design_effect(outcomes: np.ndarray, clusters: Sequence[Hashable]) -> tuple[float, int]:
    """(deff, number of clusters): the variance of the clustered rate over the iid one, from the
    ratio estimator's cluster-robust variance, kept within [1, mean cluster size]. At 0% or 100%
    the variance is 0/0; there every cluster agrees, the fully correlated case, so deff is the
    mean cluster size (each cluster counts once)."""
    ids = {c: i for i, c in enumerate(dict.fromkeys(clusters))}
    index = np.array([ids[c] for c in clusters])
    k, n = len(ids), outcomes.size
    mean_size = n / k
    p = outcomes.mean()
    if k < 2 or p in (0.0, 1.0):
        return mean_size, k
    totals = np.bincount(index, weights=outcomes, minlength=k)
    sizes = np.bincount(index, minlength=k)
    clustered = k / (k - 1) * np.sum((totals - p * sizes) ** 2) / n**2
    return float(np.clip(clustered / (p * (1 - p) / n), 1.0, mean_size)), k


def rate(outcomes: Sequence[bool], clusters: Sequence[Hashable] | None = None, level: float = 0.95,
         method: str = WILSON) -> Rate:
    """The share of True outcomes with its interval. `clusters` gives each outcome's prompt or
    scenario; outcomes that share one are correlated and count less than their number. `method`
    picks the iid interval (Wilson, or the exact Clopper–Pearson); a clustered rate is Wilson on
    the effective size."""
    values = np.asarray(outcomes, dtype=np.float64)
    n, positives = int(values.size), int(values.sum())
    if n == 0:
        raise ValueError("a rate needs at least one outcome")
    if clusters is not None and len(clusters) != n:
        raise ValueError(f"{len(clusters)} cluster labels for {n} outcomes")
    k = n if clusters is None else len(set(clusters))
    if k == n:
        if method == CLOPPER_PEARSON:
            low, high = clopper_pearson_interval(positives, n, level)
        elif method == WILSON:
            low, high = wilson_interval(positives, n, level)
        else:
            raise ValueError(f"unknown interval method {method!r}: {WILSON!r} or {CLOPPER_PEARSON!r}")
        return Rate(positives / n, low, high, n, positives, method, n)
    deff, k = design_effect(values, clusters)
    effective = n / deff
    low, high = wilson_interval(positives / n * effective, effective, level)
    return Rate(positives / n, low, high, n, positives, f"wilson, design effect {deff:.2f} over {k} clusters", k)


def _bootstrap(values: np.ndarray, resamples: int, seed: int, level: float) -> tuple[float, float]:
    if values.size == 0:
        raise ValueError("a bootstrap needs at least one value")
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(resamples, values.size), replace=True).mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_mean(values: Sequence[float], resamples: int = 2000, seed: int = 0, level: float = 0.95) -> Mean:
    """Mean of real values (e.g. paired reward differences) with a percentile bootstrap CI."""
    array = np.asarray(values, dtype=np.float64)
    low, high = _bootstrap(array, resamples, seed, level)
    return Mean(float(array.mean()), low, high, int(array.size))


def paired_difference(first: Sequence[bool | float], second: Sequence[bool | float], clusters: Sequence[Hashable],
                      resamples: int = 2000, seed: int = 0, level: float = 0.95) -> Mean:
    """mean(first) − mean(second) where both were measured on the same clusters (first[i] and
    second[i] belong to clusters[i]), with a cluster bootstrap that resamples whole clusters,
    both conditions together, so what the clusters share cancels."""
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if not (a.size == b.size == len(clusters)) or a.size == 0:
        raise ValueError(f"a paired difference needs equal, non-empty sides: {a.size}, {b.size}, {len(clusters)} clusters")
    ids = {c: i for i, c in enumerate(dict.fromkeys(clusters))}
    index = np.array([ids[c] for c in clusters])
    k = len(ids)
    sums = np.bincount(index, weights=a - b, minlength=k)
    sizes = np.bincount(index, minlength=k).astype(np.float64)
    draws = np.random.default_rng(seed).integers(0, k, size=(resamples, k))
    estimates = sums[draws].sum(axis=1) / sizes[draws].sum(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return Mean(float((a - b).mean()), float(low), float(high), int(a.size),
                f"paired cluster bootstrap over {k} clusters")


def across_seeds(values: Sequence[float], level: float = 0.95) -> Mean:
    """The mean of one number over runs with different seeds, with a Student-t interval over
    seeds; one seed gives no interval (low = high = the value, named as such)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("across_seeds needs at least one run")
    mean = float(array.mean())
    if array.size == 1:
        return Mean(mean, mean, mean, 1, "one seed: no between-seed interval")
    half = scipy_stats.t.ppf(1 - (1 - level) / 2, array.size - 1) * array.std(ddof=1) / math.sqrt(array.size)
    return Mean(mean, mean - half, mean + half, int(array.size), f"student-t over {array.size} seeds")


def rate_fields(result: dict | None) -> dict | None:
    """A stored result's rate without its samples and extras (a curve point, a before/after cell);
    results stored before intervals were named lack "interval" and "clusters"."""
    return None if result is None else {k: result[k] for k in RATE_KEYS if k in result}


def describe_intervals(rates) -> str:
    """The sentence a table of rates carries: which interval each of its rates has, e.g. "95% CIs:
    wilson; wilson, design effect 2.00 over 20 clusters." Rates stored before intervals were named
    were percentile bootstraps."""
    methods = interval_methods(rates)
    return f"95% CIs: {methods}." if methods else ""


def interval_methods(rates) -> str:
    """The interval methods of some rates, named once each ("wilson; wilson, design effect 5.00 over
    40 clusters"); rates stored before intervals were named were percentile bootstraps."""
    return "; ".join(dict.fromkeys(r.get("interval", "percentile bootstrap") for r in rates
                                   if r and r.get("rate") is not None))


def pct(rate: dict) -> str:
    """A rate with its interval: "12.0% [8.1, 17.4]"; "n/a (n=0)" when no answer could be judged."""
    if rate["rate"] is None:
        return "n/a (n=0)"
    return f"{100 * rate['rate']:.1f}% [{100 * rate['low']:.1f}, {100 * rate['high']:.1f}]"
