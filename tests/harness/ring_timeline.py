"""Where a SIP call's ring time goes: each call's milestones from INVITE to 200 OK, read from sipp's
own timings and the services' JSON logs (livekit-sip, livekit-server, the dispatcher).

sipp logs its millisecond clock at INVITE and at 200 OK; livekit-sip logs the wall time it took
each INVITE (`processing invite`, with the SIP Call-ID) and names the call's room; livekit-server
logs the SIP participant becoming active, the job assigned to a worker, the agent becoming active
and its audio track published; the dispatcher logs the webhooks it received (and those it
ignored) and its set-up done.
sipp's clock is mapped to wall time by the call whose INVITE livekit-sip took soonest after
sipp sent it, so INVITE and 200 OK carry the loopback's delay (well under a millisecond quiet).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from devstack.logs import read_json_lines
from tests.harness.sipp import CallTiming
from tests.harness.timings import percentile

# In call order for ours; the floor has no webhook and no set-up. Each is a wall time.
MILESTONES = (
    "invite",  # sipp sent the INVITE
    "sip_joined",  # livekit-server: the SIP participant is active (participant_joined fires)
    "webhook",  # dispatcher: the first webhook of the room it acted on
    "setup_done",  # dispatcher: persona written, dispatch created
    "job_assigned",  # livekit-server: job assigned to a worker
    "agent_connected",  # livekit-server: the agent participant is active
    "agent_audio",  # livekit-server: the agent's audio track published
    "answered",  # sipp received the 200 OK
    "first_word",  # the agent's first audible RTP reached the caller (bench.first_word only)
)


@dataclass
class CallTimeline:
    """One call: its SIP Call-ID, room, and the wall time of each milestone it reached."""

    caller: str
    sip_call_id: str
    ring_ms: float | None
    room: str | None = None
    at: dict[str, float] = field(default_factory=dict)

    def since_invite_ms(self, milestone: str) -> float | None:
        if "invite" not in self.at or milestone not in self.at:
            return None
        return (self.at[milestone] - self.at["invite"]) * 1000

    def between_ms(self, first: str, second: str) -> float | None:
        if first not in self.at or second not in self.at:
            return None
        return (self.at[second] - self.at[first]) * 1000


def iso_ts(value: str) -> float:
    """An ISO-8601 timestamp (as our services log it) as epoch seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _first(index: dict[str, float], key: str, ts: float) -> None:
    if key not in index or ts < index[key]:
        index[key] = ts


@dataclass
class ServiceLogs:
    """The log files a run's services wrote; the dispatcher's is absent for the floor."""

    livekit_sip: Path
    livekit_server: Path
    dispatcher: Path | None = None


def call_timelines(calls: Sequence[CallTiming], logs: ServiceLogs) -> list[CallTimeline]:
    """Each of sipp's `calls` with its milestones (those the logs show)."""
    sip = read_json_lines(logs.livekit_sip)
    invites: dict[str, float] = {}
    rooms: dict[str, str] = {}
    for r in sip:
        call_id = r.get("sipCallID")
        if not isinstance(call_id, str):
            continue
        if r.get("msg") == "processing invite":
            _first(invites, call_id, float(r["ts"]))
        if isinstance(r.get("room"), str) and call_id not in rooms:
            rooms[call_id] = r["room"]
    wanted = {rooms[c.call_id] for c in calls if c.call_id in rooms}
    server = _server_milestones(read_json_lines(logs.livekit_server), wanted)
    dispatcher = (
        _dispatcher_milestones(read_json_lines(logs.dispatcher), wanted)
        if logs.dispatcher is not None
        else {}
    )
    # sipp's clock starts when sipp does: place it on the wall clock by the smallest gap
    # between an INVITE leaving sipp and livekit-sip taking it.
    offsets = [invites[c.call_id] - c.invite_ms / 1000 for c in calls if c.call_id in invites]
    offset = min(offsets) if offsets else None
    timelines = []
    for c in calls:
        t = CallTimeline(c.caller, c.call_id, c.ring_ms, rooms.get(c.call_id))
        if offset is not None:
            t.at["invite"] = offset + c.invite_ms / 1000
            if c.answered_ms is not None:
                t.at["answered"] = offset + c.answered_ms / 1000
        if t.room is not None:
            t.at.update(server.get(t.room, {}))
            t.at.update(dispatcher.get(t.room, {}))
        timelines.append(t)
    return timelines


