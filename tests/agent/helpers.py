"""Shared pieces of the agent tests (also for the dispatcher-driven tests to reuse)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from livekit import rtc

from agent.persona_agent import TransferOutcome
from contract.metadata import Persona, PersonaMetadata
from devstack.logs import read_json_lines

PIRATE = Persona(
    instructions="You are Captain Zed, a cheerful pirate who sells boat insurance.",
    persona_id="persona-pirate",
    name="Zed",
    welcome="Ahoy! Captain Zed here, how can I help ye?",
    closing="Fair winds, and goodbye!",
    voice="ash",
    language="en-IN",
)
LIBRARIAN = Persona(
    instructions="You are Maya, a quiet librarian who answers questions about opening hours.",
    persona_id="persona-librarian",
    name="Maya",
    welcome=None,
    closing="Thank you for calling the library.",
)


def contract_metadata(
    persona: Persona,
    *,
    status: str = "loaded",
    source: str = "api",
    caller: str | None = "919876543210",
    call_id: str | None = "SCL_1",
    other: dict[str, Any] | None = None,
) -> str:
    """Room metadata holding `persona` as docs/contract.md documents version 2, spelled out here
    field by field: the agent's tests must not build it with the contract module they exercise,
    or a change to its encoder would pass unnoticed. `other` keys sit beside `persona`."""
    return json.dumps(
        {
            **(other or {}),
            "persona": {
                "version": 2,
                "status": status,
                "source": source,
                "caller": caller,
                "lookup": "caller",
                "call_id": call_id,
                "persona_id": persona.persona_id,
                "name": persona.name,
                "instructions": persona.instructions,
                "welcome": persona.welcome,
                "closing": persona.closing,
                "voice": persona.voice,
                "language": persona.language,
                "truncated": False,
                "resolved_at": "2026-01-01T00:00:00.000Z",
            },
        }
    )


def contract_dispatch_metadata(caller: str | None, call_id: str | None) -> str:
    """The dispatch's own metadata as docs/contract.md documents it."""
    return json.dumps({"caller": caller, "call_id": call_id, "persona_version": 2})


def loaded(
    persona: Persona, *, caller: str = "919876543210", call_id: str = "SCL_1"
) -> PersonaMetadata:
    """Contract metadata as the dispatcher writes it for a persona fetched from the API."""
    return PersonaMetadata(
        persona=persona,
        status="loaded",
        source="api",
        caller=caller,
        call_id=call_id,
        resolved_at="2026-01-01T00:00:00.000Z",
    )


class MetadataRoom(rtc.EventEmitter[str]):
    """Stands in for `rtc.Room` where only metadata and its change event matter."""

    def __init__(self, metadata: str = "") -> None:
        super().__init__()
        self.metadata = metadata
        self.connects = 0

    async def connect(self) -> None:
        self.connects += 1

    def update(self, metadata: str) -> None:
        old, self.metadata = self.metadata, metadata
        self.emit("room_metadata_changed", old, metadata)


class RecordingCall:
    """A `CallControl` that records hang-ups and what the transcript held at that moment."""

    def __init__(self, transcript_path: Path | None = None) -> None:
        self.reasons: list[str] = []
        self.transfers: list[str] = []
        self.transfer_outcome = TransferOutcome(True, "STS_TRANSFER_SUCCESSFUL")
        self.transcript_path = transcript_path
        self.transcript_at_hang_up: list[dict[str, Any]] = []
        self.hung_up = asyncio.Event()

    async def transfer(self, to: str) -> TransferOutcome:
        """Records the target; answers `transfer_outcome` (a refused REFER when not ok)."""
        self.transfers.append(to)
        if self.transfer_outcome.ok and self.transcript_path is not None:
            self.transcript_at_hang_up = read_jsonl(self.transcript_path)
        return self.transfer_outcome

    async def hang_up(self, reason: str) -> None:
        self.reasons.append(reason)
        if self.transcript_path is not None:
            self.transcript_at_hang_up = read_jsonl(self.transcript_path)
        self.hung_up.set()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return read_json_lines(path)


async def wait_for_records(
    path: Path,
    match: Callable[[dict[str, Any]], bool],
    *,
    count: int = 1,
    within_s: float = 60.0,
) -> list[dict[str, Any]]:
    """Poll a JSON-lines file until `count` records match; fails with what it saw."""
    deadline = time.monotonic() + within_s
    while True:
        found = [r for r in read_json_lines(path) if match(r)]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            seen = read_json_lines(path)
            raise AssertionError(
                f"{count} matching records not in {path} within {within_s}s: {seen}"
            )
        await asyncio.sleep(0.05)
