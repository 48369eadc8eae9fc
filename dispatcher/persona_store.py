"""Where resolved personas are kept between calls: this process's cache (`LocalPersonaStore`), or
one Redis shared by every replica (`dispatcher.shared_persona_store`), behind one interface.

Both keep the same semantics: each persona in its windows (fresh, revalidate, stale-if-error;
`dispatcher.cache_windows`), a 404 remembered for `PERSONA_NEGATIVE_TTL_S` (and replacing a good
copy: the API is authoritative), and an invalidation that drops numbers and refuses the writes
of fetches begun before it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, Protocol

from contract.metadata import Persona
from dispatcher.cache_windows import Validators, Windows
from dispatcher.persona_cache import CacheEntry, Held, PersonaCache

StoreState = Literal["local", "shared", "shared_unavailable"]
# Taken before a fetch, handed to `put`: this process's invalidation epoch, and the shared
# store's generation of the number (-1: not known, Redis did not answer).
Generation = tuple[int, int]


class PersonaStore(Protocol):
    async def lookup(self, number: str) -> Held | None:
        """The entry for `number` in one of its windows (a 404 only while fresh), if any."""
        ...

    async def generation(self, number: str) -> Generation:
        """The token to take before fetching `number`, for `put`."""
        ...

    async def put(
        self,
        number: str,
        persona: Persona | None,
        windows: Windows,
        validators: Validators,
        since: Generation,
    ) -> bool:
        """Keep what the CRM answered (None: a 404), vouched for now; False when `number` was
        invalidated since `since` was taken (nothing kept then). `windows.keep` False drops it."""
        ...

    async def invalidate(self, numbers: Sequence[str]) -> None:
        """Drop `numbers` here and, when shared, for every replica; raises
        `SharedStoreUnavailable` when the other replicas could not be told."""
        ...

    async def single_flight(self, number: str, fetch: Callable[[], Awaitable[Persona]]) -> Persona:
        """`fetch` (which fills the store) once for a burst of look-ups of `number`, across every
        process sharing the store; the others get its result (or its error)."""
        ...

    def state(self) -> StoreState:
        """`local`, `shared`, or `shared_unavailable` (Redis down: this process's cache serves)."""
        ...

    def start(self) -> None:
        """Begin what runs in the background (hearing other replicas' invalidations)."""
        ...

    async def aclose(self) -> None: ...


class LocalPersonaStore:
    """This process's `PersonaCache`; single flight is the resolver's own, per process."""

    def __init__(self, cache: PersonaCache) -> None:
        self.cache = cache

    async def lookup(self, number: str) -> Held | None:
        return self.cache.lookup(number)

    async def generation(self, number: str) -> Generation:
        return (self.cache.epoch, 0)

    async def put(
        self,
        number: str,
        persona: Persona | None,
        windows: Windows,
        validators: Validators,
        since: Generation,
    ) -> bool:
        entry = CacheEntry.of(persona, windows, validators, self.cache.now())
        return self.cache.put(number, entry, since[0])

    async def invalidate(self, numbers: Sequence[str]) -> None:
        self.cache.invalidate(numbers)

    async def single_flight(self, number: str, fetch: Callable[[], Awaitable[Persona]]) -> Persona:
        return await fetch()

    def state(self) -> StoreState:
        return "local"

    def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
