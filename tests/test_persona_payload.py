"""Parsing the CRM payload into a persona (pure), for every committed fixture."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from dispatcher.persona_payload import (
    PersonaNotInPayload,
    PersonaPayloadError,
    compose_instructions,
    parse_persona_payload,
)
from tests.harness.fake_persona_api import FIXTURES

pytestmark = pytest.mark.unit


def load(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


def test_test_number_fixture() -> None:
    p = parse_persona_payload(load("num_8655701159.json"))
    assert p.persona_id == "prs_3001"
    assert p.name == "Priya"
    assert p.instructions.startswith("You are Priya, a warm and patient home-loan advisor")
    assert "## Goal\nFind out whether the caller wants a callback" in p.instructions
    assert "- Never quote an interest rate; offer a callback instead." in p.instructions
    assert "What documents do I need?" in p.instructions
    assert "gpt-4o-mini" not in p.instructions  # model settings do not shape behaviour
    assert p.welcome == (
        "Namaste! This is Priya from Xeny Finance. "
        "Is this a good time to talk about your home loan?"
    )
    assert p.closing == "Thank you for your time. Have a wonderful day!"
    assert p.voice == "alloy"
    assert p.language == "en-IN"
    assert p.truncated is False


def test_several_campaigns_prefers_active_campaign_and_agent() -> None:
    p = parse_persona_payload(load("num_9000000002.json"))
    assert p.persona_id == "prs_festive"
    assert p.name == "Meera"
    assert "festive credit card offer" in p.instructions
    assert "Do not promise a credit limit." in p.instructions
    # messages live on the campaign as a list
    assert p.welcome == "Hello! Meera here from Xeny Bank with a festive offer for you."
    assert p.closing == "Happy festivities, goodbye!"


def test_missing_pieces_are_looked_up_on_outer_layers() -> None:
    p = parse_persona_payload(load("num_9000000003.json"))
    assert p.name == "Asha"
    assert p.instructions == "You are a courteous assistant for Xeny's customer support line."
    assert p.welcome is None
    assert p.closing is None
    assert p.voice is None


def test_first_campaign_when_none_says_active() -> None:
    data = {
        "campaigns": [
            {"voiceAgents": [{"persona": {"_id": "a", "personality": "First."}}]},
            {"voiceAgents": [{"persona": {"_id": "b", "personality": "Second."}}]},
        ]
    }
    assert parse_persona_payload(data).persona_id == "a"


def test_garbage_fixture_is_an_error() -> None:
    with pytest.raises(PersonaPayloadError):
        parse_persona_payload(load("garbage.json"))


@pytest.mark.parametrize("data", [[], "text", 42, None, {"campaigns": {"a": 1}}])
def test_non_payloads_are_errors(data: Any) -> None:
    with pytest.raises(PersonaPayloadError):
        parse_persona_payload(data)


def test_empty_campaigns_means_not_mapped() -> None:
    with pytest.raises(PersonaNotInPayload):
        parse_persona_payload(load("num_9000000005.json"))


def test_persona_without_any_text_is_an_error() -> None:
    with pytest.raises(PersonaPayloadError):
        parse_persona_payload({"campaigns": [{"voiceAgents": [{"persona": {"name": "x"}}]}]})


def test_unknown_fields_are_ignored() -> None:
    data = load("num_8655701159.json")
    data["campaigns"][0]["newThing"] = {"x": [1, 2]}
    data["campaigns"][0]["voiceAgents"][0]["persona"]["mystery"] = True
    assert parse_persona_payload(data) == parse_persona_payload(load("num_8655701159.json"))


def test_compose_instructions_orders_sections_and_skips_non_behaviour() -> None:
    text, truncated = compose_instructions(
        "Be kind.", {"tone": "calm", "role": "agent", "temperature": 0.3, "voice": "x"}
    )
    assert text == "Be kind.\n\n## Role\nagent\n\n## Tone\ncalm"
    assert truncated is False
