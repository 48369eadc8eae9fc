"""Phone numbers by the numbering plan (libphonenumber): the one parser behind the key a caller's
persona is looked up by (and written into the metadata's `caller`), and behind what the logs mask.

A number of the deployment's home country is keyed by its national digits, the form the CRM
keeps (`+91 86557 01159` -> `8655701159`). A number of another country never collapses to
national digits, where it could be a home customer's: it is keyed in E.164 with its `+`
(`+65 9123 4567` -> `+6591234567`), or not at all (`FOREIGN_NUMBERS=off`). A key holds ASCII
digits and at most a leading `+`, nothing else, so it is safe in a URL path and a file name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, PhoneNumberFormat

ForeignNumbers = Literal["e164", "off"]

# Separators people and SIP stacks put inside numbers; anything else means "not a number".
_SEPARATORS = re.compile(r"[ \t\-().]")
# `"Priya" <sip:+918655701159@host>;tag=x` or `Priya <tel:+91...>`: the URI between the brackets.
_NAME_ADDR = re.compile(r"^[^<]*<([^>]*)>")
# The user part of a SIP URI, or a tel URI's number, up to its parameters or host.
_URI = re.compile(r"^(?:sips?|tel):([^@;?>]*)", re.IGNORECASE)
_DIALABLE = re.compile(r"\+?[0-9]+", re.ASCII)
_KEY = re.compile(r"\+?[0-9]+", re.ASCII)
# Longer than any number in any plan (E.164: 15 digits; an international prefix adds up to 4).
_MAX_DIALABLE = 20


@dataclass(frozen=True)
class NumberPlan:
    """The deployment's numbering plan: its home region (ISO 3166, e.g. `IN`) and what a
    foreign number is looked up by."""

    region: str
    foreign: ForeignNumbers


def dialable(raw: str) -> str | None:
    """The number as dialled, separators dropped, out of a plain number, a name-addr, a SIP or
    a tel URI; None when what is left is anything but digits with an optional leading `+`."""
    text = raw.strip()
    if m := _NAME_ADDR.match(text):
        text = m.group(1).strip()
    text = text.strip("\"'")
    if m := _URI.match(text):
        text = m.group(1)
    text = _SEPARATORS.sub("", text)
    if len(text) > _MAX_DIALABLE or not _DIALABLE.fullmatch(text):
        return None
    return text


def parse_number(raw: str, region: str) -> PhoneNumber | None:
    """The phone number `raw` is in `region`'s plan (national, `+` or international prefix),
    or None unless libphonenumber finds it a valid number."""
    text = dialable(raw)
    if text is None:
        return None
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def lookup_key(raw: str | None, plan: NumberPlan) -> str | None:
    """The key to look the persona up by: national digits at home, E.164 abroad (or None with
    `foreign="off"`); None for anything that is not a valid phone number."""
    if raw is None:
        return None
    number = parse_number(raw, plan.region)
    if number is None:
        return None
    if number.country_code == phonenumbers.country_code_for_region(plan.region):
        return str(phonenumbers.national_significant_number(number))
    if plan.foreign == "off":
        return None
    return str(phonenumbers.format_number(number, PhoneNumberFormat.E164))


def is_lookup_key(text: str) -> bool:
    """ASCII digits with at most a leading `+`: all a key may hold, and all that may reach a
    URL or a path."""
    return _KEY.fullmatch(text) is not None


def region_of_country_code(country_code: int) -> str | None:
    """The main region of a country calling code (`91` -> `IN`, `1` -> `US`), None if unknown."""
    region = phonenumbers.region_code_for_country_code(country_code)
    return None if region == phonenumbers.UNKNOWN_REGION else str(region)


def is_region(region: str) -> bool:
    """Whether libphonenumber has a numbering plan for `region` (ISO 3166 alpha-2)."""
    return region in phonenumbers.SUPPORTED_REGIONS
