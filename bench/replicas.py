"""Scaling out on one machine: set-ups per second through HAProxy with 1, 2 and 4 dispatcher
replicas (shared persona cache in Redis), CRM requests per call with and without the shared
cache, and each replica's memory.

Throughput: N signed `participant_joined` webhooks (rooms created first, persona cache warm) at
concurrency C, posted to the balancer as livekit-server would. CRM requests: a cold start, calls
from K numbers spread over the replicas, each number called `--repeat` times, the CRM answering
in 50 ms; without the shared cache each replica asks the CRM on its own.

Usage: .venv/bin/python -m bench.replicas [-n 1000] [-c 20] [--replicas 1,2,4]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from pathlib import Path

import aiohttp
from livekit import api
from redis import asyncio as aioredis

from bench.setup_latency import (
    Webhook,
    create_rooms,
    post_webhook,
    rss_mib,
    run_concurrently,
    signed,
)
from devstack.processes import ManagedProcess, free_port
from devstack.services import (
    LiveKitServer,
    LoadBalancer,
    dispatcher_process,
    start_livekit_server,
    start_load_balancer,
    start_redis,
)
from provisioning.load_balancer import Backend
from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET
from tests.harness.fake_persona_api import start_fake_persona_api
from tests.harness.stack import persona_control, persona_stats
from tests.harness.timings import percentile


def fleet_env(livekit: LiveKitServer, persona_url: str, cache_url: str | None) -> dict[str, str]:
    env = {
        "LIVEKIT_URL": livekit.ws_url,
        "LIVEKIT_API_KEY": DEV_API_KEY,
        "LIVEKIT_API_SECRET": DEV_API_SECRET,
        "PERSONA_API_BASE": persona_url,
        "RECONCILE_INTERVAL_S": "0",  # the benchmark measures set-ups, not passes
        "LOG_LEVEL": "warning",
    }
    if cache_url:
        env["PERSONA_CACHE_URL"] = cache_url
    return env


async def post_all(
    url: str, webhooks: list[Webhook], concurrency: int
) -> tuple[list[float], float]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency * 2)) as http:

        async def post(i: int) -> None:
            await post_webhook(http, url, webhooks[i])

        return await run_concurrently(len(webhooks), concurrency, post)


async def run_fleet(
    livekit: LiveKitServer,
    lk: api.LiveKitAPI,
    replicas: int,
    env: dict[str, str],
    log_dir: Path,
    work: list[tuple[str, list[str], int]],
    concurrency: int,
) -> list[tuple[str, list[float], float, list[float]]]:
    """Start `replicas` dispatchers behind HAProxy, post each batch of `work` (label, numbers,
    count), stop them; per batch its latencies, wall time and the replicas' RSS after it."""
    ports = [free_port() for _ in range(replicas)]
    fleet: list[ManagedProcess] = []
    balancer: LoadBalancer | None = None
    results = []
    try:
        for i, port in enumerate(ports):
            fleet.append(dispatcher_process(port, env, log_dir / f"dispatcher-{i}.log").start())
        # After the replicas answer: HAProxy then counts them up from its first check, and
        # does not turn the first webhooks away while it notices them.
        balancer = start_load_balancer(
            [Backend(f"d{i}", "127.0.0.1", p) for i, p in enumerate(ports)],
            log_path=log_dir / "haproxy.log",
        )
        url = balancer.url + "/webhooks/livekit"
        for label, numbers, count in work:
            rooms = [f"{label}_{uuid.uuid4().hex[:8]}" for _ in range(count)]
            await create_rooms(lk, rooms)
            webhooks = [signed(r, numbers[i % len(numbers)]) for i, r in enumerate(rooms)]
            latencies, wall = await post_all(url, webhooks, concurrency)
            results.append((label, latencies, wall, [rss_mib(d.pid) for d in fleet]))
    finally:
        for d in fleet:
            d.stop()
        if balancer is not None:
            balancer.stop()
    return results


async def bench(n: int, c: int, sizes: list[int], numbers: int, repeat: int) -> None:
    log_dir = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    livekit = start_livekit_server(log_path=log_dir / "livekit-server.log")
    redis = start_redis(log_path=log_dir / "redis.log")
    persona_port = free_port()
    persona = start_fake_persona_api(persona_port, log_dir / "fake-persona-api.log")
    persona_base = f"http://127.0.0.1:{persona_port}"
    lk = api.LiveKitAPI(livekit.http_url, DEV_API_KEY, DEV_API_SECRET)
    callers = [f"90000{i:05d}" for i in range(numbers)]
    try:
        print(f"scaling out through HAProxy, N={n} webhooks at concurrency {c}, 2-core machine")
        for size in sizes:
            env = fleet_env(livekit, persona_base + "/mobile", f"redis://{redis.address}/0")
            warm = ("warm", callers, len(callers) * size)  # every replica's cache, warm
            [_, (_, latencies, wall, rss)] = await run_fleet(
                livekit, lk, size, env, log_dir, [warm, ("bench", callers, n)], c
            )
            p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
            memory = ", ".join(f"{x:.0f}" for x in rss)
            print(
                f"{size} replica(s): {n / wall:7.1f} set-ups/s  p50 {p50:6.1f} ms  "
                f"p95 {p95:6.1f} ms  RSS per replica {memory} MiB"
            )
        calls = numbers * repeat
        print(f"CRM requests, cold start: {calls} calls from {numbers} numbers, CRM at 50 ms")
        for shared in (False, True):
            persona_control(persona_base, delay_s=0.05)  # also zeroes its counters
            cache = f"redis://{redis.address}/1" if shared else None
            if shared:
                await _flush(redis.port, 1)  # a cold start
            env = fleet_env(livekit, persona_base + "/mobile", cache)
            size = max(sizes)
            await run_fleet(livekit, lk, size, env, log_dir, [("crm", callers, calls)], c)
            asked = persona_stats(persona_base)["requests"]
            label = "shared cache" if shared else "own caches  "
            print(
                f"{size} replicas, {label}: {asked} CRM requests for {calls} calls = "
                f"{asked / calls:.3f} per call ({asked / numbers:.2f} per number)"
            )
    finally:
        await lk.aclose()
        persona.stop()
        redis.stop()
        livekit.stop()


async def _flush(port: int, db: int) -> None:
    client = aioredis.from_url(f"redis://127.0.0.1:{port}/{db}")
    await client.flushdb()
    await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=1000, help="webhooks per fleet size")
    parser.add_argument("-c", type=int, default=20, help="concurrency")
    parser.add_argument("--replicas", default="1,2,4")
    parser.add_argument("--numbers", type=int, default=20, help="distinct callers (CRM run)")
    parser.add_argument("--repeat", type=int, default=10, help="calls per number (CRM run)")
    args = parser.parse_args()
    asyncio.run(
        bench(args.n, args.c, [int(x) for x in args.replicas.split(",")], args.numbers, args.repeat)
    )


if __name__ == "__main__":
    main()
