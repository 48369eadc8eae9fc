"""Where resolved personas are kept between calls: this process's cache (`LocalPersonaStore`), or
one Redis shared by every replica (`dispatcher.shared_persona_store`), behind one interface.

Both keep the same semantics: a fresh entry for `PERSONA_CACHE_TTL_S`, a 404 remembered for
`PERSONA_NEGATIVE_TTL_S` (and replacing a good copy: the API is authoritative), and the last good
copy kept past its TTL as the fallback when the API fails.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from contract.metadata import Persona
from dispatcher.persona_cache import CacheEntry, PersonaCache

StoreState = Literal["local", "shared", "shared_unavailable"]


class PersonaStore(Protocol):
    async def fresh(self, number: str) -> CacheEntry | None:
        """The unexpired entry for `number` (a 404 included), if any."""
        ...

    async def stale(self, number: str) -> Persona | None:
        """The last good persona for `number`, however old."""
        ...

    async def put(self, number: str, persona: Persona) -> None: ...

    async def put_missing(self, number: str) -> None: ...

    async def single_flight(self, number: str, fetch: Callable[[], Awaitable[Persona]]) -> Persona:
        """`fetch` (which fills the store) once for a burst of look-ups of `number`, across every
        process sharing the store; the others get its result (or its error)."""
        ...

    def state(self) -> StoreState:
        """`local`, `shared`, or `shared_unavailable` (Redis down: this process's cache serves)."""
        ...

    async def aclose(self) -> None: ...


class LocalPersonaStore:
    """This process's `PersonaCache`; single flight is the resolver's own, per process."""

    def __init__(self, cache: PersonaCache) -> None:
        self.cache = cache

    async def fresh(self, number: str) -> CacheEntry | None:
        return self.cache.fresh(number)

    async def stale(self, number: str) -> Persona | None:
        return self.cache.stale(number)

    async def put(self, number: str, persona: Persona) -> None:
        self.cache.put(number, persona)

    async def put_missing(self, number: str) -> None:
        self.cache.put_missing(number)

    async def single_flight(self, number: str, fetch: Callable[[], Awaitable[Persona]]) -> Persona:
        return await fetch()

    def state(self) -> StoreState:
        return "local"

    async def aclose(self) -> None:
        return None
