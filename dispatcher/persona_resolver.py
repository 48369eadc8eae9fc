"""Resolve a call's persona within a deadline: cache, then the API, then stale / file / default."""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from config.env import SettingsError
from contract.metadata import (
    DEFAULT_PERSONA,
    Lookup,
    Persona,
    PersonaMetadata,
    Status,
    utc_now_iso,
)
from contract.phone_numbers import is_lookup_key
from dispatcher.cache_windows import Validators, Windows, windows_for
from dispatcher.caller import DetectedNumber
from dispatcher.payload_parser import PayloadParser
from dispatcher.persona_api import (
    FetchResult,
    PersonaApiClient,
    PersonaInvalidPayload,
    PersonaNotFound,
    PersonaUpstreamError,
)
from dispatcher.persona_cache import CacheEntry, Held
from dispatcher.persona_payload import (
    PersonaLimits,
    PersonaNotInPayload,
    PersonaPayloadError,
    parse_persona_body,
)
from dispatcher.persona_store import Generation, PersonaStore
from telemetry.logs import get_logger
from telemetry.metrics import Metrics
from telemetry.timing import ms_since

log = get_logger(__name__)

FallbackReason = Literal[
    "no_number", "not_found", "timeout", "upstream_error", "invalid_payload", "api_off"
]
Revalidation = Literal["not_modified", "changed", "failed"]
# A fetch whose result an invalidation refused is made again, once: the second began after it.
FETCH_ROUNDS = 2


@dataclass(frozen=True)
class _Found:
    """A persona and where it was found, before its resolution is timed."""

    persona: Persona
    status: Status
    source: str
    number: DetectedNumber | None

    def resolution(self, duration_ms: float, reason: FallbackReason | None = None) -> Resolution:
        d = self.number
        return Resolution(
            self.persona,
            self.status,
            self.source,
            d.number if d else None,
            d.lookup if d else "caller",
            duration_ms,
            reason,
        )


@dataclass(frozen=True)
class Resolution:
    """The persona for a call and where it came from."""

    persona: Persona
    status: Status
    source: str
    number: str | None
    lookup: Lookup
    duration_ms: float
    fallback_reason: FallbackReason | None = None

    @property
    def unknown_caller(self) -> bool:
        """The CRM answered that it does not know the caller (404, or no usable persona), now or
        in a remembered answer: never said of a CRM that is down, slow or broken."""
        return self.fallback_reason == "not_found"

    def metadata(self, call_id: str | None = None) -> PersonaMetadata:
        """The contract's room-metadata value for this resolution."""
        return PersonaMetadata(
            persona=self.persona,
            status=self.status,
            source=self.source,
            caller=self.number,
            lookup=self.lookup,
            call_id=call_id,
            resolved_at=utc_now_iso(),
        )


class PersonaFiles:
    """`user-mapping/num_<number>.json` files holding the API's payload shape."""

    def __init__(self, directory: Path, limits: PersonaLimits) -> None:
        self.directory = directory
        self.limits = limits

    def path_for(self, number: str) -> Path:
        if not is_lookup_key(number):
            raise ValueError(f"not a number: {number!r}")
        return self.directory / f"num_{number}.json"

    def load(self, number: str) -> Persona | None:
        """The file's persona, or None when there is no usable file (a bad one is logged)."""
        path = self.path_for(number)
        try:
            return parse_persona_body(path.read_bytes(), self.limits)
        except FileNotFoundError:
            return None
        except (OSError, PersonaPayloadError, PersonaNotInPayload) as e:
            log.warning("persona.file_invalid", path=str(path), error=str(e))
            return None


def load_default_persona(path: Path | None, limits: PersonaLimits) -> Persona:
    """The configured default persona (a payload-shaped file), else the built-in one; a file
    that holds no usable persona is a `SettingsError` naming it, in one line."""
    if path is None:
        return DEFAULT_PERSONA
    try:
        return parse_persona_body(path.read_bytes(), limits)
    except (OSError, PersonaPayloadError, PersonaNotInPayload) as e:
        problem = f"DEFAULT_PERSONA_FILE={str(path)!r} holds no usable persona: {e}"
        raise SettingsError([problem]) from None


