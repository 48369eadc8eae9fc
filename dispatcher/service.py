"""Builds the dispatcher's long-lived clients from settings: one place, for the webhook app and
the manual dispatch command alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from livekit import api
from redis import asyncio as aioredis

from config.settings import Settings
from contract.metadata import Persona
from dispatcher.cache_windows import Windows
from dispatcher.call_setup import CallSetup, SetupPolicy
from dispatcher.lease import RedisLease
from dispatcher.livekit_api import LiveKitRooms
from dispatcher.livekit_clock import LiveKitClock
from dispatcher.payload_parser import PayloadParser
from dispatcher.persona_api import PersonaApiClient, PersonaApiConfig
from dispatcher.persona_cache import PersonaCache
from dispatcher.persona_payload import PersonaLimits
from dispatcher.persona_resolver import PersonaFiles, PersonaResolver, load_default_persona
from dispatcher.persona_store import LocalPersonaStore, PersonaStore
from dispatcher.reconciler import ReconcilePolicy, Reconciler
from dispatcher.setup_guard import SetupGuard
from dispatcher.shared_persona_store import SharedPersonaStore
from telemetry.metrics import Metrics


@dataclass(frozen=True)
class Clients:
    resolver: PersonaResolver
    setup: SetupGuard
    livekit: api.LiveKitAPI
    call_setup: CallSetup
    rooms: LiveKitRooms
    metrics: Metrics
    store: PersonaStore
    redis: aioredis.Redis | None  # the replicas' shared Redis (PERSONA_CACHE_URL), if any


def persona_limits(settings: Settings) -> PersonaLimits:
    return PersonaLimits(
        instructions_bytes=settings.persona_instructions_max_bytes,
        section_bytes=settings.persona_section_max_bytes,
    )


def default_persona(settings: Settings) -> Persona:
    """The default persona (`DEFAULT_PERSONA_FILE`, else the built-in one); raises
    `SettingsError` when the file holds none."""
    return load_default_persona(settings.default_persona_file, persona_limits(settings))


def build_store(settings: Settings, redis: aioredis.Redis | None, metrics: Metrics) -> PersonaStore:
    """This process's cache, or with `PERSONA_CACHE_URL` the shared one (which keeps this
    process's cache too, for when Redis does not answer)."""
    local = PersonaCache(
        max_size=settings.persona_cache_size,
        max_bytes=settings.persona_cache_max_bytes,
    )
    if redis is None:
        return LocalPersonaStore(local)
    return SharedPersonaStore(
        redis,
        local,
        command_timeout_s=settings.persona_cache_timeout_s,
        fetch_lock_s=fetch_claim_s(settings),
        retention_s=settings.persona_cache_retention_s,
        entry_max_bytes=settings.persona_cache_entry_max_bytes,
        prefix=settings.persona_cache_prefix,
        metrics=metrics,
    )


def fetch_claim_s(settings: Settings) -> float:
    """How long a replica's claim on a number's fetch lasts: longer than a whole lookup (every
    attempt timing out, every backoff, then parsing), so a live fetcher keeps it."""
    lookup_s = persona_api_config(settings).worst_case_s()
    return max(lookup_s, settings.persona_deadline_s) + 2.0


def build_resolver(
    settings: Settings,
    persona_api: PersonaApiClient | None,
    store: PersonaStore,
    metrics: Metrics,
    default: Persona,
) -> PersonaResolver:
    return PersonaResolver(
        api=persona_api,
        parser=PayloadParser(persona_limits(settings)),
        store=store,
        files=PersonaFiles(settings.user_mapping_dir, persona_limits(settings)),
        default=default,
        deadline_s=settings.persona_deadline_s,
        metrics=metrics,
        windows=cache_windows(settings),
        negative_ttl_s=settings.persona_negative_ttl_s,
    )


def cache_windows(settings: Settings) -> Windows:
    """A persona's windows when the CRM's answer does not set them."""
    return Windows(
        fresh_s=settings.persona_cache_ttl_s,
        revalidate_s=settings.persona_revalidate_s,
        stale_if_error_s=settings.persona_stale_if_error_s,
    )


def persona_api_client(settings: Settings) -> PersonaApiClient | None:
    """The persona API client, or None when PERSONA_API_BASE is off; the caller closes it."""
    if not settings.persona_api_base:
        return None
    return PersonaApiClient(persona_api_config(settings))


