"""Who is calling, and which number keys the persona: pure functions over the webhook's data."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from livekit.protocol.models import ParticipantInfo

from contract.metadata import Lookup

Origin = Literal[
    "attribute", "metadata", "identity", "room_metadata", "room_name", "default_caller"
]

ATTR_CALLER = "sip.phoneNumber"
ATTR_DIALED = "sip.trunkPhoneNumber"
ATTR_CALL_ID = "sip.callID"
PARTICIPANT_METADATA_KEYS = ("caller_id", "callerNumber", "from", "sip_from")
ROOM_METADATA_KEYS = ("caller", "caller_id", "from")

MIN_DIGITS = 6
MAX_DIGITS = 15
# Separators people and SIP stacks put inside numbers; anything else means "not a number".
_SEPARATORS = re.compile(r"[\s\-().]")
_URI = re.compile(r"^(?:sips?|tel):([^@;>]+)", re.IGNORECASE)


@dataclass(frozen=True)
class NumberFormat:
    """How the persona API writes numbers: national digits after stripping the country code."""

    country_code: str = "91"
    national_length: int = 10


@dataclass(frozen=True)
class CallParty:
    """The participant fields the extraction reads (a plain view of `ParticipantInfo`)."""

    identity: str = ""
    metadata: str = ""
    attributes: Mapping[str, str] | None = None


@dataclass(frozen=True)
class DetectedNumber:
    number: str
    lookup: Lookup
    origin: Origin


def is_digits(text: str) -> bool:
    """ASCII digits only: what a normalised number is, and all that may reach a URL or a path."""
    return text.isascii() and text.isdigit()


def normalise_number(raw: str | None, fmt: NumberFormat) -> str | None:
    """`+91 86557 01159`, `sip:8655701159@host`, `tel:+918655701159` -> `8655701159`.

    Returns None for anything that is not a plausible phone number (6-15 digits).
    """
    if raw is None:
        return None
    text = raw.strip().strip("<>\"'")
    if m := _URI.match(text):
        text = m.group(1)
    text = _SEPARATORS.sub("", text)
    if text.startswith("+"):
        text = text[1:]
    elif text.startswith("00"):
        text = text[2:]
    if not is_digits(text):
        return None
    cc = fmt.country_code
    if cc and len(text) == len(cc) + fmt.national_length and text.startswith(cc):
        text = text[len(cc) :]
    elif len(text) == fmt.national_length + 1 and text.startswith("0"):
        text = text[1:]  # a national trunk prefix, as in 08655701159
    if not MIN_DIGITS <= len(text) <= MAX_DIGITS:
        return None
    return text


def _json_object(raw: str) -> dict[str, Any]:
    if not raw or not raw.strip().startswith("{"):
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _first_number(obj: Mapping[str, Any], keys: tuple[str, ...], fmt: NumberFormat) -> str | None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, int | str) and (n := normalise_number(str(value), fmt)):
            return n
    return None


def caller_candidates(
    party: CallParty, room_name: str, room_metadata: str, fmt: NumberFormat
) -> list[tuple[str, Origin]]:
    """Every place the caller's number may be, in order of trust, normalised and deduplicated."""
    found: list[tuple[str | None, Origin]] = []
    attrs = party.attributes or {}
    found.append((normalise_number(attrs.get(ATTR_CALLER), fmt), "attribute"))
    found.append(
        (_first_number(_json_object(party.metadata), PARTICIPANT_METADATA_KEYS, fmt), "metadata")
    )
    if party.identity.startswith("sip_"):
        found.append((normalise_number(party.identity[4:], fmt), "identity"))
    found.append(
        (_first_number(_json_object(room_metadata), ROOM_METADATA_KEYS, fmt), "room_metadata")
    )
    # An individual dispatch rule names rooms `<prefix>_<number>_<random>`.
    parts = room_name.split("_")
    if len(parts) >= 3:
        found.append((normalise_number(parts[1], fmt), "room_name"))
    seen: set[str] = set()
    result: list[tuple[str, Origin]] = []
    for number, origin in found:
        if number is not None and number not in seen:
            seen.add(number)
            result.append((number, origin))
    return result


def detect_numbers(
    party: CallParty,
    room_name: str,
    room_metadata: str,
    lookups: tuple[Lookup, ...],
    fmt: NumberFormat,
    default_caller: str | None = None,
) -> list[DetectedNumber]:
    """The numbers to look the persona up by, in the order `PERSONA_LOOKUP` asks for."""
    result: list[DetectedNumber] = []
    for lookup in lookups:
        if lookup == "dialed":
            dialed = normalise_number((party.attributes or {}).get(ATTR_DIALED), fmt)
            if dialed is not None:
                result.append(DetectedNumber(dialed, "dialed", "attribute"))
            continue
        candidates = caller_candidates(party, room_name, room_metadata, fmt)
        if candidates:
            number, origin = candidates[0]
            result.append(DetectedNumber(number, "caller", origin))
        elif default_caller is not None and (n := normalise_number(default_caller, fmt)):
            result.append(DetectedNumber(n, "caller", "default_caller"))
    unique: list[DetectedNumber] = []
    for d in result:
        if all(d.number != u.number for u in unique):
            unique.append(d)
    return unique


def party_of(participant: ParticipantInfo) -> CallParty:
    """The fields of a webhook's participant that the extraction reads."""
    return CallParty(
        identity=participant.identity,
        metadata=participant.metadata,
        attributes=dict(participant.attributes),
    )


def call_id_of(party: CallParty) -> str | None:
    return (party.attributes or {}).get(ATTR_CALL_ID) or None
