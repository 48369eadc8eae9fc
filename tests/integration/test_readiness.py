"""/readyz against a real livekit-server: ready only when LiveKit answers with our keys."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from config.settings import load_settings
from devstack.processes import free_port
from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET
from tests.harness.stack import Stack
from webhooks.app import create_app

WRONG_SECRET = "a-wrong-secret-that-is-long-enough-0123"


async def readyz(
    aiohttp_client: Any, url: str, secret: str, admin_port: int | None = None
) -> tuple[int, dict[str, Any]]:
    """/readyz of a dispatcher on `url` with `secret`: on the webhook port, or with `admin_port`
    on the admin listener (the whole reason)."""
    env = {
        "LIVEKIT_URL": url,
        "LIVEKIT_API_KEY": DEV_API_KEY,
        "LIVEKIT_API_SECRET": secret,
        "LIVEKIT_API_TIMEOUT_S": "2",
        "PERSONA_API_BASE": "off",
    }
    if admin_port is not None:
        env["ADMIN_PORT"] = str(admin_port)
    client = await aiohttp_client(create_app(load_settings(env)))
    if admin_port is None:
        resp = await client.get("/readyz")
        body: dict[str, Any] = await resp.json()
        return resp.status, body
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{admin_port}/readyz") as resp,
    ):
        body = await resp.json()
        return resp.status, body


async def test_ready_with_our_keys(stack: Stack, aiohttp_client: Any) -> None:
    assert await readyz(aiohttp_client, stack.livekit.ws_url, DEV_API_SECRET) == (
        200,
        {"ready": True, "persona_cache": "local"},
    )


@pytest.mark.parametrize(
    ("where", "secret", "why"),
    [
        ("server", WRONG_SECRET, "401"),  # livekit-server refuses the token
        ("ws://127.0.0.1:9", DEV_API_SECRET, "list_rooms"),  # nothing listens
    ],
    ids=["wrong-secret", "unreachable"],
)
async def test_not_ready_when_livekit_refuses_or_is_away(
    stack: Stack, aiohttp_client: Any, where: str, secret: str, why: str
) -> None:
    url = stack.livekit.ws_url if where == "server" else where
    status, body = await readyz(aiohttp_client, url, secret)
    assert status == 503
    assert body["ready"] is False
    assert body["reason"] == "livekit"  # LiveKit's own text stays off the webhook port
    status, body = await readyz(aiohttp_client, url, secret, admin_port=free_port())
    assert status == 503
    assert body["reason"].startswith("livekit: list_rooms")
    assert why in body["reason"]
