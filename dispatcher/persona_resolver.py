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
from dispatcher.caller import DetectedNumber
from dispatcher.payload_parser import PayloadParser
from dispatcher.persona_api import (
    PersonaApiClient,
    PersonaInvalidPayload,
    PersonaNotFound,
    PersonaUpstreamError,
)
from dispatcher.persona_payload import (
    PersonaLimits,
    PersonaNotInPayload,
    PersonaPayloadError,
    parse_persona_body,
)
from dispatcher.persona_store import PersonaStore
from telemetry.logs import get_logger
from telemetry.metrics import Metrics

log = get_logger(__name__)

FallbackReason = Literal[
    "no_number", "not_found", "timeout", "upstream_error", "invalid_payload", "api_off"
]


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
    """One per process. Concurrent look-ups of the same number share one API request."""

    def __init__(
        self,
        api: PersonaApiClient | None,
        parser: PayloadParser,
        store: PersonaStore,
        files: PersonaFiles,
        default: Persona,
        deadline_s: float,
        metrics: Metrics,
    ) -> None:
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

        def done(
            persona: Persona,
            status: Status,
            source: str,
            d: DetectedNumber | None,
            reason: FallbackReason | None = None,
        ) -> Resolution:
            return Resolution(
                persona,
                status,
                source,
                d.number if d else None,
                d.lookup if d else "caller",
                (time.perf_counter() - started) * 1000,
                reason,
            )

        reason: FallbackReason = "no_number" if not numbers else "not_found"
        try:
            async with asyncio.timeout(self._deadline):
                for d in numbers:
                    entry = await self._store.fresh(d.number)
                    if entry is not None:
                        log.info(
                            "persona.cache_hit", lookup=d.lookup, found=entry.persona is not None
                        )
                        if entry.persona is not None:
                            self._metrics.persona_cache.labels("hit").inc()
                            return done(entry.persona, "cached", "cache", d)
                        self._metrics.persona_cache.labels("negative_hit").inc()
                        continue
                    self._metrics.persona_cache.labels("miss").inc()
                    if self._api is None:
                        reason = "api_off"
                        break
                    try:
                        persona = await asyncio.shield(self._shared_fetch(d.number))
                    except PersonaNotFound:
                        log.info("persona.not_found", lookup=d.lookup)
                        continue
                    return done(persona, "loaded", "api", d)
        except TimeoutError:
            reason = "timeout"
        except PersonaUpstreamError as e:
            if isinstance(e, PersonaInvalidPayload):
                reason = "invalid_payload"
                log.warning("persona.invalid_payload", error=str(e))
            else:
                reason = "upstream_error"
                log.warning("persona.upstream_error", error=str(e), http_status=e.status)

        if reason in ("timeout", "upstream_error", "invalid_payload"):
            for d in numbers:
                stale = await self._store.stale(d.number)
                if stale is not None:
                    return self._fallback(done(stale, "stale", "cache", d, reason))
        for d in numbers:
            from_file = self._files.load(d.number)
            if from_file is not None:
                source = str(self._files.path_for(d.number))
                return self._fallback(done(from_file, "file", source, d, reason))
        first = numbers[0] if numbers else None
        return self._fallback(done(self._default, "default", "default", first, reason))

    def _fallback(self, r: Resolution) -> Resolution:
        log.info("persona.fallback", reason=r.fallback_reason, status=r.status, source=r.source)
        self._metrics.persona_fallbacks.labels(r.fallback_reason or "none", r.status).inc()
        return r

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
        assert self._api is not None
        try:
            result = await self._api.fetch(number)
        except PersonaNotFound:
            await self._store.put_missing(number)
            raise
        started = time.perf_counter()
        try:
            persona = await self._parser.parse(result.body)
        except PersonaNotInPayload:
            await self._store.put_missing(number)
            raise PersonaNotFound(number) from None
        except PersonaPayloadError as e:
            # Not cached: the last good copy stays the stale fallback.
            raise PersonaInvalidPayload(f"persona payload is invalid: {e}") from None
        await self._store.put(number, persona)
        log.info(
            "persona.fetched",
            duration_ms=round(result.duration_ms, 1),
            parse_ms=round((time.perf_counter() - started) * 1000, 1),
            bytes=len(result.body),
            attempts=result.attempts,
            http_status=result.status,
            truncated=persona.truncated,
        )
        return persona

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
