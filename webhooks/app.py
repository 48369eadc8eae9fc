"""The app factory: routes, middleware and the long-lived clients, each in one cleanup context."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from livekit import api

from config.settings import Settings
from dispatcher.caller import NumberFormat
from dispatcher.persona_api import PersonaApiClient, PersonaApiConfig
from dispatcher.persona_cache import PersonaCache
from dispatcher.persona_resolver import PersonaFiles, PersonaResolver, load_default_persona
from dispatcher.room_setup import CallSetup, SetupPolicy
from webhooks import handlers
from webhooks.keys import CALL_SETUP, RECEIVER, RESOLVER, SETTINGS
from webhooks.middleware import error_middleware


async def _clients(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    persona_api = (
        PersonaApiClient(
            PersonaApiConfig(
                base_url=settings.persona_api_base,
                attempt_timeout_s=settings.persona_attempt_timeout_s,
                attempts=settings.persona_attempts,
                max_bytes=settings.persona_max_bytes,
            )
        )
        if settings.persona_api_base
        else None
    )
    resolver = PersonaResolver(
        api=persona_api,
        cache=PersonaCache(
            ttl_s=settings.persona_cache_ttl_s,
            negative_ttl_s=settings.persona_negative_ttl_s,
            max_size=settings.persona_cache_size,
        ),
        files=PersonaFiles(settings.user_mapping_dir),
        default=load_default_persona(settings.default_persona_file),
        deadline_s=settings.persona_deadline_s,
    )
    lk = api.LiveKitAPI(settings.livekit.url, settings.livekit.api_key, settings.livekit.api_secret)
    app[RESOLVER] = resolver
    app[CALL_SETUP] = CallSetup(
        lk,
        resolver,
        SetupPolicy(
            agent_name=settings.agent_name,
            metadata_budget=settings.metadata_budget_bytes,
            api_timeout_s=settings.livekit.api_timeout_s,
            lookups=settings.persona_lookup,
            number_format=NumberFormat(settings.country_code, settings.national_number_length),
            default_caller=settings.default_caller,
            remember=settings.handled_events_size,
            unmasked_logs=settings.log_unmasked,
        ),
    )
    app[RECEIVER] = api.WebhookReceiver(
        api.TokenVerifier(settings.livekit.api_key, settings.livekit.api_secret)
    )
    try:
        yield
    finally:
        await resolver.aclose()
        if persona_api is not None:
            await persona_api.close()
        await lk.aclose()


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
    return app
