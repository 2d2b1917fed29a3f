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


def bootstrap_rate(outcomes: Sequence[bool], resamples: int = 2000, seed: int = 0, level: float = 0.95) -> Rate:
    """Mean of 0/1 outcomes with a percentile bootstrap CI (deterministic by seed)."""
    values = np.asarray(outcomes, dtype=np.float64)
    if values.size == 0:
        raise ValueError("bootstrap_rate needs at least one outcome")
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(resamples, values.size), replace=True).mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return Rate(float(values.mean()), float(low), float(high), int(values.size), int(values.sum()))
