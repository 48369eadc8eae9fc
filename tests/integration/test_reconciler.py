"""The reconciler against a real livekit-server: calls whose webhook was lost, a persona written
without its dispatch, a dispatch that never got a job, and, with webhooks working, no repair."""

from __future__ import annotations

import asyncio
import functools
import json
import math
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from livekit import api, rtc

from config.settings import load_settings
from devstack.agent_worker import AgentWorker, start_agent_worker
from devstack.logs import clear_logs, read_log_events
from devstack.processes import ROOT, ManagedProcess
from tests.harness.metrics import Samples, scrape
from tests.harness.stack import (
    Stack,
    agent_dispatches,
    eventually,
    join,
    join_sip,
    room_persona,
    start_stack,
    unique_room,
)
from tests.harness.timings import record_timings

AGENT = "repair-agent"
SIP = api.ParticipantInfo.Kind.SIP
# The session stack's dispatcher runs on the default settings.
SESSION_GRACE_S = load_settings({}, livekit=False).reconcile_grace_s
CALL_SETUP_OFF = '{"call_setup": "off"}'
LOG_DIR = ROOT / "var" / "log" / "reconciler"
# Fast passes for tests: a lost call is found within a second or two.
RECONCILE = {
    "AGENT_NAME": AGENT,
    "RECONCILE_INTERVAL_S": "0.5",
    "RECONCILE_GRACE_S": "1",
    "AGENT_JOIN_TIMEOUT_S": "3",
}


@pytest.fixture(scope="module")
def lost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """livekit-server whose webhooks reach no dispatcher; the dispatcher is started by the tests."""
    clear_logs(LOG_DIR)
    s = start_stack(
        LOG_DIR,
        tmp_path_factory.mktemp("lost"),
        dispatcher_env=RECONCILE,
        lose_webhooks=True,
        start_dispatchers=False,
    )
    yield s
    s.stop()


@pytest.fixture
def reconciling(lost: Stack) -> Stack:
    """The lost-webhook stack with its dispatcher running."""
    if not lost.dispatcher.alive():
        lost.dispatcher.start()
    return lost


@pytest.fixture
async def lk(lost: Stack) -> AsyncIterator[api.LiveKitAPI]:
    client = lost.api()
    yield client
    await client.aclose()


@pytest.fixture
async def rooms() -> AsyncIterator[list[rtc.Room]]:
    joined: list[rtc.Room] = []
    yield joined
    for r in joined:
        await r.disconnect()


def repairs(log: Any, room: str) -> list[dict[str, Any]]:
    return read_log_events(log, event="call.repaired", room=room)


def metric_values(url: str) -> Samples:
    """Every sample of the dispatcher (at `url`) `/metrics` serves now."""
    return scrape(url + "/metrics")


async def test_calls_already_ringing_when_the_dispatcher_starts_are_set_up_once(
    lost: Stack, lk: api.LiveKitAPI, rooms: list[rtc.Room]
) -> None:
    """Webhooks go nowhere; three SIP callers and one standard participant are in their rooms
    before the dispatcher starts: each caller gets its persona and exactly one dispatch, found by
    the start-up pass; the standard participant's room gets nothing, nor does a caller's room
    whose rule turned our set-up off."""
    assert not lost.dispatcher.alive()
    numbers = ["8655701159", "9000000002", "9000000003"]
    calls = {n: unique_room(n) for n in numbers}
    for n, room in calls.items():
        rooms.append(await join_sip(lost, room, n))
    plain = unique_room("9111111111")
    rooms.append(await join(lost, plain, "web_9111111111"))
    # Another route's call: its dispatch rule turned our set-up off for its rooms.
    other = unique_room("9222222222")
    await lk.room.create_room(api.CreateRoomRequest(name=other, metadata=CALL_SETUP_OFF))
    rooms.append(await join_sip(lost, other, "9222222222"))
    await asyncio.sleep(1.5)  # older than the grace period: the webhook path had its chance

    started = time.time()
    lost.dispatcher.start()
    for n, room in calls.items():
        found = await eventually(
            functools.partial(agent_dispatches, lk, room, AGENT), 30, f"{n}'s dispatch"
        )
        meta = await room_persona(lk, room)
        assert meta is not None
        assert meta.caller == n
        [repair] = await eventually(
            functools.partial(repairs, lost.dispatcher_log, room), 10, "repair"
        )
        assert repair["cause"] == "lost_webhook"
        assert repair["waited_s"] >= 1.0
        assert repair["dispatch_id"] == found[0].id
        record_timings(
            LOG_DIR,
            "lost webhook at start-up",
            room=room,
            repair_delay_s=round(found[0].state.created_at / 1e9 - started, 3),
            waited_s=repair["waited_s"],
        )

    await asyncio.sleep(2)  # several more passes: nothing else happens
    for n, room in calls.items():
        assert len(await agent_dispatches(lk, room, AGENT)) == 1, n
        assert len(repairs(lost.dispatcher_log, room)) == 1, n
    assert await room_persona(lk, plain) is None
    assert await agent_dispatches(lk, plain, AGENT) == []
    [other_room] = (await lk.room.list_rooms(api.ListRoomsRequest(names=[other]))).rooms
    assert other_room.metadata == CALL_SETUP_OFF  # no persona written
    assert await agent_dispatches(lk, other, AGENT) == []
    values = metric_values(lost.dispatcher_url)
    assert values[("persona_dispatcher_repairs_total", (("cause", "lost_webhook"),))] == 3
    setups = (
        "persona_dispatcher_setups_total",
        (("path", "reconciler"), ("source", "api"), ("status", "loaded")),
    )
    assert values[setups] == 3


