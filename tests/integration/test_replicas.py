"""Two dispatcher replicas behind one real livekit-server: it sends every webhook to both."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator

import pytest

from devstack.logs import read_log_events
from devstack.processes import ROOT
from tests.harness.stack import (
    Stack,
    agent_dispatches,
    eventually,
    join_sip,
    start_stack,
    unique_room,
)


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(
        ROOT / "var" / "log" / "replicas", tmp_path_factory.mktemp("replicas"), replicas=2
    )
    yield s
    s.stop()


def setup_events(stack: Stack, room: str) -> list[dict[str, object]]:
    events = []
    for proc in [stack.dispatcher, *stack.extra]:
        for e in read_log_events(proc.log_path, room=room):
            if e["event"] in ("call.setup_done", "call.setup_failed"):
                events.append(e)
    return events


async def test_each_call_gets_one_agent_across_replicas(two_replicas: Stack) -> None:
    lk = two_replicas.api()
    rooms = [unique_room(n) for n in ("8655701159", "9000000002", "9000000003")]
    callers = await asyncio.gather(*(join_sip(two_replicas, r, r.split("_")[1]) for r in rooms))
    try:
        for room in rooms:
            # both replicas answered: one dispatched, the other found or settled on it
            answered = functools.partial(setup_events, two_replicas, room)
            await eventually(lambda: len(answered()) >= 2, 60, "both replicas")  # noqa: B023
            events = setup_events(two_replicas, room)
            assert [e["event"] for e in events] == ["call.setup_done"] * 2
            await asyncio.sleep(0.3)
            assert len(await agent_dispatches(lk, room, "friday")) == 1
    finally:
        await asyncio.gather(*(c.disconnect() for c in callers))
        await lk.aclose()
