"""One call's document in MongoDB, as pure data: what each step of a call adds to it.

The document's `_id` is the job id, so every write names one document and a retried job (or a
second worker) never makes a second one. Its shape, in the order a call fills it:

- at job start (an upsert): `job_id`, `room`, `room_sid`, `agent_name`, `dispatch_id`, the
  dispatch's `caller` and `call_id`, `started_at`, and under `runs` this run of the job (a
  retried job adds a run to the same document);
- once the persona is decided: `persona` (the contract's fields exactly as the agent applied them,
  with `read_from`, `waited_ms`, `problems`) and `events` (`persona_loaded` or
  `persona_not_found`, as in the transcript file); the models (`models`);
- the caller's SIP participant: `call_id`, `caller_sip` (its number as the trunk sent it; `caller`
  is the normalised one), `dialed`; `answered_at` once it is active;
  `caller_left_at` when it leaves;
- `turns` as they happen: `{role, text, interrupted, at}`, tool calls as `{role: "tool", name,
  arguments, output, is_error, at}`;
- at the end: `ended_at`, `end` (`reason`, `error`) and `store` (this run's failed and dropped
  writes).

Only what MongoDB-compatible servers all accept: no transactions, no TTL indexes, no array in an
array, no key holding `.` or starting with `$` (the persona's own keys are made safe). Nothing
here does I/O: agent/call_store.py sends these writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.persona import SIP_CALL_ID, AppliedPersona
from telemetry.logs import redact

DOCUMENT_VERSION = 1
TURNS = "turns"
# Per run of the job (one writer): when it started and how many of its turns `turns` holds. A
# batch is pushed only onto the count it started from, so a write retried after a timeout that
# had in fact succeeded adds nothing twice.
RUNS = "runs"

# Ascending unless -1; `_id` (the job id) is indexed by every server already.
INDEXES: tuple[tuple[str, int], ...] = (
    ("call_id", 1),
    ("caller", 1),
    ("started_at", -1),
    ("persona.persona_id", 1),
)

SIP_PHONE_NUMBER = "sip.phoneNumber"
SIP_TRUNK_NUMBER = "sip.trunkPhoneNumber"
SIP_CALL_STATUS = "sip.callStatus"


def at(timestamp: float) -> datetime:
    """A Unix time as the database stores times (UTC, millisecond precision)."""
    return datetime.fromtimestamp(round(timestamp, 3), UTC)


@dataclass(frozen=True)
class Write:
    """One update of the call's document: `filter` and `update` as the driver takes them."""

    kind: str
    filter: dict[str, Any]
    update: dict[str, Any]
    upsert: bool = False


@dataclass(frozen=True)
class CallStart:
    """What a job knows of its call before it connects to the room."""

    job_id: str
    room: str
    room_sid: str
    agent_name: str
    dispatch_id: str
    caller: str | None
    call_id: str | None
    started_at: datetime


def safe_key(key: str) -> str:
    """`key` as every MongoDB-compatible server stores it: `.` and a leading `$` percent-encoded
    (`%` too, so that two keys never become one: `model.x` is `model%2Ex`)."""
    key = key.replace("%", "%25").replace(".", "%2E")
    return "%24" + key[1:] if key.startswith("$") else key


def storable(value: Any, *, in_array: bool = False) -> Any:
    """`value` with every key made safe and each array held directly in an array wrapped as
    `{"items": [...]}` (servers such as FerretDB refuse nested arrays)."""
    if isinstance(value, Mapping):
        return {safe_key(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [storable(v, in_array=True) for v in value]
        return {"items": items} if in_array else items
    return value


def masked(fields: dict[str, Any], *, unmasked: bool, region: str | None = None) -> dict[str, Any]:
    """`fields` with phone numbers masked as in the logs (`******1159`; those of `region`'s plan),
    unless `unmasked`."""
    return fields if unmasked else dict(redact(fields, region))


def _known(**fields: Any) -> dict[str, Any]:
    # A field not known yet is left out rather than written as null over a known value.
    return {k: v for k, v in fields.items() if v not in (None, "")}


def start_write(
    start: CallStart, writer: str, *, unmasked: bool, region: str | None = None
) -> Write:
    """The upsert at job start: the call leaves a trace even if it is cut before anything else."""
    fields = _known(
        v=DOCUMENT_VERSION,
        job_id=start.job_id,
        room=start.room,
        room_sid=start.room_sid,
        agent_name=start.agent_name,
        dispatch_id=start.dispatch_id,
        caller=start.caller,
        call_id=start.call_id,
    )
    return Write(
        "started",
        {"_id": start.job_id},
        {
            "$set": {
                **masked(fields, unmasked=unmasked, region=region),
                f"{RUNS}.{writer}.started_at": start.started_at,
            },
            "$setOnInsert": {"started_at": start.started_at, TURNS: []},
        },
        upsert=True,
    )


def fields_write(job_id: str, fields: dict[str, Any]) -> Write:
    """Top-level fields set on the call's document (already masked and storable)."""
    return Write("fields", {"_id": job_id}, {"$set": fields}, upsert=True)


def turns_write(job_id: str, writer: str, written: int, turns: list[dict[str, Any]]) -> Write:
    """`turns` appended, provided the document holds exactly `written` of `writer`'s turns."""
    count = f"{RUNS}.{writer}.turns"
    guard: Any = written if written else {"$exists": False}
    return Write(
        "turns",
        {"_id": job_id, count: guard},
        {"$push": {TURNS: {"$each": turns}}, "$set": {count: written + len(turns)}},
    )


def persona_fields(applied: AppliedPersona, *, event: str, when: datetime) -> dict[str, Any]:
    """The persona exactly as applied (the contract's own fields, keys made safe), and the event
    the transcript file names it by."""
    meta = applied.meta
    persona = {
        **meta.to_dict(),
        "read_from": applied.read_from,
        "waited_ms": applied.waited_ms,
        "problems": list(applied.problems),
    }
    return {
        "persona": storable(persona),
        "events": [{"event": event, "at": when, **applied.log_fields()}],
        **_known(caller=meta.caller, call_id=meta.call_id),
    }


def caller_fields(attributes: Mapping[str, str]) -> dict[str, Any]:
    """The call as the caller's SIP participant names it (its number as sent, beside the
    normalised `caller` the persona was looked up by)."""
    return _known(
        call_id=attributes.get(SIP_CALL_ID),
        caller_sip=attributes.get(SIP_PHONE_NUMBER),
        dialed=attributes.get(SIP_TRUNK_NUMBER),
    )


def is_answered(attributes: Mapping[str, str]) -> bool:
    """Whether livekit-sip has answered the call (the caller's participant is `active`)."""
    return attributes.get(SIP_CALL_STATUS) == "active"


def turn_entry(fields: dict[str, Any], when: datetime) -> dict[str, Any]:
    """A spoken turn (`role`, `text`, `interrupted`) as the document stores it."""
    return {**fields, "at": when}


def tool_entry(fields: dict[str, Any], when: datetime) -> dict[str, Any]:
    """A tool call as a turn of its own; its arguments and output stay JSON text."""
    return {"role": "tool", **fields, "at": when}


def end_fields(end: dict[str, Any], when: datetime) -> dict[str, Any]:
    """How and when the call ended."""
    return {"ended_at": when, "end": end}


def store_fields(*, failed: int, dropped: int) -> dict[str, Any]:
    """What this run of the job could not write (also in its `call_store.closed` log)."""
    return {"store": {"failed_writes": failed, "dropped_turns": dropped}}
