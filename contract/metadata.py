"""The call-setup contract (version 2): the persona the dispatcher writes into room metadata.

Both the dispatcher (encode) and the agent (decode) import this module; nothing else builds or
parses the `persona` key by hand. Described for readers outside the code in docs/contract.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

import orjson

from contract.errors import PersonaDispatcherError
from contract.transfer import transfer_target

# 2: `config` (the CRM's fullConfig) is gone and `truncated` is new. Version 1 is still read, its
# `config` ignored, so that agents can be upgraded before the dispatchers.
CONTRACT_VERSION = 2
READABLE_VERSIONS = (1, 2)
METADATA_KEY = "persona"

Status = Literal["loaded", "cached", "stale", "file", "default"]
# Why the dispatched agent is the one it is: `crm`, the CRM's voice agent is one of AGENT_NAMES;
# `default`, the CRM named none; `unknown`, it named one this deployment does not run;
# `no_job`, the CRM's agent got no job within AGENT_JOB_TIMEOUT_S and AGENT_NAME took the call.
AgentReason = Literal["crm", "default", "unknown", "no_job"]
AGENT_REASONS: tuple[AgentReason, ...] = ("crm", "default", "unknown", "no_job")
Lookup = Literal["caller", "dialed"]
STATUSES: tuple[Status, ...] = ("loaded", "cached", "stale", "file", "default")
LOOKUPS: tuple[Lookup, ...] = ("caller", "dialed")

DEFAULT_INSTRUCTIONS = (
    "You are Friday, a friendly and concise voice assistant answering a phone call. "
    "Speak in short, natural sentences, ask one question at a time, and never invent facts "
    "about the caller or their account."
)
# The instructions' byte budgets (the defaults of PERSONA_INSTRUCTIONS_MAX_BYTES and
# PERSONA_SECTION_MAX_BYTES): well inside the 60,000-byte metadata budget with every other field.
# Over them, text is cut and ends with TRUNCATED_MARKER, and the persona says `truncated`.
INSTRUCTIONS_MAX_BYTES = 40_000
SECTION_MAX_BYTES = 16_000
TRUNCATED_MARKER = "[… truncated]"

DEFAULT_WELCOME = "Hello! This is Friday. How can I help you today?"
# What the agent says to a caller the CRM does not know, with UNKNOWN_CALLER_POLICY=announce.
DEFAULT_UNKNOWN_CALLER_MESSAGE = "Sorry, this number is not in service. Goodbye."
DEFAULT_CLOSING = "Thank you for calling. Goodbye!"


class ContractError(PersonaDispatcherError, ValueError):
    """Room metadata does not hold a valid version-1 persona."""


class PersonaTooLarge(PersonaDispatcherError, ValueError):
    """The persona and the room's other keys do not fit the metadata budget together (`size` is
    None when the other keys cannot even be encoded: nested deeper than the JSON writer goes)."""

    def __init__(self, size: int | None, budget: int) -> None:
        self.size = size
        self.budget = budget
        need = "unencodable" if size is None else f"{size} bytes of"
        super().__init__(f"persona needs {need} metadata, budget is {budget}")


@dataclass(frozen=True)
class Persona:
    """A persona as the agent uses it, independent of where it came from."""

    instructions: str
    persona_id: str | None = None
    name: str | None = None
    welcome: str | None = None
    closing: str | None = None
    voice: str | None = None
    language: str | None = None
    truncated: bool = False  # instructions were cut to their byte budget
    # The voice agent the CRM names for the caller (its explicit agent-name field, else the voice
    # agent's `name`): which of the deployment's agents answers (dispatcher/agent_choice.py).
    voice_agent: str | None = None
    # A human the agent may transfer the caller to (contract/transfer.py: `tel:` or `sip:`), and
    # the line it says first; no target: the agent has no `transfer_call` tool.
    transfer_to: str | None = None
    transfer_line: str | None = None


DEFAULT_PERSONA = Persona(
    instructions=DEFAULT_INSTRUCTIONS,
    persona_id=None,
    name="Friday",
    welcome=DEFAULT_WELCOME,
    closing=DEFAULT_CLOSING,
)


@dataclass(frozen=True)
class PersonaMetadata:
    """What the room metadata's `persona` key holds."""

    persona: Persona
    status: Status
    source: str
    caller: str | None = None
    lookup: Lookup = "caller"
    call_id: str | None = None
    resolved_at: str = ""
    version: int = CONTRACT_VERSION
    # The agent dispatched into the room and why (None: written before agents were chosen).
    agent: str | None = None
    agent_reason: AgentReason | None = None
    # Set for a caller the CRM does not know under UNKNOWN_CALLER_POLICY=announce: the agent says
    # this verbatim, uninterruptible, then hangs up; no conversation.
    announce: str | None = None

    def to_dict(self) -> dict[str, Any]:
        p = self.persona
        return {
            "version": self.version,
            "status": self.status,
            "source": self.source,
            "caller": self.caller,
            "lookup": self.lookup,
            "call_id": self.call_id,
            "persona_id": p.persona_id,
            "name": p.name,
            "instructions": p.instructions,
            "welcome": p.welcome,
            "closing": p.closing,
            "voice": p.voice,
            "language": p.language,
            "truncated": p.truncated,
            "voice_agent": p.voice_agent,
            "transfer_to": p.transfer_to,
            "transfer_line": p.transfer_line,
            "agent": self.agent,
            "agent_reason": self.agent_reason,
            "announce": self.announce,
            "resolved_at": self.resolved_at,
        }


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _existing_object(raw: str) -> dict[str, Any]:
    # Metadata that is not a JSON object (plain text, say) is kept under `_previous` so that
    # nothing another component wrote is lost.
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"_previous": raw}
    if isinstance(value, dict):
        return value
    return {"_previous": value}


