"""What a large persona payload costs the dispatcher, and how long it holds the event loop.

Payloads shaped the way CRMs ship them and the parser renders them: many keys in `fullConfig`
(2,000, 5,000 and 20,000, up to 7.7 MiB), a big knowledge base under `faq` and under `knowledge`,
a `fullConfig` nested 240 deep (near the most orjson writes) and 1,000 deep (near the most it
reads), and 7 MiB of tiny objects (the costliest JSON to decode). For each, over `--runs` runs:

- read:    the body read by `PersonaApiClient` from a local aiohttp server, in 64 KiB chunks
- decode:  `parse_persona_body` in this process (`orjson.loads` + the parser): what the loop
           would be held for if it decoded the body itself
- parser:  `PayloadParser.parse` as the service calls it (bodies over 256 KiB go to a worker
           process), wall time
- blocked: the longest the loop's thread worked without letting a 1 ms ticker run, during
           `parser` (thread CPU time, so other processes on the machine do not count)
- encode:  the contract's `encode_room_metadata` of the persona, once per call (cache hits too)

and the persona's metadata size. Prints the median and the worst, in milliseconds.

Usage: .venv/bin/python -m bench.persona_parse [--runs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from contract.metadata import PersonaMetadata, encode_room_metadata
from dispatcher.payload_parser import PayloadParser
from dispatcher.persona_api import PersonaApiClient, PersonaApiConfig
from dispatcher.persona_payload import PersonaLimits, parse_persona_body
from tests.harness.loop_lag import LoopLag

FIXTURE = Path(__file__).resolve().parent.parent / "tests/fixtures/personas/num_8655701159.json"
MIB = 1024 * 1024
BUDGET = 60_000


def with_config(extra: Callable[[dict[str, Any]], None]) -> bytes:
    """The fixture persona with `extra` applied to its `fullConfig`."""
    data = orjson.loads(FIXTURE.read_bytes())
    extra(data["campaigns"][0]["voiceAgents"][0]["persona"]["fullConfig"])
    return orjson.dumps(data)


def many_keys(count: int) -> bytes:
    def add(config: dict[str, Any]) -> None:
        for i in range(count):
            config[f"crmField{i:05d}"] = {
                "label": f"Field {i}",
                "value": "lorem ipsum dolor sit amet " * 13,
            }

    return with_config(add)


def knowledge_base(key: str, entries: int) -> bytes:
    def add(config: dict[str, Any]) -> None:
        config[key] = [
            {"q": f"What about case {i}?", "a": "Here is the answer, in two sentences. " * 4}
            for i in range(entries)
        ]

    return with_config(add)


def hole(value: bytes) -> bytes:
    """The fixture with `value` as its `fullConfig.rules`."""
    return with_config(lambda c: c.update(rules="HOLE")).replace(b'"HOLE"', value)


def deep(levels: int) -> bytes:
    return hole(b"[" * levels + b'"deep"' + b"]" * levels)


def tiny_objects(size: int) -> bytes:
    return hole(b"[" + b",".join([b"{}"] * (size // 3)) + b"]")


SHAPES: tuple[tuple[str, Callable[[], bytes]], ...] = (
    ("2k keys", lambda: many_keys(2_000)),
    ("5k keys", lambda: many_keys(5_000)),
    ("20k keys", lambda: many_keys(20_000)),
    ("faq 20k Q&A", lambda: knowledge_base("faq", 20_000)),
    ("knowledge 40k", lambda: knowledge_base("knowledge", 40_000)),
    ("240 deep", lambda: deep(240)),
    ("1000 deep", lambda: deep(1000)),
    ("7 MiB of {}", lambda: tiny_objects(7 * MIB)),
)


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


async def parser_times(
    parser: PayloadParser, body: bytes, runs: int
) -> tuple[list[float], list[float]]:
    wall, blocked = [], []
    for _ in range(runs):
        async with LoopLag() as lag:
            t = time.perf_counter()
            await parser.parse(body)
            wall.append((time.perf_counter() - t) * 1000)
        blocked.append(lag.max_blocked_ms)
    return wall, blocked


def timed(fn: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1000)
    return times, result


def cell(times: list[float]) -> str:
    return f"{statistics.median(times):.1f} ({max(times):.1f})"


async def run(runs: int) -> None:
    parser = PayloadParser(PersonaLimits())
    await parser.parse(many_keys(2_000))  # the worker processes start once, not per payload
    print(
        "| payload | bytes | read | decode in place | parser (worker) | loop blocked | encode "
        "| metadata |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    try:
        for name, make in SHAPES:
            body = make()
            read = await read_times(body, runs)
            decode, persona = timed(lambda b=body: parse_persona_body(b), runs)  # type: ignore[misc]
            wall, blocked = await parser_times(parser, body, runs)
            meta = PersonaMetadata(persona, "loaded", "api", caller="8655701159")
            encode, encoded = timed(lambda m=meta: encode_room_metadata("", m, BUDGET), runs)  # type: ignore[misc]
            print(
                f"| {name} | {len(body) / MIB:.1f} MiB | {cell(read)} | {cell(decode)} "
                f"| {cell(wall)} | {cell(blocked)} | {cell(encode)} "
                f"| {len(encoded):,} B{' (truncated)' if persona.truncated else ''} |"
            )
    finally:
        await parser.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(run(args.runs))


if __name__ == "__main__":
    main()
