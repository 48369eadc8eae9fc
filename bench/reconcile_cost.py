"""What one reconciler pass costs against a real livekit-server: LiveKit API calls, wall time and
CPU time of the event loop's thread (the rtc participants' own threads excluded), with 0, 100
and 1,000 rooms already set up.

Rooms "already set up" carry a persona written long ago, as the dispatcher writes it from a
realistic CRM reply (the fixture persona with a 150-entry FAQ and the CRM's own fields in its
`fullConfig`; about 17 KB of metadata, which every pass lists). Two kinds are measured:
- `steady`: rooms whose callers have left or are known healthy: a pass lists them once and
  parses each room's metadata; no per-room call. (Empty rooms, kept alive with a long
  `empty_timeout`, are the upper bound: a room seen healthy is skipped before its metadata is read.)
- `first look` (`--with-calls K`): K rooms with a SIP caller and an agent in them, as a freshly
  started dispatcher finds them: the first pass looks at each once (one `ListParticipants`), later
  passes at none.

Usage: .venv/bin/python -m bench.reconcile_cost [--rooms 0,100,1000] [--passes 20] [--with-calls 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from livekit import api, rtc

from bench import setup_latency
from config.settings import load_settings
from contract.metadata import PersonaMetadata, encode_room_metadata
from devstack.services import LiveKitServer, start_livekit_server
from dispatcher.persona_payload import parse_persona_payload
from dispatcher.reconciler import PassReport, Reconciler
from dispatcher.service import build_reconciler, open_clients
from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET
from telemetry.logs import configure_logging
from tests.harness.stack import participant_token

AGENT = "friday"
FIXTURE = Path(__file__).resolve().parent.parent / "tests/fixtures/personas/num_8655701159.json"


def crm_reply() -> dict[str, Any]:
    """The fixture persona as a CRM with a knowledge base and its own fields ships it."""
    data: dict[str, Any] = orjson.loads(FIXTURE.read_bytes())
    config = data["campaigns"][0]["voiceAgents"][0]["persona"]["fullConfig"]
    config["faq"] = [
        {"q": f"Question {i} about the home loan?", "a": "The answer is a short paragraph. " * 4}
        for i in range(150)
    ]
    config["crm"] = {
        "tenantId": "t_123",
        "webhookUrl": "https://crm.example/hook",
        "leadFields": {f"f{i}": "x" * 40 for i in range(100)},
    }
    return data


PERSONA = parse_persona_payload(crm_reply())


def old_persona(number: str) -> str:
    resolved = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    meta = PersonaMetadata(PERSONA, "loaded", "api", number, "caller", f"SCL_{number}", resolved)
    return encode_room_metadata("", meta, 60_000)


async def create_rooms(lk: api.LiveKitAPI, count: int, prefix: str) -> list[str]:
    """`count` rooms holding a persona written long ago, kept alive while empty."""
    names = [f"{prefix}_{i:05d}_{uuid.uuid4().hex[:6]}" for i in range(count)]
    await setup_latency.create_rooms(
        lk, names, empty_timeout=900, metadata=lambda name: old_persona(name.split("_")[1])
    )
    return names


async def join_calls(server: LiveKitServer, rooms: list[str]) -> list[rtc.Room]:
    """A SIP caller and an agent in each room, as a set-up call looks."""
    joined: list[rtc.Room] = []
    for name in rooms:
        for identity, kind in ((f"sip_{name}", "sip"), (f"agent_{name}", "agent")):
            r = rtc.Room()
            await r.connect(
                server.ws_url,
                participant_token(name, identity, kind=kind),
                rtc.RoomOptions(auto_subscribe=False),
            )
            joined.append(r)
    return joined


@asynccontextmanager
async def reconciler(server: LiveKitServer) -> AsyncIterator[Reconciler]:
    """A fresh dispatcher's reconciler, wired as the service wires it (`open_clients`,
    `build_reconciler`): the persona API off, no Redis, the reconciler's default timings."""
    settings = load_settings(
        {
            "LIVEKIT_URL": server.http_url,
            "LIVEKIT_API_KEY": DEV_API_KEY,
            "LIVEKIT_API_SECRET": DEV_API_SECRET,
            "LIVEKIT_API_TIMEOUT_S": "10",
            "PERSONA_API_BASE": "off",
            "USER_MAPPING_DIR": tempfile.mkdtemp(),
            "AGENT_NAME": AGENT,
        }
    )
    async with open_clients(settings) as clients:
        built = build_reconciler(settings, clients)
        assert built is not None  # RECONCILE_INTERVAL_S is not 0
        yield built


async def passes(r: Reconciler, count: int) -> tuple[list[PassReport], list[float]]:
    reports, cpu = [], []
    for _ in range(count):
        c0 = time.thread_time()
        reports.append(await r.reconcile())
        cpu.append(time.thread_time() - c0)
    return reports, cpu


def line(label: str, reports: list[PassReport], cpu: list[float], listed: int) -> str:
    calls = [sum(x.api_calls.values()) for x in reports]
    wall = [x.duration_s * 1000 for x in reports]
    return (
        f"{label:<26} rooms={reports[0].rooms:<5} calls/pass={statistics.mean(calls):6.1f} "
        f"(max {max(calls)})  ListRooms={listed / 1e6:6.2f} MB  "
        f"wall p50={statistics.median(wall):7.2f} ms  "
        f"cpu p50={statistics.median(cpu) * 1000:7.2f} ms  max={max(cpu) * 1000:7.2f} ms"
    )


async def list_rooms_bytes(lk: api.LiveKitAPI) -> int:
    """The size of one `ListRooms` answer, as a pass receives it."""
    listed = await lk.room.list_rooms(api.ListRoomsRequest())
    return int(listed.ByteSize())


async def run(sizes: list[int], count: int, with_calls: int) -> None:
    server = start_livekit_server(log_path=Path(tempfile.mkdtemp()) / "livekit-server.log")
    lk = api.LiveKitAPI(server.http_url, DEV_API_KEY, DEV_API_SECRET)
    joined: list[rtc.Room] = []
    try:
        size = len(old_persona("8655701159").encode())
        print(f"reconciler pass cost, {count} passes each, real livekit-server, 2-core machine")
        print(f"room metadata of a set-up room: {size:,} bytes")
        created = 0
        for size in sizes:
            created += len(await create_rooms(lk, size - created, "bench"))
            async with reconciler(server) as steady:
                reports, cpu = await passes(steady, count)
            listed = await list_rooms_bytes(lk)
            print(line(f"steady ({size} set up)", reports, cpu, listed))
        if with_calls:
            names = await create_rooms(lk, with_calls, "call")
            joined = await join_calls(server, names)
            await asyncio.sleep(6)  # livekit-server refreshes room participant counts every 5 s
            async with reconciler(server) as fresh:
                first, cpu1 = await passes(fresh, 1)
                later, cpu2 = await passes(fresh, count)
            listed = await list_rooms_bytes(lk)
            print(line(f"first look ({with_calls} calls)", first, cpu1, listed))
            print(line(f"after it ({with_calls} calls)", later, cpu2, listed))
            print("first pass calls:", orjson.dumps(first[0].api_calls).decode())
    finally:
        for r in joined:
            await r.disconnect()
        await lk.aclose()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rooms", default="0,100,1000", help="sizes, ascending")
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--with-calls", type=int, default=50)
    args = parser.parse_args()
    configure_logging("warning", "json")
    asyncio.run(run([int(x) for x in args.rooms.split(",")], args.passes, args.with_calls))


if __name__ == "__main__":
    main()
