"""The real model stacks are built per persona without any network (constructors only)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from livekit.plugins import cartesia, deepgram, openai, silero

from agent.models import new_session, stack_factory, validate_stack
from config.agent_settings import load_agent_settings
from tests.agent.helpers import PIRATE

pytestmark = pytest.mark.unit

ENV = {
    "LIVEKIT_URL": "ws://127.0.0.1:7880",
    "LIVEKIT_API_KEY": "devkey",
    "LIVEKIT_API_SECRET": "s" * 32,
    "OPENAI_API_KEY": "sk-test",
    "DEEPGRAM_API_KEY": "dg-test",
    "CARTESIA_API_KEY": "ca-test",
}
CARTESIA_VOICE = "694f9389-aac1-45b6-b726-9d9369183238"


async def test_openai_realtime_stack_speaks_in_the_persona_voice() -> None:
    settings = load_agent_settings({**ENV, "AGENT_STACK": "openai-realtime"})
    validate_stack(settings)
    stack = stack_factory(settings, {})(PIRATE)
    assert isinstance(stack.llm, openai.realtime.RealtimeModel)
    assert isinstance(stack.tts, openai.TTS)
    assert stack.llm._opts.voice == stack.tts._opts.voice == "ash"
    assert stack.turn_detection == "realtime_llm"
    await new_session(stack).aclose()


async def test_openai_stack_keeps_its_default_voice_for_a_voice_it_does_not_have() -> None:
    settings = load_agent_settings({**ENV, "AGENT_STACK": "openai-realtime"})
    stack = stack_factory(settings, {})(replace(PIRATE, voice=CARTESIA_VOICE))
    assert isinstance(stack.tts, openai.TTS)
    assert stack.tts._opts.voice == "alloy"


async def test_pipeline_stack_applies_persona_language_and_cartesia_voice() -> None:
    settings = load_agent_settings({**ENV, "AGENT_STACK": "pipeline"})
    validate_stack(settings)
    stack = stack_factory(settings, {})(replace(PIRATE, voice=CARTESIA_VOICE))
    assert isinstance(stack.llm, openai.LLM)
    assert isinstance(stack.stt, deepgram.STT)
    assert isinstance(stack.tts, cartesia.TTS)
    assert isinstance(stack.vad, silero.VAD)
    assert stack.stt._opts.language == "en-IN"
    assert (stack.tts._opts.language, stack.tts._opts.voice) == ("en", CARTESIA_VOICE)
    assert stack.turn_detection == "vad"
    await new_session(stack).aclose()


def test_pipeline_ignores_a_voice_that_is_not_a_cartesia_id() -> None:
    settings = load_agent_settings({**ENV, "AGENT_STACK": "pipeline"})
    default_voice = cartesia.TTS(api_key="x")._opts.voice
    stack = stack_factory(settings, {"vad": None})(PIRATE)
    assert isinstance(stack.tts, cartesia.TTS)
    assert stack.tts._opts.voice == default_voice