def _dumps(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)


def _encoded(room: dict[str, Any]) -> bytes | None:
    """`room` as JSON, or None when it cannot be written (nested deeper than orjson writes)."""
    try:
        return _dumps(room)
    except orjson.JSONEncodeError:
        return None


def encode_room_metadata(existing: str, meta: PersonaMetadata, budget: int) -> str:
    """Merge `meta` into the room's existing metadata under `persona`, within `budget` bytes.

    Raises `PersonaTooLarge` when the two do not fit together (see `encode_fallback_metadata`).
    """
    room = _existing_object(existing)
    room[METADATA_KEY] = meta.to_dict()
    encoded = _encoded(room)
    if encoded is None or len(encoded) > budget:
        raise PersonaTooLarge(None if encoded is None else len(encoded), budget)
    return encoded.decode()


Shape = Literal["with_room_keys", "persona_only", "minimal"]


def minimal_persona_metadata(meta: PersonaMetadata) -> PersonaMetadata:
    """The built-in default persona with nothing taken from the call: a few hundred bytes."""
    return PersonaMetadata(
        persona=DEFAULT_PERSONA, status="default", source="default", resolved_at=meta.resolved_at
    )


def encode_fallback_metadata(
    existing: str, meta: PersonaMetadata, budget: int
) -> tuple[str, PersonaMetadata, Shape]:
    """The metadata to write when nothing better fits; never fails for a budget of 2,048 bytes
    or more: `meta` with the room's other keys, else `meta` alone (the other keys are dropped),
    else the minimal persona alone. Returns the JSON, the persona written and which it was."""
    try:
        return encode_room_metadata(existing, meta, budget), meta, "with_room_keys"
    except PersonaTooLarge:
        pass
    alone = _encoded({METADATA_KEY: meta.to_dict()})
    if alone is not None and len(alone) <= budget:
        return alone.decode(), meta, "persona_only"
    minimal = minimal_persona_metadata(meta)
    return _dumps({METADATA_KEY: minimal.to_dict()}).decode(), minimal, "minimal"


def _opt_str(d: dict[str, Any], key: str) -> str | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ContractError(f"persona.{key} must be a string or null")
    return value


def _transfer_to(d: dict[str, Any]) -> str | None:
    raw = _opt_str(d, "transfer_to")
    if raw is None:
        return None
    target = transfer_target(raw)
    if target is None:
        raise ContractError(f"persona.transfer_to {raw!r} is not a tel: number or sip: URI")
    return target


