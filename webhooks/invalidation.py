"""`POST /personas/invalidate`: a CRM says which numbers' personas changed (routed only when
`PERSONA_INVALIDATE_SECRET` is set). Size, then signature, then body, before anything is
touched; errors are answered by `webhooks.middleware`."""

from __future__ import annotations

import time

from aiohttp import web

from dispatcher.invalidation import (
    MAX_BODY_BYTES,
    SIGNATURE_HEADER,
    invalidate,
    parse_invalidation,
    verify_signature,
)
from telemetry.timing import ms_since
from webhooks.keys import ANSWER, EVENT_TYPE, METRICS, PERSONA_STORE, SETTINGS

EVENT = "persona_invalidate"


async def invalidate_personas(request: web.Request) -> web.Response:
    """Drop the body's numbers from every replica's persona cache; idempotent."""
    started = time.perf_counter()
    request[EVENT_TYPE] = EVENT
    settings = request.app[SETTINGS]
    secret = settings.persona_invalidate_secret
    if secret is None:  # not routed then; kept for an app built otherwise
        raise web.HTTPNotFound()
    body = await _read_body(request)
    verify_signature(secret, body, request.headers.get(SIGNATURE_HEADER))
    numbers = parse_invalidation(body, settings.numbers.plan)
    await invalidate(request.app[PERSONA_STORE], request.app[METRICS], numbers, "http")
    request[ANSWER] = "invalidated"
    return web.json_response(
        {
            "status": "invalidated",
            "numbers": len(numbers),
            "duration_ms": ms_since(started),
        }
    )


async def _read_body(request: web.Request) -> bytes:
    """The raw body (what the signature covers); 413 over `MAX_BODY_BYTES`, declared or not."""
    declared = request.content_length
    if declared is not None and declared > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=declared)
    body = await request.read()  # bounded by the app's client_max_size as well
    if len(body) > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=len(body))
    return body
