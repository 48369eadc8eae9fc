"""Settings: read once, every problem named in one error, secrets kept out of repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import DEFAULT_PERSONA_API_BASE, SettingsError, load_settings
from contract.phone_numbers import NumberPlan

pytestmark = pytest.mark.unit
SECRET = "s" * 40
BASE = {"LIVEKIT_URL": "ws://127.0.0.1:7880", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": SECRET}


def test_defaults() -> None:
    s = load_settings(BASE)
    assert s.agent_name == "friday"
    assert s.persona_api_base == DEFAULT_PERSONA_API_BASE
    assert s.persona_lookup == ("caller",)
    assert s.persona_deadline_s == 3.0
    assert s.default_caller is None
    assert s.numbers.country_code == "91"
    assert s.numbers.plan == NumberPlan("IN", "e164")
    assert s.user_mapping_dir == Path("user-mapping")
    assert s.metadata_budget_bytes == 60_000


def test_secret_is_not_in_repr() -> None:
    assert SECRET not in repr(load_settings(BASE))


def test_every_problem_is_listed_at_once() -> None:
    env = {
        "LIVEKIT_URL": "localhost:7880",
        "LIVEKIT_API_SECRET": "short",
        "PERSONA_LOOKUP": "callee",
        "PERSONA_DEADLINE_S": "soon",
        "PORT": "-1",
        "LOG_FORMAT": "xml",
        "DEFAULT_CALLER": "abc",
        "AGENT_NAME": "bad name!",
    }
    with pytest.raises(SettingsError) as e:
        load_settings(env)
    text = str(e.value)
    for name in (
        "LIVEKIT_URL",
        "LIVEKIT_API_KEY is required",
        "LIVEKIT_API_SECRET must be at least 32",
        "PERSONA_LOOKUP",
        "PERSONA_DEADLINE_S",
        "PORT",
        "LOG_FORMAT",
        "DEFAULT_CALLER",
        "AGENT_NAME",
    ):
        assert name in text
    assert len(e.value.problems) == 9


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("dialed", ("dialed",)),
        ("caller, dialed", ("caller", "dialed")),
        ("DIALED,caller", ("dialed", "caller")),
    ],
)
def test_persona_lookup(value: str, expected: tuple[str, ...]) -> None:
    assert load_settings({**BASE, "PERSONA_LOOKUP": value}).persona_lookup == expected


def test_persona_api_can_be_turned_off_for_file_personas() -> None:
    assert load_settings({**BASE, "PERSONA_API_BASE": "off"}).persona_api_base is None


def test_persona_api_base_must_be_http() -> None:
    with pytest.raises(SettingsError, match="PERSONA_API_BASE"):
        load_settings({**BASE, "PERSONA_API_BASE": "ftp://x"})


@pytest.mark.parametrize(
    ("env", "plan"),
    [
        ({"COUNTRY_CODE": "+44"}, NumberPlan("GB", "e164")),
        ({"COUNTRY_CODE": "1", "DEFAULT_REGION": "ca"}, NumberPlan("CA", "e164")),
        ({"DEFAULT_REGION": "SG", "FOREIGN_NUMBERS": "off"}, NumberPlan("SG", "off")),
    ],
)
def test_the_numbering_plan_from_country_code_or_region(
    env: dict[str, str], plan: NumberPlan
) -> None:
    assert load_settings(BASE | env).numbers.plan == plan


def test_a_default_caller_that_the_plan_would_never_look_up_stops_start_up() -> None:
    """It was taken, then silently never used (no number of the plan)."""
    with pytest.raises(SettingsError, match="DEFAULT_CALLER='123456' is no number of the plan"):
        load_settings(BASE | {"DEFAULT_CALLER": "123456"})
    assert load_settings(BASE | {"DEFAULT_CALLER": "+6591234567"}).default_caller


def test_a_plan_that_cannot_be_read_stops_start_up() -> None:
    env = {"COUNTRY_CODE": "999", "DEFAULT_REGION": "XX", "FOREIGN_NUMBERS": "national"}
    with pytest.raises(SettingsError) as e:
        load_settings(BASE | env)
    assert len(e.value.problems) == 3
    with pytest.raises(SettingsError, match="DEFAULT_REGION=GB dials \\+44"):
        load_settings(BASE | {"COUNTRY_CODE": "91", "DEFAULT_REGION": "GB"})
