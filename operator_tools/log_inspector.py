"""Reads the dispatcher's and the agent's JSON-line logs back into calls: pure functions, no I/O.

A line is one of ours when it is a JSON object with a string `ts`, a `service` of `dispatcher`,
`agent` or `manual-dispatch` and a fixed, dotted `event` name (`persona.resolved`). Anything else
(plain text, livekit-server's own JSON, stdlib records whose `event` is free text) is foreign:
counted, skipped.

A call is keyed by `call_id` when a line carries one, else by `room`; lines of both services join
on either. Lines without `call_id` in a room used by several calls join the latest call that
started in that room at or before their timestamp.

The services mask phone numbers in every field (`call_******1159_ab12`, caller `******1159`), so
what an operator types is masked the same way before it is compared: a full number, a room name as
LiveKit named it, or the last digits of a number all find the call.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from contract.metadata import STATUSES
from contract.phone_numbers import dialable
from telemetry.logs import redact_text

# `manual-dispatch`: persona-dispatch-call runs the dispatcher's set-up and logs it alike.
SERVICES = frozenset({"dispatcher", "agent", "manual-dispatch"})
ERROR_LEVELS = frozenset({"warning", "error", "critical"})
PERSONA_STATUSES = STATUSES
END_EVENTS = frozenset({"call.ended", "room.released"})
TRANSFER_EVENTS = {"call.transferred": "done", "call.transfer_failed": "failed"}
# A room seen only in webhook lines (an ignored track event, a non-SIP room, its release) is
# not a call.
WEBHOOK_EVENTS = frozenset(
    {"webhook.received", "webhook.ignored", "webhook.rejected", "room.released"}
)
# Keys shown in a call's header rather than repeated on every timeline line.
CONTEXT_KEYS = frozenset(
    {"ts", "level", "event", "service", "room", "call_id", "caller", "event_id"}
)

_RELATIVE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The caller's number inside a room name (`call_<number>_<suffix>`, LiveKit's individual dispatch
# rule), masked (`******1159`) or not: a call whose lines name no caller is still found by it.
_ROOM_NUMBER = re.compile(r"(?<![A-Za-z0-9*])\+?(\*+\d{4}|\d{6,15})(?![A-Za-z0-9])")


@dataclass(slots=True)
class Record:
    """One of our log lines, with its timestamp parsed to epoch seconds."""

    t: float
    service: str
    level: str
    event: str
    fields: dict[str, Any]


def parse_ts(value: str) -> float:
    """ISO-8601 to epoch seconds; a timestamp without an offset is taken as UTC."""
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def parse_line(raw: bytes | str) -> Record | None:
    """The record on this line, or None when the line is malformed or foreign."""
    if raw[:1] not in (b"{", "{"):
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict:
        return None
    event = obj.get("event")
    service = obj.get("service")
    ts = obj.get("ts")
    if (
        type(event) is not str
        or type(ts) is not str
        or service not in SERVICES
        or "." not in event
        or " " in event
    ):
        return None
    try:
        t = parse_ts(ts)
    except ValueError:
        return None
    level = obj.get("level")
    return Record(t, service, level if type(level) is str else "info", event, obj)


def error_kind(rec: Record) -> str | None:
    """The kind of error this record reports (its event, with a short reason), or None."""
    event = rec.event
    if not (rec.level in ERROR_LEVELS or event.endswith("_failed") or event.endswith("rejected")):
        return None
    reason = rec.fields.get("reason")
    if type(reason) is str and 0 < len(reason) <= 40 and " " not in reason:
        return f"{event}:{reason}"
    return event


def parse_since(value: str, now: datetime) -> float:
    """`--since`: an ISO time, or a relative age such as `90s`, `10m`, `2h`, `1d`."""
    unit = _RELATIVE_UNITS.get(value[-1:])
    if unit is not None and value[:-1].isdigit():
        return (now - timedelta(seconds=int(value[:-1]) * unit)).timestamp()
    try:
        return parse_ts(value)
    except ValueError:
        raise ValueError(
            f"--since {value!r}: expected an ISO time or an age like 10m, 2h, 1d"
        ) from None


def caller_matches(caller: str | None, suffix: str) -> bool:
    """Whether a masked caller (`******1159`) can be the number ending in `suffix`."""
    if not caller:
        return False
    # A foreign caller is logged in E.164 (`+******4567`), a home one in national digits.
    visible = caller.lstrip("+*")
    if len(suffix) <= len(visible):
        return visible.endswith(suffix)
    # A typed number may carry a country code (1-3 digits) that the logged one does not.
    return suffix.endswith(visible) and len(suffix) <= len(caller) + 3


def number_in_room(room: str | None) -> str | None:
    """The (masked) number a room name carries, if any."""
    m = _ROOM_NUMBER.search(room or "")
    return m.group(1) if m else None


@dataclass(slots=True, eq=False)
class Call:
    """What the logs say about one call, folded line by line."""

    call_id: str | None
    room: str | None
    first_t: float
    caller: str | None = None
    persona_status: str | None = None
    persona_source: str | None = None
    persona_id: str | None = None
    setup_ms: float | None = None
    dispatched: bool = False
    agent_joined: bool = False
    end_reason: str | None = None
    end_t: float = math.inf
    errors: list[str] = field(default_factory=list)
    # Who answered and whether anyone did: the agent dispatched and why, what UNKNOWN_CALLER_POLICY
    # did with the caller, and a transfer to a human (`done` or `failed`).
    agent: str | None = None
    agent_reason: str | None = None
    unknown_caller: str | None = None
    transfer: str | None = None
    resolutions: int = 0
    cached_resolutions: int = 0
    cache_hit_events: int = 0
    fetched_events: int = 0
    fallback_events: int = 0
    events: int = 0
    substantive: bool = False
    lines: list[bytes | str] | None = None

    @property
    def key(self) -> str:
        return self.call_id or self.room or ""

    @property
    def ended(self) -> bool:
        return self.end_reason is not None

    def from_number(self, suffix: str) -> bool:
        """Whether the call's caller (or, without one, its room's number) ends in `suffix`."""
        return caller_matches(self.caller or number_in_room(self.room), suffix)

    def fold(self, rec: Record) -> None:
        """Update this call with one of its records."""
        f = rec.fields
        event = rec.event
        self.events += 1
        if not self.substantive and event not in WEBHOOK_EVENTS:
            self.substantive = True
        if rec.t < self.first_t:
            self.first_t = rec.t
        if self.caller is None:
            caller = f.get("caller")
            if type(caller) is str and caller:
                self.caller = caller
        if event == "persona.resolved":
            self.resolutions += 1
            status = f.get("status")
            if status == "cached":
                self.cached_resolutions += 1
            if self.resolutions == 1:  # the first resolution set the call up; it wins
                self._set_persona(f)
        elif event == "persona.applied":
            self.agent_joined = True
            if self.persona_status is None:
                self._set_persona(f)
        elif event == "agent.greeted":
            self.agent_joined = True
        elif event == "call.setup_done":
            if self.setup_ms is None:
                self.setup_ms = _number(f.get("duration_ms"))
            if f.get("dispatched") is True:
                self.dispatched = True
            self.agent = _text(f.get("agent_name")) or self.agent
            self.agent_reason = _text(f.get("agent_reason")) or self.agent_reason
        elif event == "call.unknown_caller":
            self.unknown_caller = _text(f.get("outcome"))
        elif event in TRANSFER_EVENTS:
            self.transfer = TRANSFER_EVENTS[event]
        elif event == "agent.dispatched":
            self.dispatched = True
        elif event == "persona.cache_hit":
            self.cache_hit_events += 1
        elif event == "persona.fetched":
            self.fetched_events += 1
        elif event == "persona.fallback":
            self.fallback_events += 1
        elif event in END_EVENTS and rec.t < self.end_t:
            # The earliest end by time, whichever service's log is read first.
            reason = f.get("reason")
            self.end_reason = reason if type(reason) is str and reason else event
            self.end_t = rec.t
        kind = error_kind(rec)
        if kind is not None:
            self.errors.append(kind)

    def _set_persona(self, f: Mapping[str, Any]) -> None:
        self.persona_status = _text(f.get("status"))
        self.persona_source = _text(f.get("source"))
        self.persona_id = _text(f.get("persona_id"))

    def row(self) -> dict[str, Any]:
        """The call as a plain dict, as `calls --json` prints it."""
        return {
            "start": iso(self.first_t),
            "call_id": self.call_id,
            "room": self.room,
            "caller": self.caller,
            "persona_status": self.persona_status,
            "persona_source": self.persona_source,
            "persona_id": self.persona_id,
            "setup_ms": self.setup_ms,
            "dispatched": self.dispatched,
            "agent_joined": self.agent_joined,
            "ended": self.end_reason,
            "agent": self.agent,
            "agent_reason": self.agent_reason,
            "unknown_caller": self.unknown_caller,
            "transfer": self.transfer,
            "errors": len(self.errors),
            "events": self.events,
        }


def _text(value: Any) -> str | None:
    return value if type(value) is str else None


def _number(value: Any) -> float | None:
    if type(value) in (int, float):
        return float(value)
    return None


def iso(t: float) -> str:
    """Epoch seconds as an ISO UTC time with milliseconds."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class CallFilter:
    """Which calls to keep: every set condition must hold."""

    caller: str | None = None
    status: str | None = None
    errors_only: bool = False

    @property
    def active(self) -> bool:
        return self.caller is not None or self.status is not None or self.errors_only

    def __call__(self, call: Call) -> bool:
        if self.caller is not None and not call.from_number(self.caller):
            return False
        if self.status is not None and call.persona_status != self.status:
            return False
        return not (self.errors_only and not call.errors)


