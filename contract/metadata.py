"""The call-setup contract (version 1): the persona the dispatcher writes into room metadata.

Both the dispatcher (encode) and the agent (decode) import this module; nothing else builds or
parses the `persona` key by hand. See shared/CONTRACT.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast

import orjson

from contract.errors import PersonaDispatcherError

CONTRACT_VERSION = 1
METADATA_KEY = "persona"

Status = Literal["loaded", "cached", "stale", "file", "default"]
Lookup = Literal["caller", "dialed"]
STATUSES: tuple[Status, ...] = ("loaded", "cached", "stale", "file", "default")
LOOKUPS: tuple[Lookup, ...] = ("caller", "dialed")

DEFAULT_INSTRUCTIONS = (
    "You are Friday, a friendly and concise voice assistant answering a phone call. "
    "Speak in short, natural sentences, ask one question at a time, and never invent facts "
    "about the caller or their account."
)
DEFAULT_WELCOME = "Hello! This is Friday. How can I help you today?"
DEFAULT_CLOSING = "Thank you for calling. Goodbye!"


class ContractError(PersonaDispatcherError, ValueError):
    """Room metadata does not hold a valid version-1 persona."""


class PersonaTooLarge(PersonaDispatcherError, ValueError):
    """The persona's instructions alone do not fit the metadata budget."""

    def __init__(self, size: int, budget: int) -> None:
        self.size = size
        self.budget = budget
        super().__init__(f"persona needs {size} bytes of metadata, budget is {budget}")


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
    config: dict[str, Any] = field(default_factory=dict)


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
            "config": p.config,
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


def trim_config(config: dict[str, Any], room: dict[str, Any], budget: int) -> dict[str, Any]:
    """Drop the largest `config` entries until the whole room metadata fits `budget` bytes."""
    trimmed = dict(config)
    sizes = sorted(((len(_dumps({k: v})), k) for k, v in trimmed.items()), reverse=True)
    dropped: list[str] = []
    for _, key in sizes:
        room[METADATA_KEY]["config"] = trimmed
        if len(_dumps(room)) <= budget:
            break
        del trimmed[key]
        dropped.append(key)
    if dropped:
        trimmed["_trimmed"] = sorted(dropped)
        room[METADATA_KEY]["config"] = trimmed
        if len(_dumps(room)) > budget:
            del trimmed["_trimmed"]
    return trimmed


def encode_room_metadata(existing: str, meta: PersonaMetadata, budget: int) -> str:
    """Merge `meta` into the room's existing metadata under `persona`, within `budget` bytes.

    `config` is trimmed first; raises `PersonaTooLarge` when even an empty `config` does not fit.
    """
    room = _existing_object(existing)
    room[METADATA_KEY] = meta.to_dict()
    try:
        encoded = _dumps(room)
    except orjson.JSONEncodeError:
        # Nested deeper than orjson writes (~250 levels; it reads ~1,000): kept as text.
        room = {"_previous": existing, METADATA_KEY: meta.to_dict()}
        encoded = _dumps(room)
    if len(encoded) <= budget:
        return encoded.decode()
    room[METADATA_KEY]["config"] = {}
    minimal = len(_dumps(room))
    if minimal > budget:
        raise PersonaTooLarge(minimal, budget)
    trim_config(meta.persona.config, room, budget)
    return _dumps(room).decode()


def _opt_str(d: dict[str, Any], key: str) -> str | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ContractError(f"persona.{key} must be a string or null")
    return value


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
    if d.get("version") != CONTRACT_VERSION:
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
    config = d.get("config")
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise ContractError("persona.config must be an object")
    persona = Persona(
        instructions=instructions,
        persona_id=_opt_str(d, "persona_id"),
        name=_opt_str(d, "name"),
        welcome=_opt_str(d, "welcome"),
        closing=_opt_str(d, "closing"),
        voice=_opt_str(d, "voice"),
        language=_opt_str(d, "language"),
        config=config,
    )
    return PersonaMetadata(
        persona=persona,
        status=cast(Status, status),
        source=_opt_str(d, "source") or "",
        caller=_opt_str(d, "caller"),
        lookup=cast(Lookup, lookup),
        call_id=_opt_str(d, "call_id"),
        resolved_at=_opt_str(d, "resolved_at") or "",
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
