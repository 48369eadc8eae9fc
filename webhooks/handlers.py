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
from telemetry.timing import ms_since
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


async def livekit_webhook(request: web.Request) -> web.Response:
    """`POST /webhooks/livekit`: verify, route, and answer once the call's dispatch exists."""
    started = time.perf_counter()
    event, size = await _verified_event(request)
    request[EVENT_TYPE] = event.event
    _bind_event_context(event)
    log.info(
        "webhook.received",
        event_type=event.event,
        participant_kind=api.ParticipantInfo.Kind.Name(event.participant.kind)
        if event.HasField("participant")
        else None,
        bytes=size,
    )
    if _room_is_over(event):
        return _release(request, event)
    call = _call_to_set_up(request, event)
    if call is None:
        return _ignore(request, event)
    # The caller's join after a set-up begun with the room shares that set-up (SetupGuard).
    result = await request.app[CALL_SETUP].handle_join(call)
    request[ANSWER] = "dispatched" if result.dispatched else result.reason
    return web.json_response(
        {
            "status": request[ANSWER],
            "dispatch_id": result.dispatch_id,
            "persona_status": result.status,
            "persona_source": result.source,
            "duration_ms": ms_since(started),
        }
    )


async def _verified_event(request: web.Request) -> tuple[api.WebhookEvent, int]:
    """The webhook's event and its body's size, once size, token and body hash are checked (413,
    401, 400), and never while draining (503). The token is checked before the body is read."""
    request.app[READINESS].refuse_if_draining()
    limit = request.app[SETTINGS].webhook_max_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    check_token(request.app[TOKEN_VERIFIER], request.headers.get("Authorization"))
    body = await request.read()
    event = verify_webhook(request.app[RECEIVER], body, request.headers.get("Authorization"))
    return event, len(body)


def _bind_event_context(event: api.WebhookEvent) -> None:
    """Every later log line of this request names the event, its room and its call."""
    has_participant = event.HasField("participant")
    structlog.contextvars.bind_contextvars(
        event_id=event.id,
        room=event.room.name or None,
        call_id=call_id_of(party_of(event.participant)) if has_participant else None,
    )


def _is_sip(event: api.WebhookEvent) -> bool:
    return event.HasField("participant") and event.participant.kind == SIP


def _room_is_over(event: api.WebhookEvent) -> bool:
    return (event.event == "participant_left" and _is_sip(event)) or event.event == "room_finished"


def _call_to_set_up(request: web.Request, event: api.WebhookEvent) -> CallJoin | None:
    """The call this event starts setting up: a SIP caller's join (unless the room's route turns
    the set-up off), or a room whose name or metadata already names the caller."""
    if event.event == "participant_joined" and _is_sip(event):
        if call_setup_mode(event.room.metadata) == "off":
            return None  # another route's call: its dispatch rule sends its own agent
        return CallJoin.of_webhook(event)
    settings = request.app[SETTINGS]
    if event.event == "room_started" and sets_up_on_start(
        event.room.name, event.room.metadata, settings.persona_lookup, settings.numbers.plan
    ):
        return CallJoin.of_room_started(event)
    return None


def _release(request: web.Request, event: api.WebhookEvent) -> web.Response:
    released = request.app[CALL_SETUP].release(event.room.sid or event.room.name)
    log.info("room.released", reason=event.event, held=released)
    request[ANSWER] = "released"
    return web.json_response({"status": "released", "held": released})


def _ignore(request: web.Request, event: api.WebhookEvent) -> web.Response:
    if event.event == "participant_joined" and _is_sip(event):
        reason = "call set-up off"
    elif event.event.startswith("participant"):
        reason = "not a SIP participant"
    else:
        reason = "event type"
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
