"""The persona store shared by every dispatcher replica: one Redis (`PERSONA_CACHE_URL`).

- Entries: `<prefix>persona:<number>` holds the persona (`null`: a remembered 404), when the CRM
  last vouched for it, the ends of its three windows (fresh, revalidate, stale-if-error) and the
  CRM's validators (ETag, Last-Modified). The key lives until its last window ends, at most
  `PERSONA_CACHE_RETENTION_S`. The prefix is `PERSONA_CACHE_PREFIX`; an entry over
  `PERSONA_CACHE_ENTRY_MAX_BYTES` stays local.
- Single flight across replicas: the first replica to look a number up takes
  `<prefix>fetching:<number>` (SET NX, for longer than a whole lookup) and asks the CRM; the others
  poll for the entry it writes. A failed fetch leaves `<prefix>failed:<number>` for a moment, so a
  burst does not hammer a failing CRM: the waiters and any new lookup fall back at once, like the
  fetcher.
- Invalidation: deletes the entry and the failed mark, bumps `<prefix>generation:<number>` (a
  write carries the generation its fetch began under and is refused if it changed: a fetch begun
  before an edit never puts the old persona back), and publishes the numbers on
  `<prefix>invalidations`, where every replica hears them and drops its own copies.
- Redis down or slow never fails a call and never holds one past the persona deadline: each
  command has its own short timeout, and after a failure the store serves from this process's
  cache (which every write also fills) for `RETRY_AFTER_S` before trying Redis again. The outage
  is logged once when it starts and once when it ends, and shown in `/readyz` and `/metrics`.
  Once the invalidations channel is heard again, this process's copies are dropped: an
  invalidation may have gone by meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson
from redis import asyncio as aioredis

from contract.errors import PersonaDispatcherError
from contract.metadata import Persona
from dispatcher.cache_windows import Validators, Windows
from dispatcher.lease import REDIS_FAILURES, RELEASE_SCRIPT
from dispatcher.persona_api import PersonaNotFound, PersonaUpstreamError
from dispatcher.persona_cache import CacheEntry, Held, PersonaCache, held_at
from dispatcher.persona_store import Generation, StoreState
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

# Write an entry unless the number's generation changed since its fetch began: 1 written, 0 not.
WRITE_SCRIPT = """
local generation = redis.call('GET', KEYS[2]) or '0'
if generation ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# How long an invalidating channel listener waits for a message before looking again.
LISTEN_POLL_S = 1.0


class SharedStoreUnavailable(PersonaDispatcherError):
    """Redis did not answer in time, or refused: this process's cache serves instead."""


def _encode(entry: CacheEntry) -> bytes:
    return orjson.dumps(
        {
            "persona": None if entry.persona is None else dataclasses.asdict(entry.persona),
            "stored_at": entry.stored_at,
            "fresh_until": entry.fresh_until,
            "revalidate_until": entry.revalidate_until,
            "stale_until": entry.stale_until,
            "etag": entry.validators.etag,
            "last_modified": entry.validators.last_modified,
        }
    )


