"""The agent worker's settings, read once at start-up. The LiveKit connection, the agent name and
how to log are the dispatcher's own fields (config/settings.py), so both sides agree on them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from config.env import (
    EnvReader,
    choice,
    flag,
    integer,
    path,
    read_environment,
    read_fields,
    seconds,
    setting,
    text,
    url,
)
from config.settings import (
    DEFAULT_AGENT_NAME,
    LiveKitSettings,
    LogSettings,
    NumberSettings,
    agent_name,
)

StackName = Literal["openai-realtime", "pipeline", "fake"]
STACKS: tuple[StackName, ...] = ("openai-realtime", "pipeline", "fake")

DEFAULT_TRANSCRIPT_PATH = Path("conversations/transcripts.jsonl")

# The provider keys each stack needs at start-up.
REQUIRED_KEYS: dict[StackName, tuple[str, ...]] = {
    "openai-realtime": ("OPENAI_API_KEY",),
    "pipeline": ("OPENAI_API_KEY", "DEEPGRAM_API_KEY", "CARTESIA_API_KEY"),
    "fake": (),
}


@dataclass(frozen=True)
class ProviderKeys:
    """API keys of the model providers; never in `repr` or logs."""

    openai: str | None = setting("OPENAI_API_KEY", None, text, secret=True)
    deepgram: str | None = setting("DEEPGRAM_API_KEY", None, text, secret=True)
    cartesia: str | None = setting("CARTESIA_API_KEY", None, text, secret=True)


@dataclass(frozen=True)
class CallStoreSettings:
    """Where each call's document goes (MongoDB, agent/call_store.py); off without MONGO_URI."""

    # The URI may carry a password: never in `repr` or logs.
    uri: str | None = setting("MONGO_URI", None, url("mongodb", "mongodb+srv"), secret=True)
    database: str = setting("MONGO_DATABASE", "persona_dispatcher", text)
    collection: str = setting("MONGO_COLLECTION", "calls", text)
    # One write's budget, retries apart: a slow database never holds a call up.
    write_timeout_s: float = setting("MONGO_WRITE_TIMEOUT_S", 2.0, seconds)
    # How many of a call's turns wait for the database at most; beyond that they are dropped
    # (and counted), the transcript file keeps them.
    max_pending_turns: int = setting("MONGO_MAX_PENDING_TURNS", 500, integer(minimum=1))
    # How long the end of a call waits for its last writes (livekit-agents' session-end hook,
    # after the caller is gone).
    flush_timeout_s: float = setting("MONGO_FLUSH_TIMEOUT_S", 10.0, seconds)
    # Full phone numbers in the database (a team that treats it as its system of record);
    # LOG_UNMASKED unmasks them there too.
    unmasked: bool = setting("MONGO_UNMASKED", False, flag)

    @property
    def enabled(self) -> bool:
        return self.uri is not None

    @classmethod
    def read(cls, r: EnvReader) -> CallStoreSettings:
        return cls(**read_fields(cls, r))


