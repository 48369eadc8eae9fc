"""An in-process persona cache: TTL, bounded size (LRU), short-lived negative entries, and stale
copies kept past their TTL for when the API fails."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from contract.metadata import Persona


@dataclass(frozen=True)
class CacheEntry:
    persona: Persona | None  # None: the API said the number is unknown
    expires_at: float


class PersonaCache:
    """Keyed by the normalised number. Not thread-safe: used from one event loop."""

    def __init__(
        self,
        ttl_s: float,
        negative_ttl_s: float,
        max_size: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_s
        self._negative_ttl = negative_ttl_s
        self._max = max_size
        self._clock = clock
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def fresh(self, number: str) -> CacheEntry | None:
        """The entry for `number` if it has not expired (a negative entry included)."""
        entry = self._entries.get(number)
        if entry is None or entry.expires_at <= self._clock():
            return None
        self._entries.move_to_end(number)
        return entry

    def stale(self, number: str) -> Persona | None:
        """The last good persona for `number`, however old."""
        entry = self._entries.get(number)
        return entry.persona if entry is not None else None

    def put(self, number: str, persona: Persona) -> None:
        self._store(number, CacheEntry(persona, self._clock() + self._ttl))

    def put_missing(self, number: str) -> None:
        # The API is authoritative: a 404 replaces a good copy rather than keeping it as stale.
        self._store(number, CacheEntry(None, self._clock() + self._negative_ttl))

    def _store(self, number: str, entry: CacheEntry) -> None:
        self._entries[number] = entry
        self._entries.move_to_end(number)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
