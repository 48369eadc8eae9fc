"""Settings read once at start-up from the environment (and an optional `.env` file)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from dotenv import dotenv_values

from contract.errors import PersonaDispatcherError

DEFAULT_PERSONA_API_BASE = "https://devcrm.xeny.ai/apis/api/public/mobile"
DEFAULT_AGENT_NAME = "friday"

LookupKind = Literal["caller", "dialed"]
LogFormat = Literal["json", "console"]

T = TypeVar("T")


class SettingsError(PersonaDispatcherError, ValueError):
    """One or more settings are missing or malformed; the message lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n  - " + "\n  - ".join(problems))


class EnvReader:
    """Reads typed values from a mapping, collecting every problem instead of stopping at one."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def required(self, name: str) -> str:
        value = self.raw(name)
        if value is None:
            self.problems.append(f"{name} is required")
            return ""
        return value

    def text(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else value

    def optional(self, name: str) -> str | None:
        return self.raw(name)

    def _typed(self, name: str, default: T, conv: Callable[[str], T], what: str) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return conv(value)
        except ValueError:
            self.problems.append(f"{name}={value!r} is not {what}")
            return default

    def integer(self, name: str, default: int, *, minimum: int = 0) -> int:
        result = self._typed(name, default, int, "an integer")
        if result < minimum:
            self.problems.append(f"{name}={result} must be >= {minimum}")
        return result

    def seconds(self, name: str, default: float) -> float:
        result = self._typed(name, default, float, "a number of seconds")
        if result <= 0:
            self.problems.append(f"{name}={result} must be > 0")
        return result

    def flag(self, name: str, default: bool) -> bool:
        def conv(v: str) -> bool:
            low = v.lower()
            if low in {"1", "true", "yes", "on"}:
                return True
            if low in {"0", "false", "no", "off"}:
                return False
            raise ValueError(v)

        return self._typed(name, default, conv, "a boolean (true/false)")

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = (self.raw(name) or default).lower()
        if value not in allowed:
            self.problems.append(f"{name}={value!r} must be one of {', '.join(allowed)}")
            return default
        return value

    def url(self, name: str, default: str | None, schemes: tuple[str, ...]) -> str:
        value = self.raw(name) or default
        if value is None:
            self.problems.append(f"{name} is required")
            return ""
        if not value.startswith(tuple(f"{s}://" for s in schemes)):
            self.problems.append(f"{name}={value!r} must start with {' or '.join(schemes)}://")
        return value.rstrip("/")

    def done(self) -> None:
        if self.problems:
            raise SettingsError(self.problems)


def read_environment(env_file: str | os.PathLike[str] | None = ".env") -> dict[str, str]:
    """The process environment over the values of `env_file` (if it exists)."""
    merged: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ)
    return merged


@dataclass(frozen=True)
class LiveKitSettings:
    """How to reach the LiveKit server API; shared by the dispatcher and the agent."""

    url: str
    api_key: str
    api_secret: str = field(repr=False)
    api_timeout_s: float = 5.0

    @classmethod
    def read(cls, r: EnvReader) -> LiveKitSettings:
        secret = r.required("LIVEKIT_API_SECRET")
        if secret and len(secret) < 32:
            r.problems.append("LIVEKIT_API_SECRET must be at least 32 characters")
        return cls(
            url=r.url("LIVEKIT_URL", None, ("ws", "wss", "http", "https")),
            api_key=r.required("LIVEKIT_API_KEY"),
            api_secret=secret,
            api_timeout_s=r.seconds("LIVEKIT_API_TIMEOUT_S", 5.0),
        )


def read_agent_name(r: EnvReader) -> str:
    """The one agent name the dispatcher dispatches and the worker registers under."""
    name = r.text("AGENT_NAME", DEFAULT_AGENT_NAME)
    if not name.replace("-", "").replace("_", "").isalnum():
        r.problems.append(f"AGENT_NAME={name!r} may hold only letters, digits, '-' and '_'")
    return name


@dataclass(frozen=True)
class Settings:
    """Everything the dispatcher service needs, validated."""

    livekit: LiveKitSettings
    agent_name: str = DEFAULT_AGENT_NAME
    host: str = "127.0.0.1"
    port: int = 8080
    webhook_max_bytes: int = 1024 * 1024
    persona_api_base: str | None = DEFAULT_PERSONA_API_BASE  # None: files and default only
    persona_lookup: tuple[LookupKind, ...] = ("caller",)
    persona_deadline_s: float = 3.0
    persona_attempt_timeout_s: float = 1.0
    persona_attempts: int = 3
    persona_max_bytes: int = 512 * 1024
    persona_cache_ttl_s: float = 300.0
    persona_negative_ttl_s: float = 30.0
    persona_cache_size: int = 10_000
    default_caller: str | None = None
    country_code: str = "91"
    national_number_length: int = 10
    user_mapping_dir: Path = Path("user-mapping")
    default_persona_file: Path | None = None
    metadata_budget_bytes: int = 60_000
    handled_events_size: int = 10_000
    log_level: str = "info"
    log_format: LogFormat = "json"
    log_unmasked: bool = False


def parse_lookup(r: EnvReader) -> tuple[LookupKind, ...]:
    raw = r.text("PERSONA_LOOKUP", "caller").lower().replace(" ", "")
    parts = tuple(raw.split(","))
    allowed = {"caller", "dialed"}
    if not parts or any(p not in allowed for p in parts) or len(set(parts)) != len(parts):
        r.problems.append(
            f"PERSONA_LOOKUP={raw!r} must be caller, dialed, caller,dialed or dialed,caller"
        )
        return ("caller",)
    return tuple(p for p in parts if p in allowed)  # type: ignore[misc]


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build and validate `Settings`; raises `SettingsError` naming every problem."""
    r = EnvReader(read_environment() if env is None else env)
    country = r.text("COUNTRY_CODE", "91").lstrip("+")
    if not country.isdigit() or len(country) > 3:
        r.problems.append(f"COUNTRY_CODE={country!r} must be 1-3 digits")
    default_caller = r.optional("DEFAULT_CALLER")
    default_persona = r.optional("DEFAULT_PERSONA_FILE")
    settings = Settings(
        livekit=LiveKitSettings.read(r),
        agent_name=read_agent_name(r),
        host=r.text("HOST", "127.0.0.1"),
        port=r.integer("PORT", 8080, minimum=0),
        webhook_max_bytes=r.integer("WEBHOOK_MAX_BYTES", 1024 * 1024, minimum=1024),
        persona_api_base=None
        if (r.raw("PERSONA_API_BASE") or "").lower() == "off"
        else r.url("PERSONA_API_BASE", DEFAULT_PERSONA_API_BASE, ("http", "https")),
        persona_lookup=parse_lookup(r),
        persona_deadline_s=r.seconds("PERSONA_DEADLINE_S", 3.0),
        persona_attempt_timeout_s=r.seconds("PERSONA_ATTEMPT_TIMEOUT_S", 1.0),
        persona_attempts=r.integer("PERSONA_ATTEMPTS", 3, minimum=1),
        persona_max_bytes=r.integer("PERSONA_MAX_BYTES", 512 * 1024, minimum=1024),
        persona_cache_ttl_s=r.seconds("PERSONA_CACHE_TTL_S", 300.0),
        persona_negative_ttl_s=r.seconds("PERSONA_NEGATIVE_TTL_S", 30.0),
        persona_cache_size=r.integer("PERSONA_CACHE_SIZE", 10_000, minimum=1),
        default_caller=default_caller,
        country_code=country,
        national_number_length=r.integer("NATIONAL_NUMBER_LENGTH", 10, minimum=6),
        user_mapping_dir=Path(r.text("USER_MAPPING_DIR", "user-mapping")),
        default_persona_file=Path(default_persona) if default_persona else None,
        metadata_budget_bytes=r.integer("METADATA_BUDGET_BYTES", 60_000, minimum=2048),
        handled_events_size=r.integer("HANDLED_EVENTS_SIZE", 10_000, minimum=1),
        log_level=r.choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        log_format=r.choice("LOG_FORMAT", "json", ("json", "console")),  # type: ignore[arg-type]
        log_unmasked=r.flag("LOG_UNMASKED", False),
    )
    if default_caller is not None and not default_caller.lstrip("+").isdigit():
        r.problems.append(f"DEFAULT_CALLER={default_caller!r} is not a phone number")
    if settings.default_persona_file and not settings.default_persona_file.is_file():
        r.problems.append(f"DEFAULT_PERSONA_FILE={default_persona!r} does not exist")
    r.done()
    return settings
