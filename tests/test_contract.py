"""The room-metadata contract: merge, trim, encode and decode (pure)."""

from __future__ import annotations

import orjson
import pytest

from contract.metadata import (
    DEFAULT_PERSONA,
    ContractError,
    Persona,
    PersonaMetadata,
    PersonaTooLarge,
    decode_persona_metadata,
    dispatch_metadata,
    encode_room_metadata,
)

pytestmark = pytest.mark.unit


def meta(**persona: object) -> PersonaMetadata:
    p = Persona(
        instructions=str(persona.pop("instructions", "Be Priya.")),
        persona_id="prs_1",
        name="Priya",
        welcome="Hi",
        closing="Bye",
        config=dict(persona.pop("config", {"role": "advisor"})),  # type: ignore[call-overload]
    )
    return PersonaMetadata(
        persona=p,
        status="loaded",
        source="api",
        caller="8655701159",
        call_id="SCL_1",
        resolved_at="2026-11-25T00:00:00.000Z",
    )


def test_round_trip() -> None:
    m = meta()
    raw = encode_room_metadata("", m, 60_000)
    assert decode_persona_metadata(raw) == m
    assert orjson.loads(raw)["persona"]["version"] == 1


def test_other_keys_are_kept() -> None:
    raw = encode_room_metadata('{"crm": {"lead": 7}, "persona": {"old": true}}', meta(), 60_000)
    room = orjson.loads(raw)
    assert room["crm"] == {"lead": 7}
    assert room["persona"]["persona_id"] == "prs_1"


@pytest.mark.parametrize("existing", ["plain text note", "[1, 2]", "42"])
def test_non_object_metadata_is_kept_under_previous(existing: str) -> None:
    room = orjson.loads(encode_room_metadata(existing, meta(), 60_000))
    assert room["_previous"] == (existing if existing.startswith("p") else orjson.loads(existing))


def test_config_is_trimmed_largest_first_to_fit_budget() -> None:
    config = {"big": "x" * 5000, "medium": "y" * 1500, "small": "z"}
    raw = encode_room_metadata('{"keep": 1}', meta(config=config), 3000)
    assert len(raw.encode()) <= 3000
    decoded = decode_persona_metadata(raw)
    assert "big" not in decoded.persona.config
    assert decoded.persona.config["medium"] == "y" * 1500
    assert decoded.persona.config["small"] == "z"
    assert decoded.persona.config["_trimmed"] == ["big"]
    assert decoded.persona.instructions == "Be Priya."
    assert orjson.loads(raw)["keep"] == 1


def test_instructions_over_budget_is_an_error() -> None:
    with pytest.raises(PersonaTooLarge) as e:
        encode_room_metadata("", meta(instructions="x" * 5000), 3000)
    assert e.value.size > 3000


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not json",
        "[]",
        '{"other": 1}',
        '{"persona": "x"}',
        '{"persona": {"version": 2, "status": "loaded", "instructions": "x"}}',
        '{"persona": {"version": 1, "status": "weird", "instructions": "x"}}',
        '{"persona": {"version": 1, "status": "loaded", "instructions": ""}}',
        '{"persona": {"version": 1, "status": "loaded", "instructions": "x", "welcome": 5}}',
        '{"persona": {"version": 1, "status": "loaded", "instructions": "x", "config": []}}',
    ],
)
def test_decode_rejects_invalid(raw: str) -> None:
    with pytest.raises(ContractError):
        decode_persona_metadata(raw)


def test_dispatch_metadata_is_small_correlation_only() -> None:
    d = orjson.loads(dispatch_metadata(meta()))
    assert d == {"caller": "8655701159", "call_id": "SCL_1", "persona_version": 1}


def test_default_persona_is_usable() -> None:
    assert DEFAULT_PERSONA.instructions
    assert DEFAULT_PERSONA.welcome
