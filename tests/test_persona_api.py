"""The persona API client reads a whole body however it arrives, and never more than its cap.

A real aiohttp server sends the body in pieces with pauses, chunked or with a Content-Length, as a
CRM behind a proxy does; a raw TCP server sends what aiohttp's server would refuse to (a
Content-Length that lies).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dispatcher.persona_api import (
    PersonaApiClient,
    PersonaApiConfig,
    PersonaUpstreamError,
)
from tests.harness.fake_persona_api import FIXTURES

pytestmark = pytest.mark.service

FIXTURE = FIXTURES / "num_8655701159.json"
KIB = 1024


def payload_of_size(size: int) -> bytes:
    """The fixture persona with a knowledge base in `fullConfig`, `size` bytes of JSON."""
    data = orjson.loads(FIXTURE.read_bytes())
    persona = data["campaigns"][0]["voiceAgents"][0]["persona"]
    persona["fullConfig"]["kbDocuments"] = ""
    filler = size - len(orjson.dumps(data))
    assert filler >= 0
    persona["fullConfig"]["kbDocuments"] = "k" * filler
    body = orjson.dumps(data)
    assert len(body) == size
    return body


def pieces(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def streaming_app(
    parts: list[bytes], pause_s: float, content_length: int | None
) -> web.Application:
    """Answers every persona request with `parts`, `pause_s` apart: chunked when
    `content_length` is None, else with that Content-Length."""

    async def persona(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        if content_length is None:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = content_length
        await resp.prepare(request)
        for i, part in enumerate(parts):
            if i:
                await asyncio.sleep(pause_s)
            await resp.write(part)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/mobile/{number}", persona)
    return app


ServeParts = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve_parts(aiohttp_server: Any) -> ServeParts:
    """Starts a streaming persona API; returns its base URL."""

    async def serve(parts: list[bytes], *, pause_s: float, content_length: int | None) -> str:
        server: TestServer = await aiohttp_server(streaming_app(parts, pause_s, content_length))
        return str(server.make_url("/mobile"))

    return serve


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[str, int], PersonaApiClient]]:
    clients: list[PersonaApiClient] = []

    def make(base_url: str, max_bytes: int) -> PersonaApiClient:
        c = PersonaApiClient(
            PersonaApiConfig(base_url=base_url, max_bytes=max_bytes, attempt_timeout_s=10)
        )
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


async def test_300_kib_persona_sent_chunked_in_64_kib_pieces_is_read_whole(
    serve_parts: ServeParts, client_for: Callable[[str, int], PersonaApiClient]
) -> None:
    body = payload_of_size(300 * KIB)
    base = await serve_parts(pieces(body, 64 * KIB), pause_s=0.05, content_length=None)
    result = await client_for(base, 512 * KIB).fetch("8655701159")
    assert result.body == body


async def test_300_kib_persona_with_content_length_in_pieces_is_read_whole(
    serve_parts: ServeParts, client_for: Callable[[str, int], PersonaApiClient]
) -> None:
    body = payload_of_size(300 * KIB)
    base = await serve_parts(pieces(body, 64 * KIB), pause_s=0.05, content_length=len(body))
    result = await client_for(base, 512 * KIB).fetch("8655701159")
    assert result.body == body


@pytest.mark.parametrize("content_length", [None, 160], ids=["chunked", "content-length"])
async def test_160_byte_persona_in_two_pieces_200_ms_apart_is_read_whole(
    serve_parts: ServeParts,
    client_for: Callable[[str, int], PersonaApiClient],
    content_length: int | None,
) -> None:
    body = orjson.dumps(
        {"campaigns": [{"voiceAgents": [{"persona": {"id": "p-160", "personality": "x" * 83}}]}]}
    )
    assert len(body) == 160
    base = await serve_parts([body[:80], body[80:]], pause_s=0.2, content_length=content_length)
    result = await client_for(base, 2 * KIB).fetch("8655701159")
    assert result.body == body


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
async def test_body_over_the_cap_is_refused(
    serve_parts: ServeParts, client_for: Callable[[str, int], PersonaApiClient], declared: bool
) -> None:
    body = payload_of_size(8 * KIB)
    base = await serve_parts(
        pieces(body, KIB), pause_s=0.01, content_length=len(body) if declared else None
    )
    with pytest.raises(PersonaUpstreamError, match="over 4096"):
        await client_for(base, 4 * KIB).fetch("8655701159")


async def raw_http_server(response: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> Any:
    """A TCP server that reads one request head and lets `response` write raw bytes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await response(writer)
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_content_length_under_the_cap_cannot_smuggle_a_larger_body(
    client_for: Callable[[str, int], PersonaApiClient],
) -> None:
    """The header claims 1 KiB; the server sends 64 KiB of persona: nothing beyond the claim is
    taken as the body, so no persona comes of it."""
    body = payload_of_size(64 * KIB)

    async def lie(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: 1024\r\n\r\n")
        for part in pieces(body, 8 * KIB):
            writer.write(part)
            await writer.drain()

    async with await raw_http_server(lie) as server:
        port = server.sockets[0].getsockname()[1]
        client = client_for(f"http://127.0.0.1:{port}/mobile", 4 * KIB)
        with pytest.raises(PersonaUpstreamError):
            await client.fetch("8655701159")


async def test_content_length_over_what_is_sent_is_refused(
    client_for: Callable[[str, int], PersonaApiClient],
) -> None:
    """The header claims more than arrives before the server closes: an error, not a hang and not
    a persona made of half a body."""
    body = payload_of_size(2 * KIB)

    async def short(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(f"Content-Length: {len(body) + 100}\r\n\r\n".encode() + body)
        await writer.drain()

    async with await raw_http_server(short) as server:
        port = server.sockets[0].getsockname()[1]
        client = client_for(f"http://127.0.0.1:{port}/mobile", 4 * KIB)
        with pytest.raises(PersonaUpstreamError):
            await client.fetch("8655701159")
