"""Who is calling, and which number keys the persona: pure functions over the webhook's data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from livekit.protocol.models import ParticipantInfo

from contract.metadata import Lookup
from contract.phone_numbers import NumberPlan, lookup_key

Origin = Literal[
    "attribute", "metadata", "identity", "room_metadata", "room_name", "default_caller"
]

ATTR_CALLER = "sip.phoneNumber"
ATTR_DIALED = "sip.trunkPhoneNumber"
ATTR_CALL_ID = "sip.callID"
PARTICIPANT_METADATA_KEYS = ("caller_id", "callerNumber", "from", "sip_from")
ROOM_METADATA_KEYS = ("caller", "caller_id", "from")


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


def normalise_number(raw: str | None, plan: NumberPlan) -> str | None:
    """`+91 86557 01159`, `sip:8655701159@host`, `"Priya" <sip:+918655701159@host>` ->
    `8655701159` at home (India); `+65 9123 4567`, `0065 9123 4567` -> `+6591234567`.

    None for anything that is not a valid phone number, or a foreign one with `foreign="off"`
    (`contract.phone_numbers.lookup_key`).
    """
    return lookup_key(raw, plan)


def _json_object(raw: str) -> dict[str, Any]:
    if not raw or not raw.strip().startswith("{"):
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _first_number(obj: Mapping[str, Any], keys: tuple[str, ...], plan: NumberPlan) -> str | None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, int | str) and (n := normalise_number(str(value), plan)):
            return n
    return None


def caller_candidates(
    party: CallParty, room_name: str, room_metadata: str, plan: NumberPlan
) -> list[tuple[str, Origin]]:
    """Every place the caller's number may be, in order of trust, normalised and deduplicated."""
    found: list[tuple[str | None, Origin]] = []
    attrs = party.attributes or {}
    found.append((normalise_number(attrs.get(ATTR_CALLER), plan), "attribute"))
    found.append(
        (_first_number(_json_object(party.metadata), PARTICIPANT_METADATA_KEYS, plan), "metadata")
    )
    if party.identity.startswith("sip_"):
        found.append((normalise_number(party.identity[4:], plan), "identity"))
    found.append(
        (_first_number(_json_object(room_metadata), ROOM_METADATA_KEYS, plan), "room_metadata")
    )
    # An individual dispatch rule names rooms `<prefix>_<number>_<random>`.
    parts = room_name.split("_")
    if len(parts) >= 3:
        found.append((normalise_number(parts[1], plan), "room_name"))
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
    plan: NumberPlan,
    default_caller: str | None = None,
) -> list[DetectedNumber]:
    """The numbers to look the persona up by, in the order `PERSONA_LOOKUP` asks for."""
    result: list[DetectedNumber] = []
    for lookup in lookups:
        if lookup == "dialed":
            dialed = normalise_number((party.attributes or {}).get(ATTR_DIALED), plan)
            if dialed is not None:
                result.append(DetectedNumber(dialed, "dialed", "attribute"))
            continue
        candidates = caller_candidates(party, room_name, room_metadata, plan)
        if candidates:
            number, origin = candidates[0]
            result.append(DetectedNumber(number, "caller", origin))
        elif default_caller is not None and (n := normalise_number(default_caller, plan)):
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
