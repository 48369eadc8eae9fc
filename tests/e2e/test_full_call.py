"""Real phone calls through the whole chain: sipp (playing Zoiper) → livekit-sip → livekit-server
(with Redis) → webhook → dispatcher → persona in room metadata → dispatch → agent worker (fake
models) → livekit-sip answers once the agent publishes audio."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from devstack.agent_worker import AgentWorker, start_agent_worker
from devstack.logs import clear_logs
from devstack.processes import ROOT
from devstack.services import RedisServer, start_redis
from tests.e2e.service_logs import records, spoken
from tests.harness.fixture_personas import MEERA, PRIYA, one_number_persona
from tests.harness.room_peer import wait_sip_participant
from tests.harness.sip_stack import SipStack, start_sip_stack
from tests.harness.sipp import TEST_CALLER, Call, SippResult, read_injection
from tests.harness.stack import Stack, eventually, start_stack
from tests.harness.timings import percentile

LOG_DIR = ROOT / "var" / "log" / "e2e"


@pytest.fixture(scope="module")
def chain(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Stack, SipStack, AgentWorker]]:
    clear_logs(LOG_DIR)
    redis: RedisServer = start_redis(log_path=LOG_DIR / "redis.log")
    stack = start_stack(
        LOG_DIR,
        tmp_path_factory.mktemp("chain"),
        redis_address=redis.address,
        dispatcher_env={"LOG_UNMASKED": "true"},
    )
    sip = start_sip_stack(LOG_DIR, redis=redis, livekit=stack.livekit)
    worker = start_agent_worker(stack.livekit, LOG_DIR, LOG_UNMASKED="true")
    yield stack, sip, worker
    worker.stop()
    sip.stop()
    stack.stop()
    redis.stop()


def tts_lines(worker: AgentWorker, room: str) -> list[str]:
    return spoken(Path(worker.env["AGENT_FAKE_LLM_LOG"]), room)


async def run_calls(
    sip: SipStack, calls: list[Call], concurrent: int, rtp_s: float
) -> tuple[SippResult, float]:
    """Run sipp; returns its result and the wall time its millisecond clock started from."""
    run = sip.sipp(calls, concurrent=concurrent, rate=20, rtp_seconds=rtp_s, timeout=240)
    started = time.time()
    run.start()
    try:
        return await asyncio.to_thread(run.wait), started
    finally:
        run.stop()


def _ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


def record_timings(
    name: str, result: SippResult, started: float, stack: Stack, worker: AgentWorker
) -> dict[str, Any]:
    """Ring time (INVITE → 200 OK) and how it splits, per call, as p50/p95 over the calls,
    appended to var/log/e2e/timings.jsonl: figures for reading, never asserted on.

    sipp's clock is mapped to wall time by its start, so the webhook and answer parts carry a
    few ms of error; the other parts are the services' own timestamps and durations.
    """
    hooks = {
        e["room"]: e
        for e in records(stack.dispatcher_log, "webhook.received")
        if e["participant_kind"] == "SIP" and e["event_type"] == "participant_joined"
    }
    done = {e["room"]: e for e in records(stack.dispatcher_log, "call.setup_done")}
    steps = {
        name: {e["room"]: e for e in records(stack.dispatcher_log, name)}
        for name in ("persona.resolved", "room.metadata_written", "agent.dispatched")
    }
    applied = {e["room"]: e for e in records(worker.log_path, "persona.applied")}
    parts: dict[str, list[float]] = {
        k: []
        for k in ("ring", "webhook", "persona", "metadata", "dispatch", "agent_join", "answer")
    }
    for call in result.calls:
        if call.answered_ms is None:
            continue
        invite = started + call.invite_ms / 1000
        answered = started + call.answered_ms / 1000
        room = next(
            (
                r
                for r, e in hooks.items()
                if r.split("_")[1] == call.caller and _ts(e) >= invite - 1
            ),
            None,
        )
        if room is None or room not in applied or room not in steps["agent.dispatched"]:
            continue
        parts["ring"].append(float(call.answered_ms - call.invite_ms))
        parts["webhook"].append((_ts(hooks[room]) - invite) * 1000)
        parts["persona"].append(steps["persona.resolved"][room]["duration_ms"])
        parts["metadata"].append(steps["room.metadata_written"][room]["duration_ms"])
        parts["dispatch"].append(steps["agent.dispatched"][room]["duration_ms"])
        parts["agent_join"].append((_ts(applied[room]) - _ts(done[room])) * 1000)
        parts["answer"].append((answered - _ts(applied[room])) * 1000)
    values: dict[str, Any] = {"test": name, "calls": len(parts["ring"])}
    for k, v in parts.items():
        if v:
            values[f"{k}_ms_p50"] = round(percentile(v, 50), 1)
            values[f"{k}_ms_p95"] = round(percentile(v, 95), 1)
    with (LOG_DIR / "timings.jsonl").open("a") as f:
        f.write(json.dumps(values) + "\n")
    return values


async def test_one_call_is_answered_by_the_agent_in_the_callers_persona(
    chain: tuple[Stack, SipStack, AgentWorker],
) -> None:
    stack, sip, worker = chain
    stack.persona_control()
    result, started = await run_calls(sip, [Call(TEST_CALLER, sip.trunk_number)], 1, 3.0)
    assert result.successful == 1, result.summary()
    [timing] = result.calls
    assert timing.ring_ms is not None

    setups = [e for e in records(stack.dispatcher_log, "call.setup_done") if e["dispatched"]]
    rooms = [e["room"] for e in setups if e["room"].startswith(f"call_{TEST_CALLER}_")]
    assert len(rooms) == 1
    room = rooms[0]
    resolved = [e for e in records(stack.dispatcher_log, "persona.resolved") if e["room"] == room]
    assert [(e["status"], e["persona_id"]) for e in resolved] == [("loaded", PRIYA.persona_id)]
    assert (
        len([e for e in records(stack.dispatcher_log, "agent.dispatched") if e["room"] == room])
        == 1
    )

    applied = [e for e in records(worker.log_path, "persona.applied") if e["room"] == room]
    assert [(e["status"], e["read_from"], e["persona_id"]) for e in applied] == [
        ("loaded", "job", PRIYA.persona_id)
    ]
    assert " ".join(tts_lines(worker, room)[:2]) == PRIYA.welcome

    # After the BYE: the SIP participant left, the room closed, the dispatcher holds nothing.
    released = await eventually(
        lambda: [e for e in records(stack.dispatcher_log, "room.released") if e["room"] == room],
        60,
        "room.released",
    )
    assert released[0]["held"] is True
    record_timings("one call", result, started, stack, worker)


@pytest.mark.parametrize(("mode", "concurrent"), [("concurrent", 20), ("sequential", 1)])
async def test_twenty_calls_each_get_their_own_persona(
    chain: tuple[Stack, SipStack, AgentWorker], mode: str, concurrent: int
) -> None:
    """Twenty different callers (sipp's injection file), all at once or one after the other:
    twenty answered calls, twenty dispatches, each room with its own caller's persona."""
    stack, sip, worker = chain
    calls = [Call(c.caller, sip.trunk_number) for c in read_injection()]
    numbers = [c.caller for c in calls]
    assert len(set(numbers)) == 20
    stack.persona_control(extra={n: one_number_persona(n) for n in numbers})
    result, started = await run_calls(sip, calls, concurrent, 2.0 if concurrent > 1 else 0.5)
    assert result.successful == 20, result.summary()

    rooms: dict[str, str] = {}
    for e in records(stack.dispatcher_log, "persona.resolved"):
        number = e["room"].split("_")[1]
        if number in numbers and e["persona_id"] == f"prs_{number}" and _ts(e) >= started:
            rooms[number] = e["room"]
    assert sorted(rooms) == sorted(numbers)
    dispatched = [e["room"] for e in records(stack.dispatcher_log, "agent.dispatched")]
    for number, room in rooms.items():
        assert dispatched.count(room) == 1, number
        applied = [e for e in records(worker.log_path, "persona.applied") if e["room"] == room]
        assert [e["persona_id"] for e in applied] == [f"prs_{number}"], number
        assert tts_lines(worker, room)[:1] == [f"Hello caller {number[-4:]}."], number
    record_timings(f"twenty {mode}", result, started, stack, worker)


async def test_unknown_number_is_answered_with_the_default_persona(
    chain: tuple[Stack, SipStack, AgentWorker],
) -> None:
    stack, sip, worker = chain
    stack.persona_control()
    result, _ = await run_calls(sip, [Call("9777777777", sip.trunk_number)], 1, 1.0)
    assert result.successful == 1, result.summary()
    resolved = [
        e
        for e in records(stack.dispatcher_log, "persona.resolved")
        if e["room"].startswith("call_9777777777_")
    ]
    assert [e["status"] for e in resolved] == ["default"]
    applied = [
        e for e in records(worker.log_path, "persona.applied") if e["room"] == resolved[0]["room"]
    ]
    assert [e["status"] for e in applied] == ["default"]


async def test_a_call_whose_webhook_was_lost_is_answered_by_its_persona(
    chain: tuple[Stack, SipStack, AgentWorker],
) -> None:
    """The dispatcher is down while a real call rings in, so livekit-server's webhook for it is
    lost. A dispatcher then starts on an address no webhook reaches: only its reconciler can find
    the call. The caller is answered by the agent speaking 9000000002's persona.

    (LiveKit would redeliver to the same address for about 15 s; a dispatcher on an address
    no webhook reaches is a lost webhook for certain, without waiting that out.)"""
    stack, sip, worker = chain
    stack.persona_control()
    caller = "9000000002"
    stack.dispatcher.stop()
    replacement = stack.unhooked_dispatcher(LOG_DIR / "dispatcher-unhooked.log")
    lk = sip.api()
    try:
        run = sip.sipp([Call(caller, sip.trunk_number)], rtp_seconds=1.0, timeout=120)
        invited = time.monotonic()
        run.start()
        try:
            join = await wait_sip_participant(
                lk, caller, since=invited, sip_call_id=run.call_id(1), within_s=60
            )
            replacement.start()
            result = await asyncio.to_thread(run.wait)
        finally:
            run.stop()
        assert result.successful == 1, result.summary()
        [repair] = [
            e for e in records(replacement.log_path, "call.repaired") if e["room"] == join.room
        ]
        assert repair["cause"] == "lost_webhook"
        applied = [e for e in records(worker.log_path, "persona.applied") if e["room"] == join.room]
        # tests/fixtures/personas/num_9000000002.json: its active campaign's agent is Meera.
        assert [(e["status"], e["persona_id"]) for e in applied] == [("loaded", MEERA.persona_id)]
        welcome = MEERA.welcome
        assert welcome is not None
        assert " ".join(tts_lines(worker, join.room))[: len(welcome)] == welcome
        # The stopped dispatcher, the one livekit-server sends webhooks to, never saw this call.
        seen = [e["room"] for e in records(stack.dispatcher_log, "call.caller_detected")]
        assert join.room not in seen
    finally:
        await lk.aclose()
        replacement.stop()
        stack.extra.remove(replacement)
        stack.dispatcher.start()
