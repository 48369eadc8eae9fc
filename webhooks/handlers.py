"""HTTP handlers: verify, route, hand the call to the set-up, reply. Errors are answered by
`webhooks.middleware`, the one place that maps them to HTTP statuses."""

from __future__ import annotations

import time

import structlog
from aiohttp import web
from livekit import api

from dispatcher.call_rooms import call_setup_mode, sets_up_on_start
from dispatcher.call_setup import CallJoin
from dispatcher.caller import call_id_of, party_of
from telemetry.logs import get_logger
from webhooks.keys import (
    ANSWER,
    CALL_SETUP,
    EVENT_TYPE,
    METRICS,
    PERSONA_STORE,
    READINESS,
    RECEIVER,
    SETTINGS,
    TOKEN_VERIFIER,
)
from webhooks.verify import check_token, verify_webhook

log = get_logger(__name__)

SIP = api.ParticipantInfo.Kind.SIP


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


async def livekit_webhook(request: web.Request) -> web.Response:
    """`POST /webhooks/livekit`: verify, route, and answer once the call's dispatch exists."""
    started = time.perf_counter()
    request.app[READINESS].refuse_if_draining()
    limit = request.app[SETTINGS].webhook_max_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    check_token(request.app[TOKEN_VERIFIER], request.headers.get("Authorization"))
    body = await request.read()
    event = verify_webhook(request.app[RECEIVER], body, request.headers.get("Authorization"))
    request[EVENT_TYPE] = event.event
    has_participant = event.HasField("participant")
    participant = event.participant
    structlog.contextvars.bind_contextvars(
        event_id=event.id,
        room=event.room.name or None,
        call_id=call_id_of(party_of(participant)) if has_participant else None,
    )
    log.info(
        "webhook.received",
        event_type=event.event,
        participant_kind=api.ParticipantInfo.Kind.Name(participant.kind)
        if has_participant
        else None,
        bytes=len(body),
    )
    is_sip = has_participant and participant.kind == SIP
    guard = request.app[CALL_SETUP]

    call: CallJoin | None = None
    if event.event == "participant_joined" and is_sip:
        if call_setup_mode(event.room.metadata) == "off":
            # Another route's call (its dispatch rule sends its own agent).
            log.info("webhook.ignored", event_type=event.event, reason="call set-up off")
            request[ANSWER] = "ignored"
            return web.json_response({"status": "ignored"})
        call = CallJoin.of_webhook(event)
    elif event.event == "room_started":
        settings = request.app[SETTINGS]
        if sets_up_on_start(
            event.room.name, event.room.metadata, settings.persona_lookup, settings.numbers.plan
        ):
            call = CallJoin.of_room_started(event)

    if call is not None:
        # The caller's join after a set-up begun with the room shares that set-up (SetupGuard).
        result = await guard.handle_join(call)
        request[ANSWER] = "dispatched" if result.dispatched else result.reason
        return web.json_response(
            {
                "status": request[ANSWER],
                "dispatch_id": result.dispatch_id,
                "persona_status": result.status,
                "persona_source": result.source,
                "duration_ms": _ms(started),
            }
        )

    if (event.event == "participant_left" and is_sip) or event.event == "room_finished":
        released = guard.release(event.room.sid or event.room.name)
        log.info("room.released", reason=event.event, held=released)
        request[ANSWER] = "released"
        return web.json_response({"status": "released", "held": released})

    reason = "not a SIP participant" if event.event.startswith("participant") else "event type"
    log.info("webhook.ignored", event_type=event.event, reason=reason)
    request[ANSWER] = "ignored"
    return web.json_response({"status": "ignored"})


async def healthz(_: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: a call can be set up now (LiveKit answers with our keys, not draining). Also
    says which persona cache serves: `local`, `shared`, or `shared_unavailable` (Redis down:
    calls still work, each replica asking the CRM on its own). Why not ready in one word
    (`starting`, `draining`, `livekit`): LiveKit's own error text stays in the log
    (`service.not_ready`) and on the admin listener (`readyz_detail`)."""
    return await _readiness_answer(request, detail=False)


async def readyz_detail(request: web.Request) -> web.Response:
    """`/readyz` of the admin listener: the same, with the whole reason."""
    return await _readiness_answer(request, detail=True)


async def _readiness_answer(request: web.Request, *, detail: bool) -> web.Response:
    readiness = request.app.get(READINESS)
    reason = "starting" if readiness is None else await readiness.not_ready_because()
    store = request.app.get(PERSONA_STORE)
    cache = store.state() if store is not None else None
    if reason is not None:
        shown = reason if detail else reason.split(":", 1)[0]
        return web.json_response(
            {"ready": False, "reason": shown, "persona_cache": cache}, status=503
        )
    return web.json_response({"ready": True, "persona_cache": cache})


async def metrics(request: web.Request) -> web.Response:
    """`GET /metrics`: Prometheus' text format."""
    m = request.app[METRICS]
    return web.Response(body=m.render(), headers={"Content-Type": m.content_type})