async def test_a_persona_without_its_dispatch_gets_the_dispatch_and_keeps_the_other_keys(
    reconciling: Stack, lk: api.LiveKitAPI, rooms: list[rtc.Room]
) -> None:
    """A crash between writing the persona and creating the dispatch: the reconciler creates the
    dispatch; the persona and another component's key stay as they were."""
    room = unique_room("9000000002")
    resolved = (datetime.now(UTC) - timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    persona = {
        "version": 1,
        "status": "loaded",
        "source": "api",
        "caller": "9000000002",
        "lookup": "caller",
        "call_id": "SCL_crashed",
        "persona_id": "prs_crash",
        "name": "Left Behind",
        "instructions": "You were written just before a crash.",
        "welcome": "Hello from before the crash.",
        "closing": None,
        "voice": None,
        "language": None,
        "config": {},
        "resolved_at": resolved,
    }
    metadata = json.dumps({"crm": {"ticket": 42}, "persona": persona})
    await lk.room.create_room(api.CreateRoomRequest(name=room, metadata=metadata))
    rooms.append(await join_sip(reconciling, room, "9000000002"))

    [dispatch] = await eventually(lambda: agent_dispatches(lk, room, AGENT), 30, "the dispatch")
    [repair] = await eventually(lambda: repairs(reconciling.dispatcher_log, room), 10, "repair")
    assert repair["cause"] == "no_dispatch"
    assert repair["dispatch_id"] == dispatch.id
    listed = await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
    kept = json.loads(listed.rooms[0].metadata)
    assert kept == {"crm": {"ticket": 42}, "persona": persona}
    await asyncio.sleep(1.5)
    assert len(await agent_dispatches(lk, room, AGENT)) == 1


async def test_a_dispatch_that_never_got_a_job_is_replaced_once_a_worker_is_there(
    reconciling: Stack, lk: api.LiveKitAPI, rooms: list[rtc.Room]
) -> None:
    """No worker is registered when the call is set up, so its dispatch gets no job (LiveKit
    does not retry it). Once a worker arrives the reconciler replaces that dispatch and the
    caller's agent joins, once."""
    room = unique_room("8655701159")
    rooms.append(await join_sip(reconciling, room, "8655701159"))
    [first] = await eventually(lambda: agent_dispatches(lk, room, AGENT), 30, "the set-up")
    assert list(first.state.jobs) == []

    worker: AgentWorker | None = None
    try:
        worker = start_agent_worker(
            reconciling.livekit, LOG_DIR, AGENT_NAME=AGENT, LOG_UNMASKED="true"
        )

        async def agents() -> list[api.ParticipantInfo]:
            listed = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
            return [p for p in listed.participants if p.kind == api.ParticipantInfo.Kind.AGENT]

        await eventually(agents, 40, "the caller's agent")
        missing = read_log_events(reconciling.dispatcher_log, event="call.agent_missing", room=room)
        assert missing
        assert missing[0]["dispatch_id"] == first.id
        fixed = [
            r for r in repairs(reconciling.dispatcher_log, room) if r["cause"] == "agent_missing"
        ]
        # Until the worker registered, each replacement was as jobless as the first.
        assert first.id in [d for r in fixed for d in r["replaced"]]
        for _ in range(10):  # a few more passes: still one agent, one dispatch
            assert len(await agents()) == 1
            await asyncio.sleep(0.5)
        live = await agent_dispatches(lk, room, AGENT)
        assert [d.id for d in live] == [fixed[-1]["dispatch_id"]]
        assert len(live[0].state.jobs) == 1
    finally:
        if worker is not None:
            worker.stop()


@pytest.fixture(scope="module")
def two_reconcilers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(
        LOG_DIR / "replicas",
        tmp_path_factory.mktemp("two-reconcilers"),
        # No worker serves AGENT here: a join timeout as short as RECONCILE's would have the
        # agent-missing repair replace a dispatch whenever the test runs slower than 3 s, which
        # is not what these replicas are checked for (one repair of each lost webhook).
        dispatcher_env={**RECONCILE, "AGENT_JOIN_TIMEOUT_S": "600"},
        replicas=2,
        lose_webhooks=True,
    )
    yield s
    s.stop()


async def test_two_replicas_reconciling_the_same_lost_calls_give_one_dispatch_each(
    two_reconcilers: Stack, rooms: list[rtc.Room]
) -> None:
    s = two_reconcilers
    lk = s.api()
    try:
        calls = [unique_room(n) for n in ("8655701159", "9000000002", "9000000003", "9444444444")]
        for room in calls:
            rooms.append(await join_sip(s, room, room.split("_")[1]))
        for room in calls:
            await eventually(functools.partial(agent_dispatches, lk, room, AGENT), 30, "a dispatch")
        await asyncio.sleep(2.5)  # both replicas pass over the rooms several times more
        logs: list[ManagedProcess] = [s.dispatcher, *s.extra]
        for room in calls:
            assert len(await agent_dispatches(lk, room, AGENT)) == 1, room
            assert sum(len(repairs(p.log_path, room)) for p in logs) == 1, room
    finally:
        await lk.aclose()


async def test_with_webhooks_working_fifty_calls_make_no_repair(
    stack: Stack, rooms: list[rtc.Room]
) -> None:
    """The session's dispatcher gets its webhooks and reconciles every 2 s: fifty calls, one
    dispatch each, and no repair of a call whose webhook came within the grace period. (On a
    loaded machine livekit-server may deliver a webhook later than that: such a call is, to the
    reconciler, one whose webhook was lost, and its repair shares the set-up.)"""
    lk = stack.api()
    url = stack.dispatcher_url
    try:
        before = metric_values(url)
        offset = stack.dispatcher_log.stat().st_size
        calls = [unique_room(f"90000{i:05d}") for i in range(50)]
        for room in calls:
            rooms.append(await join_sip(stack, room, room.split("_")[1]))
        for room in calls:
            await eventually(
                functools.partial(agent_dispatches, lk, room, "friday"), 60, "a dispatch"
            )
        await asyncio.sleep(7)  # past the grace period, over several passes
        lags = {room: await webhook_lag_s(lk, stack.dispatcher_log, offset, room) for room in calls}
        # The reconciler rounds a caller's wait to 0.1 s before comparing it with the grace.
        late = {room for room, lag in lags.items() if lag >= SESSION_GRACE_S - 0.05}
        record_timings(
            stack.dispatcher_log.parent,
            "fifty_calls_webhook_lag",
            late=len(late),
            max_lag_s=round(max(lags.values()), 2),
        )
        repaired = set()
        for room in calls:
            assert len(await agent_dispatches(lk, room, "friday")) == 1, room
            if read_log_events(stack.dispatcher_log, offset, event="call.repaired", room=room):
                repaired.add(room)
        assert repaired <= late
        after = metric_values(url)
        lost = ("persona_dispatcher_repairs_total", (("cause", "lost_webhook"),))
        assert after.get(lost, 0) - before.get(lost, 0) == len(repaired)
        others = [
            k
            for k, v in after.items()
            if k[0] == "persona_dispatcher_repairs_total" and k != lost and v != before.get(k, 0)
        ]
        assert others == []
        ticks = ("persona_dispatcher_reconcile_ticks_total", (("result", "ok"),))
        assert after[ticks] > before.get(ticks, 0)
    finally:
        await lk.aclose()


async def webhook_lag_s(lk: api.LiveKitAPI, log: Path, offset: int, room: str) -> float:
    """From the SIP caller's join (LiveKit's time) to the dispatcher's receipt of the first
    webhook of the room that began its set-up (one not ignored); both clocks are this host's."""
    participants = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
    caller = next(p for p in participants.participants if p.kind == SIP)
    ignored = {e["event_id"] for e in read_log_events(log, offset, event="webhook.ignored")}
    received = [
        datetime.fromisoformat(e["ts"]).timestamp()
        for e in read_log_events(log, offset, event="webhook.received", room=room)
        if e["event_id"] not in ignored
    ]
    return min(received, default=math.inf) - caller.joined_at_ms / 1000  # inf: none came
