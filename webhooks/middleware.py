"""The one place where errors become HTTP answers."""

from __future__ import annotations

import time

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from dispatcher.invalidation import InvalidationAuthError, InvalidationPayloadError
from dispatcher.livekit_api import LiveKitError, LiveKitNotFound
from dispatcher.shared_persona_store import SharedStoreUnavailable
from telemetry.logs import get_logger
from telemetry.timing import ms_since
from webhooks.keys import ANSWER, EVENT_TYPE, METRICS, UNAUTHORIZED_LOG
from webhooks.readiness import ServiceDraining
from webhooks.verify import WebhookAuthError, WebhookPayloadError

log = get_logger(__name__)


def _reject(
    request: web.Request, status: int, reason: str, started: float, answer: str | None = None
) -> web.Response:
    log.warning("webhook.rejected", status=status, reason=reason, duration_ms=ms_since(started))
    request[ANSWER] = answer or _ANSWERS[status]
    return web.json_response({"error": reason}, status=status)


def _unauthorized(request: web.Request, reason: str, started: float) -> web.Response:
    """401, logged at most once per interval (`suppressed`: how many were not logged before it):
    anyone who reaches the port can send these. The webhooks metric counts every one."""
    sampler = request.app.get(UNAUTHORIZED_LOG)
    suppressed = sampler.sample() if sampler is not None else 0
    if suppressed is not None:
        log.warning(
            "webhook.rejected",
            status=401,
            reason=reason,
            duration_ms=ms_since(started),
            suppressed=suppressed,
        )
    request[ANSWER] = _ANSWERS[401]
    return web.json_response({"error": reason}, status=401)


_ANSWERS = {400: "bad_request", 401: "unauthorized", 413: "too_large", 503: "draining"}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    structlog.contextvars.clear_contextvars()
    started = time.perf_counter()
    try:
        return await handler(request)
    except (WebhookAuthError, InvalidationAuthError) as e:
        return _unauthorized(request, f"unauthorized: {e}", started)
    except (WebhookPayloadError, InvalidationPayloadError) as e:
        return _reject(request, 400, f"bad request: {e}", started)
    except web.HTTPRequestEntityTooLarge:
        return _reject(request, 413, "body too large", started)
    except SharedStoreUnavailable as e:
        # Only this replica's copies were dropped: 5xx, so that the sender tries again.
        return _reject(
            request, 503, f"persona cache unavailable: {e}", started, "cache_unavailable"
        )
    except ServiceDraining:
        # 5xx: LiveKit delivers it again, to a replica that is not shutting down.
        return _reject(request, 503, "draining", started)
    except LiveKitNotFound as e:
        # The room closed before its call was set up: nothing to redeliver.
        log.info("webhook.ignored", event_type="participant_joined", reason=f"room gone ({e.step})")
        request[ANSWER] = "room_gone"
        return web.json_response({"status": "room_gone"})
    except LiveKitError as e:
        # 5xx makes LiveKit redeliver the webhook (it does not retry 4xx).
        log.error(
            "call.setup_failed",
            error=str(e),
            step=e.step,
            livekit_status=e.status,
            duration_ms=ms_since(started),
        )
        request[ANSWER] = "livekit_unavailable"
        return web.json_response({"error": "livekit unavailable", "step": e.step}, status=503)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("webhook.unhandled_error")
        request[ANSWER] = "internal_error"
        return web.json_response({"error": "internal error"}, status=500)
    finally:
        structlog.contextvars.clear_contextvars()
        answer = request.get(ANSWER)
        if answer is not None and METRICS in request.app:
            event = request.get(EVENT_TYPE) or "unknown"
            request.app[METRICS].webhooks.labels(event, answer).inc()
