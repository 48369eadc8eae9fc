"""The sampler of log lines anyone can cause: one per interval, with the count left out."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhooks.log_sampler import LogSampler

pytestmark = pytest.mark.unit


@given(st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), max_size=60))
def test_one_line_per_interval_and_every_event_accounted_for(gaps: list[float]) -> None:
    """Over any arrival times: no two lines closer than the interval, and the lines' counts of
    events left out plus the lines add up to every event but those left out since the last."""
    now = [0.0]
    sampler = LogSampler(every_s=10.0, clock=lambda: now[0])
    logged_at: list[float] = []
    accounted = 0
    for gap in gaps:
        now[0] += gap
        skipped = sampler.sample()
        if skipped is not None:
            logged_at.append(now[0])
            accounted += skipped + 1
    assert all(b - a >= 10.0 for a, b in itertools.pairwise(logged_at))
    if gaps:
        assert logged_at[0] == gaps[0]  # the first event is always logged
    pending = len(gaps) - accounted
    assert 0 <= pending <= len(gaps)
    assert (pending == 0) or (logged_at and now[0] - logged_at[-1] < 10.0)
