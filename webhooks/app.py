"""The app factory: routes, middleware and the long-lived clients, each in one cleanup context."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web
from livekit import api

from config.settings import Settings
from dispatcher.service import build_reconciler, open_clients
from webhooks import handlers
from webhooks.keys import CALL_SETUP, METRICS, RECEIVER, SETTINGS
from webhooks.middleware import error_middleware


async def _clients(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with open_clients(settings) as clients:
        app[CALL_SETUP] = clients.setup
        app[METRICS] = clients.metrics
        app[RECEIVER] = api.WebhookReceiver(
            api.TokenVerifier(settings.livekit.api_key, settings.livekit.api_secret)
        )
        reconciler = build_reconciler(settings, clients)
        task = asyncio.create_task(reconciler.run(), name="reconciler") if reconciler else None
        yield
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def create_app(settings: Settings) -> web.Application:
    """The dispatcher's aiohttp application for `settings`."""
    app = web.Application(
        client_max_size=settings.webhook_max_bytes, middlewares=[error_middleware]
    )
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_clients)
    app.router.add_post("/webhooks/livekit", handlers.livekit_webhook)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics)
    return app
