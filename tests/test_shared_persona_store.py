"""The persona cache shared through a real Redis: replicas (resolvers with their own local caches
on one Redis) share entries and single-flight a burst into one CRM request; a Redis that is down
or that never answers costs a call nothing beyond its own short timeout. Also the reconciler's
lease: one holder at a time."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from redis import asyncio as aioredis

from config.settings import Settings, load_settings
from contract.metadata import DEFAULT_PERSONA
from devstack.processes import ROOT, free_port
from devstack.services import RedisServer, start_redis
from dispatcher.cache_windows import Windows
from dispatcher.caller import DetectedNumber
from dispatcher.lease import RedisLease
from dispatcher.payload_parser import PayloadParser
from dispatcher.persona_api import PersonaApiClient, PersonaApiConfig
from dispatcher.persona_cache import PersonaCache
from dispatcher.persona_payload import PersonaLimits
from dispatcher.persona_resolver import PersonaFiles, PersonaResolver
from dispatcher.persona_store import LocalPersonaStore, PersonaStore
from dispatcher.service import build_reconciler, fetch_claim_s, open_clients
from dispatcher.shared_persona_store import CLAIM_SCRIPT, SharedPersonaStore
from telemetry.metrics import Metrics
from tests.conftest import LogCapture, post
from tests.harness.fake_livekit import FakeLiveKit
from tests.harness.fake_persona_api import FakeState
from tests.harness.signing import participant_joined
from tests.harness.stack import eventually
from webhooks.app import create_app

pytestmark = pytest.mark.service
LOG_DIR = ROOT / "var" / "log" / "service"
NUMBER = "8655701159"  # tests/fixtures/personas/num_8655701159.json: Priya, prs_3001
PRODUCT_REDIS_TIMEOUT_S = load_settings({}, livekit=False).persona_cache_timeout_s


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis(log_path=LOG_DIR / "redis-shared-cache.log")
    yield server
    server.stop()


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> str:
    url = f"redis://{redis_server.address}/0"
    client = aioredis.from_url(url)
    await client.flushdb()
    await client.aclose()
    return url


class Replica:
    """One dispatcher replica's resolver: its own persona API client and local cache."""

    def __init__(
        self,
        redis_url: str,
        api_url: str,
        tmp: Path,
        *,
        ttl_s: float = 300,
        revalidate_s: float = 0,
        stale_s: float = 3600,
        prefix: str = "persona-dispatcher:",
        fetch_lock_s: float = 3,
        clock: Callable[[], float] = time.time,
        shared: bool = True,
        parser: PayloadParser | None = None,
        listen: bool = True,
        redis_timeout_s: float = 2.0,
    ) -> None:
        # A timeout well above a loaded machine's Redis round trip, so only the tests about a
        # hung or missing Redis (which pass the product's 0.2 s) ever see one.
        self.redis = aioredis.from_url(
            redis_url, socket_timeout=redis_timeout_s, socket_connect_timeout=redis_timeout_s
        )
        self.metrics = Metrics(shared_redis=True)
        self.api = PersonaApiClient(
            PersonaApiConfig(
                base_url=api_url, max_bytes=512 * 1024, attempt_timeout_s=1.0, attempts=1
            )
        )
        self.local = PersonaCache(max_size=100, max_bytes=1 << 20, clock=clock)
        self.store: PersonaStore = SharedPersonaStore(
            self.redis,
            self.local,
            command_timeout_s=redis_timeout_s,
            fetch_lock_s=fetch_lock_s,
            retention_s=3600,
            entry_max_bytes=256 * 1024,
            prefix=prefix,
            metrics=self.metrics,
            clock=clock,
        )
        if not shared:
            self.store = LocalPersonaStore(self.local)
        if listen:
            self.store.start()  # hears the other replicas' invalidations
        self.resolver = PersonaResolver(
            self.api,
            parser or PayloadParser(PersonaLimits()),
            self.store,
            PersonaFiles(tmp, PersonaLimits()),
            DEFAULT_PERSONA,
            2.0,
            self.metrics,
            Windows(ttl_s, revalidate_s, stale_s),
            30,
        )

    async def resolve(self, number: str = NUMBER) -> Any:
        return await self.resolver.resolve([DetectedNumber(number, "caller", "attribute")])

    async def close(self) -> None:
        await self.resolver.aclose()
        await self.store.aclose()
        await self.api.close()
        await self.redis.aclose()


