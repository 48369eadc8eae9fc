"""Caller extraction and number normalisation (pure)."""

from __future__ import annotations

import pytest

from contract.phone_numbers import NumberPlan
from dispatcher.caller import (
    CallParty,
    DetectedNumber,
    caller_candidates,
    detect_numbers,
    normalise_number,
)

pytestmark = pytest.mark.unit
IN = NumberPlan("IN", "e164")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("8655701159", "8655701159"),
        ("+918655701159", "8655701159"),
        ("+91 86557 01159", "8655701159"),
        ("918655701159", "8655701159"),
        ("00918655701159", "8655701159"),
        ("08655701159", "8655701159"),
        ("sip:8655701159@10.0.0.1", "8655701159"),
        ("sip:+918655701159@pbx.example.com;transport=udp", "8655701159"),
        ("<sip:8655701159@host>", "8655701159"),
        ("tel:+91-86557-01159", "8655701159"),
        ("(865) 570-1159", "8655701159"),
        ('"Priya" <sip:+918655701159@host>', "8655701159"),
        ("Priya <sip:+918655701159@host>;tag=a8f2", "8655701159"),
        ("<tel:+91-86557-01159;phone-context=example.com>", "8655701159"),
        ("sips:08655701159@host", "8655701159"),
    ],
)
def test_normalise_accepts_phone_numbers(raw: str, expected: str) -> None:
    assert normalise_number(raw, IN) == expected


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "   ",
        "12345",  # too short
        "123456",  # digits, but no number of the plan
        "+15550100",  # too short for its country
        "1234567890123456",  # too long
        "anonymous",
        "sip:alice@example.com",
        "8655701159/../../admin",
        "8655701159?x=1",
        "8655701159#",
        "86557\u0661\u0662159",  # non-ASCII digits
        "+",
        "8655701159 OR 1=1",
        "../8655701159",
    ],
)
def test_normalise_rejects_what_is_not_a_number(raw: str | None) -> None:
    assert normalise_number(raw, IN) is None


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("+65 9123 4567", "+6591234567"),
        ("0065 9123 4567", "+6591234567"),  # India's international prefix
        ("006591234567", "+6591234567"),
        ("tel:+65-9123-4567", "+6591234567"),
        ('"Tan" <sip:+6591234567@host>', "+6591234567"),
        ("+442071838750", "+442071838750"),
        ("+1 650 253 0000", "+16502530000"),
    ],
)
def test_a_foreign_number_never_becomes_national_digits(raw: str, key: str) -> None:
    """`+65 9123 4567` was `6591234567`: an Indian customer's number, and persona."""
    assert normalise_number(raw, IN) == key
    assert normalise_number(raw, NumberPlan("IN", "off")) is None


def test_the_home_region_is_a_setting() -> None:
    assert normalise_number("+1 650 253 0000", NumberPlan("US", "e164")) == "6502530000"
    assert normalise_number("(650) 253-0000", NumberPlan("US", "e164")) == "6502530000"
    assert normalise_number("+918655701159", NumberPlan("US", "e164")) == "+918655701159"


def test_name_addr_in_participant_metadata() -> None:
    party = CallParty(metadata='{"from": "\\"Priya\\" <sip:+918655701159@host>"}')
    assert caller_candidates(party, "room", "", IN) == [("8655701159", "metadata")]


def test_sources_in_order_of_trust() -> None:
    """Attribute, then participant metadata, identity, room metadata, room name; deduplicated."""
    party = CallParty(
        identity="sip_+919000000002",
        metadata='{"callerNumber": "+91 90000 00003"}',
        attributes={"sip.phoneNumber": "+918655701159"},
    )
    got = caller_candidates(party, "call_9000000005_abc", '{"caller": "9000000004"}', IN)
    assert got == [
        ("8655701159", "attribute"),
        ("9000000003", "metadata"),
        ("9000000002", "identity"),
        ("9000000004", "room_metadata"),
        ("9000000005", "room_name"),
    ]


@pytest.mark.parametrize(
    ("party", "room", "room_meta", "origin"),
    [
        (CallParty(metadata='{"caller_id": "8655701159"}'), "r", "", "metadata"),
        (CallParty(metadata='{"from": "sip:8655701159@h"}'), "r", "", "metadata"),
        (CallParty(metadata='{"sip_from": 8655701159}'), "r", "", "metadata"),
        (CallParty(identity="sip_8655701159"), "r", "", "identity"),
        (CallParty(identity="x"), "r", '{"caller_id": "8655701159"}', "room_metadata"),
        (CallParty(identity="x"), "r", '{"from": "+918655701159"}', "room_metadata"),
        (CallParty(identity="x"), "call_+918655701159_Xy12", "", "room_name"),
    ],
)
def test_each_source_alone(party: CallParty, room: str, room_meta: str, origin: str) -> None:
    assert caller_candidates(party, room, room_meta, IN) == [("8655701159", origin)]


@pytest.mark.parametrize(
    "party",
    [
        CallParty(identity="sip_anonymous", metadata="not json", attributes={}),
        CallParty(identity="sip_3f2a9c0e", metadata="[1,2]"),  # hide_phone_number: hashed
        CallParty(metadata='{"caller_id": {"nested": 1}}'),
        CallParty(attributes={"sip.phoneNumber": "anonymous"}),
    ],
)
def test_no_number_found_in_malformed_sources(party: CallParty) -> None:
    assert caller_candidates(party, "room", "{broken", IN) == []


def test_lookup_dialed_uses_trunk_number() -> None:
    party = CallParty(
        attributes={"sip.phoneNumber": "8655701159", "sip.trunkPhoneNumber": "+91 9000000002"}
    )
    assert detect_numbers(party, "r", "", ("dialed",), IN) == [
        DetectedNumber("9000000002", "dialed", "attribute")
    ]
    assert detect_numbers(party, "r", "", ("caller", "dialed"), IN) == [
        DetectedNumber("8655701159", "caller", "attribute"),
        DetectedNumber("9000000002", "dialed", "attribute"),
    ]
    assert [d.lookup for d in detect_numbers(party, "r", "", ("dialed", "caller"), IN)] == [
        "dialed",
        "caller",
    ]


def test_default_caller_only_when_nothing_found_and_set() -> None:
    nobody = CallParty(identity="sip_anonymous")
    assert detect_numbers(nobody, "r", "", ("caller",), IN) == []
    assert detect_numbers(nobody, "r", "", ("caller",), IN, default_caller="8655701159") == [
        DetectedNumber("8655701159", "caller", "default_caller")
    ]
    someone = CallParty(attributes={"sip.phoneNumber": "9000000002"})
    got = detect_numbers(someone, "r", "", ("caller",), IN, default_caller="8655701159")
    assert got == [DetectedNumber("9000000002", "caller", "attribute")]