def _decode(raw: bytes) -> CacheEntry | None:
    try:
        value = orjson.loads(raw)
        persona = value["persona"]
        return CacheEntry(
            None if persona is None else Persona(**persona),
            float(value["stored_at"]),
            float(value["fresh_until"]),
            float(value["revalidate_until"]),
            float(value["stale_until"]),
            Validators(_text_or_none(value["etag"]), _text_or_none(value["last_modified"])),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None  # written by something else (or by an older version): treat as absent


def _text_or_none(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"not a string: {value!r}")


class SharedPersonaStore:
    """One per process, over a `redis.asyncio` client (its owner closes it)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        local: PersonaCache,
        *,
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
        self._timeout = command_timeout_s
        self._lock_ms = int(fetch_lock_s * 1000)
        self._retention_ms = int(retention_s * 1000)
        self._entry_max = entry_max_bytes
        self._metrics = metrics
        self._prefix = prefix
        self._clock = clock
        self._me = uuid.uuid4().hex
        self._down_until = 0.0
        self._down_since: float | None = None
        self._listener: asyncio.Task[None] | None = None
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

    async def lookup(self, number: str) -> Held | None:
        try:
            entry = await self._entry(number)
        except SharedStoreUnavailable:
            return self._local.lookup(number)
        return held_at(entry, self._clock()) if entry is not None else None

    async def generation(self, number: str) -> Generation:
        epoch = self._local.epoch
        try:
            raw: Any = await self._run(
                "generation", self._redis.get(self._key("generation", number))
            )
        except SharedStoreUnavailable:
            return (epoch, -1)
        return (epoch, int(raw) if raw is not None else 0)

    async def put(
        self,
        number: str,
        persona: Persona | None,
        windows: Windows,
        validators: Validators,
        since: Generation,
    ) -> bool:
        entry = CacheEntry.of(persona, windows, validators, self._clock())
        if not self._local.put(number, entry, since[0]):
            return False
        if not windows.keep:
            # The CRM said keep nothing: the other replicas' copy goes too.
            with contextlib.suppress(SharedStoreUnavailable):
                await self._run("forget", self._redis.delete(self._key("persona", number)))
            return True
        if since[1] < 0:
            return True  # Redis did not answer when the fetch began: this process's cache only
        return await self._write(number, entry, since[1])

    async def _write(self, number: str, entry: CacheEntry, generation: int) -> bool:
        value = _encode(entry)
        if len(value) > self._entry_max:
            log.warning("persona_cache.entry_too_large", bytes=len(value), limit=self._entry_max)
            return True  # this process's cache has it; another replica asks the CRM itself
        life_ms = min(self._retention_ms, int((entry.stale_until - self._clock()) * 1000))
        keys = (self._key("persona", number), self._key("generation", number))
        try:
            written: Any = await self._run(
                "set",
                self._redis.eval(WRITE_SCRIPT, 2, *keys, value, max(life_ms, 1), generation),
            )
        except SharedStoreUnavailable:
            return True  # this process's cache has it; another replica asks the CRM itself
        if not written:
            # Invalidated on another replica since this fetch began: keep nothing of it here.
            self._local.invalidate([number])
        return bool(written)

    async def invalidate(self, numbers: Sequence[str]) -> None:
        self._local.invalidate(numbers)
        async with self._redis.pipeline(transaction=True) as pipe:
            for number in numbers:
                generation = self._key("generation", number)
                pipe.delete(self._key("persona", number), self._key("failed", number))
                pipe.incr(generation)
                # Outlives any fetch begun before now, whose write it must refuse.
                pipe.pexpire(generation, 2 * self._lock_ms)
            pipe.publish(self._channel, orjson.dumps({"numbers": list(numbers), "by": self._me}))
            await self._run("invalidate", pipe.execute())

    @property
    def _channel(self) -> str:
        return f"{self._prefix}invalidations"

    def start(self) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="persona-invalidations")

    async def _listen(self) -> None:
        """Hear the other replicas' invalidations, for as long as the store is open; after a
        break, drop this process's copies (an invalidation may have gone by meanwhile)."""
        while True:
            try:
                async with self._redis.pubsub() as channel:
                    await channel.subscribe(self._channel)
                    self._local.clear()
                    while True:
                        message = await channel.get_message(
                            ignore_subscribe_messages=True, timeout=LISTEN_POLL_S
                        )
                        if message is not None:
                            self._heard(message.get("data"))
            except REDIS_FAILURES as e:
                log.info("persona_cache.invalidations_unheard", error=type(e).__name__)
                await asyncio.sleep(RETRY_AFTER_S)

    def _heard(self, data: Any) -> None:
        try:
            message = orjson.loads(data)
            numbers = [n for n in message["numbers"] if isinstance(n, str)]
            by = message.get("by")
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            log.warning("persona_cache.invalidation_unreadable")
            return
        if by == self._me:
            return
        self._local.invalidate(numbers)
        self._metrics.persona_invalidations.labels("replica").inc(len(numbers))
        log.info("persona.invalidated", source="replica", count=len(numbers))

    async def single_flight(self, number: str, fetch: Callable[[], Awaitable[Persona]]) -> Persona:
        lock = self._key("fetching", number)
        failed = self._key("failed", number)
        # Any answer stored after this call asked is good for it, even one fresh for no time.
        asked_at = self._clock()
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
                result = await self._await_other(number, lock, failed, asked_at)
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

    async def _await_other(
        self, number: str, lock: str, failed: str, asked_at: float
    ) -> Persona | None:
        """The persona another replica fetched; None when its claim ended without a result."""
        while True:
            await asyncio.sleep(POLL_S)
            held = await self.lookup(number)
            if self._down_since is not None:
                raise SharedStoreUnavailable("Redis went away while waiting")
            # Stored since this call asked: its answer, even with no fresh window (always
            # fresh). Timed from the ask, not from the wait: on a busy loop the holder's answer
            # may be stored between our claim and our first look.
            if held is not None and (held.phase == "fresh" or held.entry.stored_at >= asked_at):
                if held.entry.persona is None:
                    raise PersonaNotFound(number)
                self._local.put(number, held.entry)
                return held.entry.persona
            if await self._run("failed", self._redis.exists(failed)):
                raise PersonaUpstreamError("persona API failed for another replica just now")
            if not await self._run("holder", self._redis.exists(lock)):
                return None

    async def aclose(self) -> None:
        # The client belongs to whoever made it; the listener is this store's.
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
