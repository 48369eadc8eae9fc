"""The worker process against a real livekit-server, jobs created as the dispatcher creates them:
persona written into room metadata (the JSON docs/contract.md documents, spelled out by the
test), then an explicit dispatch of `AGENT_NAME`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from livekit import api, rtc

from agent.fakes import FAKE_REPLY
from contract.metadata import DEFAULT_PERSONA, Persona
from devstack.agent_worker import AgentWorker
from devstack.logs import HOME_REGION
from devstack.services import LiveKitServer
from telemetry.logs import redact_text
from tests.agent.helpers import (
    LIBRARIAN,
    PIRATE,
    contract_dispatch_metadata,
    contract_metadata,
    wait_for_records,
)
from tests.harness.calls import (
    SipCaller,
    agent_in_room,
    create_dispatch,
    sip_token,
    write_room_metadata,
)

pytestmark = pytest.mark.integration

AGENT_NAME = "friday"

JoinCall = Callable[..., Awaitable[SipCaller]]


@pytest.fixture
async def join_call(
    livekit_server: LiveKitServer, agent_worker: AgentWorker
) -> AsyncIterator[JoinCall]:
    """Joins a SIP-kind caller to a room (the worker is up by then); leaves at teardown."""
    callers: list[SipCaller] = []

    async def join(room: str, *, caller: str = "919876543210", call_id: str = "SCL_1") -> SipCaller:
        token = sip_token(livekit_server, room, caller=caller, call_id=call_id)
        sip = await SipCaller(livekit_server.ws_url, token).join()
        callers.append(sip)
        return sip

    yield join
    for sip in callers:
        await sip.leave()


def in_room(
    room: str, kind: str | None = None, event: str | None = None
) -> Callable[[dict[str, Any]], bool]:
    def match(r: dict[str, Any]) -> bool:
        return (
            r.get("room") in (room, redact_text(room, HOME_REGION))  # the transcript masks numbers
            and (kind is None or r.get("kind") == kind)
            and (event is None or r.get("event") == event)
        )

    return match


async def say_after_greeting(caller: SipCaller, transcript_log: Path, text: str) -> None:
    """Sends the caller's words as chat text once the greeting has been spoken in full (the
    welcome line cannot be interrupted, and text that tries to is dropped)."""
    room = caller.room.name
    await wait_for_records(transcript_log, in_room(room, event="turn"))
    await caller.room.local_participant.send_text(text, topic="lk.chat")


async def call_with_persona(
    lk: api.LiveKitAPI, room: str, persona: Persona, *, call_id: str = "SCL_1"
) -> None:
    """What the dispatcher does: the persona into room metadata, then the dispatch."""
    await write_room_metadata(lk, room, contract_metadata(persona, call_id=call_id))
    await create_dispatch(lk, room, AGENT_NAME, contract_dispatch_metadata("919876543210", call_id))


async def test_agent_greets_the_caller_in_the_persona_read_from_room_metadata(
    join_call: JoinCall,
    lk_api: api.LiveKitAPI,
    room_name: str,
    fake_llm_log: Path,
    transcript_log: Path,
) -> None:
    caller = await join_call(room_name)
    await call_with_persona(lk_api, room_name, PIRATE)

    agent = await caller.wait_for_agent()
    assert agent.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    await caller.wait_for_sound()
    audio = [p for p in agent.track_publications.values() if p.kind == rtc.TrackKind.KIND_AUDIO]
    assert len(audio) == 1

    spoken = await wait_for_records(fake_llm_log, in_room(room_name, "tts"))
    assert spoken[0]["text"] == PIRATE.welcome
    assert (spoken[0]["voice"], spoken[0]["language"]) == (PIRATE.voice, PIRATE.language)

    await say_after_greeting(caller, transcript_log, "What does the insurance cover?")
    requests = await wait_for_records(fake_llm_log, in_room(room_name, "llm"))
    assert requests[0]["instructions"] == PIRATE.instructions
    assert requests[0]["messages"][-1] == {
        "role": "user",
        "text": "What does the insurance cover?",
        "id": requests[0]["messages"][-1]["id"],
    }

    turns = await wait_for_records(transcript_log, in_room(room_name, event="turn"), count=3)
    assert [(t["role"], t["text"]) for t in turns] == [
        ("assistant", PIRATE.welcome),
        ("user", "What does the insurance cover?"),
        ("assistant", FAKE_REPLY),
    ]
    applied = await wait_for_records(transcript_log, in_room(room_name, event="persona_loaded"))
    assert applied[0]["status"] == "loaded"
    assert applied[0]["read_from"] == "job"
    assert applied[0]["persona_id"] == PIRATE.persona_id
    assert applied[0]["call_id"] == "SCL_1"


async def test_two_calls_at_once_get_two_agents_with_two_personas(
    join_call: JoinCall,
    lk_api: api.LiveKitAPI,
    room_name: str,
    fake_llm_log: Path,
    transcript_log: Path,
) -> None:
    rooms = {f"pirate-{room_name}": PIRATE, f"librarian-{room_name}": LIBRARIAN}
    callers = await asyncio.gather(
        *(
            join_call(room, caller=f"91987654321{i}", call_id=f"SCL_{i}")
            for i, room in enumerate(rooms)
        )
    )
    await asyncio.gather(
        *(
            call_with_persona(lk_api, room, p, call_id=f"SCL_{i}")
            for i, (room, p) in enumerate(rooms.items())
        )
    )
    agents = await asyncio.gather(*(c.wait_for_agent() for c in callers))
    assert len({a.identity for a in agents}) == 2
    await asyncio.gather(*(c.wait_for_sound() for c in callers))

    for caller, (room, persona) in zip(callers, rooms.items(), strict=True):
        await say_after_greeting(caller, transcript_log, "Hello?")
        requests = await wait_for_records(fake_llm_log, in_room(room, "llm"))
        assert requests[0]["instructions"] == persona.instructions
    # The librarian has no welcome line: its greeting was generated, under its instructions.
    librarian_room = next(r for r, p in rooms.items() if p is LIBRARIAN)
    spoken = await wait_for_records(fake_llm_log, in_room(librarian_room, "tts"))
    assert spoken[0]["text"] == FAKE_REPLY


async def test_persona_written_after_the_agent_connected_is_waited_for(
    join_call: JoinCall,
    lk_api: api.LiveKitAPI,
    room_name: str,
    fake_llm_log: Path,
    transcript_log: Path,
) -> None:
    await join_call(room_name)
    await create_dispatch(
        lk_api, room_name, AGENT_NAME, contract_dispatch_metadata("919876543210", "SCL_1")
    )
    await agent_in_room(lk_api, room_name)
    await asyncio.sleep(0.3)
    await write_room_metadata(lk_api, room_name, contract_metadata(LIBRARIAN))

    requests = await wait_for_records(fake_llm_log, in_room(room_name, "llm"))
    assert requests[0]["instructions"] == LIBRARIAN.instructions
    applied = await wait_for_records(transcript_log, in_room(room_name, event="persona_loaded"))
    assert applied[0]["read_from"] == "room_update"
    assert applied[0]["status"] == "loaded"
    assert applied[0]["waited_ms"] > 0


async def test_call_without_a_persona_gets_the_default_persona(
    join_call: JoinCall,
    lk_api: api.LiveKitAPI,
    room_name: str,
    fake_llm_log: Path,
    transcript_log: Path,
    agent_worker: AgentWorker,
) -> None:
    caller = await join_call(room_name, call_id="SCL_none")
    await create_dispatch(
        lk_api, room_name, AGENT_NAME, contract_dispatch_metadata("919876543210", "SCL_none")
    )
    await caller.wait_for_agent()
    await caller.wait_for_sound()

    # A non-streaming TTS is fed sentence by sentence.
    spoken = await wait_for_records(fake_llm_log, in_room(room_name, "tts"), count=2)
    assert " ".join(s["text"] for s in spoken) == DEFAULT_PERSONA.welcome
    applied = await wait_for_records(transcript_log, in_room(room_name, event="persona_not_found"))
    assert applied[0]["status"] == "default"
    assert applied[0]["read_from"] == "none"
    assert applied[0]["call_id"] == "SCL_none"
    # It gave up after the whole wait, not before (the timer may fire a hair early).
    wait_ms = float(agent_worker.env["AGENT_PERSONA_WAIT_S"]) * 1000
    assert applied[0]["waited_ms"] >= wait_ms - 100
    logged = agent_worker.log_records(room=room_name)
    assert "persona.missing" in [r["event"] for r in logged]


async def test_end_call_speaks_the_closing_line_then_deletes_the_room(
    join_call: JoinCall,
    lk_api: api.LiveKitAPI,
    room_name: str,
    fake_llm_log: Path,
    transcript_log: Path,
) -> None:
    caller = await join_call(room_name)
    await call_with_persona(lk_api, room_name, PIRATE)
    await caller.wait_for_sound()
    disconnected = asyncio.Event()
    caller.room.on("disconnected", lambda *_: disconnected.set())

    await say_after_greeting(caller, transcript_log, "That's all, goodbye!")
    async with asyncio.timeout(60):
        await disconnected.wait()

    spoken = await wait_for_records(fake_llm_log, in_room(room_name, "tts"), count=2)
    assert [s["text"] for s in spoken] == [PIRATE.welcome, PIRATE.closing]
    # The caller is cut as the server starts closing the room; the room is gone just after.
    for _ in range(600):
        if not (await lk_api.room.list_rooms(api.ListRoomsRequest(names=[room_name]))).rooms:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail(f"room {room_name} still exists 60 s after end_call")
    events = await wait_for_records(transcript_log, in_room(room_name, event="call.ended"))
    assert events[0]["call_id"] == "SCL_1"
    tools = await wait_for_records(transcript_log, in_room(room_name, event="tool.called"))
    assert tools[0]["name"] == "end_call"


async def test_the_agent_streams_no_words_or_session_events_into_a_phone_call(
    join_call: JoinCall,
    lk_api: api.LiveKitAPI,
    room_name: str,
    transcript_log: Path,
) -> None:
    """A phone caller reads no text and drives no session: the agent speaks its welcome and its
    reply without streaming their words (`lk.transcription`) or its session's events
    (`lk.agent.session`) into the room, both livekit-agents' defaults, and still writes both
    lines to the transcript file."""
    caller = await join_call(room_name)
    streamed: list[str] = []

    def on_text(reader: rtc.TextStreamReader, identity: str) -> None:
        streamed.append(f"{reader.info.topic} from {identity}")

    def on_bytes(reader: rtc.ByteStreamReader, identity: str) -> None:
        streamed.append(f"{reader.info.topic} from {identity}")

    caller.room.register_text_stream_handler("lk.transcription", on_text)
    caller.room.register_byte_stream_handler("lk.agent.session", on_bytes)
    await call_with_persona(lk_api, room_name, PIRATE)
    await caller.wait_for_sound()
    await say_after_greeting(caller, transcript_log, "Hello?")

    turns = await wait_for_records(transcript_log, in_room(room_name, event="turn"), count=3)
    assert [(t["role"], t["text"]) for t in turns] == [
        ("assistant", PIRATE.welcome),
        ("user", "Hello?"),
        ("assistant", FAKE_REPLY),
    ]
    # Both lines have played out (a turn is recorded at its end): their words would have been
    # streamed while they played, and the session's events as each turn was added.
    assert streamed == []
