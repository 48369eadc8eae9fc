"""How the agent decides a call's persona from room metadata (no LiveKit server)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import orjson
import pytest
from livekit import rtc

from agent.persona import AppliedPersona, resolve_persona, with_call_id
from contract.metadata import DEFAULT_PERSONA, parse_dispatch_metadata
from tests.agent.helpers import PIRATE, MetadataRoom, contract_metadata, loaded

pytestmark = pytest.mark.unit

# Room metadata as docs/contract.md documents it (another component's key beside ours), not as the
# contract module encodes it: the agent's reading is tested against the documented contract.
PIRATE_METADATA = contract_metadata(PIRATE, other={"other": 1})


async def test_persona_in_job_metadata_is_used_without_waiting() -> None:
    room = MetadataRoom()
    applied = await resolve_persona(
        job_room_metadata=PIRATE_METADATA, room=room, connect=room.connect, wait_s=5
    )
    assert applied.meta.persona == PIRATE
    assert (applied.read_from, applied.waited_ms, applied.meta.status) == ("job", 0, "loaded")
    assert room.connects == 1


async def test_persona_in_connected_room_is_used_when_job_copy_lacks_it() -> None:
    room = MetadataRoom(PIRATE_METADATA)
    applied = await resolve_persona(job_room_metadata="", room=room, connect=room.connect, wait_s=5)
    assert applied.meta.persona == PIRATE
    assert applied.read_from == "room"


async def test_persona_written_after_connect_is_waited_for() -> None:
    """The update ends the wait at once: with an hour to wait, the call returns on the update
    (the 60 s guard only catches a hang)."""
    room = MetadataRoom('{"other": 1}')
    asyncio.get_running_loop().call_later(0.1, room.update, PIRATE_METADATA)
    async with asyncio.timeout(60):
        applied = await resolve_persona(
            job_room_metadata="", room=room, connect=room.connect, wait_s=3600
        )
    assert applied.meta.persona == PIRATE
    assert applied.read_from == "room_update"
    assert applied.waited_ms >= 50


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not json",
        '{"other": 1}',
        '{"persona": {"version": 3, "status": "loaded", "instructions": "x"}}',
        '{"persona": {"version": 1, "status": "loaded", "instructions": ""}}',
        '{"persona": {"version": 1, "status": "weird", "instructions": "x"}}',
    ],
    ids=["empty", "not-json", "no-key", "wrong-version", "no-instructions", "bad-status"],
)
async def test_missing_or_corrupt_persona_gives_the_default_after_a_bounded_wait(raw: str) -> None:
    room = MetadataRoom(raw)
    dispatch = parse_dispatch_metadata('{"caller": "919876543210", "call_id": "SCL_9"}')
    # Nothing ever updates the room: only the wait's own bound can end the call.
    async with asyncio.timeout(60):
        applied = await resolve_persona(
            job_room_metadata=raw, room=room, connect=room.connect, wait_s=0.1, dispatch=dispatch
        )
    assert applied.is_default
    assert applied.meta.persona == DEFAULT_PERSONA
    assert applied.meta.status == "default"
    # Correlation survives: the dispatch metadata still names the call.
    assert (applied.meta.caller, applied.meta.call_id) == ("919876543210", "SCL_9")
    assert applied.waited_ms >= 100
    assert applied.problems


async def test_corrupt_update_is_ignored_and_a_later_valid_one_applies() -> None:
    room = MetadataRoom()
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, room.update, "garbage")
    loop.call_later(0.1, room.update, PIRATE_METADATA)
    applied = await resolve_persona(job_room_metadata="", room=room, connect=room.connect, wait_s=5)
    assert applied.meta.persona == PIRATE


def test_log_fields_name_status_source_persona_call_and_wait() -> None:
    fields = {
        "status": "loaded",
        "source": "api",
        "read_from": "job",
        "persona_id": "persona-pirate",
        "persona_name": "Zed",
        "call_id": "SCL_1",
        "waited_ms": 0,
    }
    assert AppliedPersona(loaded(PIRATE), "job", 0).log_fields() == fields


@pytest.mark.parametrize("raw", ["", "[1]", "nope", orjson.dumps({"caller": 5}).decode()])
def test_unreadable_dispatch_metadata_gives_empty_fields(raw: str) -> None:
    info = parse_dispatch_metadata(raw)
    assert (info.caller, info.call_id) == (None, None)


@dataclass
class Participant:
    kind: int
    attributes: dict[str, str]


CALLER = Participant(rtc.ParticipantKind.PARTICIPANT_KIND_SIP, {"sip.callID": "SCL_room"})
AGENT = Participant(rtc.ParticipantKind.PARTICIPANT_KIND_AGENT, {"sip.callID": "not a caller"})


def test_call_id_missing_from_a_persona_written_before_the_caller_joined_is_the_callers() -> None:
    early = AppliedPersona(replace(loaded(PIRATE), call_id=None), "job", 0)
    assert with_call_id(early, [AGENT, CALLER]).meta.call_id == "SCL_room"
    assert with_call_id(early, [AGENT]).meta.call_id is None


def test_call_id_the_dispatcher_wrote_is_kept() -> None:
    applied = AppliedPersona(loaded(PIRATE), "job", 0)
    assert with_call_id(applied, [CALLER]).meta.call_id == "SCL_1"
