"""What the persona windows cost and save, with the CRM 300 ms away (the fake CRM's delay).

1. Set-up latency (webhook -> 200, the dispatcher in process on the fake CRM and a fake LiveKit)
   for one returning caller, p50 / p95 over N calls: inside the fresh window (a cache hit),
   inside the revalidate window (`PERSONA_CACHE_TTL_S=0`: every call is served the copy and
   starts a background refresh), and "always fresh" (`PERSONA_CACHE_TTL_S=0`,
   `PERSONA_REVALIDATE_S=0`: every call waits for the CRM, as the hosted platforms do).
2. CRM requests per number per hour of steady calling with the default windows, for a CRM that
   answers 304s (ETag) and a plain one: one simulated hour on a fake clock per call rate.

Usage: .venv/bin/python -m bench.persona_freshness [-n 200] [--delay 0.3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import BaseTestServer, TestServer

from config.settings import Settings, load_settings
from contract.metadata import DEFAULT_PERSONA
from dispatcher.caller import DetectedNumber
from dispatcher.payload_parser import PayloadParser
from dispatcher.persona_api import PersonaApiClient
from dispatcher.persona_cache import PersonaCache
from dispatcher.persona_resolver import PersonaFiles, PersonaResolver
from dispatcher.persona_store import LocalPersonaStore
from dispatcher.service import cache_windows, persona_api_config, persona_limits
from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET
from telemetry.logs import configure_logging
from telemetry.metrics import Metrics
from tests.harness import fake_livekit, fake_persona_api
from tests.harness.signing import participant_joined, sign
from tests.harness.timings import percentile
from webhooks.app import create_app

NUMBER = "8655701159"
HOUR_S = 3600.0
SETTLE_S = 5.0


def settings_for(crm: BaseTestServer, lk: BaseTestServer, mapping: Path, **env: str) -> Settings:
    base = {
        "LIVEKIT_URL": str(lk.make_url("")).rstrip("/"),
        "LIVEKIT_API_KEY": DEV_API_KEY,
        "LIVEKIT_API_SECRET": DEV_API_SECRET,
        "PERSONA_API_BASE": str(crm.make_url("/mobile")),
        "USER_MAPPING_DIR": str(mapping),
        "RECONCILE_INTERVAL_S": "0",
    }
    return load_settings({**base, **env})


async def set_up_latencies(n: int, delay_s: float, **env: str) -> list[float]:
    """Webhook -> 200 of `n` calls from one returning caller (after one call that fills the
    cache), in ms."""
    state = fake_persona_api.FakeState()
    lk = fake_livekit.FakeLiveKit()
    rooms = itertools.count()
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            TestServer(fake_persona_api.make_app(state)) as crm,
            TestServer(fake_livekit.make_app(lk)) as lk_server,
        ):
            app = create_app(settings_for(crm, lk_server, Path(tmp), **env))
            async with TestServer(app) as service, aiohttp.ClientSession() as http:
                url = str(service.make_url("/webhooks/livekit"))

                async def one() -> float:
                    room = f"call_{next(rooms)}"
                    lk.add_room(room)
                    body = participant_joined(room, number=NUMBER)
                    headers = {"Authorization": sign(body)}
                    started = time.perf_counter()
                    async with http.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        assert resp.status == 200, resp.status
                    lk.rooms.pop(room)
                    return (time.perf_counter() - started) * 1000

                state.delay_s = delay_s
                await one()  # the first call fills the cache
                return [await one() for _ in range(n)]


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def requests_per_hour(
    settings: Settings, call_every_s: float, conditional: bool
) -> dict[str, Any]:
    """One simulated hour of a number calling every `call_every_s`: the CRM's 200s and 304s."""
    state = fake_persona_api.FakeState(conditional=conditional)
    clock = FakeClock()
    async with TestServer(fake_persona_api.make_app(state)) as crm:
        cfg = persona_api_config(settings)
        api = PersonaApiClient(
            type(cfg)(
                base_url=str(crm.make_url("/mobile")),
                max_bytes=cfg.max_bytes,
                attempt_timeout_s=cfg.attempt_timeout_s,
                attempts=cfg.attempts,
            )
        )
        store = LocalPersonaStore(PersonaCache(max_size=10, max_bytes=1 << 20, clock=clock))
        resolver = PersonaResolver(
            api,
            PayloadParser(persona_limits(settings)),
            store,
            PersonaFiles(Path(tempfile.gettempdir()), persona_limits(settings)),
            DEFAULT_PERSONA,
            settings.persona_deadline_s,
            Metrics(),
            cache_windows(settings),
            settings.persona_negative_ttl_s,
        )
        try:
            calls = int(HOUR_S // call_every_s)
            for _ in range(calls):
                await resolver.resolve([DetectedNumber(NUMBER, "caller", "attribute")])
                await settled(lambda: resolver.fetches_in_flight == 0)
                clock.now += call_every_s
        finally:
            await resolver.aclose()
            await api.close()
    return {"calls": calls, "requests": state.requests, "ok": state.ok, "304": state.not_modified}


async def settled(done: Callable[[], bool]) -> None:
    """Until a background refresh has finished (bounded: a hung one fails the benchmark)."""
    deadline = time.monotonic() + SETTLE_S
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("a background refresh did not finish")
        await asyncio.sleep(0.001)


def row(name: str, values: list[float]) -> str:
    return f"{name:<44} p50 {percentile(values, 50):7.1f} ms   p95 {percentile(values, 95):7.1f} ms"


async def main_async(n: int, delay_s: float) -> None:
    configure_logging("error", "json")
    print(f"set-up latency, one returning caller, CRM {delay_s * 1000:.0f} ms away, {n} calls")
    hit = await set_up_latencies(n, delay_s, PERSONA_CACHE_TTL_S="3600")
    revalidating = await set_up_latencies(n, delay_s, PERSONA_CACHE_TTL_S="0")
    always = await set_up_latencies(
        max(n // 10, 5), delay_s, PERSONA_CACHE_TTL_S="0", PERSONA_REVALIDATE_S="0"
    )
    print(row("cache hit (fresh window)", hit))
    print(row("revalidate window (served, refreshed behind)", revalidating))
    print(row("always fresh (every call waits for the CRM)", always))

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            {"USER_MAPPING_DIR": tmp, "PERSONA_API_BASE": "http://127.0.0.1:9/mobile"},
            livekit=False,
        )
    print(
        f"\nCRM requests per number per hour, default windows (fresh "
        f"{settings.persona_cache_ttl_s:g} s, revalidate {settings.persona_revalidate_s:g} s)"
    )
    for every in (5.0, 30.0, 60.0, 600.0):
        for conditional in (True, False):
            r = await requests_per_hour(settings, every, conditional)
            kind = "304-capable" if conditional else "plain      "
            print(
                f"a call every {every:>5g} s  {kind}  {r['calls']:>4} calls  "
                f"{r['requests']:>4} requests ({r['ok']} x 200 with a body, {r['304']} x 304)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=200, help="calls per latency series")
    parser.add_argument("--delay", type=float, default=0.3, help="the CRM's delay, seconds")
    args = parser.parse_args()
    asyncio.run(main_async(args.n, args.delay))


if __name__ == "__main__":
    main()
