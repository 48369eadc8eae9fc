"""The room-metadata contract: merge, encode (and the fallback encode that cannot fail) and
decode (pure)."""

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
    encode_fallback_metadata,
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
    assert orjson.loads(raw)["persona"]["version"] == 2


def test_version_1_is_still_read_and_its_config_ignored() -> None:
    """Agents upgraded before the dispatchers read what old dispatchers wrote."""
    old = {
        "persona": {
            "version": 1,
            "status": "loaded",
            "source": "api",
            "instructions": "Be Priya.",
            "config": {"crm": "internals"},
        }
    }
    decoded = decode_persona_metadata(orjson.dumps(old).decode())
    assert (decoded.version, decoded.persona.instructions) == (1, "Be Priya.")


def test_other_keys_are_kept() -> None:
    raw = encode_room_metadata('{"crm": {"lead": 7}, "persona": {"old": true}}', meta(), 60_000)
    room = orjson.loads(raw)
    assert room["crm"] == {"lead": 7}
    assert room["persona"]["persona_id"] == "prs_1"


@pytest.mark.parametrize("existing", ["plain text note", "[1, 2]", "42"])
def test_non_object_metadata_is_kept_under_previous(existing: str) -> None:
    room = orjson.loads(encode_room_metadata(existing, meta(), 60_000))
    assert room["_previous"] == (existing if existing.startswith("p") else orjson.loads(existing))


def test_metadata_carries_no_config_and_says_truncated() -> None:
    persona = orjson.loads(encode_room_metadata("", meta(), 60_000))["persona"]
    assert "config" not in persona
    assert persona["truncated"] is False


def test_persona_over_budget_is_an_error() -> None:
    with pytest.raises(PersonaTooLarge) as e:
        encode_room_metadata("", meta(instructions="x" * 5000), 3000)
    assert e.value.size is not None
    assert e.value.size > 3000


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_other_keys_too_deep_to_write_are_an_error_not_a_crash() -> None:
    """orjson reads ~1,000 levels but writes ~250: metadata it read may not be writable."""
    with pytest.raises(PersonaTooLarge) as e:
        encode_room_metadata('{"crm": ' + deep(300) + "}", meta(), 60_000)
    assert e.value.size is None


@pytest.mark.parametrize(
    ("existing", "shape"),
    [
        ('{"keep": 1}', "with_room_keys"),
        ('{"crm": "' + "x" * 5000 + '"}', "persona_only"),
        ('{"crm": ' + deep(300) + "}", "persona_only"),
    ],
)
def test_fallback_encode_drops_other_keys_when_they_leave_no_room(
    existing: str, shape: str
) -> None:
    raw, written, got = encode_fallback_metadata(existing, meta(), 2048)
    assert got == shape
    assert len(raw.encode()) <= 2048
    assert decode_persona_metadata(raw) == written == meta()


def test_fallback_encode_ends_with_the_minimal_persona() -> None:
    """Even a persona that alone is over the smallest budget leaves a valid default."""
    raw, written, shape = encode_fallback_metadata("", meta(instructions="x" * 5000), 2048)
    assert shape == "minimal"
    assert len(raw.encode()) <= 2048
    assert decode_persona_metadata(raw) == written
    assert (written.status, written.persona) == ("default", DEFAULT_PERSONA)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not json",
        "[]",
        '{"other": 1}',
        '{"persona": "x"}',
        '{"persona": {"version": 3, "status": "loaded", "instructions": "x"}}',
        '{"persona": {"version": 1, "status": "weird", "instructions": "x"}}',
        '{"persona": {"version": 1, "status": "loaded", "instructions": ""}}',
        '{"persona": {"version": 1, "status": "loaded", "instructions": "x", "welcome": 5}}',
        '{"persona": {"version": 2, "status": "loaded", "instructions": "x", "truncated": 1}}',
    ],
)
def test_decode_rejects_invalid(raw: str) -> None:
    with pytest.raises(ContractError):
        decode_persona_metadata(raw)


def test_dispatch_metadata_is_small_correlation_only() -> None:
    d = orjson.loads(dispatch_metadata(meta()))
    assert d == {"caller": "8655701159", "call_id": "SCL_1", "persona_version": 2}


def test_default_persona_is_usable() -> None:
    assert DEFAULT_PERSONA.instructions
    assert DEFAULT_PERSONA.welcome
