"""An in-process persona cache: each entry's three windows (fresh, revalidate, stale-if-error;
`dispatcher.cache_windows`), bounded in entries and in bytes (LRU), short-lived negative entries,
and invalidation that also refuses the write of a fetch begun before it.

Bounded by hand rather than with cachetools' `LRUCache(getsizeof=...)`: the windows and negative
semantics need the entries' times beside them anyway, and an OrderedDict with a running byte
total is the whole of what the library would add."""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields

from contract.metadata import Persona
from dispatcher.cache_windows import Phase, Validators, Windows, phase_at

# What an entry costs beyond its strings: the dataclasses, the key, the dict's slot.
ENTRY_OVERHEAD_BYTES = 600


@dataclass(frozen=True)
class CacheEntry:
    persona: Persona | None  # None: the API said the number is unknown
    stored_at: float  # when the CRM last vouched for it (an answer, or a 304)
    fresh_until: float
    revalidate_until: float
    stale_until: float
    validators: Validators = field(default_factory=Validators)

    @classmethod
    def of(
        cls, persona: Persona | None, windows: Windows, validators: Validators, now: float
    ) -> CacheEntry:
        """An entry vouched for at `now`, its windows one after the other (all ended at once
        under `no-store`: a lookup drops it)."""
        if not windows.keep:
            return cls(persona, now, now, now, now, validators)
        fresh = now + windows.fresh_s
        revalidate = fresh + windows.revalidate_s
        return cls(
            persona, now, fresh, revalidate, revalidate + windows.stale_if_error_s, validators
        )


@dataclass(frozen=True)
class Held:
    """A cached entry as a lookup found it: which window it is in, and how old it is."""

    entry: CacheEntry
    phase: Phase
    age_s: float


def held_at(entry: CacheEntry, now: float) -> Held | None:
    """`entry` seen at `now`; None once its last window has ended (or, for a 404, its only)."""
    phase = phase_at(now, entry.fresh_until, entry.revalidate_until, entry.stale_until)
    if phase is None or (entry.persona is None and phase != "fresh"):
        return None
    return Held(entry, phase, max(0.0, now - entry.stored_at))


def entry_bytes(number: str, entry: CacheEntry) -> int:
    """The memory an entry holds, near enough: its strings' own sizes plus a fixed overhead."""
    size = ENTRY_OVERHEAD_BYTES + sys.getsizeof(number)
    for value in (entry.validators.etag, entry.validators.last_modified):
        size += sys.getsizeof(value) if value is not None else 0
    if entry.persona is not None:
        for f in fields(entry.persona):
            value = getattr(entry.persona, f.name)
            if isinstance(value, str):
                size += sys.getsizeof(value)
    return size


class PersonaCache:
    """Keyed by the normalised number. Not thread-safe: used from one event loop. Its clock is
    wall time, so that entries mean the same here and in the shared store."""

    def __init__(
        self,
        max_size: int,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._max = max_size
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[CacheEntry, int]] = OrderedDict()
        self._bytes = 0
        # Invalidations so far, and the latest one of each number (as many numbers as entries).
        self._epoch = 0
        self._invalidated: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """What the entries hold, by `entry_bytes`."""
        return self._bytes

    def now(self) -> float:
        return self._clock()

    @property
    def epoch(self) -> int:
        """A token to take before fetching: `put` refuses the result if the number was
        invalidated since."""
        return self._epoch

    def lookup(self, number: str) -> Held | None:
        """The entry for `number` in one of its windows, if any."""
        held = self._entries.get(number)
        if held is None:
            return None
        found = held_at(held[0], self._clock())
        if found is None:
            self._drop(number)
            return None
        self._entries.move_to_end(number)
        return found

    def put(self, number: str, entry: CacheEntry, since: int | None = None) -> bool:
        """Keep `entry`, unless `number` was invalidated after the token `since` was taken (the
        entry may predate the edit that caused it): False then. A 404's entry replaces a good
        copy: the API is authoritative."""
        if since is not None and self._invalidated.get(number, -1) > since:
            return False
        self._drop(number)
        size = entry_bytes(number, entry)
        self._entries[number] = (entry, size)
        self._bytes += size
        while len(self._entries) > self._max or self._bytes > self._max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._bytes -= dropped
        return True

    def invalidate(self, numbers: Iterable[str]) -> None:
        """Forget `numbers`, and refuse what fetches begun before now would write for them."""
        self._epoch += 1
        for number in numbers:
            self._drop(number)
            self._invalidated.pop(number, None)
            self._invalidated[number] = self._epoch
        while len(self._invalidated) > self._max:
            self._invalidated.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry (kept invalidations still refuse older fetches' writes)."""
        self._epoch += 1
        self._entries.clear()
        self._bytes = 0

    def _drop(self, number: str) -> None:
        old = self._entries.pop(number, None)
        if old is not None:
            self._bytes -= old[1]