class Inspector:
    """Folds log lines into calls, one line at a time; holds no file or stream."""

    def __init__(
        self,
        *,
        since: float | None = None,
        keep_lines: bool = False,
        phone_region: str | None = None,
    ) -> None:
        """`phone_region`: the services' numbering plan, by which they masked numbers (None:
        every run of digits, as the transcript and older logs)."""
        self.since = since
        self.phone_region = phone_region
        self.keep_lines = keep_lines
        self.calls: list[Call] = []
        self.skipped = 0
        self.records = 0
        self.unscoped_errors: Counter[str] = Counter()
        self._by_id: dict[str, Call] = {}
        self._by_room: dict[str, list[Call]] = {}

    def feed(self, raw: bytes | str) -> tuple[Record, Call | None] | None:
        """Fold one line in; return its record and call, or None when it was skipped."""
        rec = parse_line(raw)
        if rec is None:
            if raw.strip():
                self.skipped += 1
            return None
        if self.since is not None and rec.t < self.since:
            return None
        self.records += 1
        call = self._call_for(rec)
        if call is None:
            kind = error_kind(rec)
            if kind is not None:
                self.unscoped_errors[kind] += 1
            return rec, None
        call.fold(rec)
        if call.lines is not None:
            call.lines.append(raw)
        return rec, call

    def feed_all(self, lines: Iterable[bytes | str]) -> Inspector:
        """Fold every line in; return self for chaining."""
        feed = self.feed
        for raw in lines:
            feed(raw)
        return self

    def _call_for(self, rec: Record) -> Call | None:
        f = rec.fields
        cid = f.get("call_id")
        room = f.get("room")
        cid = str(cid) if cid not in (None, "") else None
        room = str(room) if room not in (None, "") else None
        if cid is not None:
            call = self._by_id.get(cid)
            if call is None:
                if room is not None:
                    prev = self._room_call(room, rec.t)
                    if prev is not None and prev.call_id is None:
                        prev.call_id = cid
                        call = prev
                if call is None:
                    call = self._new(cid, room, rec.t)
                self._by_id[cid] = call
            elif call.room is None and room is not None:
                call.room = room
                self._by_room.setdefault(room, []).append(call)
            return call
        if room is not None:
            return self._room_call(room, rec.t) or self._new(None, room, rec.t)
        return None

    def _room_call(self, room: str, t: float) -> Call | None:
        calls = self._by_room.get(room)
        if not calls:
            return None
        if len(calls) == 1:
            return calls[0]
        best = calls[0]
        for call in calls:
            if call.first_t <= t and call.first_t >= best.first_t:
                best = call
        return best

    def _new(self, cid: str | None, room: str | None, t: float) -> Call:
        call = Call(cid, room, t, lines=[] if self.keep_lines else None)
        self.calls.append(call)
        if room is not None:
            self._by_room.setdefault(room, []).append(call)
        return call

    def select(self, keep: CallFilter | None = None) -> list[Call]:
        """The calls (beyond mere webhooks) that pass the filter, oldest first."""
        calls = [c for c in self.calls if c.substantive and (keep is None or keep(c))]
        return sorted(calls, key=lambda c: c.first_t)

    def find(self, selector: str) -> list[Call]:
        """The calls a `show` selector names: a call_id, a room (as LiveKit named it, or as the
        logs masked it), or the digits a number ends with (up to the whole number)."""
        named = {selector, redact_text(selector, self.phone_region), redact_text(selector)}
        found = [c for c in self.calls if c.call_id in named or c.room in named]
        # A number as typed (`+65 9123 4567`, `tel:+91...`), compared by its digits.
        digits = (dialable(selector) or "").lstrip("+")
        if not found and digits:
            found = [c for c in self.calls if c.from_number(digits)]
        return sorted(found, key=lambda c: c.first_t)


