"""Call set-up latency and throughput against the real livekit-server and the fake persona API.

Posts N signed `participant_joined` webhooks (rooms created first) at concurrency C to the
dispatcher (a separate process, as deployed) and prints p50/p95/p99 webhook->200 latency and
set-ups per second; then makes the same LiveKit calls directly (the floor) on fresh rooms and
prints the ratio ours/floor. The persona cache is warmed first.

Usage: .venv/bin/python -m bench.setup_latency [-n 500] [-c 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from livekit import api

from contract.metadata import Persona, PersonaMetadata, dispatch_metadata, encode_room_metadata
from devstack.processes import free_port
from devstack.services import start_dispatcher, start_livekit_server
from dispatcher.livekit_api import LiveKitRooms
from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET
from tests.harness.fake_persona_api import start_fake_persona_api
from tests.harness.signing import participant_joined, sign
from tests.harness.timings import percentile

NUMBERS = ["8655701159", "9000000002", "9000000003"]


async def run_concurrently(
    n: int, c: int, one: Callable[[int], Awaitable[None]]
) -> tuple[list[float], float]:
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            t = time.perf_counter()
            await one(i)
            latencies.append((time.perf_counter() - t) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(c)))
    return latencies, time.perf_counter() - started


async def create_rooms(
    lk: api.LiveKitAPI,
    names: list[str],
    *,
    empty_timeout: int = 300,
    metadata: Callable[[str], str] | None = None,
) -> None:
    """The rooms `names`, 20 creations at a time; `metadata(name)` for each room's metadata."""
    sem = asyncio.Semaphore(20)

    async def create(name: str) -> None:
        meta = metadata(name) if metadata else ""
        async with sem:
            await lk.room.create_room(
                api.CreateRoomRequest(name=name, empty_timeout=empty_timeout, metadata=meta)
            )

    await asyncio.gather(*(create(n) for n in names))


Webhook = tuple[str, bytes, str]  # room, body, its signature


def signed(room: str, number: str) -> Webhook:
    """A SIP caller's `participant_joined`, signed beforehand: the client's signing is not the
    dispatcher's latency."""
    body = participant_joined(room, number=number)
    return room, body, sign(body)


async def post_webhook(http: aiohttp.ClientSession, url: str, webhook: Webhook) -> Any:
    """Post one webhook; its JSON answer, or `RuntimeError` on any status but 200."""
    room, body, token = webhook
    async with http.post(url, data=body, headers={"Authorization": token}) as r:
        if r.status != 200:
            raise RuntimeError(f"{room}: HTTP {r.status} {await r.text()}")
        return await r.json()


def rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def report(label: str, latencies: list[float], wall: float) -> None:
    print(
        f"{label:<10} n={len(latencies):<5} p50={percentile(latencies, 50):7.2f} ms  "
        f"p95={percentile(latencies, 95):7.2f} ms  p99={percentile(latencies, 99):7.2f} ms  "
        f"mean={statistics.fmean(latencies):7.2f} ms  throughput={len(latencies) / wall:7.1f}/s"
    )


async def bench(n: int, c: int, log_dir: Path) -> None:
    livekit = start_livekit_server(log_path=log_dir / "livekit-server.log")
    persona_port, dispatcher_port = free_port(), free_port()
    persona = start_fake_persona_api(persona_port, log_dir / "fake-persona-api.log")
    dispatcher = start_dispatcher(
        dispatcher_port,
        {
            "LIVEKIT_URL": livekit.ws_url,
            "LIVEKIT_API_KEY": DEV_API_KEY,
            "LIVEKIT_API_SECRET": DEV_API_SECRET,
            "PERSONA_API_BASE": f"http://127.0.0.1:{persona_port}/mobile",
            "LOG_LEVEL": "warning",
        },
        log_dir / "dispatcher.log",
    )
    url = f"http://127.0.0.1:{dispatcher_port}/webhooks/livekit"
    lk = api.LiveKitAPI(livekit.http_url, DEV_API_KEY, DEV_API_SECRET)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c * 2)) as http:

            async def post(webhook: Webhook) -> None:
                answer = await post_webhook(http, url, webhook)
                if answer["status"] != "dispatched":
                    raise RuntimeError(f"{webhook[0]}: {answer}")

            warm = [f"warm_{i}" for i in range(len(NUMBERS))]
            await create_rooms(lk, warm)
            for room, number in zip(warm, NUMBERS, strict=True):
                await post(signed(room, number))  # the persona cache is warm from here on

            rss_before = rss_mib(dispatcher.pid)
            rooms = [f"bench_{i}" for i in range(n)]
            await create_rooms(lk, rooms)
            webhooks = [signed(r, NUMBERS[i % len(NUMBERS)]) for i, r in enumerate(rooms)]
            ours, ours_wall = await run_concurrently(n, c, lambda i: post(webhooks[i]))

        floor_rooms = [f"floor_{i}" for i in range(n)]
        await create_rooms(lk, floor_rooms)
        persona_meta = PersonaMetadata(
            persona=Persona(instructions="x" * 600, name="Priya", welcome="Hello"),
            status="cached",
            source="cache",
            caller="8655701159",
        )

        # The floor makes the dispatcher's calls with the dispatcher's own client (one token per
        # room), so that the ratio measures what the service adds around them.
        rooms_api = LiveKitRooms(livekit.http_url, DEV_API_KEY, DEV_API_SECRET)

        async def direct(i: int) -> None:
            room = floor_rooms[i]
            lk = rooms_api.for_room(room)
            listed = await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
            encoded = encode_room_metadata(listed.rooms[0].metadata, persona_meta, 60_000)
            await lk.room.update_room_metadata(
                api.UpdateRoomMetadataRequest(room=room, metadata=encoded)
            )
            await lk.agent_dispatch.list_dispatch(room)
            await lk.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(
                    room=room, agent_name="friday", metadata=dispatch_metadata(persona_meta)
                )
            )
            await lk.agent_dispatch.list_dispatch(room)  # the replicas' settling check

        floor, floor_wall = await run_concurrently(n, c, direct)
        await rooms_api.aclose()
        rss_after = rss_mib(dispatcher.pid)
        print(f"call set-up, N={n}, concurrency={c}, warm persona cache, 2-core machine")
        print(
            f"dispatcher RSS {rss_before:.1f} MiB warm -> {rss_after:.1f} MiB after {n} set-ups "
            f"({(rss_after - rss_before) * 1024 / n:.2f} KiB per set-up held)"
        )
        report("ours", ours, ours_wall)
        report("floor", floor, floor_wall)
        p50_ratio = percentile(ours, 50) / percentile(floor, 50)
        print(
            f"ratio ours/floor: p50 {p50_ratio:.2f}  "
            f"p95 {percentile(ours, 95) / percentile(floor, 95):.2f}  "
            f"throughput {(n / ours_wall) / (n / floor_wall):.2f}"
        )
    finally:
        await lk.aclose()
        dispatcher.stop()
        persona.stop()
        livekit.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=500, help="set-ups (webhooks) to send")
    parser.add_argument("-c", type=int, default=20, help="concurrency")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench(args.n, args.c, Path(tmp)))


if __name__ == "__main__":
    main()
