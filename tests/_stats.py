"""Rank statistics for the tests, in numpy (scipy is not a declared dependency of fqtool)."""

from __future__ import annotations

import math

import numpy as np


def average_ranks(values) -> np.ndarray:
    """0-based ranks with ties sharing their mean rank (as ``scipy.stats.rankdata(method="average") - 1``)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(x, y) -> tuple[float, float]:
    """Spearman's ρ and its two-sided p-value (normal approximation ``z = ρ·√(n−1)``, good for n ≳ 30)."""
    rx, ry = average_ranks(x), average_ranks(y)
    rho = float(np.corrcoef(rx, ry)[0, 1])
    z = abs(rho) * math.sqrt(len(rx) - 1)
    return rho, math.erfc(z / math.sqrt(2))
