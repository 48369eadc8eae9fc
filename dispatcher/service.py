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
from dispatcher.reconciler import ReconcilePolicy, Reconciler
from dispatcher.setup_guard import SetupGuard
from telemetry.metrics import Metrics


@dataclass(frozen=True)
class Clients:
    resolver: PersonaResolver
    setup: SetupGuard
    livekit: api.LiveKitAPI
    call_setup: CallSetup
    rooms: LiveKitRooms
    metrics: Metrics


def number_format(settings: Settings) -> NumberFormat:
    return NumberFormat(settings.country_code, settings.national_number_length)


def build_resolver(
    settings: Settings, persona_api: PersonaApiClient | None, metrics: Metrics
) -> PersonaResolver:
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
        metrics=metrics,
    )


@asynccontextmanager
async def open_clients(settings: Settings) -> AsyncIterator[Clients]:
    """The persona API client, resolver, LiveKit API client and call set-up; closed on exit."""
    metrics = Metrics()
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
    resolver = build_resolver(settings, persona_api, metrics)
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
            unmasked_logs=settings.logs.unmasked,
            agent_join_timeout_s=settings.agent_join_timeout_s,
        ),
        metrics,
    )
    setup = SetupGuard(call_setup.run, remember=settings.handled_events_size)
    metrics.rooms_held.set_function(setup.rooms_held)
    try:
        yield Clients(resolver, setup, rooms.server, call_setup, rooms, metrics)
    finally:
        await setup.drain(settings.persona_deadline_s + 3 * settings.livekit.api_timeout_s)
        await resolver.aclose()
        if persona_api is not None:
            await persona_api.close()
        await rooms.aclose()


def build_reconciler(settings: Settings, clients: Clients) -> Reconciler | None:
    """The reconciler for `clients`, or None when `RECONCILE_INTERVAL_S` is 0."""
    if not settings.reconcile_interval_s:
        return None
    return Reconciler(
        clients.rooms,
        clients.call_setup,
        clients.setup,
        ReconcilePolicy(
            interval_s=settings.reconcile_interval_s,
            grace_s=settings.reconcile_grace_s,
            agent_join_timeout_s=settings.agent_join_timeout_s,
            agent_name=settings.agent_name,
            api_timeout_s=settings.livekit.api_timeout_s,
            unmasked_logs=settings.logs.unmasked,
        ),
        clients.metrics,
    )
