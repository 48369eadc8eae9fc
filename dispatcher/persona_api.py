"""The CRM persona API client: `GET {base}/{number}`, an explicit retry policy, typed errors."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp_retry import ExponentialRetry, RetryClient

from contract.errors import PersonaDispatcherError
from contract.phone_numbers import is_lookup_key
from dispatcher.cache_windows import Validators
from telemetry.timing import ms_since

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class PersonaError(PersonaDispatcherError):
    """Base of the persona API's typed errors."""


class PersonaNotFound(PersonaError):
    """The API does not know the number (404)."""


class PersonaUpstreamError(PersonaError):
    """The API answered with an error, or with something that is not a persona payload."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class PersonaInvalidPayload(PersonaUpstreamError):
    """The API answered 2xx with a body that is not a usable persona payload."""


@dataclass(frozen=True)
class PersonaApiConfig:
    base_url: str
    max_bytes: int  # PERSONA_MAX_BYTES; its default is the setting's
    attempt_timeout_s: float = 1.0
    attempts: int = 3
    backoff_start_s: float = 0.1
    backoff_max_s: float = 1.0

    def worst_case_s(self) -> float:
        """The longest one lookup can take: every attempt timing out, every backoff at its
        longest."""
        return self.attempts * self.attempt_timeout_s + (self.attempts - 1) * self.backoff_max_s


@dataclass(frozen=True)
class FetchResult:
    body: bytes  # the JSON, decoded by `dispatcher.payload_parser` (off the loop when large)
    attempts: int
    status: int  # 200-299, or 304: the copy asked about is still current (no body)
    duration_ms: float
    etag: str | None = None
    last_modified: str | None = None
    cache_control: str | None = None


def retry_policy(cfg: PersonaApiConfig) -> ExponentialRetry:
    """GET only; connection errors, timeouts, 429 and 5xx retried; 4xx (404 included) never."""
    return ExponentialRetry(
        attempts=cfg.attempts,
        start_timeout=cfg.backoff_start_s,
        max_timeout=cfg.backoff_max_s,
        statuses=set(RETRY_STATUSES),
        exceptions={aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError},
        methods={"GET"},
        retry_all_server_errors=True,
    )


class _Attempts:
    """A counter the retry client's trace context carries into every attempt of one request."""

    def __init__(self) -> None:
        self.count = 0


async def _count_attempt(
    _: aiohttp.ClientSession, ctx: Any, __: aiohttp.TraceRequestStartParams
) -> None:
    counter = (ctx.trace_request_ctx or {}).get("attempts")
    if isinstance(counter, _Attempts):
        counter.count += 1


class PersonaApiClient:
    """The persona API over one `ClientSession`, which this client owns and closes."""

    def __init__(self, cfg: PersonaApiConfig) -> None:
        self._cfg = cfg
        tracing = aiohttp.TraceConfig()
        tracing.on_request_start.append(_count_attempt)
        session = aiohttp.ClientSession(
            trace_configs=[tracing], connector=aiohttp.TCPConnector(limit=100)
        )
        # RetryClient closes the session it was given: it is the one owner from here on.
        self._retry = RetryClient(client_session=session, retry_options=retry_policy(cfg))

    async def close(self) -> None:
        await self._retry.close()

    def url_for(self, number: str) -> str:
        # `number` is a lookup key by construction (digits, a leading `+` for a foreign number:
        # caller.normalise_number); checked again because this is where it meets a URL.
        if not is_lookup_key(number):
            raise ValueError(f"refusing to put a non-number into the persona URL: {number!r}")
        return f"{self._cfg.base_url}/{number}"

    async def fetch(self, number: str, validators: Validators | None = None) -> FetchResult:
        """The raw body for `number`, or with `validators` of a copy held possibly a bodiless
        304; raises PersonaNotFound / PersonaUpstreamError."""
        url = self.url_for(number)
        headers = {"Accept": "application/json"}
        if validators is not None:
            headers.update(validators.headers())
        attempts = _Attempts()
        started = time.perf_counter()
        timeout = aiohttp.ClientTimeout(total=self._cfg.attempt_timeout_s)
        try:
            async with self._retry.get(
                url,
                timeout=timeout,
                headers=headers,
                trace_request_ctx={"attempts": attempts},
            ) as resp:
                status = resp.status
                if status == 404:
                    raise PersonaNotFound(number)
                if status >= 400:
                    raise PersonaUpstreamError(
                        f"persona API answered {status} after {attempts.count} attempts",
                        status=status,
                    )
                if status == 304 and validators is None:
                    raise PersonaUpstreamError(
                        "persona API answered 304 to no condition", status=304
                    )
                body = b"" if status == 304 else await _read_capped(resp, self._cfg.max_bytes)
                etag = resp.headers.get("ETag")
                last_modified = resp.headers.get("Last-Modified")
                cache_control = resp.headers.get("Cache-Control")
        except (aiohttp.ClientError, TimeoutError) as e:
            raise PersonaUpstreamError(
                f"persona API unreachable after {attempts.count} attempts: {type(e).__name__}",
            ) from e
        return FetchResult(
            body, attempts.count, status, ms_since(started), etag, last_modified, cache_control
        )


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, or `PersonaUpstreamError` once it is known to exceed `limit` bytes.

    A body may arrive in many pieces (chunked, or one TCP segment at a time behind a proxy), so
    it is read to its end, not taken from the first piece. A declared `Content-Length` over the
    limit is refused before reading; what arrives is counted either way, since the header may lie.
    """
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise PersonaUpstreamError(f"persona payload of {declared} bytes is over {limit}")
    body = bytearray()
    async for piece in resp.content.iter_any():
        body += piece
        if len(body) > limit:
            raise PersonaUpstreamError(f"persona payload is over {limit} bytes")
    return bytes(body)
