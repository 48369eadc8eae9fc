"""The persona cache (pure, with a fake clock): each entry's windows, negative entries, the LRU
bound, invalidation refusing older fetches' writes; and the windows and Cache-Control rules."""

from __future__ import annotations

import pytest

from contract.metadata import Persona
from dispatcher.cache_windows import Validators, Windows, parse_cache_control, windows_for
from dispatcher.persona_cache import CacheEntry, PersonaCache

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


P = Persona(instructions="Be Priya.", persona_id="prs_1")
WINDOWS = Windows(fresh_s=10, revalidate_s=20, stale_if_error_s=30)
NEGATIVE = Windows(fresh_s=2, revalidate_s=0, stale_if_error_s=0)


def entry(clock: Clock, persona: Persona | None = P, windows: Windows = WINDOWS) -> CacheEntry:
    return CacheEntry.of(persona, windows, Validators('"v1"'), clock.now)


def test_fresh_then_revalidate_then_stale_then_gone() -> None:
    clock = Clock()
    cache = PersonaCache(max_size=10, max_bytes=1 << 20, clock=clock)
    cache.put("8655701159", entry(clock))
    phases = []
    for step in (0, 9.9, 10.1, 29.9, 30.1, 59.9, 60.1):
        clock.now = 1000.0 + step
        held = cache.lookup("8655701159")
        phases.append((held.phase, round(held.age_s, 1)) if held else None)
    assert phases == [
        ("fresh", 0.0),
        ("fresh", 9.9),
        ("revalidate", 10.1),
        ("revalidate", 29.9),
        ("stale", 30.1),
        ("stale", 59.9),
        None,
    ]
    assert len(cache) == 0  # dropped once past its last window


def test_negative_entry_is_short_lived_and_never_stale() -> None:
    clock = Clock()
    cache = PersonaCache(max_size=10, max_bytes=1 << 20, clock=clock)
    cache.put("9111111111", entry(clock))
    cache.put("9111111111", entry(clock, None, NEGATIVE))  # the API now says unknown
    held = cache.lookup("9111111111")
    assert held is not None
    assert (held.phase, held.entry.persona) == ("fresh", None)
    clock.now += 2.5
    assert cache.lookup("9111111111") is None


def test_no_store_keeps_nothing() -> None:
    clock = Clock()
    cache = PersonaCache(max_size=10, max_bytes=1 << 20, clock=clock)
    cache.put("8655701159", entry(clock, windows=Windows(10, 20, 30, keep=False)))
    assert cache.lookup("8655701159") is None


def test_an_invalidation_refuses_what_an_older_fetch_would_write() -> None:
    """A fetch begun before an invalidation may carry the persona from before the edit: its
    write is refused; one begun after is kept."""
    clock = Clock()
    cache = PersonaCache(max_size=10, max_bytes=1 << 20, clock=clock)
    before = cache.epoch
    cache.put("8655701159", entry(clock), before)
    cache.invalidate(["8655701159"])
    assert cache.lookup("8655701159") is None
    assert cache.put("8655701159", entry(clock), before) is False
    assert cache.lookup("8655701159") is None
    assert cache.put("8655701159", entry(clock), cache.epoch) is True
    assert cache.lookup("8655701159") is not None
    # Other numbers' fetches are not refused.
    assert cache.put("9111111111", entry(clock), before) is True


def test_size_is_bounded_least_recently_used_first() -> None:
    clock = Clock()
    cache = PersonaCache(max_size=2, max_bytes=1 << 20, clock=clock)
    cache.put("1111111111", entry(clock))
    cache.put("2222222222", entry(clock))
    assert cache.lookup("1111111111") is not None  # now most recently used
    cache.put("3333333333", entry(clock))
    assert len(cache) == 2
    assert cache.lookup("2222222222") is None
    assert cache.lookup("1111111111") is not None
    assert cache.lookup("3333333333") is not None


def test_bounded_by_bytes_least_recently_used_first() -> None:
    """However large the CRM's personas, the cache holds at most `max_bytes` of them."""
    clock = Clock()
    big = Persona(instructions="x" * 100_000)
    cache = PersonaCache(max_size=1000, max_bytes=350_000, clock=clock)
    for n in range(10):
        cache.put(f"90000000{n:02d}", entry(clock, big))
    assert len(cache) == 3
    assert cache.bytes <= 350_000
    held = cache.lookup("9000000009")
    assert held is not None
    assert held.entry.persona == big
    assert cache.lookup("9000000006") is None


def test_cache_control_sets_the_windows_where_it_speaks() -> None:
    default = Windows(30, 86400, 604800)
    assert windows_for(None, default) == default
    assert windows_for("max-age=5", default) == Windows(5, 86400, 604800)
    assert windows_for(
        'Max-Age="60", stale-while-revalidate=120, stale-if-error=600', default
    ) == Windows(60, 120, 600)
    assert windows_for("no-cache", default).fresh_s == 0
    assert windows_for("max-age=60, no-store", default).keep is False
    assert windows_for("max-age=-1, max-age=abc", default) == default  # malformed: ignored
    assert parse_cache_control(" , private,max-age=1") == {"private": None, "max-age": "1"}


def test_validators_make_conditional_headers() -> None:
    assert Validators().headers() == {}
    assert Validators('"v1"', "Wed, 02 Dec 2026 09:00:00 GMT").headers() == {
        "If-None-Match": '"v1"',
        "If-Modified-Since": "Wed, 02 Dec 2026 09:00:00 GMT",
    }
    assert Validators('"v1"', "then").updated(Validators('"v2"')) == Validators('"v2"', "then")
