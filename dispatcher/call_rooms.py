"""Which rooms' calls the dispatcher sets up, and when: a SIP dispatch rule says so for the rooms it
creates, with the `call_setup` key of their metadata (`room_config.metadata` of the rule).

- absent: the set-up starts when a SIP participant joins (any room, as before the key existed);
- `on_room_started`: the set-up starts with the room. livekit-sip creates the room by joining the
  caller to it, and livekit-server sends `room_started` before `participant_joined` (the caller
  becomes active only once its media is connected), so the persona and the dispatch are under
  way while the phone is still connecting. Our rule (`config/sip/dispatch_rule.json`) says this:
  it is individual, so its rooms are named `<prefix>_<caller>_<random>` and the name carries the
  number the persona is looked up by;
- `off`: another route serves these calls (its rule dispatches its own agent, as the ring-time
  benchmark's native floor does): the dispatcher leaves them alone.

Pure functions of what a webhook carries, so deciding costs no LiveKit call.
"""

from __future__ import annotations

from typing import Literal

import orjson

from contract.metadata import Lookup
from contract.phone_numbers import NumberPlan
from dispatcher.caller import CallParty, caller_candidates

CALL_SETUP_KEY = "call_setup"
CallSetupMode = Literal["on_join", "on_room_started", "off"]
_MODES: tuple[CallSetupMode, ...] = ("on_room_started", "off")


def call_setup_mode(room_metadata: str) -> CallSetupMode:
    """How the room's calls are set up, from its metadata (anything unreadable: `on_join`)."""
    if '"' + CALL_SETUP_KEY + '"' not in room_metadata:
        return "on_join"  # the usual case, without parsing a persona-sized JSON document
    try:
        value = orjson.loads(room_metadata)
    except orjson.JSONDecodeError:
        return "on_join"
    if isinstance(value, dict):
        for mode in _MODES:
            if value.get(CALL_SETUP_KEY) == mode:
                return mode
    return "on_join"


def sets_up_on_start(
    room_name: str, room_metadata: str, lookups: tuple[Lookup, ...], plan: NumberPlan
) -> bool:
    """Whether a started room's call is set up now: its rule asks for it, and the room's name
    gives every number the persona is looked up by (the caller's; the dialled number is only
    known from the participant, so a `dialed` lookup waits for the join, as does a rule that
    hides the caller's number)."""
    return (
        call_setup_mode(room_metadata) == "on_room_started"
        and lookups == ("caller",)
        and bool(caller_candidates(CallParty(), room_name, room_metadata, plan))
    )