def _server_milestones(
    records: Iterable[dict[str, Any]], rooms: set[str]
) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    agents: dict[str, str] = {}  # agent identity -> room
    for r in records:
        room = r.get("room")
        if not isinstance(room, str) or room not in rooms:
            continue
        at = found.setdefault(room, {})
        msg, ts, who = r.get("msg"), float(r["ts"]), str(r.get("participant", ""))
        if msg == "assigned job to worker":
            _first(at, "job_assigned", ts)
            agents[f"agent-{r.get('jobID')}"] = room
        elif msg == "participant active" and who.startswith("sip_"):
            _first(at, "sip_joined", ts)
        elif msg == "participant active" and agents.get(who) == room:
            _first(at, "agent_connected", ts)
        elif msg == "mediaTrack published" and agents.get(who) == room:
            _first(at, "agent_audio", ts)
    return found


def _dispatcher_milestones(
    records: Iterable[dict[str, Any]], rooms: set[str]
) -> dict[str, dict[str, float]]:
    """`webhook`: the first webhook of the room the dispatcher acted on (one it ignored, such
    as `room_started` when set-ups start on the SIP join, does not count)."""
    found: dict[str, dict[str, float]] = {}
    received: list[tuple[str, str, float]] = []  # room, event id, when
    ignored: set[str] = set()  # event ids
    for r in records:
        room = r.get("room")
        if not isinstance(room, str) or room not in rooms or "ts" not in r:
            continue
        event = r.get("event")
        if event == "webhook.received":
            received.append((room, str(r.get("event_id")), iso_ts(r["ts"])))
        elif event == "webhook.ignored":
            ignored.add(str(r.get("event_id")))
        elif event == "call.setup_done":
            _first(found.setdefault(room, {}), "setup_done", iso_ts(r["ts"]))
    for room, event_id, ts in received:
        if event_id not in ignored:
            _first(found.setdefault(room, {}), "webhook", ts)
    return found


@dataclass(frozen=True)
class Spread:
    p50: float
    p95: float
    n: int


def spread(values: Sequence[float | None]) -> Spread | None:
    """p50 / p95 of the values present (None where a call did not reach a milestone)."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return Spread(
        round(percentile(present, 50), 1), round(percentile(present, 95), 1), len(present)
    )


def milestone_spreads(timelines: Sequence[CallTimeline]) -> dict[str, Spread]:
    """For each milestone after the INVITE: p50 / p95 of its time since the INVITE (ms)."""
    result = {}
    for m in MILESTONES[1:]:
        s = spread([t.since_invite_ms(m) for t in timelines])
        if s is not None:
            result[m] = s
    return result


def part_spreads(timelines: Sequence[CallTimeline]) -> dict[str, Spread]:
    """p50 / p95 of each part: from one milestone to the next one the call reached."""
    result: dict[str, list[float | None]] = {}
    for t in timelines:
        reached = [m for m in MILESTONES if m in t.at]
        for first, second in itertools.pairwise(reached):
            result.setdefault(f"{first}->{second}", []).append(t.between_ms(first, second))
    spreads = {k: spread(v) for k, v in result.items()}
    order = {m: i for i, m in enumerate(MILESTONES)}
    return {
        k: s
        for k, s in sorted(spreads.items(), key=lambda kv: order[kv[0].split("->")[0]])
        if s is not None
    }
