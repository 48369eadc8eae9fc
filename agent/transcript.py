"""The call transcript: JSON lines (persona applied, turns, tool calls, end of call) per session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
from livekit.agents import llm
from livekit.agents.voice import AgentSession
from livekit.agents.voice.events import (
    CloseEvent,
    ConversationItemAddedEvent,
    FunctionToolsExecutedEvent,
)

from contract.metadata import utc_now_iso
from telemetry.logs import get_logger, redact

log = get_logger(__name__)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON object as a line; one `write` on an O_APPEND file, so lines never mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = orjson.dumps(record, default=str) + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class TranscriptLog:
    """Appends one call's events to the transcript file, each tagged with `room` and `call_id`;
    phone numbers in every field are masked as in the logs, unless `unmasked` (LOG_UNMASKED).

    The transcript is a record of the call, never a condition of it: a write that fails (a
    read-only or full disk, a path the process may not write) is logged once per call as
    `transcript.write_failed`, and the call goes on. Without a `path` (TRANSCRIPT_FILE=false,
    the database keeps the call) nothing is written.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        room: str,
        call_id: str | None,
        unmasked: bool = False,
        region: str | None = None,
    ) -> None:
        self.path = path
        self.region = region  # the numbering plan whose numbers are masked, as in the logs
        self.room = room
        self.call_id = call_id
        self.unmasked = unmasked
        self.failed = False

    def write(self, event: str, **fields: Any) -> None:
        record = {
            "ts": utc_now_iso(),
            "event": event,
            "room": self.room,
            "call_id": self.call_id,
            **fields,
        }
        if self.path is None:
            return
        try:
            append_jsonl(self.path, record if self.unmasked else redact(record, self.region))
        except OSError as e:
            if not self.failed:
                self.failed = True
                log.warning(
                    "transcript.write_failed",
                    path=str(self.path),
                    error=f"{type(e).__name__}: {e.strerror or e}",
                    transcript_event=event,
                )

    def attach(self, session: AgentSession[Any]) -> None:
        """Record the session's turns, tool calls and its end."""
        session.on("conversation_item_added", self._on_item)
        session.on("function_tools_executed", self._on_tools)
        session.on("close", self._on_close)

    def _on_item(self, ev: ConversationItemAddedEvent) -> None:
        if (turn := turn_fields(ev)) is not None:
            self.write("turn", **turn)

    def _on_tools(self, ev: FunctionToolsExecutedEvent) -> None:
        for call in tool_call_fields(ev):
            self.write("tool.called", **call)

    def _on_close(self, ev: CloseEvent) -> None:
        self.write("call.ended", **close_fields(ev))


# What the session's events say, as the transcript file and the call's database document
# (agent/call_store.py) both record it.


def turn_fields(ev: ConversationItemAddedEvent) -> dict[str, Any] | None:
    """A spoken turn (the caller's or the agent's), or None for any other conversation item."""
    item = ev.item
    if not isinstance(item, llm.ChatMessage) or item.role not in ("user", "assistant"):
        return None
    return {"role": item.role, "text": item.text_content or "", "interrupted": item.interrupted}


def tool_call_fields(ev: FunctionToolsExecutedEvent) -> list[dict[str, Any]]:
    """Each tool the agent called in this batch, with its output."""
    outputs = {o.call_id: o for o in ev.function_call_outputs}
    calls = []
    for call in ev.function_calls:
        out = outputs.get(call.call_id)
        calls.append(
            {
                "name": call.name,
                "arguments": call.arguments,
                "output": out.output if out is not None else None,
                "is_error": out.is_error if out is not None else False,
            }
        )
    return calls


def close_fields(ev: CloseEvent) -> dict[str, Any]:
    """How the session ended."""
    return {
        "reason": ev.reason.value,
        "error": str(ev.error.error) if ev.error is not None else None,
    }
