"""`persona-logs stored CALL`: a call's stored document (agent/call_record.py) read back from
MongoDB, its persona and turns as text or as JSON.

The database is named by the agent's own settings (MONGO_URI, MONGO_DATABASE, MONGO_COLLECTION).
CALL is what `show` takes for the logs (a call_id, a room name or a number suffix), or a job id.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import orjson
from pymongo import DESCENDING, MongoClient
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from config.agent_settings import CallStoreSettings
from telemetry.logs import redact_text

Document = dict[str, Any]
MAX_SHOWN = 20


class CallDocumentsError(Exception):
    """The database could not be asked (unset URI, unreachable, refused)."""


def selector_query(selector: str) -> dict[str, Any]:
    """The documents `selector` may name: its job id, call id or room (as written or as stored,
    numbers masked), or for digits, a caller whose number ends so."""
    names: list[dict[str, Any]] = [
        {"_id": selector},
        {"call_id": selector},
        {"room": {"$in": [selector, redact_text(selector)]}},
    ]
    if selector.isdigit():
        ends = {"$regex": re.escape(selector[-4:]) + "$"}
        names += [{"caller": ends}, {"caller_sip": ends}]
    return {"$or": names}


def find_calls(settings: CallStoreSettings, selector: str) -> list[Document]:
    """The stored calls `selector` names, newest first (at most MAX_SHOWN)."""
    if settings.uri is None:
        raise CallDocumentsError("MONGO_URI is not set: no database to read calls from")
    ms = round(settings.write_timeout_s * 1000)
    client: MongoClient[Document]
    try:
        with MongoClient(
            settings.uri, timeoutMS=ms, serverSelectionTimeoutMS=ms, tz_aware=True
        ) as client:
            calls: Collection[Document] = client[settings.database][settings.collection]
            newest = calls.find(selector_query(selector)).sort("started_at", DESCENDING)
            return list(newest.limit(MAX_SHOWN))
    except PyMongoError as e:
        raise CallDocumentsError(f"{settings.database}.{settings.collection}: {e}") from None


def _at(value: Any) -> str:
    return value.isoformat(timespec="milliseconds") if isinstance(value, datetime) else "-"


def _offset_ms(value: Any, start: Any) -> str:
    if isinstance(value, datetime) and isinstance(start, datetime):
        return f"{(value - start).total_seconds() * 1000:.0f}"
    return "-"


def render_call(doc: Document) -> str:
    """One stored call as text: who, when, the persona it ran with, and its turns."""
    persona = doc.get("persona") or {}
    end = doc.get("end") or {}
    started = doc.get("started_at")
    lines = [
        f"call {doc.get('call_id', '-')}  room {doc.get('room', '-')}"
        f"  caller {doc.get('caller', '-')}  dialed {doc.get('dialed', '-')}  job {doc['_id']}",
        f"  started {_at(started)}  answered {_at(doc.get('answered_at'))}"
        f"  ended {_at(doc.get('ended_at'))} ({end.get('reason', '-')})",
        f"  persona {persona.get('persona_id') or '-'} {persona.get('name') or '-'}"
        f"  status {persona.get('status', '-')}/{persona.get('source', '-')}"
        f"  read from {persona.get('read_from', '-')}"
        f"  events {','.join(e.get('event', '?') for e in doc.get('events', []))}",
        f"  instructions {persona.get('instructions', '-')!r}",
        f"  welcome {persona.get('welcome')!r}  closing {persona.get('closing')!r}",
        f"  models {orjson.dumps(doc.get('models', {})).decode()}"
        f"  store {orjson.dumps(doc.get('store', {})).decode()}",
        "  OFFSET_MS  ROLE       TEXT",
    ]
    for turn in doc.get("turns", []):
        text = turn.get("text")
        if turn.get("role") == "tool":
            text = f"{turn.get('name')}({turn.get('arguments')}) -> {turn.get('output')!r}"
        cut = " (interrupted)" if turn.get("interrupted") else ""
        lines.append(
            f"  {_offset_ms(turn.get('at'), started):>9}  {turn.get('role', '?'):<9}  {text}{cut}"
        )
    return "\n".join(lines) + "\n"


def call_json(doc: Document) -> str:
    """One stored call as a JSON line (times in ISO-8601)."""
    return orjson.dumps(doc, default=str).decode() + "\n"
