"""An in-process persona cache: TTL, bounded in entries and in bytes (LRU), short-lived negative
entries, and stale copies kept past their TTL for when the API fails.

Bounded by hand rather than with cachetools' `LRUCache(getsizeof=...)`: the stale and negative
semantics need the entries' expiry beside them anyway, and an OrderedDict with a running byte
total is the whole of what the library would add."""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, fields

from contract.metadata import Persona

# What an entry costs beyond its strings: the dataclasses, the key, the dict's slot.
ENTRY_OVERHEAD_BYTES = 600


@dataclass(frozen=True)
class CacheEntry:
    persona: Persona | None  # None: the API said the number is unknown
    expires_at: float


def entry_bytes(number: str, entry: CacheEntry) -> int:
    """The memory an entry holds, near enough: its strings' own sizes plus a fixed overhead."""
    size = ENTRY_OVERHEAD_BYTES + sys.getsizeof(number)
    if entry.persona is not None:
        for f in fields(entry.persona):
            value = getattr(entry.persona, f.name)
            if isinstance(value, str):
                size += sys.getsizeof(value)
    return size


class PersonaCache:
    """Keyed by the normalised number. Not thread-safe: used from one event loop."""

    def __init__(
        self,
        ttl_s: float,
        negative_ttl_s: float,
        max_size: int,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_s
        self._negative_ttl = negative_ttl_s
        self._max = max_size
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[CacheEntry, int]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """What the entries hold, by `entry_bytes`."""
        return self._bytes

    def fresh(self, number: str) -> CacheEntry | None:
        """The entry for `number` if it has not expired (a negative entry included)."""
        held = self._entries.get(number)
        if held is None or held[0].expires_at <= self._clock():
            return None
        self._entries.move_to_end(number)
        return held[0]

    def stale(self, number: str) -> Persona | None:
        """The last good persona for `number`, however old."""
        held = self._entries.get(number)
        return held[0].persona if held is not None else None

    def put(self, number: str, persona: Persona) -> None:
        self._store(number, CacheEntry(persona, self._clock() + self._ttl))

    def put_missing(self, number: str) -> None:
        # The API is authoritative: a 404 replaces a good copy rather than keeping it as stale.
        self._store(number, CacheEntry(None, self._clock() + self._negative_ttl))

    def _store(self, number: str, entry: CacheEntry) -> None:
        size = entry_bytes(number, entry)
        old = self._entries.pop(number, None)
        if old is not None:
            self._bytes -= old[1]
        self._entries[number] = (entry, size)
        self._bytes += size
        while len(self._entries) > self._max or self._bytes > self._max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._bytes -= dropped
