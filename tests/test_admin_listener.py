"""The optional admin listener (ADMIN_HOST/ADMIN_PORT): /metrics and /readyz's detail on a port of
their own, the webhook port left with the webhook, /healthz and a /readyz that says why it is not
ready in one word, never in LiveKit's own error text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from config.settings import Settings
from devstack.processes import free_port
from tests.conftest import Client
from tests.harness.fake_livekit import FakeLiveKit
from webhooks.app import create_app

pytestmark = pytest.mark.service


async def admin_get(port: int, path: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


@pytest.fixture
async def with_admin(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> tuple[Client, int]:
    port = free_port()
    client: Client = await aiohttp_client(create_app(make_settings(ADMIN_PORT=str(port))))
    return client, port


async def test_metrics_move_to_the_admin_port(with_admin: tuple[Client, int]) -> None:
    client, port = with_admin
    assert (await client.get("/metrics")).status == 404
    status, text = await admin_get(port, "/metrics")
    assert status == 200
    assert "persona_dispatcher_" in text
    assert (await client.get("/healthz")).status == 200


async def test_public_readiness_never_echoes_livekit(
    with_admin: tuple[Client, int], fake_lk: FakeLiveKit
) -> None:
    client, port = with_admin
    fake_lk.fail["ListRooms"] = 500
    public = await client.get("/readyz")
    text = await public.text()
    assert public.status == 503
    assert (await public.json())["reason"] == "livekit"
    assert "list_rooms" not in text
    assert "HTTP" not in text
    status, detail = await admin_get(port, "/readyz")
    assert status == 503
    assert detail["reason"].startswith("livekit: list_rooms")


async def test_without_admin_port_metrics_stay_on_the_webhook_port(client: Client) -> None:
    assert (await client.get("/metrics")).status == 200
