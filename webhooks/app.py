"""The app factory: routes, middleware and the long-lived clients, each in one cleanup context."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

from aiohttp import web
from livekit import api

from config.settings import Settings
from dispatcher.livekit_api import check_access
from dispatcher.service import build_reconciler, default_persona, open_clients
from webhooks import handlers, invalidation
from webhooks.admin import admin_listener
from webhooks.keys import (
    CALL_SETUP,
    METRICS,
    PERSONA_STORE,
    READINESS,
    RECEIVER,
    SETTINGS,
    TOKEN_VERIFIER,
    UNAUTHORIZED_LOG,
)
from webhooks.log_sampler import LogSampler
from webhooks.middleware import error_middleware
from webhooks.readiness import READY_CHECK_S, Readiness


async def _clients(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with open_clients(settings) as clients:
        app[CALL_SETUP] = clients.setup
        app[METRICS] = clients.metrics
        app[PERSONA_STORE] = clients.store
        verifier = app[TOKEN_VERIFIER] = api.TokenVerifier(
            settings.livekit.api_key, settings.livekit.api_secret
        )
        app[RECEIVER] = api.WebhookReceiver(verifier)
        readiness = app[READINESS] = Readiness(
            # Bounded below a balancer's health-check timeout (config/haproxy.cfg: 3 s).
            functools.partial(
                check_access, clients.livekit, min(settings.livekit.api_timeout_s, READY_CHECK_S)
            )
        )
        reconciler = build_reconciler(settings, clients)
        task = (
            asyncio.create_task(reconciler.keep_running(), name="reconciler")
            if reconciler
            else None
        )
        if task is not None:
            # A replica shutting down takes on no more repairs, and gives up the reconciler's
            # lease to the others; repairs it started are set-ups in flight, which finish.
            readiness.when_draining(task.cancel)
        yield
        # Already draining since on_shutdown; in case the app is cleaned up without it.
        readiness.start_draining()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    # Leaving open_clients waited for the set-ups in flight (SetupGuard.drain).


async def _start_draining(app: web.Application) -> None:
    """Draining, in case the app is shut down other than by `webhooks.server.serve` (which
    starts it on the signal, while still listening): new webhooks get 503 and LiveKit
    redelivers them; running set-ups finish."""
    if READINESS in app:
        app[READINESS].start_draining()


def create_app(settings: Settings) -> web.Application:
    """The dispatcher's aiohttp application for `settings`; raises `SettingsError` when the
    settings name a default persona file that holds none (before anything starts)."""
    default_persona(settings)
    app = web.Application(
        client_max_size=settings.webhook_max_bytes, middlewares=[error_middleware]
    )
    app[SETTINGS] = settings
    app[UNAUTHORIZED_LOG] = LogSampler()
    app.cleanup_ctx.append(_clients)
    app.on_shutdown.append(_start_draining)
    app.router.add_post("/webhooks/livekit", handlers.livekit_webhook)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    if settings.admin_port is None:
        app.router.add_get("/metrics", handlers.metrics)
    else:
        app.cleanup_ctx.append(admin_listener)
    if settings.persona_invalidate_secret is not None:
        app.router.add_post("/personas/invalidate", invalidation.invalidate_personas)
    return app
