"""Transfer targets: what a `tel:` / `sip:` target is, where the CRM's comes from, and that the
deployment's TRANSFER_TO reaches personas that name none."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.env import SettingsError
from config.settings import Settings
from contract.metadata import decode_persona_metadata
from contract.transfer import transfer_target
from dispatcher.persona_payload import parse_persona_payload
from tests.conftest import Client, post
from tests.harness.fake_livekit import FakeLiveKit
from tests.harness.fake_persona_api import FakeState
from tests.harness.signing import participant_joined
from webhooks.app import create_app

pytestmark = pytest.mark.service


@pytest.mark.parametrize(
    ("raw", "target"),
    [
        ("tel:+919876543210", "tel:+919876543210"),
        ("+91 98765 43210", "tel:+919876543210"),
        ("sip:desk@pbx.example.com", "sip:desk@pbx.example.com"),
        ("sip:2001@127.0.0.1:5070", "sip:2001@127.0.0.1:5070"),
        ("9876543210", None),  # no country code: no home region is known here
        ("tel:+1", None),
        ("sip:desk@pbx;transport=tcp", None),  # no parameters or headers smuggled in
        ("sip:desk", None),
        ("http://x", None),
        ("", None),
    ],
)
def test_transfer_targets_are_tel_numbers_or_sip_uris(raw: str, target: str | None) -> None:
    assert transfer_target(raw) == target


TARGET = re.compile(r"^(tel:\+[0-9]{2,17}|sips?:[^\s;?<>]+@[A-Za-z0-9.-]+(:[0-9]{1,5})?)$")


@given(st.text(max_size=60))
def test_whatever_the_text_a_target_is_well_formed_or_none(raw: str) -> None:
    target = transfer_target(raw)
    assert target is None or TARGET.match(target)


def crm(**fields: Any) -> dict[str, Any]:
    return {
        "campaigns": [
            {
                "status": "active",
                "voiceAgents": [{"persona": {"personality": "You are X.", **fields}}],
            }
        ]
    }


def test_the_crm_transfer_target_and_line_are_read_and_a_bad_target_dropped() -> None:
    persona = parse_persona_payload(
        crm(transferTo="+919876543210", transferMessage="Connecting you to Ravi.")
    )
    assert (persona.transfer_to, persona.transfer_line) == (
        "tel:+919876543210",
        "Connecting you to Ravi.",
    )
    assert parse_persona_payload(crm(transferTo="call Ravi")).transfer_to is None


def test_an_invalid_transfer_to_stops_start_up(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(SettingsError, match="TRANSFER_TO"):
        make_settings(TRANSFER_TO="ravi")


async def test_transfer_to_reaches_a_persona_without_its_own_target(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    fake_lk: FakeLiveKit,
    persona_state: FakeState,
) -> None:
    persona_state.extra["9111111111"] = crm(transferTo="sip:ravi@pbx.example.com")
    settings = make_settings(TRANSFER_TO="tel:+918000000009")
    client: Client = await aiohttp_client(create_app(settings))
    for room, number in (("call_1", "8655701159"), ("call_2", "9111111111")):
        fake_lk.add_room(room)
        status, _ = await post(client, participant_joined(room, number=number))
        assert status == 200
    assert decode_persona_metadata(fake_lk.rooms["call_1"]).persona.transfer_to == (
        "tel:+918000000009"
    )
    assert decode_persona_metadata(fake_lk.rooms["call_2"]).persona.transfer_to == (
        "sip:ravi@pbx.example.com"
    )