def timeline(lines: Iterable[bytes | str], t0: float | None = None) -> list[dict[str, Any]]:
    """A call's events (its kept lines) by time, each with its offset in ms from `t0` (default:
    the first event)."""
    records = [rec for rec in map(parse_line, lines) if rec is not None]
    records.sort(key=lambda r: r.t)  # stable: equal timestamps keep their order in the input
    if not records:
        return []
    start = records[0].t if t0 is None else t0
    return [
        {
            "offset_ms": round((r.t - start) * 1000, 1),
            "ts": r.fields["ts"],
            "service": r.service,
            "level": r.level,
            "event": r.event,
            "fields": {k: v for k, v in r.fields.items() if k not in CONTEXT_KEYS},
        }
        for r in records
    ]


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None when there are none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def stats(calls: list[Call], unscoped_errors: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Aggregate numbers over calls; `unscoped_errors` adds errors that belong to no call.

    The cache hit rate is the share of persona resolutions (`persona.resolved` lines) whose status
    is `cached`, i.e. served from the fresh cache without asking the persona API.
    """
    setups = sorted(c.setup_ms for c in calls if c.setup_ms is not None)
    by_status: dict[str, dict[str, int]] = {}
    for c in calls:
        status = c.persona_status or "unknown"
        sources = by_status.setdefault(status, {})
        source = c.persona_source or "unknown"
        sources[source] = sources.get(source, 0) + 1
    resolutions = sum(c.resolutions for c in calls)
    cached = sum(c.cached_resolutions for c in calls)
    errors: Counter[str] = Counter()
    for c in calls:
        errors.update(c.errors)
    if unscoped_errors:
        errors.update(unscoped_errors)
    return {
        "calls": len(calls),
        "dispatched": sum(c.dispatched for c in calls),
        "agent_joined": sum(c.agent_joined for c in calls),
        "setup_ms": {
            "count": len(setups),
            "p50": percentile(setups, 50),
            "p95": percentile(setups, 95),
            "p99": percentile(setups, 99),
            "max": setups[-1] if setups else None,
        },
        "persona": {
            status: dict(sorted(sources.items()))
            for status, sources in sorted(by_status.items(), key=_status_order)
        },
        "cache": {
            "hit_rate": round(cached / resolutions, 4) if resolutions else None,
            "resolutions": resolutions,
            "cached": cached,
            "cache_hit_events": sum(c.cache_hit_events for c in calls),
            "fetched_events": sum(c.fetched_events for c in calls),
            "fallback_events": sum(c.fallback_events for c in calls),
        },
        "errors": {"total": sum(errors.values()), "by_kind": dict(errors.most_common())},
    }


def _status_order(item: tuple[str, Any]) -> tuple[int, str]:
    status = item[0]
    rank = PERSONA_STATUSES.index(status) if status in PERSONA_STATUSES else len(PERSONA_STATUSES)
    return rank, status
