"""Shutdown as it happens in production: the real SIGTERM to the real `python -m webhooks`
process. It keeps listening while it drains (`/readyz` and new webhooks 503, a set-up in flight
finishes), for DRAIN_GRACE_S, then closes its port and exits cleanly. It used to close its port
at once: a balancer and LiveKit met a refused connection, never the 503."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from devstack.processes import ManagedProcess, free_port
from devstack.services import dispatcher_process
from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET
from tests.conftest import PATH
from tests.harness.fake_livekit import FakeLiveKit
from tests.harness.fake_persona_api import FakeState
from tests.harness.signing import participant_joined, sign
from tests.harness.stack import eventually

pytestmark = pytest.mark.service

GRACE_S = 2.0


@pytest.fixture
def stopped_at_the_end() -> Iterator[list[ManagedProcess]]:
    started: list[ManagedProcess] = []
    yield started
    for p in started:
        p.stop(grace_s=0)


async def status_of(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Any:
    """The answer's status (and JSON), or the connection error's name."""
    try:
        async with session.request(method, url, **kw) as resp:
            return resp.status, await resp.json()
    except aiohttp.ClientConnectionError as e:
        return type(e).__name__


async def unless_ready(session: aiohttp.ClientSession, url: str) -> Any:
    """`/readyz`'s answer once it is no longer 200 (None while it is)."""
    answer = await status_of(session, "GET", url)
    return None if isinstance(answer, tuple) and answer[0] == 200 else answer


def webhook(room: str) -> dict[str, Any]:
    body = participant_joined(room)
    headers = {"Content-Type": "application/webhook+json", "Authorization": sign(body)}
    return {"data": body, "headers": headers}


def events(process: ManagedProcess) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in process.log_text().splitlines() if line.startswith("{")]


async def test_sigterm_drains_while_listening_then_closes(
    persona_server: TestServer,
    lk_server: TestServer,
    fake_lk: FakeLiveKit,
    persona_state: FakeState,
    tmp_path: Path,
    stopped_at_the_end: list[ManagedProcess],
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "LIVEKIT_URL": str(lk_server.make_url("")).rstrip("/"),
        "LIVEKIT_API_KEY": DEV_API_KEY,
        "LIVEKIT_API_SECRET": DEV_API_SECRET,
        "PERSONA_API_BASE": str(persona_server.make_url("/mobile")),
        "USER_MAPPING_DIR": str(tmp_path),
        "RECONCILE_INTERVAL_S": "0",
        "DRAIN_GRACE_S": str(GRACE_S),
    }
    process = dispatcher_process(port, env, tmp_path / "dispatcher.log")
    stopped_at_the_end.append(process)
    await asyncio.to_thread(process.start)
    fake_lk.add_room("call_running")
    fake_lk.add_room("call_late")
    async with aiohttp.ClientSession() as session:
        assert (await status_of(session, "GET", f"{base}/readyz"))[0] == 200
        persona_state.delay_s = 1.0  # keeps this set-up running across the signal
        running = asyncio.create_task(
            status_of(session, "POST", base + PATH, **webhook("call_running"))
        )
        await eventually(lambda: persona_state.requests, 10, "the set-up to start", 0.01)

        signalled = time.monotonic()
        process.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        draining = await eventually(
            lambda: unless_ready(session, f"{base}/readyz"), 5, "/readyz to change", 0.02
        )
        assert draining == (503, {"ready": False, "reason": "draining", "persona_cache": "local"})
        late = await status_of(session, "POST", base + PATH, **webhook("call_late"))
        assert late == (503, {"error": "draining"})
        status, answer = await running
        assert (status, answer["status"]) == (200, "dispatched")
        # Still listening until the grace is over: a probe just before it ends is answered.
        while time.monotonic() - signalled < GRACE_S - 0.5:
            assert (await status_of(session, "GET", f"{base}/readyz"))[0] == 503
            await asyncio.sleep(0.1)
        assert await asyncio.to_thread(process.wait, 20) == 0
        assert await status_of(session, "GET", f"{base}/readyz") == "ClientConnectorError"
    assert len(fake_lk.agent_dispatches("call_running", "friday")) == 1
    assert fake_lk.agent_dispatches("call_late", "friday") == []
    names = [e["event"] for e in events(process)]
    order = ["service.listening", "service.stopping", "service.draining", "service.stopped"]
    assert [n for n in names if n in order] == order
    [stopping] = [e for e in events(process) if e["event"] == "service.stopping"]
    assert (stopping["signal"], stopping["drain_grace_s"]) == ("SIGTERM", GRACE_S)
