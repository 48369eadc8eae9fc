"""The agent's behaviour in an `AgentSession` with the fake stack, without a room."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from livekit.agents.voice import AgentSession
from livekit.agents.voice.run_result import ChatMessageEvent, FunctionCallEvent
from structlog.testing import capture_logs

from agent.fakes import FAKE_REPLY, RecordingLLM, ToneTTS
from agent.models import ModelStack, new_session, stack_factory
from agent.persona import resolve_persona
from agent.persona_agent import PersonaAgent, TransferOutcome
from agent.transcript import TranscriptLog
from agent.worker import log_applied
from config.agent_settings import AgentSettings, load_agent_settings
from contract.metadata import DEFAULT_PERSONA, Persona
from contract.transfer import DEFAULT_TRANSFER_FAILED_LINE
from tests.agent.helpers import LIBRARIAN, PIRATE, MetadataRoom, RecordingCall, read_jsonl
from tests.conftest import CountsSince
from tests.harness.stack import eventually

# The worker's metrics of who answered (telemetry/agent_metrics.py).
TRANSFERS = "persona_agent_transfers_total"
ANNOUNCEMENTS = "persona_agent_announcements_total"

pytestmark = pytest.mark.unit

ENV = {
    "LIVEKIT_URL": "ws://127.0.0.1:7880",
    "LIVEKIT_API_KEY": "devkey",
    "LIVEKIT_API_SECRET": "x" * 32,
    "AGENT_STACK": "fake",
}


@dataclass
class Call:
    session: AgentSession[Any]
    agent: PersonaAgent
    llm: RecordingLLM
    tts: ToneTTS
    stack: ModelStack
    call: RecordingCall
    transcript: Path


@pytest.fixture
def settings(tmp_path: Path) -> AgentSettings:
    return load_agent_settings({**ENV, "TRANSCRIPT_PATH": str(tmp_path / "transcripts.jsonl")})


@pytest.fixture
async def start_call(settings: AgentSettings) -> AsyncIterator[Any]:
    """Builds a call for a persona through the worker's own stack factory (fake stack)."""
    sessions: list[AgentSession[Any]] = []

    async def start(persona: Persona, *, call_id: str = "SCL_1") -> Call:
        stack = stack_factory(settings, {})(persona)
        assert isinstance(stack.llm, RecordingLLM)
        assert isinstance(stack.tts, ToneTTS)
        session = new_session(stack)
        sessions.append(session)
        transcript = TranscriptLog(settings.transcript_path, room="room-1", call_id=call_id)
        transcript.attach(session)
        call = RecordingCall(settings.transcript_path)
        agent = PersonaAgent(persona, call=call, transcript=transcript)
        return Call(session, agent, stack.llm, stack.tts, stack, call, settings.transcript_path)

    yield start
    for session in sessions:
        await session.aclose()


def assistant_texts(events: list[Any]) -> list[str | None]:
    return [
        e.item.text_content
        for e in events
        if isinstance(e, ChatMessageEvent) and e.item.role == "assistant"
    ]


async def test_first_llm_request_system_prompt_is_the_persona_instructions(start_call: Any) -> None:
    """A persona without a welcome line: the greeting is generated under its instructions."""
    c = await start_call(LIBRARIAN)
    result = await c.session.start(c.agent, capture_run=True)
    first = c.llm.requests[0]
    assert first["instructions"] == LIBRARIAN.instructions
    assert first["messages"][0] == {
        "role": "system",
        "text": LIBRARIAN.instructions,
        "id": "lk.agent_task.instructions",
    }
    assert "end_call" in first["tools"]
    assert assistant_texts(result.events) == [FAKE_REPLY]


async def test_welcome_line_is_spoken_verbatim_before_any_llm_request(start_call: Any) -> None:
    c = await start_call(PIRATE)
    result = await c.session.start(c.agent, capture_run=True)
    assert assistant_texts(result.events) == [PIRATE.welcome]
    assert c.llm.requests == []

    await c.session.run(user_input="Hello?")
    first = c.llm.requests[0]
    assert first["instructions"] == PIRATE.instructions
    assert [(m["role"], m["text"]) for m in first["messages"][1:]] == [
        ("assistant", PIRATE.welcome),
        ("user", "Hello?"),
    ]


async def test_missing_persona_gives_the_default_persona_and_logs_status_default(
    start_call: Any,
) -> None:
    room = MetadataRoom("")
    applied = await resolve_persona(
        job_room_metadata="", room=room, connect=room.connect, wait_s=0.05
    )
    with capture_logs() as logs:
        log_applied(applied, room="room-1")
    events = {e["event"]: e for e in logs}
    assert events["persona.applied"]["status"] == "default"
    assert events["persona.applied"]["source"] == "default"
    assert events["persona.applied"]["read_from"] == "none"
    assert events["persona.missing"]["log_level"] == "warning"

    c = await start_call(applied.meta.persona)
    result = await c.session.start(c.agent, capture_run=True)
    assert assistant_texts(result.events) == [DEFAULT_PERSONA.welcome]
    await c.session.run(user_input="Hi")
    assert c.llm.requests[0]["instructions"] == DEFAULT_PERSONA.instructions


