"""The persona cache (pure, with a fake clock): TTL, stale copies, negative entries, LRU bound."""

from __future__ import annotations

import pytest

from contract.metadata import Persona
from dispatcher.persona_cache import PersonaCache

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


P = Persona(instructions="Be Priya.", persona_id="prs_1")


def test_fresh_until_ttl_then_only_stale() -> None:
    clock = Clock()
    cache = PersonaCache(ttl_s=10, negative_ttl_s=2, max_size=10, max_bytes=1 << 20, clock=clock)
    cache.put("8655701159", P)
    entry = cache.fresh("8655701159")
    assert entry is not None
    assert entry.persona == P
    clock.now += 10.5
    assert cache.fresh("8655701159") is None
    assert cache.stale("8655701159") == P


def test_negative_entry_is_short_lived_and_not_stale() -> None:
    clock = Clock()
    cache = PersonaCache(ttl_s=10, negative_ttl_s=2, max_size=10, max_bytes=1 << 20, clock=clock)
    cache.put("9111111111", P)
    cache.put_missing("9111111111")  # the API now says unknown: authoritative
    entry = cache.fresh("9111111111")
    assert entry is not None
    assert entry.persona is None
    assert cache.stale("9111111111") is None
    clock.now += 2.5
    assert cache.fresh("9111111111") is None


def test_size_is_bounded_least_recently_used_first() -> None:
    cache = PersonaCache(ttl_s=10, negative_ttl_s=2, max_size=2, max_bytes=1 << 20, clock=Clock())
    cache.put("1111111111", P)
    cache.put("2222222222", P)
    assert cache.fresh("1111111111") is not None  # now most recently used
    cache.put("3333333333", P)
    assert len(cache) == 2
    assert cache.stale("2222222222") is None
    assert cache.stale("1111111111") == P
    assert cache.stale("3333333333") == P


def test_bounded_by_bytes_least_recently_used_first() -> None:
    """However large the CRM's personas, the cache holds at most `max_bytes` of them."""
    big = Persona(instructions="x" * 100_000)
    cache = PersonaCache(ttl_s=10, negative_ttl_s=2, max_size=1000, max_bytes=350_000)
    for n in range(10):
        cache.put(f"90000000{n:02d}", big)
    assert len(cache) == 3
    assert cache.bytes <= 350_000
    assert cache.stale("9000000009") == big
    assert cache.stale("9000000006") is None
