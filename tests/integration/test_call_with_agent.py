"""The whole call set-up with the real dispatcher and the real agent worker (fake models):
livekit-server's webhook → dispatcher → persona in metadata → dispatch → agent greets in persona."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from livekit import rtc

from devstack.agent_worker import AgentWorker
from devstack.logs import HOME_REGION
from telemetry.logs import redact_text
from tests.agent.helpers import wait_for_records
from tests.harness.calls import SipCaller
from tests.harness.fixture_personas import BY_NUMBER, MEERA, PRIYA
from tests.harness.stack import Stack, place_sip_call


def records(path: Path, room: str, kind: str | None = None, event: str | None = None) -> Any:
    def match(r: dict[str, Any]) -> bool:
        return (
            r.get("room") in (room, redact_text(room, HOME_REGION))  # the transcript masks numbers
            and (kind is None or r.get("kind") == kind)
            and (event is None or r.get("event") == event)
        )

    return match


async def first_llm_request(worker: AgentWorker, caller: SipCaller) -> dict[str, Any]:
    """Speak (as chat text) once the greeting is done; the agent's first LLM request."""
    room = caller.room.name
    transcript = Path(worker.env["TRANSCRIPT_PATH"])
    await wait_for_records(transcript, records(transcript, room, event="turn"))
    await caller.room.local_participant.send_text("Hello, who is this?", topic="lk.chat")
    llm_log = Path(worker.env["AGENT_FAKE_LLM_LOG"])
    requests = await wait_for_records(llm_log, records(llm_log, room, kind="llm"))
    first: dict[str, Any] = requests[0]
    return first


async def test_caller_is_greeted_in_the_persona_the_dispatcher_resolved(
    persona_api: Stack, worker: AgentWorker, callers: list[SipCaller]
) -> None:
    caller = await place_sip_call(persona_api, callers, "8655701159")
    agent = await caller.wait_for_agent()
    assert agent.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    await caller.wait_for_sound()
    room = caller.room.name
    llm_log = Path(worker.env["AGENT_FAKE_LLM_LOG"])
    # The fake TTS is fed sentence by sentence: the fixture's welcome has two.
    spoken = await wait_for_records(llm_log, records(llm_log, room, kind="tts"), count=2)
    assert " ".join(s["text"] for s in spoken[:2]) == PRIYA.welcome
    request = await first_llm_request(worker, caller)
    assert PRIYA.matches_instructions(request["instructions"]), request["instructions"]
    transcript = Path(worker.env["TRANSCRIPT_PATH"])
    applied = await wait_for_records(transcript, records(transcript, room, event="persona_loaded"))
    assert applied[0]["status"] == "loaded"
    assert applied[0]["read_from"] == "job"
    assert applied[0]["persona_id"] == "prs_3001"


async def test_slow_persona_api_still_gives_the_agent_the_persona(
    persona_api: Stack, worker: AgentWorker, callers: list[SipCaller]
) -> None:
    """The dispatcher waits for the persona before dispatching: the agent never sees an empty
    room, so its first LLM request carries the persona, though the API took 1.5 s."""
    persona_api.persona_control(delay_s=1.5)
    started = time.monotonic()
    caller = await place_sip_call(persona_api, callers, "9000000002")
    await caller.wait_for_agent()
    assert time.monotonic() - started >= 1.5
    request = await first_llm_request(worker, caller)
    assert MEERA.matches_instructions(request["instructions"]), request["instructions"]
    transcript = Path(worker.env["TRANSCRIPT_PATH"])
    room = caller.room.name
    applied = await wait_for_records(transcript, records(transcript, room, event="persona_loaded"))
    assert (applied[0]["status"], applied[0]["read_from"]) == ("loaded", "job")
    assert applied[0]["waited_ms"] == 0


async def test_two_callers_at_once_get_their_own_personas(
    persona_api: Stack, worker: AgentWorker, callers: list[SipCaller]
) -> None:
    numbers = ["8655701159", "9000000003"]
    pair = await asyncio.gather(*(place_sip_call(persona_api, callers, n) for n in numbers))
    agents = await asyncio.gather(*(c.wait_for_agent() for c in pair))
    assert len({a.identity for a in agents}) == 2
    requests = await asyncio.gather(*(first_llm_request(worker, c) for c in pair))
    for number, request in zip(numbers, requests, strict=True):
        assert BY_NUMBER[number].matches_instructions(request["instructions"]), number
