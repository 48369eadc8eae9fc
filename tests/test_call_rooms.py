"""Which rooms' calls the dispatcher sets up, read from the room metadata a rule writes."""

from __future__ import annotations

import pytest

from dispatcher.call_rooms import call_setup_mode

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("metadata", "mode"),
    [
        ("", "on_join"),
        ('{"crm": "x"}', "on_join"),
        ('{"call_setup": "off"}', "off"),
        ('{"call_setup": "on_room_started"}', "on_room_started"),
        ('{"call_setup": "off", "persona": {"version": 1}}', "off"),
        ('{"call_setup": "sometimes"}', "on_join"),
        ('{"call_setup": "off"', "on_join"),
        ('["call_setup", "off"]', "on_join"),
        ('{"crm": {"call_setup": "off"}}', "on_join"),
    ],
)
def test_mode_is_read_from_the_top_level_key_only(metadata: str, mode: str) -> None:
    assert call_setup_mode(metadata) == mode
