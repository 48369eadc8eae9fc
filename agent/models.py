"""The model stack (STT / LLM / TTS / VAD, or a realtime model), chosen by `AGENT_STACK`.

Provider plugins are optional extras (`pip install .[openai]` / `.[pipeline]`), imported only when
their stack is selected; `validate_stack` runs at worker start so that a missing extra or API key
is one clear error then, not a crash in the middle of a call.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from livekit.agents import llm, stt, tts, vad
from livekit.agents.types import NOT_GIVEN
from livekit.agents.voice import AgentSession
from livekit.agents.voice.turn import TurnDetectionMode

from agent.fakes import FirstTool, RecordingLLM, ToneTTS, scripted_reply
from config.agent_settings import AgentSettings, StackName
from config.settings import SettingsError
from contract.metadata import Persona

# The voices OpenAI's TTS and realtime models accept; a persona naming another keeps the default.
OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer"}
    | {"verse", "marin", "cedar"}
)
DEFAULT_OPENAI_VOICE = "alloy"

_EXTRAS: dict[StackName, tuple[str, tuple[str, ...]]] = {
    "openai-realtime": ("openai", ("livekit.plugins.openai",)),
    "pipeline": (
        "pipeline",
        (
            "livekit.plugins.openai",
            "livekit.plugins.deepgram",
            "livekit.plugins.cartesia",
            "livekit.plugins.silero",
        ),
    ),
    "fake": ("", ()),
}


@dataclass
class ModelStack:
    """What one call's `AgentSession` is built from."""

    llm: llm.LLM[Any] | llm.RealtimeModel
    tts: tts.TTS[Any] | None = None
    stt: stt.STT[Any] | None = None
    vad: vad.VAD | None = None
    turn_detection: TurnDetectionMode = "manual"


StackFactory = Callable[[Persona], ModelStack]


def validate_stack(settings: AgentSettings) -> None:
    """Import the selected stack's plugins now (at worker start); `SettingsError` if absent."""
    extra, modules = _EXTRAS[settings.stack]
    problems = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            problems.append(
                f"AGENT_STACK={settings.stack} needs {module} "
                f"(pip install 'persona-dispatcher[{extra}]'): {e}"
            )
    if problems:
        raise SettingsError(problems)


def openai_voice(persona: Persona, settings: AgentSettings) -> str:
    for voice in (persona.voice, settings.voice):
        if voice and voice.lower() in OPENAI_VOICES:
            return voice.lower()
    return DEFAULT_OPENAI_VOICE


def cartesia_voice(persona: Persona, settings: AgentSettings) -> str | None:
    """A Cartesia voice id (a UUID) from the persona, else the setting; None: Cartesia's default."""
    for voice in (persona.voice, settings.voice):
        if voice:
            try:
                return str(uuid.UUID(voice))
            except ValueError:
                continue
    return None


def preload_models(settings: AgentSettings) -> dict[str, Any]:
    """Per-process models loaded once before any job (the Silero VAD for the pipeline)."""
    if settings.stack != "pipeline":
        return {}
    from livekit.plugins import silero

    return {"vad": silero.VAD.load()}


def stack_factory(settings: AgentSettings, preloaded: dict[str, Any]) -> StackFactory:
    """The factory the worker uses: builds the selected stack for one call's persona."""

    def build(persona: Persona) -> ModelStack:
        if settings.stack == "fake":
            return fake_stack(settings, persona)
        if settings.stack == "openai-realtime":
            return openai_realtime_stack(settings, persona)
        return pipeline_stack(settings, persona, preloaded.get("vad"))

    return build


def fake_stack(settings: AgentSettings, persona: Persona) -> ModelStack:
    return ModelStack(
        llm=RecordingLLM(
            record_path=settings.fake_llm_log,
            reply_fn=FirstTool(settings.fake_first_tool)
            if settings.fake_first_tool
            else scripted_reply,
        ),
        tts=ToneTTS(
            record_path=settings.fake_llm_log,
            voice=persona.voice or settings.voice,
            language=persona.language or settings.language,
        ),
    )


def openai_realtime_stack(settings: AgentSettings, persona: Persona) -> ModelStack:
    from livekit.plugins import openai

    voice = openai_voice(persona, settings)
    return ModelStack(
        llm=openai.realtime.RealtimeModel(
            model=settings.openai_realtime_model, voice=voice, api_key=settings.keys.openai
        ),
        # The realtime model speaks its own replies; the TTS speaks the persona's fixed lines
        # (welcome, closing) word for word, in the same voice.
        tts=openai.TTS(
            model=settings.openai_tts_model, voice=voice, api_key=settings.keys.openai or ""
        ),
        turn_detection="realtime_llm",
    )


def pipeline_stack(settings: AgentSettings, persona: Persona, vad: vad.VAD | None) -> ModelStack:
    from livekit.plugins import cartesia, deepgram, openai, silero

    language = persona.language or settings.language
    tts_kwargs: dict[str, Any] = {}
    if voice := cartesia_voice(persona, settings):
        tts_kwargs["voice"] = voice
    return ModelStack(
        llm=openai.LLM(model=settings.openai_llm_model, api_key=settings.keys.openai or ""),
        stt=deepgram.STT(
            model=settings.deepgram_model,
            language=language,
            api_key=settings.keys.deepgram or "",
        ),
        tts=cartesia.TTS(
            model=settings.cartesia_model,
            language=language.split("-")[0],
            api_key=settings.keys.cartesia,
            **tts_kwargs,
        ),
        vad=vad or silero.VAD.load(),
        turn_detection="vad",
    )


def models_used(stack_name: StackName, stack: ModelStack) -> dict[str, str]:
    """The models a call's stack uses, by part (`llm`, `tts`, `stt`), and the stack's name."""
    used = {"stack": stack_name, "llm": stack.llm.model}
    if stack.tts is not None:
        used["tts"] = stack.tts.model
    if stack.stt is not None:
        used["stt"] = stack.stt.model
    return used


def new_session(stack: ModelStack) -> AgentSession[Any]:
    """An `AgentSession` over `stack`, with every model explicit: nothing defaults to a hosted
    LiveKit inference service (turn detection, VAD)."""
    return AgentSession(
        llm=stack.llm,
        tts=stack.tts if stack.tts is not None else NOT_GIVEN,
        stt=stack.stt if stack.stt is not None else NOT_GIVEN,
        vad=stack.vad,
        turn_handling={"turn_detection": stack.turn_detection},
    )
