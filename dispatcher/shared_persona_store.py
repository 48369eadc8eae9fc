"""The persona store shared by every dispatcher replica: one Redis (`PERSONA_CACHE_URL`).

- Entries: `<prefix>persona:<number>` holds `{"persona": {...} | null, "expires_at": epoch}`;
  past `expires_at` an entry is no longer fresh but stays as the stale fallback (the key itself
  lives `PERSONA_CACHE_RETENTION_S`). `null` is a remembered 404. The prefix is
  `PERSONA_CACHE_PREFIX`; an entry over `PERSONA_CACHE_ENTRY_MAX_BYTES` stays local.
- Single flight across replicas: the first replica to look a number up takes
  `<prefix>fetching:<number>` (SET NX, for longer than a whole lookup) and asks the CRM; the others
  poll for the entry it writes. A failed fetch leaves `<prefix>failed:<number>` for a moment, so a
  burst does not hammer a failing CRM: the waiters and any new lookup fall back at once, like the
  fetcher.
- Redis down or slow never fails a call and never holds one past the persona deadline: each
  command has its own short timeout, and after a failure the store serves from this process's
  cache (which every write also fills) for `RETRY_AFTER_S` before trying Redis again. The outage
  is logged once when it starts and once when it ends, and shown in `/readyz` and `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from redis import asyncio as aioredis

from contract.errors import PersonaDispatcherError
from contract.metadata import Persona
from dispatcher.lease import REDIS_FAILURES, RELEASE_SCRIPT
from dispatcher.persona_api import PersonaNotFound, PersonaUpstreamError
from dispatcher.persona_cache import CacheEntry, PersonaCache
from dispatcher.persona_store import StoreState
from telemetry.logs import get_logger
from telemetry.metrics import Metrics

log = get_logger(__name__)
T = TypeVar("T")

RETRY_AFTER_S = 1.0
POLL_S = 0.025
FAILED_MARK_S = 2.0

# Take the fetch claim unless a fetch just failed: 1 claimed, 0 held by another, -1 failed.
CLAIM_SCRIPT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""


class SharedStoreUnavailable(PersonaDispatcherError):
    """Redis did not answer in time, or refused: this process's cache serves instead."""


def _encode(persona: Persona | None, expires_at: float) -> bytes:
    body = None if persona is None else dataclasses.asdict(persona)
    return orjson.dumps({"persona": body, "expires_at": expires_at})


