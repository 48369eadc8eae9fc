"""The optional admin listener (`ADMIN_HOST`:`ADMIN_PORT`): `/metrics` and `/readyz` with the whole
reason, on a port of their own, so that the webhook port can face LiveKit alone. It serves the
main app's metrics and readiness, opens once the clients are open and closes before them."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from telemetry.logs import get_logger
from webhooks import handlers
from webhooks.keys import METRICS, PERSONA_STORE, READINESS, SETTINGS

log = get_logger(__name__)


def create_admin_app(main: web.Application) -> web.Application:
    """An app over `main`'s metrics, readiness and persona store (which must be open)."""
    admin = web.Application()
    admin[METRICS] = main[METRICS]
    admin[READINESS] = main[READINESS]
    admin[PERSONA_STORE] = main[PERSONA_STORE]
    admin.router.add_get("/metrics", handlers.metrics)
    admin.router.add_get("/readyz", handlers.readyz_detail)
    return admin


async def admin_listener(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context of the main app, after the one that opens its clients."""
    settings = app[SETTINGS]
    runner = web.AppRunner(create_admin_app(app), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.admin_host, settings.admin_port).start()
        log.info("admin.listening", host=settings.admin_host, port=settings.admin_port)
        yield
    finally:
        await runner.cleanup()