def _load_threshold(r: EnvReader, name: str, raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        r.problem(f"{name}={raw!r} must be a number > 0 (or inf)")
        return None
    return value


@dataclass(frozen=True)
class AgentSettings:
    """Everything the agent worker needs, validated."""

    livekit: LiveKitSettings
    logs: LogSettings = field(default_factory=LogSettings)
    # The dispatcher's numbering plan: the logs mask phone numbers by the same rule.
    numbers: NumberSettings = field(default_factory=NumberSettings)
    keys: ProviderKeys = field(default_factory=ProviderKeys)
    agent_name: str = setting("AGENT_NAME", DEFAULT_AGENT_NAME, agent_name)
    stack: StackName = setting("AGENT_STACK", "openai-realtime", choice(*STACKS))
    # How long a job waits for the persona to appear in room metadata before the default persona.
    persona_wait_s: float = setting("AGENT_PERSONA_WAIT_S", 2.0, seconds)
    transcript_path: Path = setting("TRANSCRIPT_PATH", DEFAULT_TRANSCRIPT_PATH, path)
    # false: no transcript file, the database's document only (needs MONGO_URI).
    transcript_file: bool = setting("TRANSCRIPT_FILE", True, flag)
    call_store: CallStoreSettings = field(default_factory=CallStoreSettings)
    # The fake stack's record of every LLM request and spoken line (JSON lines), for tests.
    fake_llm_log: Path | None = setting("AGENT_FAKE_LLM_LOG", None, path)
    # The fake stack's first LLM answer calls this tool (tests of a real call, where no speech
    # is recognised): `transfer_call`, say.
    fake_first_tool: str | None = setting("AGENT_FAKE_FIRST_TOOL", None, text)
    openai_realtime_model: str = setting("OPENAI_REALTIME_MODEL", "gpt-realtime", text)
    openai_llm_model: str = setting("OPENAI_LLM_MODEL", "gpt-4.1-mini", text)
    openai_tts_model: str = setting("OPENAI_TTS_MODEL", "gpt-4o-mini-tts", text)
    deepgram_model: str = setting("DEEPGRAM_MODEL", "nova-3", text)
    cartesia_model: str = setting("CARTESIA_MODEL", "sonic-3", text)
    # Used when the persona carries no voice / language of its own.
    voice: str | None = setting("AGENT_VOICE", None, text)
    language: str = setting("AGENT_LANGUAGE", "en", text)
    http_host: str = setting("AGENT_HTTP_HOST", "127.0.0.1", text)
    http_port: int = setting("AGENT_HTTP_PORT", 8081, integer(minimum=0, maximum=65535))
    # The worker's Prometheus endpoint (`/metrics` on AGENT_HTTP_HOST): what its job processes
    # count (telemetry/agent_metrics.py), summed over them. 0: no endpoint.
    metrics_port: int = setting("AGENT_METRICS_PORT", 8089, integer(minimum=0, maximum=65535))
    # Where job processes keep their counts (prometheus_client's multiprocess mode), emptied when
    # the worker starts; one directory per worker. Default: a temporary one, removed at exit.
    metrics_dir: Path | None = setting("AGENT_METRICS_DIR", None, path)
    idle_processes: int = setting("AGENT_IDLE_PROCESSES", 2, integer(minimum=0))
    # Above this load (0-1) the worker takes no new job; `inf` never refuses.
    load_threshold: float = setting("AGENT_LOAD_THRESHOLD", 0.7, _load_threshold)
    # 0: load is livekit-agents' CPU measure. N > 0: load is running jobs / N, and a job is taken
    # while fewer than N run or are starting (agent/worker.py's JobCapacity), which suits a
    # shared or small machine where CPU use says little about call capacity, and takes a burst.
    max_jobs: int = setting("AGENT_MAX_JOBS", 0, integer(minimum=0))
    drain_timeout_s: int = setting("AGENT_DRAIN_TIMEOUT_S", 600, integer(minimum=1))
    # Written (with the worker's id) once LiveKit has registered the worker, removed at start: a
    # container's healthcheck looks for it, as livekit-agents' own health answers OK before.
    registered_file: Path | None = setting("AGENT_REGISTERED_FILE", None, path)


def load_agent_settings(env: Mapping[str, str] | None = None) -> AgentSettings:
    """Build and validate `AgentSettings`; raises `SettingsError` naming every problem."""
    r = EnvReader(read_environment() if env is None else env)
    settings = AgentSettings(
        **read_fields(
            AgentSettings,
            r,
            livekit=LiveKitSettings.read(r),
            logs=LogSettings.read(r),
            numbers=NumberSettings.read(r),
            keys=ProviderKeys(**read_fields(ProviderKeys, r)),
            call_store=CallStoreSettings.read(r),
        )
    )
    if not settings.transcript_file and not settings.call_store.enabled:
        r.problem("TRANSCRIPT_FILE=false needs MONGO_URI: a call's transcript must go somewhere")
    for name in REQUIRED_KEYS[settings.stack]:
        if r.raw(name) is None:
            r.problem(f"{name} is required by AGENT_STACK={settings.stack}")
    r.done()
    return settings


def load_call_store_settings(env: Mapping[str, str] | None = None) -> CallStoreSettings:
    """The database settings alone (for `persona-logs show --mongo`); `SettingsError` if bad."""
    r = EnvReader(read_environment() if env is None else env)
    settings = CallStoreSettings.read(r)
    r.done()
    return settings