def _decode(raw: bytes) -> CacheEntry | None:
    try:
        value = orjson.loads(raw)
        persona = value["persona"]
        return CacheEntry(
            None if persona is None else Persona(**persona), float(value["expires_at"])
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None  # written by something else: treat as absent


class SharedPersonaStore:
    """One per process, over a `redis.asyncio` client (its owner closes it)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        local: PersonaCache,
        *,
        ttl_s: float,
        negative_ttl_s: float,
        command_timeout_s: float,
        fetch_lock_s: float,
        retention_s: float,
        entry_max_bytes: int,
        prefix: str,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._local = local
        self._ttl = ttl_s
        self._negative_ttl = negative_ttl_s
        self._timeout = command_timeout_s
        self._lock_ms = int(fetch_lock_s * 1000)
        self._retention_s = int(retention_s)
        self._entry_max = entry_max_bytes
        self._metrics = metrics
        self._prefix = prefix
        self._clock = clock
        self._me = uuid.uuid4().hex
        self._down_until = 0.0
        self._down_since: float | None = None
        metrics.persona_cache_shared_up.set(1)

    def state(self) -> StoreState:
        return "shared_unavailable" if self._down_since is not None else "shared"

    async def _run(self, what: str, command: Awaitable[T]) -> T:
        """One Redis command within its own timeout; `SharedStoreUnavailable` otherwise."""
        if time.monotonic() < self._down_until:
            if asyncio.iscoroutine(command):
                command.close()
            raise SharedStoreUnavailable(f"{what}: Redis unavailable, retrying shortly")
        try:
            async with asyncio.timeout(self._timeout):
                result = await command
        except REDIS_FAILURES as e:
            self._down_until = time.monotonic() + RETRY_AFTER_S
            self._metrics.persona_cache_shared_errors.labels(what).inc()
            if self._down_since is None:
                self._down_since = self._clock()
                self._metrics.persona_cache_shared_up.set(0)
                log.warning(
                    "persona_cache.shared_unavailable",
                    command=what,
                    error=type(e).__name__,
                    detail=str(e)[:200],
                )
            raise SharedStoreUnavailable(f"{what}: {type(e).__name__}") from None
        if self._down_since is not None:
            log.info(
                "persona_cache.shared_available",
                outage_s=round(self._clock() - self._down_since, 1),
            )
            self._down_since = None
            self._metrics.persona_cache_shared_up.set(1)
        return result

    def _key(self, kind: str, number: str) -> str:
        return f"{self._prefix}{kind}:{number}"

    async def _entry(self, number: str) -> CacheEntry | None:
        raw: Any = await self._run("get", self._redis.get(self._key("persona", number)))
        return _decode(raw) if raw is not None else None

    async def fresh(self, number: str) -> CacheEntry | None:
        try:
            entry = await self._entry(number)
        except SharedStoreUnavailable:
            return self._local.fresh(number)
        if entry is None or entry.expires_at <= self._clock():
            return None
        return entry

    async def stale(self, number: str) -> Persona | None:
        try:
            entry = await self._entry(number)
        except SharedStoreUnavailable:
            return self._local.stale(number)
        return entry.persona if entry is not None else None

    async def _write(self, number: str, persona: Persona | None, ttl: float) -> None:
        value = _encode(persona, self._clock() + ttl)
        if len(value) > self._entry_max:
            log.warning("persona_cache.entry_too_large", bytes=len(value), limit=self._entry_max)
            return  # this process's cache has it; another replica asks the CRM itself
        key = self._key("persona", number)
        # Unavailable: this process's cache has it; another replica asks the CRM itself.
        with contextlib.suppress(SharedStoreUnavailable):
            await self._run("set", self._redis.set(key, value, ex=self._retention_s))

    async def put(self, number: str, persona: Persona) -> None:
        self._local.put(number, persona)
        await self._write(number, persona, self._ttl)

    async def put_missing(self, number: str) -> None:
        self._local.put_missing(number)
        await self._write(number, None, self._negative_ttl)

    async def single_flight(self, number: str, fetch: Callable[[], Awaitable[Persona]]) -> Persona:
        lock = self._key("fetching", number)
        failed = self._key("failed", number)
        while True:
            try:
                claimed: Any = await self._run(
                    "claim",
                    self._redis.eval(CLAIM_SCRIPT, 2, lock, failed, self._me, self._lock_ms),
                )
            except SharedStoreUnavailable:
                return await fetch()
            if claimed == -1:
                raise PersonaUpstreamError("persona API failed for another lookup just now")
            if claimed == 1:
                return await self._fetch_holding(number, fetch, lock, failed)
            # Another replica is asking the CRM: wait for what it writes (the resolver's
            # deadline bounds the wait), or take over if it gave up without a result.
            try:
                result = await self._await_other(number, lock, failed)
            except SharedStoreUnavailable:
                return await fetch()
            if result is not None:
                return result

    async def _fetch_holding(
        self, number: str, fetch: Callable[[], Awaitable[Persona]], lock: str, failed: str
    ) -> Persona:
        try:
            return await fetch()
        except PersonaUpstreamError:
            with contextlib.suppress(SharedStoreUnavailable):
                await self._run(
                    "mark_failed", self._redis.set(failed, 1, px=int(FAILED_MARK_S * 1000))
                )
            raise
        finally:
            with contextlib.suppress(SharedStoreUnavailable):
                await self._run("release", self._redis.eval(RELEASE_SCRIPT, 1, lock, self._me))

    async def _await_other(self, number: str, lock: str, failed: str) -> Persona | None:
        """The persona another replica fetched; None when its claim ended without a result."""
        while True:
            await asyncio.sleep(POLL_S)
            entry = await self.fresh(number)
            if self._down_since is not None:
                raise SharedStoreUnavailable("Redis went away while waiting")
            if entry is not None:
                if entry.persona is None:
                    raise PersonaNotFound(number)
                self._local.put(number, entry.persona)
                return entry.persona
            if await self._run("failed", self._redis.exists(failed)):
                raise PersonaUpstreamError("persona API failed for another replica just now")
            if not await self._run("holder", self._redis.exists(lock)):
                return None

    async def aclose(self) -> None:
        return None  # the client belongs to whoever made it
