"""Builds the dispatcher's long-lived clients from settings: one place, for the webhook app and
the manual dispatch command alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from livekit import api

from config.settings import Settings
from dispatcher.call_setup import CallSetup, SetupPolicy
from dispatcher.caller import NumberFormat
from dispatcher.livekit_api import LiveKitRooms
from dispatcher.persona_api import PersonaApiClient, PersonaApiConfig
from dispatcher.persona_cache import PersonaCache
from dispatcher.persona_resolver import PersonaFiles, PersonaResolver, load_default_persona
from dispatcher.setup_guard import SetupGuard


@dataclass(frozen=True)
class Clients:
    resolver: PersonaResolver
    setup: SetupGuard
    livekit: api.LiveKitAPI


def number_format(settings: Settings) -> NumberFormat:
    return NumberFormat(settings.country_code, settings.national_number_length)


def build_resolver(settings: Settings, persona_api: PersonaApiClient | None) -> PersonaResolver:
    return PersonaResolver(
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


def persona_api_client(settings: Settings) -> PersonaApiClient | None:
    """The persona API client, or None when PERSONA_API_BASE is off; the caller closes it."""
    if not settings.persona_api_base:
        return None
    return PersonaApiClient(
        PersonaApiConfig(
            base_url=settings.persona_api_base,
            attempt_timeout_s=settings.persona_attempt_timeout_s,
            attempts=settings.persona_attempts,
            max_bytes=settings.persona_max_bytes,
        )
    )


@asynccontextmanager
async def open_resolver(settings: Settings) -> AsyncIterator[PersonaResolver]:
    """The persona resolver alone, as the call set-up has it, with nothing of LiveKit."""
    persona_api = persona_api_client(settings)
    resolver = build_resolver(settings, persona_api)
    try:
        yield resolver
    finally:
        await resolver.aclose()
        if persona_api is not None:
            await persona_api.close()


@asynccontextmanager
async def open_clients(settings: Settings) -> AsyncIterator[Clients]:
    """The persona API client, resolver, LiveKit API client and call set-up; closed on exit."""
    persona_api = persona_api_client(settings)
    resolver = build_resolver(settings, persona_api)
    rooms = LiveKitRooms(
        settings.livekit.url, settings.livekit.api_key, settings.livekit.api_secret
    )
    call_setup = CallSetup(
        rooms,
        resolver,
        SetupPolicy(
            agent_name=settings.agent_name,
            metadata_budget=settings.metadata_budget_bytes,
            api_timeout_s=settings.livekit.api_timeout_s,
            lookups=settings.persona_lookup,
            number_format=number_format(settings),
            default_caller=settings.default_caller,
        ),
    )
    setup = SetupGuard(call_setup.run, remember=settings.handled_events_size)
    try:
        yield Clients(resolver, setup, rooms.server)
    finally:
        await setup.drain(settings.persona_deadline_s + 3 * settings.livekit.api_timeout_s)
        await resolver.aclose()
        if persona_api is not None:
            await persona_api.close()
        await rooms.aclose()
