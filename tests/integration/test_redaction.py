"""No full phone number in what the real services write for a real call: the dispatcher's log,
the agent worker's log and the transcript; `persona-logs` still finds the call by the number."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
from livekit import api

from devstack.agent_worker import AgentWorker
from devstack.logs import HOME_REGION, read_log_events
from operator_tools.log_inspector_cli import main as persona_logs
from telemetry.logs import redact_text
from tests.harness.fake_persona_api import FIXTURES
from tests.harness.stack import (
    Stack,
    agent_dispatches,
    eventually,
    join_sip,
    unique_number,
    unique_room,
)

FIXTURE = FIXTURES / "num_8655701159.json"


def text_of(path: Path) -> str:
    return path.read_text(errors="replace")


async def test_a_call_leaves_no_full_number_in_either_log_or_the_transcript(
    persona_api: Stack,
    lk: api.LiveKitAPI,
    worker: AgentWorker,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A room named as LiveKit's individual dispatch rule names it (`call_<number>_<suffix>`),
    a caller `sip_<number>`, and a persona from `user-mapping/num_<number>.json` (the API is
    down): every one of them carries the number, and none may reach a file in full."""
    number = unique_number()
    masked = "******" + number[-4:]
    shutil.copy(FIXTURE, persona_api.user_mapping / f"num_{number}.json")
    persona_api.persona_control(fail_status=503)
    room = unique_room(number)
    caller = await join_sip(persona_api, room, number)
    try:
        await eventually(lambda: agent_dispatches(lk, room, "friday"), 60, "a dispatch")
        transcript = Path(worker.env["TRANSCRIPT_PATH"])
        await eventually(
            lambda: read_log_events(transcript, event="turn", room=room), 60, "the greeting"
        )
    finally:
        await caller.disconnect()
    await eventually(
        lambda: persona_api.dispatcher_events(event="room.released", room=room), 60, "release"
    )
    persona_api.persona_control()

    [resolved] = persona_api.dispatcher_events(event="persona.resolved", room=room)
    # The services and the transcript mask by the numbering plan.
    assert resolved["room"] == f"call_{masked}_{room.rsplit('_', 1)[1]}"
    assert resolved["room"] == redact_text(room, HOME_REGION)
    assert (resolved["status"], resolved["caller"]) == ("file", masked)
    assert resolved["source"].endswith(f"/num_{masked}.json")
    [applied] = worker.log_records(event="persona.applied", room=room)
    assert applied["caller"] == masked
    turns = read_log_events(transcript, event="turn", room=room)
    assert turns[0]["room"] == redact_text(room, HOME_REGION)
    for path in (persona_api.dispatcher_log, worker.log_path, transcript):
        assert number not in text_of(path), path

    logs = [str(persona_api.dispatcher_log), str(worker.log_path)]
    assert persona_logs(["calls", "--json", "--caller", number, *logs]) == 0
    rows = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    [row] = [r for r in rows if r["room"] == redact_text(room, HOME_REGION)]
    assert (row["caller"], row["dispatched"], row["agent_joined"]) == (masked, True, True)
    for selector in (room, number):  # the room as LiveKit named it; the full number
        assert persona_logs(["show", "--json", selector, *logs]) == 0
        shown = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
        [ours] = [s for s in shown if s["call"]["room"] == redact_text(room, HOME_REGION)]
        services = {e["service"] for e in ours["events"]}
        assert services == {"dispatcher", "agent"}, selector