def decode_persona_metadata(raw_room_metadata: str) -> PersonaMetadata:
    """Read the `persona` key of room metadata; raises `ContractError` if absent or invalid."""
    if not raw_room_metadata or not raw_room_metadata.strip():
        raise ContractError("room metadata is empty")
    try:
        room = orjson.loads(raw_room_metadata)
    except orjson.JSONDecodeError as e:
        raise ContractError(f"room metadata is not JSON: {e}") from None
    if not isinstance(room, dict) or METADATA_KEY not in room:
        raise ContractError(f"room metadata has no {METADATA_KEY!r} key")
    d = room[METADATA_KEY]
    if not isinstance(d, dict):
        raise ContractError("persona is not an object")
    if d.get("version") not in READABLE_VERSIONS:
        raise ContractError(f"unsupported persona version {d.get('version')!r}")
    status = d.get("status")
    if status not in STATUSES:
        raise ContractError(f"persona.status {status!r} is not one of {STATUSES}")
    lookup = d.get("lookup", "caller")
    if lookup not in LOOKUPS:
        raise ContractError(f"persona.lookup {lookup!r} is not one of {LOOKUPS}")
    instructions = d.get("instructions")
    if not isinstance(instructions, str) or not instructions.strip():
        raise ContractError("persona.instructions must be a non-empty string")
    truncated = d.get("truncated", False)
    if not isinstance(truncated, bool):
        raise ContractError("persona.truncated must be a boolean")
    persona = Persona(
        instructions=instructions,
        persona_id=_opt_str(d, "persona_id"),
        name=_opt_str(d, "name"),
        welcome=_opt_str(d, "welcome"),
        closing=_opt_str(d, "closing"),
        voice=_opt_str(d, "voice"),
        language=_opt_str(d, "language"),
        truncated=truncated,
        voice_agent=_opt_str(d, "voice_agent"),
        transfer_to=_transfer_to(d),
        transfer_line=_opt_str(d, "transfer_line"),
    )
    agent_reason = d.get("agent_reason")
    if agent_reason is not None and agent_reason not in AGENT_REASONS:
        raise ContractError(f"persona.agent_reason {agent_reason!r} is not one of {AGENT_REASONS}")
    return PersonaMetadata(
        persona=persona,
        status=cast(Status, status),
        source=_opt_str(d, "source") or "",
        caller=_opt_str(d, "caller"),
        lookup=cast(Lookup, lookup),
        call_id=_opt_str(d, "call_id"),
        resolved_at=_opt_str(d, "resolved_at") or "",
        version=d["version"],
        agent=_opt_str(d, "agent"),
        agent_reason=cast(AgentReason | None, agent_reason),
        announce=_opt_str(d, "announce"),
    )


def default_persona_metadata(
    *, caller: str | None = None, call_id: str | None = None
) -> PersonaMetadata:
    """The default persona, for when nothing better is known (also the agent's last resort)."""
    return PersonaMetadata(
        persona=DEFAULT_PERSONA,
        status="default",
        source="default",
        caller=caller,
        call_id=call_id,
        resolved_at=utc_now_iso(),
    )


def dispatch_metadata(meta: PersonaMetadata) -> str:
    """The small JSON object carried by the dispatch itself, for correlation."""
    return _dumps(
        {"caller": meta.caller, "call_id": meta.call_id, "persona_version": meta.version}
    ).decode()


@dataclass(frozen=True)
class DispatchInfo:
    """The correlation fields the dispatcher puts in the dispatch's own metadata."""

    caller: str | None = None
    call_id: str | None = None


def parse_dispatch_metadata(raw: str) -> DispatchInfo:
    """`caller` and `call_id` from the dispatch metadata; anything unreadable gives empty fields."""
    try:
        value = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        return DispatchInfo()
    if not isinstance(value, dict):
        return DispatchInfo()
    caller, call_id = value.get("caller"), value.get("call_id")
    return DispatchInfo(
        caller=caller if isinstance(caller, str) else None,
        call_id=call_id if isinstance(call_id, str) else None,
    )
