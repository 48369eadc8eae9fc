"""A call's ring time split into milestones, from sipp's clock and the services' log lines."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.harness.ring_timeline import ServiceLogs, call_timelines, part_spreads
from tests.harness.sipp import CallTiming

pytestmark = pytest.mark.unit

ROOM = "call_9000000001_abc"
T0 = 1_800_000_000.0  # livekit-sip took the INVITE


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records) + b"not json\n")
    return path


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def logs(tmp_path: Path) -> ServiceLogs:
    sip = write(
        tmp_path / "sip.log",
        [
            {"msg": "processing invite", "ts": T0, "sipCallID": "1-7@h"},
            {"msg": "Joining room", "ts": T0 + 0.005, "sipCallID": "1-7@h", "room": ROOM},
            {"msg": "processing invite", "ts": T0 + 0.5, "sipCallID": "2-7@h"},
        ],
    )
    server = write(
        tmp_path / "server.log",
        [
            {"msg": "API RoomService.ListRooms", "ts": T0, "room": [ROOM]},
            {"msg": "participant active", "ts": T0 + 0.02, "room": ROOM, "participant": "sip_9"},
            {"msg": "assigned job to worker", "ts": T0 + 0.25, "room": ROOM, "jobID": "AJ_1"},
            {
                "msg": "participant active",
                "ts": T0 + 0.30,
                "room": ROOM,
                "participant": "agent-AJ_1",
            },
            {
                "msg": "mediaTrack published",
                "ts": T0 + 0.02,  # the caller's own track: not the agent's audio
                "room": ROOM,
                "participant": "sip_9",
            },
            {
                "msg": "mediaTrack published",
                "ts": T0 + 0.35,
                "room": ROOM,
                "participant": "agent-AJ_1",
            },
        ],
    )
    dispatcher = write(
        tmp_path / "dispatcher.log",
        [
            {"event": "webhook.received", "ts": iso(T0 + 0.01), "room": ROOM, "event_id": "E1"},
            {"event": "webhook.ignored", "ts": iso(T0 + 0.01), "room": ROOM, "event_id": "E1"},
            {"event": "webhook.received", "ts": iso(T0 + 0.03), "room": ROOM, "event_id": "E2"},
            {"event": "call.setup_done", "ts": iso(T0 + 0.04), "room": ROOM, "event_id": "E2"},
        ],
    )
    return ServiceLogs(sip, server, dispatcher)


def test_each_milestone_is_placed_on_the_wall_clock_of_the_invite(logs: ServiceLogs) -> None:
    """sipp's clock (ms since it started) is mapped by the INVITE livekit-sip took soonest;
    the ignored webhook (room_started, say) does not count as the one that started the set-up."""
    calls = [
        CallTiming("9000000001", "1-7@h", invite_ms=1000, answered_ms=1360),
        CallTiming("9000000002", "2-7@h", invite_ms=1400),  # taken 100 ms late, never answered
    ]
    first, second = call_timelines(calls, logs)
    assert first.room == ROOM
    since = {m: round((t - first.at["invite"]) * 1000) for m, t in first.at.items()}
    assert since == {
        "invite": 0,
        "sip_joined": 20,
        "webhook": 30,
        "setup_done": 40,
        "job_assigned": 250,
        "agent_connected": 300,
        "agent_audio": 350,
        "answered": 360,
    }
    assert first.ring_ms == 360
    assert second.room is None
    assert set(second.at) == {"invite"}


def test_parts_run_from_each_milestone_to_the_next_one_reached(logs: ServiceLogs) -> None:
    calls = [CallTiming("9000000001", "1-7@h", invite_ms=1000, answered_ms=1360)]
    parts = part_spreads(call_timelines(calls, logs))
    assert {k: round(v.p50) for k, v in parts.items()} == {
        "invite->sip_joined": 20,
        "sip_joined->webhook": 10,
        "webhook->setup_done": 10,
        "setup_done->job_assigned": 210,
        "job_assigned->agent_connected": 50,
        "agent_connected->agent_audio": 50,
        "agent_audio->answered": 10,
    }
