"""The log inspector over logs the real services wrote during calls in this test session."""

from __future__ import annotations

import orjson
import pytest
from livekit import api

from devstack.agent_worker import AgentWorker
from devstack.logs import HOME_REGION
from operator_tools.log_inspector_cli import main as persona_logs
from telemetry.logs import redact_text
from tests.harness.stack import Stack, agent_dispatches, eventually, join_sip, unique_room


async def place_call(stack: Stack, lk: api.LiveKitAPI, worker: AgentWorker, number: str) -> str:
    room = unique_room(number)
    caller = await join_sip(stack, room, number)
    await eventually(lambda: agent_dispatches(lk, room, "friday"), 60, "a dispatch")
    await eventually(
        lambda: stack.dispatcher_events(event="call.setup_done", room=room), 60, "set-up done"
    )
    await eventually(lambda: worker.log_records(room=room), 60, "the agent")
    await caller.disconnect()
    await eventually(
        lambda: stack.dispatcher_events(event="room.released", room=room), 60, "room released"
    )
    return room


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = persona_logs(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_calls_show_and_stats_over_real_logs(
    persona_api: Stack,
    lk: api.LiveKitAPI,
    worker: AgentWorker,
    capsys: pytest.CaptureFixture[str],
) -> None:
    loaded = await place_call(persona_api, lk, worker, "9000000002")
    persona_api.persona_control(fail_status=503)
    fallback = await place_call(persona_api, lk, worker, "9555555555")
    persona_api.persona_control()
    log = str(persona_api.dispatcher_log)
    agent_log = str(worker.log_path)
    livekit_log = str(persona_api.livekit.log_path)  # foreign lines: skipped and counted

    code, out, err = run(capsys, "calls", "--json", log, agent_log, livekit_log)
    assert code == 0
    rows = {r["room"]: r for r in map(orjson.loads, out.splitlines())}
    loaded, fallback = (
        redact_text(loaded, HOME_REGION),
        redact_text(fallback, HOME_REGION),
    )  # as the logs name them
    assert [r["room"] for r in map(orjson.loads, out.splitlines())].count(loaded) == 1
    assert rows[loaded]["persona_status"] == "loaded"
    assert rows[loaded]["caller"] == "******0002"
    assert rows[loaded]["dispatched"] is True
    assert rows[loaded]["agent_joined"] is True
    assert rows[fallback]["persona_status"] == "default"
    assert rows[fallback]["errors"] >= 1
    skipped = int(err.strip().splitlines()[-1].split()[1])
    assert skipped > 0

    code, out, _ = run(capsys, "show", loaded, agent_log, log)
    assert code == 0
    lines = [line.split() for line in out.splitlines()[2:] if line.strip()]
    events = [cols[3] for cols in lines]
    services = {cols[3]: cols[1] for cols in lines}
    assert services["persona.applied"] == "agent"
    assert events.index("agent.dispatched") < events.index("persona.applied")
    for step in ("webhook.received", "persona.resolved", "agent.dispatched", "room.released"):
        assert step in events
    assert events.index("room.metadata_written") < events.index("agent.dispatched")
    offsets = [float(line.split()[0]) for line in out.splitlines()[2:] if line.strip()]
    assert offsets == sorted(offsets)

    code, out, _ = run(capsys, "stats", "--json", "--caller", "5555", log)
    assert code == 0
    stats = orjson.loads(out)
    assert stats["calls"] == 1
    assert stats["persona"] == {"default": {"default": 1}}
