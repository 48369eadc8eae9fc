"""The caller's audio cannot cut the welcome line, on the default realtime stack as on the others.

livekit-agents drops `allow_interruptions=False` for a realtime model that does server-side turn
detection (it only warns): the agent keeps the session's input audio off until the welcome has
played out. The `openai-realtime` stack runs offline here against a local fake of the Realtime
API (tests/harness/fake_realtime.py); the caller's audio input stands in for RoomIO's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from livekit import rtc
from livekit.agents import llm
from livekit.agents.voice import SpeechHandle, io
from livekit.agents.voice.events import SpeechCreatedEvent

from agent.fakes import ToneTTS
from agent.models import new_session, stack_factory
from agent.persona_agent import PersonaAgent
from agent.transcript import TranscriptLog
from config.agent_settings import load_agent_settings
from tests.agent.helpers import PIRATE, RecordingCall
from tests.harness import fake_realtime

pytestmark = pytest.mark.service

ENV = {
    "LIVEKIT_URL": "ws://127.0.0.1:7880",
    "LIVEKIT_API_KEY": "devkey",
    "LIVEKIT_API_SECRET": "s" * 32,
    "OPENAI_API_KEY": "sk-test",
}


class CallerAudio(io.AudioInput):
    """The caller's audio input, recording when the session attaches and detaches it (RoomIO's
    stream forwards no frame while detached); it never yields a frame itself."""

    def __init__(self) -> None:
        super().__init__(label="caller")
        self.changes: list[str] = []

    async def __anext__(self) -> rtc.AudioFrame:
        await asyncio.get_running_loop().create_future()  # until the session closes
        raise StopAsyncIteration

    def on_attached(self) -> None:
        self.changes.append("attached")

    def on_detached(self) -> None:
        self.changes.append("detached")


@pytest.fixture
async def realtime_api(aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The fake Realtime API; the OpenAI plugin reads OPENAI_BASE_URL when the model is built."""
    app = fake_realtime.make_app()
    server: TestServer = await aiohttp_server(app)
    monkeypatch.setenv("OPENAI_BASE_URL", str(server.make_url("/v1")))
    return app


@pytest.mark.parametrize("stack_name", ["openai-realtime", "fake"])
async def test_caller_audio_is_off_while_the_welcome_plays_and_back_on_after(
    realtime_api: Any, tmp_path: Path, stack_name: str
) -> None:
    settings = load_agent_settings({**ENV, "AGENT_STACK": stack_name})
    stack = stack_factory(settings, {})(PIRATE)
    if stack_name == "openai-realtime":
        assert isinstance(stack.llm, llm.RealtimeModel)
        assert stack.turn_detection == "realtime_llm"
        # The stack's realtime model and its server-side turn detection decide interruptions;
        # its TTS only voices the fixed lines, so an offline one stands in for OpenAI's.
        stack.tts = ToneTTS()
    session = new_session(stack)
    caller = CallerAudio()
    session.input.audio = caller
    welcome: list[tuple[SpeechHandle, bool]] = []

    def on_speech(ev: SpeechCreatedEvent) -> None:
        welcome.append((ev.speech_handle, session.input.audio_enabled))

    session.on("speech_created", on_speech)
    transcript = TranscriptLog(tmp_path / "transcripts.jsonl", room="room-1", call_id="SCL_1")
    try:
        await session.start(PersonaAgent(PIRATE, call=RecordingCall(), transcript=transcript))
        [(handle, audio_on_while_speaking)] = welcome
        if stack_name == "openai-realtime":
            # What the agent asked for was dropped: the line counts as interruptible.
            assert handle.allow_interruptions is True
        assert audio_on_while_speaking is False
        await asyncio.wait_for(handle.wait_for_playout(), 60)
        assert not handle.interrupted
        assert session.input.audio_enabled is True
        assert caller.changes == ["attached", "detached", "attached"]
    finally:
        await session.aclose()
        await stack.llm.aclose()
    if stack_name == "openai-realtime":
        sent = [e["type"] for e in realtime_api[fake_realtime.RECEIVED]]
        assert "conversation.item.create" in sent  # the welcome reached the model's context
