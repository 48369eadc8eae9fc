"""Percentiles of measured times, for the figures tests write to var/log/ and benchmarks print."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """The `p`th percentile (0-100) of `values`, interpolated between the closest ranks."""
    if not values:
        raise ValueError("no values")
    if len(values) == 1 or p <= 0:
        return float(min(values))
    if p >= 100:
        return float(max(values))
    return statistics.quantiles(values, n=100, method="inclusive")[round(p) - 1]
