"""What a large persona payload costs the dispatcher, to choose `PERSONA_MAX_BYTES` from.

A CRM may ship a knowledge base inside `fullConfig`. For payloads of 0.5, 2 and 8 MiB (the fixture
persona plus knowledge-base documents) it times, in this process:

- read:   the body read by `PersonaApiClient` from a local aiohttp server, chunked in 64 KiB pieces
- json:   `orjson.loads` of the body
- parse:  `parse_persona_payload` (the persona, `fullConfig` kept as `config`)
- encode: the contract's `encode_room_metadata` within the 60,000-byte budget (trims `config`)

and prints the median and the worst of `--runs` runs of each, in milliseconds. The event loop is
blocked for json + parse + encode; read is spread over the transfer.

Usage: .venv/bin/python -m bench.persona_parse [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from contract.metadata import PersonaMetadata, encode_room_metadata
from dispatcher.persona_api import PersonaApiClient, PersonaApiConfig
from dispatcher.persona_payload import parse_persona_payload

FIXTURE = Path(__file__).resolve().parent.parent / "tests/fixtures/personas/num_8655701159.json"
MIB = 1024 * 1024
SIZES_MIB = (0.5, 2.0, 8.0)
BUDGET = 60_000


def payload(size: int) -> bytes:
    """The fixture persona with knowledge-base documents in `fullConfig`, about `size` bytes."""
    data = orjson.loads(FIXTURE.read_bytes())
    config = data["campaigns"][0]["voiceAgents"][0]["persona"]["fullConfig"]
    doc = {
        "title": "Home loan FAQ",
        "tags": ["loan", "emi", "tenure"],
        "body": "A floating rate follows the repo rate; prepayment carries no charge. " * 12,
    }
    one = len(orjson.dumps(doc)) + 1
    config["kbDocuments"] = [doc] * max(1, (size - len(orjson.dumps(data))) // one)
    return orjson.dumps(data)


def timed(fn: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1000)
    return times, result


async def read_times(body: bytes, runs: int) -> list[float]:
    async def persona(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(body), 64 * 1024):
            await resp.write(body[i : i + 64 * 1024])
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/mobile/{number}", persona)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = PersonaApiClient(
        PersonaApiConfig(
            base_url=f"http://127.0.0.1:{port}/mobile", max_bytes=len(body), attempt_timeout_s=30
        )
    )
    times = []
    try:
        for _ in range(runs):
            t = time.perf_counter()
            await client.fetch("8655701159")
            times.append((time.perf_counter() - t) * 1000)
    finally:
        await client.close()
        await runner.cleanup()
    return times


def row(name: str, times: list[float]) -> str:
    return f"  {name:<7} median {statistics.median(times):8.2f} ms   worst {max(times):8.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    for mib in SIZES_MIB:
        body = payload(int(mib * MIB))
        read = asyncio.run(read_times(body, args.runs))
        json_ms, data = timed(functools.partial(orjson.loads, body), args.runs)
        parse_ms, persona = timed(functools.partial(parse_persona_payload, data), args.runs)
        meta = PersonaMetadata(persona=persona, status="loaded", source="api", caller="8655701159")
        encode_ms, encoded = timed(
            functools.partial(encode_room_metadata, "", meta, BUDGET), args.runs
        )
        blocked = [j + p + e for j, p, e in zip(json_ms, parse_ms, encode_ms, strict=True)]
        print(f"{len(body) / MIB:.1f} MiB payload ({len(body):,} bytes), metadata {len(encoded):,}")
        for name, times in (
            ("read", read),
            ("json", json_ms),
            ("parse", parse_ms),
            ("encode", encode_ms),
            ("blocked", blocked),
        ):
            print(row(name, times))


if __name__ == "__main__":
    main()
