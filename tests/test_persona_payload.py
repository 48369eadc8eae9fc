"""Parsing the CRM payload into a persona (pure), for every committed fixture."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from contract.metadata import TRUNCATED_MARKER
from dispatcher.persona_payload import (
    PersonaLimits,
    PersonaNotInPayload,
    PersonaPayloadError,
    compose_instructions,
    parse_persona_payload,
    render_lines,
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


# --- selection you can predict ---------------------------------------------------------------


def campaign(pid: str, **flags: Any) -> dict[str, Any]:
    return {**flags, "voiceAgents": [{"persona": {"_id": pid, "personality": f"Be {pid}."}}]}


def test_a_payload_with_only_inactive_campaigns_is_not_mapped() -> None:
    data = {"campaigns": [campaign("done", status="completed", isActive=False)]}
    with pytest.raises(PersonaNotInPayload):
        parse_persona_payload(data)


@pytest.mark.parametrize("flags", [{"status": "completed"}, {"isActive": False}])
def test_an_inactive_campaign_by_either_sign_is_never_used(flags: dict[str, Any]) -> None:
    data = {"campaigns": [campaign("old", **flags), campaign("new")]}
    assert parse_persona_payload(data).persona_id == "new"


@pytest.mark.parametrize(("word", "used"), [("false", "b"), ("No", "b"), ("true", "a"), ("1", "a")])
def test_boolean_strings_are_read_as_booleans(word: str, used: str) -> None:
    data = {"campaigns": [campaign("a", isActive=word), campaign("b")]}
    assert parse_persona_payload(data).persona_id == used


def test_an_inactive_voice_agent_is_never_used() -> None:
    data = {
        "campaigns": [
            {
                "voiceAgents": [
                    {"isActive": "false", "persona": {"_id": "off", "personality": "Off."}},
                    {"persona": {"_id": "on", "personality": "On."}},
                ]
            }
        ]
    }
    assert parse_persona_payload(data).persona_id == "on"


@pytest.mark.parametrize("kind", ["friendly_reminder", "agenda", "pending", "weekend_offer"])
def test_message_types_match_exact_words_never_substrings(kind: str) -> None:
    data = campaign("p")
    data["messages"] = [
        {"type": kind, "text": "Not a closing line."},
        {"type": "Welcome-Message", "text": "Hello."},
        {"type": "CLOSING", "text": "Goodbye."},
    ]
    p = parse_persona_payload({"campaigns": [data]})
    assert (p.welcome, p.closing) == ("Hello.", "Goodbye.")


def test_rendering_is_capped_and_flagged() -> None:
    limits = PersonaLimits(instructions_bytes=3000, section_bytes=1000)
    config = {"faq": [{"q": f"Q{i}?", "a": "A." * 20} for i in range(500)], "role": "r" * 5000}
    p = parse_persona_payload({"personality": "Be kind.", "fullConfig": config}, limits)
    assert p.truncated is True
    assert len(p.instructions.encode()) <= 3000
    assert p.instructions.count(TRUNCATED_MARKER) == 2  # the role and the FAQ sections


def test_nested_list_items_render_as_before() -> None:
    text = "\n".join(render_lines([{"q": "Q?", "a": "A."}, "plain", [1, 2]]))
    assert text == "- q: Q?\n  a: A.\n- plain\n-\n  - 1\n  - 2"


def test_rendering_work_is_bounded_by_the_budget_even_for_empty_values() -> None:
    """Empty objects render as nothing, yet each costs work: past one value per byte of the
    section's budget the rest is cut."""
    limits = PersonaLimits(instructions_bytes=4000, section_bytes=1000)
    config: dict[str, list[Any]] = {"rules": [{}] * 100_000 + ["Never shout."]}
    p = parse_persona_payload({"personality": "Be kind.", "fullConfig": config}, limits)
    assert p.truncated is True
    assert "Never shout." not in p.instructions
    assert p.instructions.endswith(TRUNCATED_MARKER)