class PersonaResolver:
    """One per process. Concurrent look-ups of the same number share one API request. A cached
    persona in its fresh window is served as is; in its revalidate window it is served at once
    and refreshed in the background (through the same single flight); past it, the lookup waits
    for the CRM and the copy is served only if the CRM fails, until its stale-if-error window
    ends."""

    def __init__(
        self,
        api: PersonaApiClient | None,
        parser: PayloadParser,
        store: PersonaStore,
        files: PersonaFiles,
        default: Persona,
        deadline_s: float,
        metrics: Metrics,
        windows: Windows,
        negative_ttl_s: float,
    ) -> None:
        self._windows = windows
        self._negative = Windows(negative_ttl_s, 0.0, 0.0)
        self._api = api
        self._parser = parser
        self._store = store
        self._files = files
        self._default = default
        self._deadline = deadline_s
        self._metrics = metrics
        self._inflight: dict[str, asyncio.Task[Persona]] = {}

    async def resolve(self, numbers: list[DetectedNumber]) -> Resolution:
        """Never raises for persona trouble: the worst case is the default persona."""
        started = time.perf_counter()
        found, reason = await self._cached_or_fetched(numbers)
        if found is not None:
            return found.resolution(ms_since(started))
        fallback = await self._fallback_for(numbers, reason)
        return self._fallback(fallback.resolution(ms_since(started), reason))

    async def _cached_or_fetched(
        self, numbers: list[DetectedNumber]
    ) -> tuple[_Found | None, FallbackReason]:
        """The first number's persona the cache holds or the CRM gives, within the deadline; else
        why none was had."""
        reason: FallbackReason = "no_number" if not numbers else "not_found"
        try:
            async with asyncio.timeout(self._deadline):
                for d in numbers:
                    held = await self._store.lookup(d.number)
                    if held is not None and held.phase != "stale":
                        cached = self._cache_hit(d, held)
                        if cached is not None:
                            return _Found(cached, "cached", "cache", d), reason
                        continue
                    self._metrics.persona_cache.labels("miss").inc()
                    if self._api is None:
                        return None, "api_off"
                    try:
                        persona = await asyncio.shield(self._shared_fetch(d.number))
                    except PersonaNotFound:
                        log.info("persona.not_found", lookup=d.lookup)
                        continue
                    self._served(0.0)
                    return _Found(persona, "loaded", "api", d), reason
        except TimeoutError:
            return None, "timeout"
        except PersonaInvalidPayload as e:
            log.warning("persona.invalid_payload", error=str(e))
            return None, "invalid_payload"
        except PersonaUpstreamError as e:
            log.warning("persona.upstream_error", error=str(e), http_status=e.status)
            return None, "upstream_error"
        return None, reason

    def _cache_hit(self, d: DetectedNumber, held: Held) -> Persona | None:
        """A cached answer in its fresh or revalidate window: the persona (a refresh begun in the
        background when due), or None for a remembered "not found"."""
        found = held.entry.persona
        log.info(
            "persona.cache_hit",
            lookup=d.lookup,
            found=found is not None,
            phase=held.phase,
            age_s=round(held.age_s, 1),
        )
        if found is None:
            self._metrics.persona_cache.labels("negative_hit").inc()
            return None
        self._metrics.persona_cache.labels("hit").inc()
        if held.phase == "revalidate":
            self._revalidate_in_background(d.number)
        self._served(held.age_s)
        return found

    async def _fallback_for(self, numbers: list[DetectedNumber], reason: FallbackReason) -> _Found:
        """The last good copy when the CRM failed, else the number's file, else the default."""
        if reason in ("timeout", "upstream_error", "invalid_payload"):
            for d in numbers:
                stale = await self._store.lookup(d.number)
                if stale is not None and stale.entry.persona is not None:
                    self._served(stale.age_s)
                    return _Found(stale.entry.persona, "stale", "cache", d)
        for d in numbers:
            from_file = self._files.load(d.number)
            if from_file is not None:
                return _Found(from_file, "file", str(self._files.path_for(d.number)), d)
        return _Found(self._default, "default", "default", numbers[0] if numbers else None)

    def _fallback(self, r: Resolution) -> Resolution:
        log.info("persona.fallback", reason=r.fallback_reason, status=r.status, source=r.source)
        self._metrics.persona_fallbacks.labels(r.fallback_reason or "none", r.status).inc()
        return r

    def _served(self, age_s: float) -> None:
        self._metrics.persona_age.observe(age_s)

    def _revalidate_in_background(self, number: str) -> None:
        """Ask the CRM whether a persona served from its revalidate window changed, without
        anyone waiting: joins a fetch already under way, here or (single flight) elsewhere."""
        if self._api is not None:
            self._shared_fetch(number)

    def _shared_fetch(self, number: str) -> asyncio.Task[Persona]:
        task = self._inflight.get(number)
        if task is None:
            # One request per number in this process, and through the store across replicas.
            fetch = functools.partial(self._fetch, number)
            task = asyncio.create_task(
                self._store.single_flight(number, fetch), name=f"persona-fetch-{number[-4:]}"
            )
            self._inflight[number] = task
            task.add_done_callback(lambda t: self._forget(number, t))
        return task

    def _forget(self, number: str, task: asyncio.Task[Persona]) -> None:
        self._inflight.pop(number, None)
        # A fetch that outlived every waiter's deadline still fills the cache; its error was
        # already answered by a fallback, so retrieve it here to keep asyncio quiet.
        if not task.cancelled():
            task.exception()

    async def _fetch(self, number: str) -> Persona:
        started = time.perf_counter()
        outcome: str | None = "error"
        try:
            persona = await self._fetch_and_cache(number)
            outcome = "ok"
            return persona
        except PersonaNotFound:
            outcome = "not_found"
            raise
        except asyncio.CancelledError:
            outcome = None  # shut down mid-request: no answer to count
            raise
        finally:
            if outcome is not None:
                self._metrics.persona_api_requests.labels(outcome).inc()
                self._metrics.persona_api_duration.labels(outcome).observe(
                    time.perf_counter() - started
                )

    async def _fetch_and_cache(self, number: str) -> Persona:
        for _ in range(FETCH_ROUNDS):
            persona = await self._fetch_round(number)
            if persona is not None:
                return persona
            log.info("persona.fetch_superseded")
        raise PersonaUpstreamError("the persona was invalidated during every fetch")

    async def _fetch_round(self, number: str) -> Persona | None:
        """One request (conditional when a copy is held) and the store filled with its answer;
        None when an invalidation came while it ran (the answer may predate the edit)."""
        since = await self._store.generation(number)
        held = await self._store.lookup(number)
        if held is not None and held.phase == "fresh":
            return _persona_of(held, number)  # another replica or a burst refreshed it just now
        known = held.entry if held is not None and held.entry.persona is not None else None
        result = await self._ask(number, known, since)
        started = time.perf_counter()
        persona, validators = await self._answer(number, result, known, since)
        windows = windows_for(result.cache_control, self._windows)
        if not await self._store.put(number, persona, windows, validators, since):
            return None
        log.info(
            "persona.fetched",
            duration_ms=round(result.duration_ms, 1),
            parse_ms=ms_since(started),
            bytes=len(result.body),
            attempts=result.attempts,
            http_status=result.status,
            truncated=persona.truncated,
            fresh_s=windows.fresh_s,
            kept=windows.keep,
        )
        return persona

    async def _ask(self, number: str, known: CacheEntry | None, since: Generation) -> FetchResult:
        """The CRM's answer, conditional on the copy `known`; a 404 is remembered."""
        assert self._api is not None
        try:
            return await self._api.fetch(number, known.validators if known else None)
        except PersonaNotFound:
            self._revalidated(known, "changed", 404)
            await self._store.put(number, None, self._negative, Validators(), since)
            raise
        except PersonaUpstreamError as e:
            self._revalidated(known, "failed", e.status)
            raise

    async def _answer(
        self, number: str, result: FetchResult, known: CacheEntry | None, since: Generation
    ) -> tuple[Persona, Validators]:
        """The persona an answer gives, and the validators to keep with it: on a 304 the copy
        held, as it is (nothing parsed, nothing rendered)."""
        validators = Validators(result.etag, result.last_modified)
        if result.status == 304:
            if known is None or known.persona is None:
                raise PersonaUpstreamError("persona API answered 304 to no condition", status=304)
            self._revalidated(known, "not_modified", 304)
            return known.persona, known.validators.updated(validators)
        try:
            persona = await self._parse(number, result, since)
        except PersonaInvalidPayload:
            self._revalidated(known, "failed", result.status)
            raise
        except PersonaNotFound:
            self._revalidated(known, "changed", result.status)
            raise
        self._revalidated(known, "changed", result.status)
        return persona, validators

    async def _parse(self, number: str, result: FetchResult, since: Generation) -> Persona:
        try:
            return await self._parser.parse(result.body)
        except PersonaNotInPayload:
            await self._store.put(number, None, self._negative, Validators(), since)
            raise PersonaNotFound(number) from None
        except PersonaPayloadError as e:
            # Not cached: the last good copy stays the stale fallback.
            raise PersonaInvalidPayload(f"persona payload is invalid: {e}") from None

    def _revalidated(
        self, known: CacheEntry | None, outcome: Revalidation, status: int | None
    ) -> None:
        """Counts and logs a request that asked about a copy already held (a revalidation)."""
        if known is None:
            return
        self._metrics.persona_revalidations.labels(outcome).inc()
        log.info("persona.revalidated", outcome=outcome, http_status=status)

    @property
    def fetches_in_flight(self) -> int:
        """CRM fetches under way in this process (background refreshes included)."""
        return len(self._inflight)

    @property
    def default(self) -> Persona:
        """The persona used when nothing better is known."""
        return self._default

    async def aclose(self) -> None:
        """Cancel fetches still running after their callers' deadlines; stop the parser."""
        tasks = list(self._inflight.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._parser.aclose()


def _persona_of(held: Held, number: str) -> Persona:
    """The persona of a fresh entry; a fresh 404 is `PersonaNotFound`."""
    if held.entry.persona is None:
        raise PersonaNotFound(number)
    return held.entry.persona
