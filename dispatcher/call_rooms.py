"""Which rooms' calls the dispatcher sets up: a SIP dispatch rule says so for the rooms it creates,
with the `call_setup` key of their metadata (`room_config.metadata` of the rule).

- absent: the set-up starts when a SIP participant joins (any room, as before the key existed);
- `off`: another route serves these calls (its rule dispatches its own agent, as the ring-time
  benchmark's native floor does): the dispatcher leaves them alone.

A pure function of the room metadata a webhook carries, so deciding costs no LiveKit call.
"""

from __future__ import annotations

from typing import Literal

import orjson

CALL_SETUP_KEY = "call_setup"
CallSetupMode = Literal["on_join", "off"]


def call_setup_mode(room_metadata: str) -> CallSetupMode:
    """How the room's calls are set up, from its metadata (anything unreadable: `on_join`)."""
    if '"' + CALL_SETUP_KEY + '"' not in room_metadata:
        return "on_join"  # the usual case, without parsing a persona-sized JSON document
    try:
        value = orjson.loads(room_metadata)
    except orjson.JSONDecodeError:
        return "on_join"
    if isinstance(value, dict) and value.get(CALL_SETUP_KEY) == "off":
        return "off"
    return "on_join"
