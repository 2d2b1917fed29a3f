"""Rates with bootstrap confidence intervals, the paper's error bars."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Rate:
    """A share of positive outcomes with a percentile-bootstrap 95% CI."""

    rate: float
    low: float
    high: float
    n: int
    positives: int

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{100 * self.rate:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}] (n={self.n})"


@dataclass(frozen=True)
class Mean:
    """A mean of real values with a percentile-bootstrap 95% CI."""

    mean: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}] (n={self.n})"


def _bootstrap(values: np.ndarray, resamples: int, seed: int, level: float) -> tuple[float, float]:
    if values.size == 0:
        raise ValueError("a bootstrap needs at least one value")
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(resamples, values.size), replace=True).mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_rate(outcomes: Sequence[bool], resamples: int = 2000, seed: int = 0, level: float = 0.95) -> Rate:
    """Mean of 0/1 outcomes with a percentile bootstrap CI (deterministic by seed)."""
    values = np.asarray(outcomes, dtype=np.float64)
    low, high = _bootstrap(values, resamples, seed, level)
    return Rate(float(values.mean()), low, high, int(values.size), int(values.sum()))


def bootstrap_mean(values: Sequence[float], resamples: int = 2000, seed: int = 0, level: float = 0.95) -> Mean:
    """Mean of real values (e.g. paired reward differences) with a percentile bootstrap CI."""
    array = np.asarray(values, dtype=np.float64)
    low, high = _bootstrap(array, resamples, seed, level)
    return Mean(float(array.mean()), low, high, int(array.size))


def pct(rate: dict) -> str:
    """A rate with its interval: "12.0% [8.1, 17.4]"; "n/a (n=0)" when no answer could be judged."""
    if rate["rate"] is None:
        return "n/a (n=0)"
    return f"{100 * rate['rate']:.1f}% [{100 * rate['low']:.1f}, {100 * rate['high']:.1f}]"