async def test_end_call_speaks_the_closing_line_then_ends_the_call(start_call: Any) -> None:
    c = await start_call(PIRATE)
    await c.session.start(c.agent)
    result = await c.session.run(user_input="Thanks, that's all. Bye!")

    calls = [e.item.name for e in result.events if isinstance(e, FunctionCallEvent)]
    assert calls == ["end_call"]
    assert assistant_texts(result.events) == [PIRATE.closing]
    await asyncio.wait_for(c.call.hung_up.wait(), 60)
    assert c.call.reasons == ["end_call"]
    # The closing line was spoken before the line was cut.
    spoken = [r["text"] for r in c.call.transcript_at_hang_up if r["event"] == "turn"]
    assert spoken[-1] == PIRATE.closing
    # The LLM is not asked for anything after end_call.
    assert len(c.llm.requests) == 1
    await c.session.aclose()

    records = read_jsonl(c.transcript)
    assert [r["event"] for r in records] == [
        "turn",
        "turn",
        "tool.called",
        "turn",
        "call.ended",
    ]
    assert {(r["room"], r["call_id"]) for r in records} == {("room-1", "SCL_1")}
    assert records[2]["name"] == "end_call"


def test_persona_voice_and_language_reach_the_speech_stack(settings: AgentSettings) -> None:
    stack = stack_factory(settings, {})(PIRATE)
    assert isinstance(stack.tts, ToneTTS)
    assert (stack.tts.voice, stack.tts.language) == ("ash", "en-IN")
    default = stack_factory(settings, {})(DEFAULT_PERSONA)
    assert isinstance(default.tts, ToneTTS)
    assert (default.tts.voice, default.tts.language) == (None, "en")


async def test_an_announcement_is_said_verbatim_uninterruptible_then_the_call_ends(
    start_call: Any, counted: CountsSince
) -> None:
    """UNKNOWN_CALLER_POLICY=announce: the message instead of the welcome, not cut by the caller,
    then the agent hangs up; the LLM is never asked."""
    message = "Sorry, this number is not in service. Goodbye."
    c = await start_call(PIRATE)
    c.agent.announce = message
    result = await c.session.start(c.agent, capture_run=True)
    assert assistant_texts(result.events) == [message]
    await asyncio.wait_for(c.call.hung_up.wait(), 60)
    assert c.call.reasons == ["announce"]
    spoken = [r["text"] for r in c.call.transcript_at_hang_up if r["event"] == "turn"]
    assert spoken == [message]
    assert c.llm.requests == []
    assert counted(ANNOUNCEMENTS, outcome="spoken") == 1
    assert counted(ANNOUNCEMENTS, outcome="cut") == 0


RAVI = "sip:ravi@pbx.example.com"


async def test_a_persona_without_a_transfer_target_offers_no_transfer(start_call: Any) -> None:
    c = await start_call(PIRATE)
    await c.session.start(c.agent)
    await c.session.run(user_input="Hello")
    assert "transfer_call" not in c.llm.requests[0]["tools"]


async def test_transfer_call_says_the_line_then_transfers_to_the_personas_target(
    start_call: Any, counted: CountsSince
) -> None:
    persona = replace(PIRATE, transfer_to=RAVI, transfer_line="Hold on, Ravi will take it.")
    c = await start_call(persona)
    await c.session.start(c.agent)
    result = await c.session.run(user_input="Can I talk to a human please?")
    calls = [e.item.name for e in result.events if isinstance(e, FunctionCallEvent)]
    assert calls == ["transfer_call"]
    assert c.agent.transferring is not None
    outcome = await asyncio.wait_for(c.agent.transferring, 60)
    assert outcome.ok
    assert c.call.transfers == [RAVI]
    # The transfer line was spoken before the REFER.
    spoken = [r["text"] for r in c.call.transcript_at_hang_up if r["event"] == "turn"]
    assert spoken[-1] == "Hold on, Ravi will take it."
    records = read_jsonl(c.transcript)
    assert [r["to"] for r in records if r["event"] == "call.transferred"] == [RAVI]
    assert (counted(TRANSFERS, outcome="transferred"), counted(TRANSFERS, outcome="failed")) == (
        1,
        0,
    )


async def test_a_refused_transfer_is_told_to_the_caller_and_the_call_goes_on(
    start_call: Any, counted: CountsSince
) -> None:
    c = await start_call(replace(PIRATE, transfer_to=RAVI))
    c.call.transfer_outcome = TransferOutcome(False, "STR_REJECTED (SIP 603)")
    await c.session.start(c.agent)
    await c.session.run(user_input="Transfer me to a human.")
    assert c.agent.transferring is not None
    outcome = await asyncio.wait_for(c.agent.transferring, 60)
    assert not outcome.ok
    records = await wait_for_failure_line(c.transcript)
    assert [r["detail"] for r in records if r["event"] == "call.transfer_failed"] == [
        "STR_REJECTED (SIP 603)"
    ]
    assert c.call.reasons == []  # not hung up
    assert (counted(TRANSFERS, outcome="transferred"), counted(TRANSFERS, outcome="failed")) == (
        0,
        1,
    )
    await c.session.run(user_input="Okay, then tell me about the treasure.")
    assert len(c.llm.requests) == 2


async def wait_for_failure_line(transcript: Path) -> list[dict[str, Any]]:
    """The transcript once it holds the agent's line about the failed transfer."""

    def said() -> list[dict[str, Any]] | None:
        records = read_jsonl(transcript)
        texts = [r.get("text") for r in records if r["event"] == "turn"]
        return records if DEFAULT_TRANSFER_FAILED_LINE in texts else None

    found: list[dict[str, Any]] = await eventually(said, 30, "the failure line")
    return found
