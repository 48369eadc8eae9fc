"""Measured times: the figures tests append to var/log/<suite>/timings.jsonl, and percentiles of
them for those figures and what benchmarks print."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def record_timings(log_dir: Path, name: str, **values: Any) -> None:
    """Append `{"test": name, **values}` as one line to `log_dir`/timings.jsonl (figures for
    reading, not assertions)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "timings.jsonl").open("a") as f:
        f.write(json.dumps({"test": name, **values}) + "\n")


def percentile(values: Sequence[float], p: float) -> float:
    """The `p`th percentile (0-100) of `values`, interpolated between the closest ranks."""
    if not values:
        raise ValueError("no values")
    if len(values) == 1 or p <= 0:
        return float(min(values))
    if p >= 100:
        return float(max(values))
    return statistics.quantiles(values, n=100, method="inclusive")[round(p) - 1]
