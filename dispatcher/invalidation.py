"""Push invalidation: a CRM that can call out says which numbers' personas changed, and every
replica's next call for them asks the CRM. Checking the request is pure (the signature, the
body); `invalidate` then acts on the persona store, logged and counted once for every source.

The request: `POST /personas/invalidate` with `{"numbers": ["8655701159", ...]}` (1 to
`MAX_NUMBERS`, normalised as the call set-up normalises the numbers it looks up), signed as
GitHub and HubSpot sign their webhooks: `X-Persona-Signature-256: sha256=<hex HMAC-SHA256 of the
raw body>` with `PERSONA_INVALIDATE_SECRET`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from typing import Any, Literal

import orjson

from contract.errors import PersonaDispatcherError
from contract.phone_numbers import NumberPlan
from dispatcher.caller import normalise_number
from dispatcher.persona_store import PersonaStore
from telemetry.logs import get_logger
from telemetry.metrics import Metrics
from telemetry.timing import ms_since

log = get_logger(__name__)

SIGNATURE_HEADER = "X-Persona-Signature-256"
SIGNATURE_PREFIX = "sha256="
MAX_NUMBERS = 1000
# A thousand numbers written out with room to spare (~20 bytes each, quoted, with a separator).
MAX_BODY_BYTES = 64 * 1024

Source = Literal["http", "cli"]


class InvalidationAuthError(PersonaDispatcherError):
    """The request's signature is missing, malformed or not the body's."""


class InvalidationPayloadError(PersonaDispatcherError):
    """The body is not `{"numbers": [...]}` with 1 to `MAX_NUMBERS` phone numbers."""


def signature(secret: str, body: bytes) -> str:
    """The header value that signs `body`: `sha256=<hex HMAC-SHA256>`."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_PREFIX}{digest}"


def verify_signature(secret: str, body: bytes, header: str | None) -> None:
    """Raises `InvalidationAuthError` unless `header` signs exactly `body` with `secret`."""
    if header is None:
        raise InvalidationAuthError(f"no {SIGNATURE_HEADER} header")
    # Compared as bytes: a header of any characters is a mismatch, never an error.
    if not hmac.compare_digest(header.encode(errors="replace"), signature(secret, body).encode()):
        raise InvalidationAuthError("the signature is not the body's")


def parse_invalidation(body: bytes, plan: NumberPlan) -> list[str]:
    """The numbers to invalidate, normalised and deduplicated in order; raises
    `InvalidationPayloadError` naming the first problem."""
    try:
        value: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidationPayloadError("the body is not JSON") from None
    raw = value.get("numbers") if isinstance(value, dict) else None
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_NUMBERS:
        raise InvalidationPayloadError(f'expected {{"numbers": [1 to {MAX_NUMBERS} numbers]}}')
    numbers: list[str] = []
    for i, item in enumerate(raw):
        text = str(item) if isinstance(item, int) and not isinstance(item, bool) else item
        number = normalise_number(text, plan) if isinstance(text, str) else None
        if number is None:
            raise InvalidationPayloadError(f"numbers[{i}] is not a phone number")
        numbers.append(number)
    return list(dict.fromkeys(numbers))


async def invalidate(
    store: PersonaStore, metrics: Metrics, numbers: Sequence[str], source: Source
) -> None:
    """Drop `numbers` here, in the shared store and on every replica: their next lookup asks the
    CRM. Raises `SharedStoreUnavailable` when the other replicas could not be told."""
    started = time.perf_counter()
    await store.invalidate(numbers)
    metrics.persona_invalidations.labels(source).inc(len(numbers))
    log.info(
        "persona.invalidated",
        source=source,
        count=len(numbers),
        duration_ms=ms_since(started),
    )
