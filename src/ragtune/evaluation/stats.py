"""Uncertainty: bootstrap confidence intervals and paired bootstrap tests, deterministic under a seed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Interval:
    """Percentile bootstrap interval of the mean."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    a = (1 - level) / 2
    return Interval(float(x.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a)))


@dataclass(frozen=True)
class PairedTest:
    a: str
    b: str
    metric: str
    diff: float  # mean(a) - mean(b)
    low: float
    high: float
    p_value: float  # two-sided: how often the resampled difference lands on the other side of zero


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], names: tuple[str, str], metric: str, n_boot: int = 1000, seed: int = 0
) -> PairedTest:
    """Resample questions (the same ones for both strategies) and look at the difference of means."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) != len(y):
        raise ValueError(f"paired test needs the same questions: {len(x)} vs {len(y)}")
    if len(x) == 0:
        return PairedTest(*names, metric, float("nan"), float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    d = (x[idx] - y[idx]).mean(axis=1)
    diff = float((x - y).mean())
    if diff == 0 and np.all(d == 0):
        p = 1.0
    else:
        p = float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean())))
    return PairedTest(names[0], names[1], metric, diff, float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975)), p)
