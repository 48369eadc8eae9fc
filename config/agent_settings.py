"""The agent worker's settings, read once at start-up (the dispatcher has its own in settings.py).

`AGENT_NAME` and the LiveKit connection are read with the same helpers as the dispatcher's, so
both sides agree on one agent name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from config.settings import (
    DEFAULT_AGENT_NAME,
    EnvReader,
    LiveKitSettings,
    LogFormat,
    read_agent_name,
    read_environment,
)

StackName = Literal["openai-realtime", "pipeline", "fake"]
STACKS: tuple[StackName, ...] = ("openai-realtime", "pipeline", "fake")

DEFAULT_TRANSCRIPT_PATH = Path("conversations/transcripts.jsonl")


@dataclass(frozen=True)
class ProviderKeys:
    """API keys of the model providers; never in `repr` or logs."""

    openai: str | None = field(default=None, repr=False)
    deepgram: str | None = field(default=None, repr=False)
    cartesia: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class AgentSettings:
    """Everything the agent worker needs, validated."""

    livekit: LiveKitSettings
    agent_name: str = DEFAULT_AGENT_NAME
    stack: StackName = "openai-realtime"
    keys: ProviderKeys = field(default_factory=ProviderKeys)
    # How long a job waits for the persona to appear in room metadata before the default persona.
    persona_wait_s: float = 2.0
    transcript_path: Path = DEFAULT_TRANSCRIPT_PATH
    # The fake stack's record of every LLM request and spoken line (JSON lines), for tests.
    fake_llm_log: Path | None = None
    openai_realtime_model: str = "gpt-realtime"
    openai_llm_model: str = "gpt-4.1-mini"
    openai_tts_model: str = "gpt-4o-mini-tts"
    deepgram_model: str = "nova-3"
    cartesia_model: str = "sonic-3"
    # Used when the persona carries no voice / language of its own.
    voice: str | None = None
    language: str = "en"
    http_host: str = "127.0.0.1"
    http_port: int = 8081
    idle_processes: int = 2
    # Above this load (0-1) the worker takes no new job; `inf` never refuses.
    load_threshold: float = 0.7
    # 0: load is livekit-agents' CPU measure. N > 0: load is running jobs / N (full at N jobs),
    # which suits a shared or small machine where CPU use says little about call capacity.
    max_jobs: int = 0
    drain_timeout_s: int = 600
    log_level: str = "info"
    log_format: LogFormat = "json"
    log_unmasked: bool = False


def _required_keys(stack: StackName) -> tuple[str, ...]:
    if stack == "openai-realtime":
        return ("OPENAI_API_KEY",)
    if stack == "pipeline":
        return ("OPENAI_API_KEY", "DEEPGRAM_API_KEY", "CARTESIA_API_KEY")
    return ()


def _load_threshold(r: EnvReader) -> float:
    raw = r.text("AGENT_LOAD_THRESHOLD", "0.7")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        r.problems.append(f"AGENT_LOAD_THRESHOLD={raw!r} must be a number > 0 (or inf)")
        return 0.7
    return value


def load_agent_settings(env: Mapping[str, str] | None = None) -> AgentSettings:
    """Build and validate `AgentSettings`; raises `SettingsError` naming every problem."""
    r = EnvReader(read_environment() if env is None else env)
    stack = cast(StackName, r.choice("AGENT_STACK", "openai-realtime", STACKS))
    for name in _required_keys(stack):
        if r.raw(name) is None:
            r.problems.append(f"{name} is required by AGENT_STACK={stack}")
    fake_log = r.optional("AGENT_FAKE_LLM_LOG")
    settings = AgentSettings(
        livekit=LiveKitSettings.read(r),
        agent_name=read_agent_name(r),
        stack=stack,
        keys=ProviderKeys(
            openai=r.optional("OPENAI_API_KEY"),
            deepgram=r.optional("DEEPGRAM_API_KEY"),
            cartesia=r.optional("CARTESIA_API_KEY"),
        ),
        persona_wait_s=r.seconds("AGENT_PERSONA_WAIT_S", 2.0),
        transcript_path=Path(r.text("TRANSCRIPT_PATH", str(DEFAULT_TRANSCRIPT_PATH))),
        fake_llm_log=Path(fake_log) if fake_log else None,
        openai_realtime_model=r.text("OPENAI_REALTIME_MODEL", "gpt-realtime"),
        openai_llm_model=r.text("OPENAI_LLM_MODEL", "gpt-4.1-mini"),
        openai_tts_model=r.text("OPENAI_TTS_MODEL", "gpt-4o-mini-tts"),
        deepgram_model=r.text("DEEPGRAM_MODEL", "nova-3"),
        cartesia_model=r.text("CARTESIA_MODEL", "sonic-3"),
        voice=r.optional("AGENT_VOICE"),
        language=r.text("AGENT_LANGUAGE", "en"),
        http_host=r.text("AGENT_HTTP_HOST", "127.0.0.1"),
        http_port=r.integer("AGENT_HTTP_PORT", 8081, minimum=0),
        idle_processes=r.integer("AGENT_IDLE_PROCESSES", 2, minimum=0),
        load_threshold=_load_threshold(r),
        max_jobs=r.integer("AGENT_MAX_JOBS", 0, minimum=0),
        drain_timeout_s=r.integer("AGENT_DRAIN_TIMEOUT_S", 600, minimum=1),
        log_level=r.choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        log_format=cast(LogFormat, r.choice("LOG_FORMAT", "json", ("json", "console"))),
        log_unmasked=r.flag("LOG_UNMASKED", False),
    )
    if settings.http_port > 65535:
        r.problems.append(f"AGENT_HTTP_PORT={settings.http_port} is not a port")
    r.done()
    return settings
