"""Where a call may be transferred to a human: a `tel:` number or a `sip:` URI, as the SIP REFER's
`Refer-To` carries it. Pure code, shared by the dispatcher (settings, the CRM's payload) and the
agent (which only transfers to a target that passed here)."""

from __future__ import annotations

import re

import phonenumbers

# user@host[:port], no spaces, no header or parameter injection (`;`, `?`, `<`, `>`).
_SIP_URI = re.compile(r"^sips?:[A-Za-z0-9_.!~*'()&=+$,%-]+@[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
DEFAULT_TRANSFER_LINE = "Please hold while I transfer you to a colleague."
DEFAULT_TRANSFER_FAILED_LINE = "Sorry, I could not transfer you right now. Let me keep helping you."


def transfer_target(raw: str) -> str | None:
    """`raw` as a transfer target (`tel:+<E.164>` or `sip:user@host`), or None when it is not
    one. A bare international number (`+9198...`) becomes `tel:`; a number without its country
    code is refused, as no home region is known here."""
    value = raw.strip()
    if _SIP_URI.match(value):
        return value
    number = value[4:] if value.lower().startswith("tel:") else value
    if not number.startswith("+"):
        return None
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return "tel:" + phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
