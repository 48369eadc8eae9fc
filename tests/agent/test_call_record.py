"""The call's document as pure data (agent/call_record.py): keys every MongoDB-compatible server
stores, numbers masked, writes that name one document and never duplicate a turn."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.call_record import (
    RUNS,
    TURNS,
    CallStart,
    caller_fields,
    is_answered,
    masked,
    persona_fields,
    safe_key,
    start_write,
    storable,
    turns_write,
)
from agent.persona import AppliedPersona
from tests.agent.helpers import PIRATE, loaded

pytestmark = pytest.mark.unit

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def refused_by_servers(value: Any, *, in_array: bool = False) -> list[str]:
    """What FerretDB (and older MongoDB servers) refuse in `value`: keys holding `.` or
    starting with `$`, arrays directly inside arrays."""
    problems: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if "." in k or k.startswith("$"):
                problems.append(f"key {k!r}")
            problems += refused_by_servers(v)
    elif isinstance(value, list):
        if in_array:
            problems.append("nested array")
        for v in value:
            problems += refused_by_servers(v, in_array=True)
    return problems


@given(json_values)
def test_storable_values_hold_nothing_a_server_refuses(value: Any) -> None:
    assert refused_by_servers(storable(value)) == []


@given(st.dictionaries(st.text(), st.integers(), max_size=8))
def test_safe_keys_keep_distinct_keys_distinct(config: dict[str, int]) -> None:
    """Making keys safe never merges two of the persona's keys into one."""
    assert len({safe_key(k) for k in config}) == len(config)


def test_safe_keys_read_as_the_original() -> None:
    assert storable({"model.temperature": 1, "$ref": 2, "a$b": 3}) == {
        "model%2Etemperature": 1,
        "%24ref": 2,
        "a$b": 3,
    }


def test_numbers_are_masked_unless_kept() -> None:
    fields = {"caller": "918655701159", "text": "call me on 8655701159"}
    assert masked(fields, unmasked=False) == {
        "caller": "********1159",
        "text": "call me on ******1159",
    }
    assert masked(fields, unmasked=True) == fields


def test_the_start_is_an_upsert_of_the_job_that_never_overwrites_its_first_start() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    start = CallStart("AJ_1", "call_8655701159_x", "RM_1", "friday", "AD_1", None, "SCL_1", when)
    write = start_write(start, "w1", unmasked=False)
    assert (write.filter, write.upsert) == ({"_id": "AJ_1"}, True)
    assert write.update["$setOnInsert"] == {"started_at": when, TURNS: []}
    assert write.update["$set"][f"{RUNS}.w1.started_at"] == when
    assert write.update["$set"]["room"] == "call_******1159_x"
    assert "caller" not in write.update["$set"]  # unknown yet: a known value is not nulled


def test_a_batch_of_turns_is_pushed_only_onto_the_count_it_started_from() -> None:
    first = turns_write("AJ_1", "w1", 0, [{"text": "a"}])
    assert first.filter == {"_id": "AJ_1", f"{RUNS}.w1.turns": {"$exists": False}}
    later = turns_write("AJ_1", "w1", 3, [{"text": "b"}, {"text": "c"}])
    assert later.filter == {"_id": "AJ_1", f"{RUNS}.w1.turns": 3}
    assert later.update["$set"] == {f"{RUNS}.w1.turns": 5}
    assert later.upsert is False


def test_the_persona_is_stored_as_the_contract_has_it_with_how_it_was_found() -> None:
    applied = AppliedPersona(loaded(PIRATE), "room_update", 120, problems=("late",))
    when = datetime(2026, 1, 1, tzinfo=UTC)
    fields = persona_fields(applied, event="persona_loaded", when=when)
    persona = fields["persona"]
    assert persona["instructions"] == PIRATE.instructions
    assert (persona["read_from"], persona["waited_ms"], persona["problems"]) == (
        "room_update",
        120,
        ["late"],
    )
    assert fields["events"][0]["event"] == "persona_loaded"
    assert fields["events"][0]["at"] == when


def test_the_sip_participant_names_the_call_and_its_answer() -> None:
    ringing = {
        "sip.callID": "SCL_9",
        "sip.phoneNumber": "+918655701159",
        "sip.trunkPhoneNumber": "+15550100",
        "sip.callStatus": "ringing",
    }
    assert caller_fields(ringing) == {
        "call_id": "SCL_9",
        "caller_sip": "+918655701159",
        "dialed": "+15550100",
    }
    assert not is_answered(ringing)
    assert is_answered({**ringing, "sip.callStatus": "active"})


def test_stored_fields_with_the_plan_mask_phone_numbers_not_call_ids() -> None:
    """A call id whose random suffix is all digits (`SCL_84794759`) is no phone number of the
    plan: the document keeps it whole, as the logs do, while the caller is masked."""
    fields = masked(
        {"call_id": "SCL_84794759", "caller": "+918655701159"}, unmasked=False, region="IN"
    )
    assert fields == {"call_id": "SCL_84794759", "caller": "+********1159"}
