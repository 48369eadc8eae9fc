"""The dispatcher's settings, read once at start-up from the environment (and an optional `.env`
file), and the parts the agent worker shares with it (the LiveKit connection, the agent name, how
to log). Each default is written once, in its field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from phonenumbers import country_code_for_region

from config.env import (
    EnvReader,
    SettingsError,
    choice,
    flag,
    integer,
    path,
    read_environment,
    read_fields,
    required,
    seconds,
    seconds_or_off,
    setting,
    text,
    url,
)
from contract.metadata import (
    DEFAULT_UNKNOWN_CALLER_MESSAGE,
    INSTRUCTIONS_MAX_BYTES,
    SECTION_MAX_BYTES,
)
from contract.phone_numbers import (
    ForeignNumbers,
    NumberPlan,
    is_region,
    lookup_key,
    region_of_country_code,
)
from contract.transfer import transfer_target

__all__ = [
    "LiveKitSettings",
    "LogSettings",
    "NumberSettings",
    "Settings",
    "SettingsError",
    "load_number_settings",
    "load_settings",
]

DEFAULT_PERSONA_API_BASE = "https://devcrm.xeny.ai/apis/api/public/mobile"
DEFAULT_AGENT_NAME = "friday"

LookupKind = Literal["caller", "dialed"]
LogFormat = Literal["json", "console"]
UnknownCallerPolicy = Literal["answer", "reject", "announce"]


def _livekit_secret(r: EnvReader, name: str, raw: str) -> str:
    if len(raw) < 32:
        r.problem(f"{name} must be at least 32 characters")
    return raw


@dataclass(frozen=True)
class LiveKitSettings:
    """How to reach the LiveKit server API; shared by the dispatcher and the agent."""

    url: str = required("LIVEKIT_URL", url("ws", "wss", "http", "https"))
    api_key: str = required("LIVEKIT_API_KEY", text)
    api_secret: str = required("LIVEKIT_API_SECRET", _livekit_secret, secret=True)
    api_timeout_s: float = setting("LIVEKIT_API_TIMEOUT_S", 5.0, seconds)

    @classmethod
    def read(cls, r: EnvReader) -> LiveKitSettings:
        return cls(**read_fields(cls, r))


@dataclass(frozen=True)
class LogSettings:
    """How a service logs; the same variables for the dispatcher, the agent and the tools."""

    level: str = setting("LOG_LEVEL", "info", choice("debug", "info", "warning", "error"))
    format: LogFormat = setting("LOG_FORMAT", "json", choice("json", "console"))
    unmasked: bool = setting("LOG_UNMASKED", False, flag)

    @classmethod
    def read(cls, r: EnvReader) -> LogSettings:
        return cls(**read_fields(cls, r))


def agent_name(r: EnvReader, name: str, raw: str) -> str | None:
    """The one agent name the dispatcher dispatches and the worker registers under."""
    if not raw.replace("-", "").replace("_", "").isalnum():
        r.problem(f"{name}={raw!r} may hold only letters, digits, '-' and '_'")
        return None
    return raw


def _agent_names(r: EnvReader, name: str, raw: str) -> tuple[str, ...] | None:
    """A comma-separated list of agent names, each as `AGENT_NAME` allows."""
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    checked = [agent_name(r, name, n) for n in names]
    if None in checked:
        return None
    return names


def _transfer_to(r: EnvReader, name: str, raw: str) -> str | None:
    target = transfer_target(raw)
    if target is None:
        r.problem(f"{name}={raw!r} is not a tel:+<number> or sip:user@host")
    return target


def _persona_api_base(r: EnvReader, name: str, raw: str) -> str | None:
    if raw.lower() == "off":
        return None
    return str(url("http", "https")(r, name, raw))


def _lookup(r: EnvReader, name: str, raw: str) -> tuple[LookupKind, ...] | None:
    value = raw.lower().replace(" ", "")
    parts = tuple(value.split(","))
    if any(p not in ("caller", "dialed") for p in parts) or len(set(parts)) != len(parts):
        r.problem(f"{name}={value!r} must be caller, dialed, caller,dialed or dialed,caller")
        return None
    return parts  # type: ignore[return-value]


def _country_code(r: EnvReader, name: str, raw: str) -> str | None:
    value = raw.lstrip("+")
    if not value.isascii() or not value.isdigit() or len(value) > 3:
        r.problem(f"{name}={value!r} must be 1-3 digits")
        return None
    if region_of_country_code(int(value)) is None:
        r.problem(f"{name}={value!r} is no country's calling code")
        return None
    return value


def _region(r: EnvReader, name: str, raw: str) -> str | None:
    value = raw.upper()
    if not is_region(value):
        r.problem(f"{name}={raw!r} is not a region with a numbering plan (ISO 3166, e.g. IN)")
        return None
    return value


def _phone_number(r: EnvReader, name: str, raw: str) -> str | None:
    if not raw.lstrip("+").isdigit():
        r.problem(f"{name}={raw!r} is not a phone number")
        return None
    return raw


def _invalidate_secret(r: EnvReader, name: str, raw: str) -> str | None:
    if len(raw) < 16:
        r.problem(f"{name} must be at least 16 characters")
        return None
    return raw


def _existing_file(r: EnvReader, name: str, raw: str) -> Path | None:
    if not Path(raw).is_file():
        r.problem(f"{name}={raw!r} does not exist")
        return None
    return Path(raw)


@dataclass(frozen=True)
class NumberSettings:
    """The deployment's numbering plan: how callers' numbers are read and looked up."""

    country_code: str = setting("COUNTRY_CODE", "91", _country_code)
    # A region rather than a calling code, where one code serves several (1: US, CA, ...).
    # None: the main region of COUNTRY_CODE.
    default_region: str | None = setting("DEFAULT_REGION", None, _region)
    # A number of another country: `e164`, looked up under +<code><number> (which no home
    # customer's national key can equal); `off`, not looked up at all (the default persona).
    foreign_numbers: ForeignNumbers = setting("FOREIGN_NUMBERS", "e164", choice("e164", "off"))

    @property
    def region(self) -> str:
        """The home region numbers are parsed in (`IN` for the default COUNTRY_CODE)."""
        return self.default_region or region_of_country_code(int(self.country_code)) or "ZZ"

    @property
    def plan(self) -> NumberPlan:
        return NumberPlan(self.region, self.foreign_numbers)

    @classmethod
    def read(cls, r: EnvReader) -> NumberSettings:
        numbers = cls(**read_fields(cls, r))
        if r.raw("COUNTRY_CODE") and numbers.default_region:
            home = str(country_code_for_region(numbers.default_region))
            if home != numbers.country_code:
                r.problem(
                    f"DEFAULT_REGION={numbers.default_region} dials +{home}, "
                    f"not COUNTRY_CODE={numbers.country_code}: set one of them"
                )
        return numbers


@dataclass(frozen=True)
class Settings:
    """Everything the dispatcher service needs, validated."""

    livekit: LiveKitSettings
    logs: LogSettings = field(default_factory=LogSettings)
    numbers: NumberSettings = field(default_factory=NumberSettings)
    agent_name: str = setting("AGENT_NAME", DEFAULT_AGENT_NAME, agent_name)
    # The other agents this deployment runs (one worker each): the CRM's voice agent picks one
    # of them by name; () means AGENT_NAME alone.
    agent_names: tuple[str, ...] = setting("AGENT_NAMES", (), _agent_names)
    # A dispatch of a CRM-named agent with no job this long after its creation is replaced by
    # one of AGENT_NAME: no name without a worker leaves a caller ringing. Over 5 s: livekit-server
    # holds a job launch while it refreshes its cache of agent names, which takes 5 s.
    agent_job_timeout_s: float = setting("AGENT_JOB_TIMEOUT_S", 8.0, seconds)
    # A caller the CRM does not know (404, or no usable persona; never a CRM that is down, slow
    # or broken): `answer` (the file or default persona), `reject` (the room is deleted while it
    # rings: the caller hears busy, 486), `announce` (UNKNOWN_CALLER_MESSAGE, then hang up).
    unknown_caller_policy: UnknownCallerPolicy = setting(
        "UNKNOWN_CALLER_POLICY", "answer", choice("answer", "reject", "announce")
    )
    unknown_caller_message: str = setting(
        "UNKNOWN_CALLER_MESSAGE", DEFAULT_UNKNOWN_CALLER_MESSAGE, text
    )
    # The human a caller may ask for when the persona names none (`tel:+<E.164>` or
    # `sip:user@host`); unset: only personas that carry a target offer a transfer.
    transfer_to: str | None = setting("TRANSFER_TO", None, _transfer_to)
    host: str = setting("HOST", "127.0.0.1", text)
    port: int = setting("PORT", 8080, integer(minimum=0))
    # An optional second listener for /metrics and /readyz's detail (webhooks/admin.py), so that
    # the webhook port can face LiveKit alone. None: /metrics on the webhook port.
    admin_host: str = setting("ADMIN_HOST", "127.0.0.1", text)
    admin_port: int | None = setting("ADMIN_PORT", None, integer(minimum=1, maximum=65535))
    webhook_max_bytes: int = setting("WEBHOOK_MAX_BYTES", 1024 * 1024, integer(minimum=1024))
    # On SIGTERM: how long the process keeps listening, answering /readyz and new webhooks 503,
    # before it closes its port; at least one health-check period of the balancer in front.
    drain_grace_s: float = setting("DRAIN_GRACE_S", 5.0, seconds_or_off)
    # None (PERSONA_API_BASE=off): files and default only.
    persona_api_base: str | None = setting(
        "PERSONA_API_BASE", DEFAULT_PERSONA_API_BASE, _persona_api_base
    )
    persona_lookup: tuple[LookupKind, ...] = setting("PERSONA_LOOKUP", ("caller",), _lookup)
    persona_deadline_s: float = setting("PERSONA_DEADLINE_S", 3.0, seconds)
    persona_attempt_timeout_s: float = setting("PERSONA_ATTEMPT_TIMEOUT_S", 1.0, seconds)
    persona_attempts: int = setting("PERSONA_ATTEMPTS", 3, integer(minimum=1))
    # 8 MiB: a knowledge base in `fullConfig` still loads; bodies over 256 KiB are decoded in a
    # worker process, ~50 ms for 20,000 keys with the loop free (bench/persona_parse.py), against
    # a 3 s persona deadline.
    persona_max_bytes: int = setting("PERSONA_MAX_BYTES", 8 * 1024 * 1024, integer(minimum=1024))
    # A persona's three windows, each after the last (README "When an edit is heard"): served
    # without asking the CRM; then served at once while one background request refreshes it;
    # then served only when the CRM fails. The CRM's Cache-Control overrides them per answer.
    # PERSONA_CACHE_TTL_S=0 and PERSONA_REVALIDATE_S=0: every call asks the CRM.
    persona_cache_ttl_s: float = setting("PERSONA_CACHE_TTL_S", 30.0, seconds_or_off)
    persona_revalidate_s: float = setting("PERSONA_REVALIDATE_S", 86400.0, seconds_or_off)
    persona_stale_if_error_s: float = setting(
        "PERSONA_STALE_IF_ERROR_S", 7 * 86400.0, seconds_or_off
    )
    persona_negative_ttl_s: float = setting("PERSONA_NEGATIVE_TTL_S", 30.0, seconds)
    persona_cache_size: int = setting("PERSONA_CACHE_SIZE", 10_000, integer(minimum=1))
    # This process's cache in bytes (what its personas' strings hold): a bound on memory however
    # large the CRM's personas are.
    persona_cache_max_bytes: int = setting(
        "PERSONA_CACHE_MAX_BYTES", 64 * 1024 * 1024, integer(minimum=64 * 1024)
    )
    # The persona's instructions, and each section of them rendered from fullConfig (a knowledge
    # base under `faq`, say): cut with a visible marker beyond, the persona kept and flagged.
    persona_instructions_max_bytes: int = setting(
        "PERSONA_INSTRUCTIONS_MAX_BYTES", INSTRUCTIONS_MAX_BYTES, integer(minimum=1024)
    )
    persona_section_max_bytes: int = setting(
        "PERSONA_SECTION_MAX_BYTES", SECTION_MAX_BYTES, integer(minimum=256)
    )
    # A Redis shared by every replica: persona cache, single flight, the reconciler's lease.
    # None: this process's own cache, and every replica reconciles.
    persona_cache_url: str | None = setting(
        "PERSONA_CACHE_URL", None, url("redis", "rediss", "unix")
    )
    # Each command to that Redis; past it (or on an error) this process's cache serves.
    persona_cache_timeout_s: float = setting("PERSONA_CACHE_TIMEOUT_S", 0.2, seconds)
    # Every key this deployment writes to that Redis starts with it: deployments sharing one
    # Redis (LiveKit's own, say) share nothing.
    persona_cache_prefix: str = setting("PERSONA_CACHE_PREFIX", "persona-dispatcher:", text)
    # How long a persona stays in Redis as the stale fallback after it was last written.
    persona_cache_retention_s: float = setting(
        "PERSONA_CACHE_RETENTION_S", 7 * 24 * 3600.0, seconds
    )
    # An entry larger than this stays in this process's cache only.
    persona_cache_entry_max_bytes: int = setting(
        "PERSONA_CACHE_ENTRY_MAX_BYTES", 256 * 1024, integer(minimum=1024)
    )
    # The key that signs POST /personas/invalidate (HMAC-SHA256); unset, the endpoint is 404.
    persona_invalidate_secret: str | None = setting(
        "PERSONA_INVALIDATE_SECRET", None, _invalidate_secret, secret=True
    )
    default_caller: str | None = setting("DEFAULT_CALLER", None, _phone_number)
    user_mapping_dir: Path = setting("USER_MAPPING_DIR", Path("user-mapping"), path)
    default_persona_file: Path | None = setting("DEFAULT_PERSONA_FILE", None, _existing_file)
    metadata_budget_bytes: int = setting("METADATA_BUDGET_BYTES", 60_000, integer(minimum=2048))
    handled_events_size: int = setting("HANDLED_EVENTS_SIZE", 10_000, integer(minimum=1))
    # The reconciler (dispatcher/reconciler.py): how often it looks for calls the webhook path
    # missed (0: never), how long a new room is left to its webhook, and how long an agent may
    # take to join a dispatched call before the dispatch is checked.
    reconcile_interval_s: float = setting("RECONCILE_INTERVAL_S", 2.0, seconds_or_off)
    reconcile_grace_s: float = setting("RECONCILE_GRACE_S", 3.0, seconds)
    agent_join_timeout_s: float = setting("AGENT_JOIN_TIMEOUT_S", 10.0, seconds)
    # Where persona-dispatch-call logs the set-ups it runs, for persona-logs to read beside the
    # dispatcher's log (the dev command points it into its log directory).
    manual_dispatch_log: Path = setting(
        "MANUAL_DISPATCH_LOG", Path("var/log/manual-dispatch.log"), path
    )


def load_number_settings(env: Mapping[str, str] | None = None) -> NumberSettings:
    """The numbering plan alone, for what reads no other setting (the log inspector)."""
    r = EnvReader(read_environment() if env is None else env)
    numbers = NumberSettings.read(r)
    r.done()
    return numbers


def load_settings(env: Mapping[str, str] | None = None, *, livekit: bool = True) -> Settings:
    """Build and validate `Settings`; raises `SettingsError` naming every problem.

    `livekit=False` is for what never talks to LiveKit (a dry run of the manual dispatch): the
    LiveKit variables are then taken as far as they are set, and neither required nor checked.
    """
    environment = read_environment() if env is None else env
    r = EnvReader(environment)
    # A separate reader keeps the LiveKit problems out of those that stop start-up.
    lk = LiveKitSettings.read(r if livekit else EnvReader(environment))
    settings = Settings(
        **read_fields(
            Settings, r, livekit=lk, logs=LogSettings.read(r), numbers=NumberSettings.read(r)
        )
    )
    caller = settings.default_caller
    if caller is not None and lookup_key(caller, settings.numbers.plan) is None:
        r.problem(f"DEFAULT_CALLER={caller!r} is no number of the plan ({settings.numbers.region})")
    r.done()
    return settings
