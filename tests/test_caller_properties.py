"""The caller's promise over the whole input space (hypothesis): whatever a webhook carries, the
extraction never raises, a lookup key holds only digits and a leading `+`, a number written
with another country's code never becomes a home customer's national key, and normalising a
key again gives the same key."""

from __future__ import annotations

import re

import orjson
import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.phone_numbers import NumberPlan
from dispatcher.caller import CallParty, detect_numbers, normalise_number
from telemetry.logs import redact_text

pytestmark = pytest.mark.unit

KEY = re.compile(r"\+?[0-9]+", re.ASCII)
HOME = NumberPlan("IN", "e164")
# Home regions unlike each other: international prefixes (00, 011, 810), national prefixes
# (0, 1, 8), and codes shared by several regions (1, 7).
REGIONS = ("IN", "US", "GB", "RU", "IT", "SG", "DE", "BR", "CA", "KZ", "AU", "JP")
NUMBER_TYPES = (
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE,
    phonenumbers.PhoneNumberType.TOLL_FREE,
)


def _examples() -> list[phonenumbers.PhoneNumber]:
    found = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in NUMBER_TYPES:
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                found.append(number)
    return found


EXAMPLES = _examples()
FOREIGN = [n for n in EXAMPLES if n.country_code != 91]

separators = st.sampled_from(["", " ", "-", ".", "(", ")"])
any_text = st.text(max_size=60) | st.from_regex(r"[+0-9 \-()<>\"@;:a-z]{0,40}", fullmatch=True)
number_like = st.builds(
    lambda prefix, digits: prefix + digits,
    st.sampled_from(["", "+", "00", "0", "+0", "0091", "+91", "sip:", "tel:+", "<sip:+"]),
    st.text(alphabet="0123456789", min_size=0, max_size=18),
)


def _spaced(digits: str, data: st.DataObject) -> str:
    return "".join(d + data.draw(separators) for d in digits)


@st.composite
def written_abroad(draw: st.DrawFn) -> tuple[str, phonenumbers.PhoneNumber]:
    """A foreign number as callers, SIP stacks and people write it with its country code."""
    number = draw(st.sampled_from(FOREIGN))
    cc = str(number.country_code)
    nsn = phonenumbers.national_significant_number(number)
    sep = draw(separators)
    shape = draw(st.sampled_from(["+{c}{s}{n}", "00{c}{s}{n}", "tel:+{c}-{n}", "sip:+{c}{n}@h"]))
    text = shape.format(c=cc, s=sep, n=nsn)
    if draw(st.booleans()):
        text = f'"{draw(st.text(max_size=8).filter(lambda t: "<" not in t))}" <{text}>'
    return text, number


@given(
    identity=any_text,
    attributes=st.dictionaries(
        st.sampled_from(["sip.phoneNumber", "sip.trunkPhoneNumber", "sip.callID", "x"]),
        any_text | number_like,
    ),
    metadata=any_text
    | st.builds(lambda v: orjson.dumps({"from": v}).decode(), any_text | number_like),
    room=any_text | st.builds(lambda n: f"call_{n}_ab12", number_like),
    room_metadata=any_text | st.builds(lambda v: orjson.dumps({"caller": v}).decode(), number_like),
    region=st.sampled_from(REGIONS),
)
def test_any_webhook_content_gives_only_clean_keys(
    identity: str,
    attributes: dict[str, str],
    metadata: str,
    room: str,
    room_metadata: str,
    region: str,
) -> None:
    party = CallParty(identity=identity, metadata=metadata, attributes=attributes)
    plan = NumberPlan(region, "e164")
    found = detect_numbers(party, room, room_metadata, ("caller", "dialed"), plan, "8655701159")
    for d in found:
        assert KEY.fullmatch(d.number), d


@given(written_abroad())
def test_a_number_with_another_country_code_never_maps_to_a_national_key(
    case: tuple[str, phonenumbers.PhoneNumber],
) -> None:
    text, number = case
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    assert normalise_number(text, HOME) == e164
    assert normalise_number(text, NumberPlan("IN", "off")) is None


@given(st.sampled_from(REGIONS), st.text(alphabet="0123456789", min_size=4, max_size=14))
def test_plus_and_a_foreign_code_is_never_national(region: str, digits: str) -> None:
    home = phonenumbers.country_code_for_region(region)
    for cc in (c for c in (1, 44, 65, 91, 7, 49) if c != home):
        key = normalise_number(f"+{cc}{digits}", NumberPlan(region, "e164"))
        assert key is None or key.startswith(f"+{cc}")


formatted = st.builds(
    phonenumbers.format_number,
    st.sampled_from(EXAMPLES),
    st.sampled_from(
        [
            phonenumbers.PhoneNumberFormat.E164,
            phonenumbers.PhoneNumberFormat.INTERNATIONAL,
            phonenumbers.PhoneNumberFormat.NATIONAL,
            phonenumbers.PhoneNumberFormat.RFC3966,
        ]
    ),
)


@given(any_text | number_like | formatted, st.sampled_from(REGIONS))
def test_normalising_is_idempotent(raw: str, region: str) -> None:
    plan = NumberPlan(region, "e164")
    key = normalise_number(raw, plan)
    if key is not None:
        assert normalise_number(key, plan) == key


@given(st.sampled_from(EXAMPLES), st.sampled_from(REGIONS), st.data())
def test_every_valid_number_gets_a_key_however_it_is_spaced(
    number: phonenumbers.PhoneNumber, region: str, data: st.DataObject
) -> None:
    plan = NumberPlan(region, "e164")
    text = "+" + _spaced(
        str(number.country_code) + phonenumbers.national_significant_number(number), data
    )
    key = normalise_number(text, plan)
    assert key is not None
    assert normalise_number(key, plan) == key


@given(
    st.sampled_from(EXAMPLES),
    st.sampled_from(
        [
            phonenumbers.PhoneNumberFormat.E164,
            phonenumbers.PhoneNumberFormat.INTERNATIONAL,
            phonenumbers.PhoneNumberFormat.RFC3966,
        ]
    ),
    st.sampled_from(["", "call_", "sip:", "caller ", "num_", "<"]),
    st.sampled_from(["", "_ab12", "@host", ".json", " called", ">"]),
    st.sampled_from(REGIONS),
)
def test_the_logs_mask_every_number_the_lookup_would_accept(
    number: phonenumbers.PhoneNumber,
    fmt: int,
    before: str,
    after: str,
    region: str,
) -> None:
    """Whatever the plan, a valid number written in international form, inside a room name, a
    URI or a path, leaves at most its last four digits in the log."""
    text = before + phonenumbers.format_number(number, fmt) + after
    masked = redact_text(text, region)
    assert masked.startswith(before)
    assert masked.endswith(after)
    written = masked[len(before) : len(masked) - len(after)]
    assert sum(c.isdigit() for c in written) <= 4, masked