def persona_api_config(settings: Settings) -> PersonaApiConfig:
    return PersonaApiConfig(
        base_url=settings.persona_api_base or "",
        attempt_timeout_s=settings.persona_attempt_timeout_s,
        attempts=settings.persona_attempts,
        max_bytes=settings.persona_max_bytes,
    )


@asynccontextmanager
async def open_resolver(settings: Settings) -> AsyncIterator[PersonaResolver]:
    """The persona resolver alone, as the call set-up has it (with this process's own cache),
    with nothing of LiveKit. Raises `SettingsError` for an unusable DEFAULT_PERSONA_FILE."""
    default = default_persona(settings)
    persona_api = persona_api_client(settings)
    metrics = Metrics()
    store = build_store(settings, None, metrics)
    resolver = build_resolver(settings, persona_api, store, metrics, default)
    try:
        yield resolver
    finally:
        await resolver.aclose()
        if persona_api is not None:
            await persona_api.close()


def shared_redis(settings: Settings) -> aioredis.Redis | None:
    """The replicas' shared Redis client (`PERSONA_CACHE_URL`), if any; the caller closes it."""
    if not settings.persona_cache_url:
        return None
    return aioredis.from_url(
        settings.persona_cache_url,
        socket_timeout=settings.persona_cache_timeout_s,
        socket_connect_timeout=settings.persona_cache_timeout_s,
    )


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[tuple[PersonaStore, Metrics]]:
    """The persona store as the service has it (the shared one with `PERSONA_CACHE_URL`), and
    its metrics, for a tool that acts on it; nothing runs in its background."""
    redis = shared_redis(settings)
    metrics = Metrics(shared_redis=redis is not None)
    store = build_store(settings, redis, metrics)
    try:
        yield store, metrics
    finally:
        await store.aclose()
        if redis is not None:
            await redis.aclose()


@asynccontextmanager
async def open_clients(settings: Settings) -> AsyncIterator[Clients]:
    """The persona API client, resolver, LiveKit API client and call set-up; closed on exit.
    Raises `SettingsError` for an unusable DEFAULT_PERSONA_FILE."""
    default = default_persona(settings)
    redis = shared_redis(settings)
    metrics = Metrics(shared_redis=redis is not None)
    store = build_store(settings, redis, metrics)
    store.start()
    persona_api = persona_api_client(settings)
    resolver = build_resolver(settings, persona_api, store, metrics, default)
    clock = LiveKitClock(metrics)
    rooms = LiveKitRooms(
        settings.livekit.url, settings.livekit.api_key, settings.livekit.api_secret, clock
    )
    call_setup = CallSetup(
        rooms,
        resolver,
        SetupPolicy(
            agent_name=settings.agent_name,
            metadata_budget=settings.metadata_budget_bytes,
            api_timeout_s=settings.livekit.api_timeout_s,
            lookups=settings.persona_lookup,
            number_plan=settings.numbers.plan,
            default_caller=settings.default_caller,
            agent_join_timeout_s=settings.agent_join_timeout_s,
            default_persona=resolver.default,
            agent_names=settings.agent_names,
            agent_job_timeout_s=settings.agent_job_timeout_s,
            unknown_caller=settings.unknown_caller_policy,
            unknown_caller_message=settings.unknown_caller_message,
            transfer_to=settings.transfer_to,
        ),
        metrics,
    )
    setup = SetupGuard(call_setup.run, remember=settings.handled_events_size)
    metrics.rooms_held.set_function(setup.rooms_held)
    try:
        yield Clients(resolver, setup, rooms.server, call_setup, rooms, metrics, store, redis)
    finally:
        await setup.drain(settings.persona_deadline_s + 3 * settings.livekit.api_timeout_s)
        await resolver.aclose()
        await store.aclose()
        if persona_api is not None:
            await persona_api.close()
        await rooms.aclose()
        if redis is not None:
            await redis.aclose()


def build_reconciler(settings: Settings, clients: Clients) -> Reconciler | None:
    """The reconciler for `clients`, or None when `RECONCILE_INTERVAL_S` is 0."""
    if not settings.reconcile_interval_s:
        return None
    lease = (
        RedisLease(
            clients.redis,
            f"{settings.persona_cache_prefix}reconciler",
            # Renewed every pass; a dead holder's lease lapses within three passes.
            ttl_s=3 * settings.reconcile_interval_s,
            command_timeout_s=settings.persona_cache_timeout_s,
            metrics=clients.metrics,
        )
        if clients.redis is not None
        else None
    )
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
            agent_names=settings.agent_names,
        ),
        clients.metrics,
        clock=clients.rooms.now,
        lease=lease,
    )