@pytest.fixture
async def replicas(
    redis_url: str, persona_server: TestServer, tmp_path: Path
) -> AsyncIterator[Callable[..., Replica]]:
    made: list[Replica] = []

    def make(url: str | None = None, **kw: Any) -> Replica:
        r = Replica(url or redis_url, str(persona_server.make_url("/mobile")), tmp_path, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        await r.close()


def await_claims_lost(replica: Replica, monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Count the replica's claims on a number that another replica held (it waits on them)."""
    run_script = replica.redis.eval
    lost = 0

    async def counted(script: str, *args: Any) -> Any:
        nonlocal lost
        answer = await run_script(script, *args)
        lost += script == CLAIM_SCRIPT and answer == 0
        return answer

    monkeypatch.setattr(replica.redis, "eval", counted)
    return lambda: lost


async def test_a_burst_over_replicas_makes_one_crm_request(
    replicas: Callable[..., Replica], persona_state: FakeState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve look-ups of one number, spread over three replicas at once, while the CRM takes
    300 ms: one request; every look-up gets the persona. The CRM answers once two replicas wait
    on the third's claim: a burst, however slowly this machine starts its look-ups."""
    persona_state.delay_s = 0.3
    fleet = [replicas() for _ in range(3)]
    waiting = [await_claims_lost(r, monkeypatch) for r in fleet]
    persona_state.hold = asyncio.Event()
    burst = asyncio.gather(*(fleet[i % 3].resolve() for i in range(12)))
    await eventually(lambda: sum(w() for w in waiting) == 2, 10, "two waiters")
    persona_state.hold.set()
    results = await burst
    assert persona_state.requests == 1
    assert {r.persona.persona_id for r in results} == {"prs_3001"}
    assert {r.status for r in results} == {"loaded"}
    # Later calls on any replica are cache hits, still without a request.
    later = await fleet[2].resolve()
    assert (later.status, persona_state.requests) == ("cached", 1)


async def test_a_404_is_shared_too(
    replicas: Callable[..., Replica], persona_state: FakeState
) -> None:
    a, b = replicas(), replicas()
    assert (await a.resolve("9777777777")).status == "default"
    assert (await b.resolve("9777777777")).status == "default"
    assert persona_state.requests == 1


async def test_a_stale_copy_from_one_replica_serves_another_when_the_crm_fails(
    replicas: Callable[..., Replica], persona_state: FakeState
) -> None:
    a = replicas(ttl_s=0.2)
    b = replicas(ttl_s=0.2)
    assert (await a.resolve()).status == "loaded"
    await asyncio.sleep(0.3)
    persona_state.fail_status = 503
    resolved = await b.resolve()
    assert (resolved.status, resolved.source, resolved.persona.persona_id) == (
        "stale",
        "cache",
        "prs_3001",
    )


async def test_a_failed_fetch_is_not_repeated_by_the_others_of_a_burst(
    replicas: Callable[..., Replica], persona_state: FakeState
) -> None:
    persona_state.delay_s = 0.2
    persona_state.fail_status = 503
    fleet = [replicas() for _ in range(3)]
    results = await asyncio.gather(*(r.resolve() for r in fleet))
    assert {r.status for r in results} == {"default"}
    assert {r.fallback_reason for r in results} == {"upstream_error"}
    assert persona_state.requests == 1


async def test_a_failed_fetch_is_not_repeated_by_the_next_lookup_either(
    replicas: Callable[..., Replica], persona_state: FakeState
) -> None:
    """The "just failed" mark holds for new lookups too, not only for the fetcher's waiters:
    the next burst falls back at once instead of asking the failing CRM again."""
    persona_state.fail_status = 503
    a, b = replicas(), replicas()
    assert (await a.resolve()).fallback_reason == "upstream_error"
    later = await b.resolve()
    assert (later.status, later.fallback_reason) == ("default", "upstream_error")
    assert persona_state.requests == 1


async def test_deployments_with_other_prefixes_share_nothing(
    replicas: Callable[..., Replica], persona_state: FakeState, redis_url: str
) -> None:
    a, b = replicas(prefix="blue:"), replicas(prefix="green:")
    assert (await a.resolve()).status == "loaded"
    assert (await b.resolve()).status == "loaded"  # not "cached": green asks its own CRM
    assert persona_state.requests == 2
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        keys = sorted(await client.keys("*"))
    finally:
        await client.aclose()
    assert keys == [f"blue:persona:{NUMBER}", f"green:persona:{NUMBER}"]


def test_the_fetch_claim_outlives_a_whole_lookup(make_settings: Callable[..., Settings]) -> None:
    """Five attempts of 1 s with backoffs take longer than the 3 s deadline: the claim must not
    lapse mid-fetch (it was deadline + 1 s)."""
    settings = make_settings(
        PERSONA_ATTEMPTS="5", PERSONA_ATTEMPT_TIMEOUT_S="1", PERSONA_DEADLINE_S="3"
    )
    assert fetch_claim_s(settings) > 5 * 1 + 4 * 0.1


async def test_the_reconciler_lease_carries_the_prefix(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    settings = make_settings(
        PERSONA_CACHE_URL=redis_url, PERSONA_CACHE_PREFIX="blue:", RECONCILE_INTERVAL_S="2"
    )
    async with open_clients(settings) as clients:
        reconciler = build_reconciler(settings, clients)
        assert reconciler is not None
        assert clients.redis is not None
        redis = clients.redis
        task = asyncio.create_task(reconciler.run())
        try:
            await eventually(lambda: redis.exists("blue:reconciler"), 5, "the prefixed lease")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert not await redis.exists("persona-dispatcher:reconciler")


async def test_an_outage_costs_calls_nothing_and_is_logged_once_at_each_end(
    replicas: Callable[..., Replica], persona_state: FakeState, logs: LogCapture
) -> None:
    """Redis stops under a replica: calls resolve from the CRM and this process's cache, never
    failing; the outage is logged once when it starts and once when Redis is back, and the
    gauge follows."""
    port = free_port()
    own = RedisServer(port, LOG_DIR / "redis-outage.log").start()
    try:
        r = replicas(f"redis://127.0.0.1:{port}/0", redis_timeout_s=PRODUCT_REDIS_TIMEOUT_S)
        assert (await r.resolve()).status == "loaded"
        assert r.metrics.persona_cache_shared_up._value.get() == 1
        own.stop()
        during = [await r.resolve() for _ in range(3)]
        assert [x.status for x in during] == ["cached"] * 3  # this process's own cache
        assert r.store.state() == "shared_unavailable"
        assert r.metrics.persona_cache_shared_up._value.get() == 0
        assert (await r.resolve("9000000003")).status == "loaded"  # the CRM, directly
        assert len(logs.named("persona_cache.shared_unavailable")) == 1
        own = RedisServer(port, LOG_DIR / "redis-outage.log").start()
        await asyncio.sleep(1.1)  # past the pause after a failure
        assert (await r.resolve("9000000002")).status == "loaded"
        assert r.store.state() == "shared"
        assert r.metrics.persona_cache_shared_up._value.get() == 1
        assert len(logs.named("persona_cache.shared_available")) == 1
        assert len(logs.named("persona_cache.shared_unavailable")) == 1
    finally:
        own.stop()


async def test_redis_that_never_answers_does_not_hold_a_call(
    replicas: Callable[..., Replica], persona_state: FakeState, logs: LogCapture
) -> None:
    """A Redis address that accepts connections and never answers (a hung server): each command
    gives up after its own timeout, and the call resolves from the CRM well inside its deadline."""
    with black_hole() as port:
        r = replicas(f"redis://127.0.0.1:{port}/0", redis_timeout_s=PRODUCT_REDIS_TIMEOUT_S)
        resolved = await r.resolve()
    assert (resolved.status, resolved.fallback_reason) == ("loaded", None)
    assert persona_state.requests == 1
    assert len(logs.named("persona_cache.shared_unavailable")) == 1


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A TCP port that accepts connections and never sends a byte."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


async def test_one_lease_holder_at_a_time(redis_url: str) -> None:
    clients = [aioredis.from_url(redis_url) for _ in range(2)]
    try:
        a, b = (RedisLease(c, "test:lease", 2.0, 0.5, Metrics(shared_redis=True)) for c in clients)
        assert await a.held() is True
        assert await b.held() is False
        assert await a.held() is True  # renewed by its holder
        await a.release()
        assert await b.held() is True
        assert await a.held() is False
    finally:
        for c in clients:
            await c.aclose()


async def test_without_redis_every_lease_is_held(logs: LogCapture) -> None:
    client = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    try:
        lease = RedisLease(client, "test:lease", 2.0, 0.5, Metrics(shared_redis=True))
        assert await lease.held() is True
        assert await lease.held() is True
        assert len(logs.named("lease.unreachable")) == 1
    finally:
        await client.aclose()


async def test_readiness_and_metrics_show_which_cache_serves(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    fake_lk: FakeLiveKit,
    redis_url: str,
    logs: LogCapture,
) -> None:
    """With PERSONA_CACHE_URL the service is ready on the shared cache; when Redis stops
    answering it stays ready (calls still work), says `shared_unavailable`, and the gauge is 0."""
    up = await aiohttp_client(create_app(make_settings(PERSONA_CACHE_URL=redis_url)))
    assert (await (await up.get("/readyz")).json())["persona_cache"] == "shared"

    down = await aiohttp_client(
        create_app(make_settings(PERSONA_CACHE_URL=f"redis://127.0.0.1:{free_port()}/0"))
    )
    fake_lk.add_room("call_1")
    _, answer = await post(down, participant_joined("call_1", number=NUMBER))
    assert answer["status"] == "dispatched"
    ready = await down.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["persona_cache"] == "shared_unavailable"
    text = await (await down.get("/metrics")).text()
    assert "persona_dispatcher_persona_cache_shared_up 0.0" in text
