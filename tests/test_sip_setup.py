"""The SIP set-up's data files and its plan: what it creates, updates, keeps and deletes."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from livekit.protocol.sip import SIPDispatchRuleInfo, SIPInboundTrunkInfo

from dispatcher.call_rooms import call_setup_mode
from provisioning.sip_setup import (
    Change,
    DataFileError,
    describe_wanted,
    differing_fields,
    load_rule,
    load_trunk,
    plan_rule,
    plan_trunk,
    rule_for_trunk,
)

pytestmark = pytest.mark.unit


def trunk(
    trunk_id: str = "", name: str = "t", numbers: tuple[str, ...] = ("+1555",)
) -> SIPInboundTrunkInfo:
    return SIPInboundTrunkInfo(sip_trunk_id=trunk_id, name=name, numbers=list(numbers))


def rule(
    rule_id: str = "", name: str = "r", trunk_ids: tuple[str, ...] = ()
) -> SIPDispatchRuleInfo:
    info = SIPDispatchRuleInfo(sip_dispatch_rule_id=rule_id, name=name, trunk_ids=list(trunk_ids))
    info.rule.dispatch_rule_individual.room_prefix = "call"
    return info


def write(tmp_path: Path, name: str, doc: object) -> Path:
    path = tmp_path / name
    path.write_bytes(orjson.dumps(doc))
    return path


def test_committed_data_files_describe_the_trunk_and_an_individual_rule_without_agents() -> None:
    t = load_trunk()
    r = load_rule()
    assert t.name
    assert "+918000000001" in t.numbers
    assert "127.0.0.0/8" in t.allowed_addresses
    assert not t.auth_username
    assert not t.auth_password
    assert r.rule.WhichOneof("rule") == "dispatch_rule_individual"
    assert r.rule.dispatch_rule_individual.room_prefix == "call"
    assert not r.room_config.agents
    # Its rooms are set up as they start, before the caller has joined (dispatcher/call_rooms.py).
    assert call_setup_mode(r.room_config.metadata) == "on_room_started"


def test_plan_creates_what_the_server_does_not_have() -> None:
    assert plan_trunk(trunk(), []) == [Change("create", "trunk", "t")]
    assert plan_rule(rule(trunk_ids=("ST_1",)), [rule("SDR_9", name="other")]) == [
        Change("create", "rule", "r")
    ]


def test_plan_keeps_an_identical_object_whatever_the_server_stamped_on_it() -> None:
    existing = trunk("ST_1")
    existing.created_at.seconds = 1234
    assert plan_trunk(trunk(), [existing]) == [Change("keep", "trunk", "t", "ST_1")]


def test_plan_updates_the_fields_that_differ() -> None:
    existing = trunk("ST_1", numbers=("+1000",))
    existing.auth_username = "old"
    steps = plan_trunk(trunk(), [existing])
    assert steps == [Change("update", "trunk", "t", "ST_1", ("numbers", "auth_username"))]
    assert steps[0].describe() == "update trunk 't' (ST_1): numbers, auth_username"


def test_plan_updates_a_rule_that_points_at_another_trunk_or_dispatches_agents() -> None:
    wanted = rule(trunk_ids=("ST_1",))
    old_trunk = rule("SDR_1", trunk_ids=("ST_0",))
    with_agent = rule("SDR_1", trunk_ids=("ST_1",))
    with_agent.room_config.agents.add(agent_name="friday")
    assert plan_rule(wanted, [old_trunk])[0].fields == ("trunk_ids",)
    assert plan_rule(wanted, [with_agent])[0].fields == ("room_config",)


def test_plan_keeps_one_of_duplicates_whatever_the_list_order_and_deletes_the_rest() -> None:
    """Two runs racing may have created two trunks of the same name: the same one stays, and
    the other goes first (an update could conflict with it)."""
    dups = [trunk("ST_2"), trunk("ST_X", name="x"), trunk("ST_1")]
    for existing in (dups, dups[::-1]):
        assert plan_trunk(trunk(), existing) == [
            Change("delete", "trunk", "t", "ST_2"),
            Change("keep", "trunk", "t", "ST_1"),
        ]


def test_plan_keeps_the_duplicate_our_rule_uses_then_the_closest() -> None:
    close, far = trunk("ST_9"), trunk("ST_1", numbers=("+1999",))
    assert plan_trunk(trunk(), [far, close])[-1] == Change("keep", "trunk", "t", "ST_9")
    assert plan_trunk(trunk(), [close, far], in_use={"ST_1"}) == [
        Change("delete", "trunk", "t", "ST_9"),
        Change("update", "trunk", "t", "ST_1", ("numbers",)),
    ]


def test_differing_fields_ignores_server_stamped_fields() -> None:
    a, b = rule("SDR_1"), rule("SDR_2")
    b.created_at.seconds, b.updated_at.seconds = 1, 2
    assert differing_fields(a, b) == ()


def test_rule_for_trunk_binds_a_copy_to_one_trunk() -> None:
    wanted = load_rule()
    bound = rule_for_trunk(wanted, "ST_1")
    assert list(bound.trunk_ids) == ["ST_1"]
    assert not wanted.trunk_ids


def test_load_trunk_takes_credentials_from_the_caller_and_wants_both() -> None:
    t = load_trunk(auth_username="zoiper", auth_password="secret-pass")
    assert (t.auth_username, t.auth_password) == ("zoiper", "secret-pass")
    with pytest.raises(DataFileError, match="both a username and a password"):
        load_trunk(auth_username="zoiper")


def test_dry_run_description_masks_the_password() -> None:
    text = describe_wanted(load_trunk(auth_username="u", auth_password="secret-pass"), load_rule())
    assert "secret-pass" not in text
    assert "********" in text


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"name": "r", "rule": {"dispatch_rule_direct": {"room_name": "x"}}}, "individual"),
        ({"name": "r", "rule": {"dispatch_rule_individual": {}}}, "room_prefix"),
        (
            {
                "name": "r",
                "rule": {"dispatch_rule_individual": {"room_prefix": "call"}},
                "room_config": {"agents": [{"agent_name": "friday"}]},
            },
            "agents must be empty",
        ),
        ({"rule": {"dispatch_rule_individual": {"room_prefix": "call"}}}, "needs a name"),
        ({"name": "r", "no_such_field": 1}, "no_such_field"),
    ],
)
def test_load_rule_refuses_what_our_dispatcher_cannot_work_with(
    tmp_path: Path, doc: object, problem: str
) -> None:
    with pytest.raises(DataFileError, match=problem):
        load_rule(write(tmp_path, "rule.json", doc))


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"numbers": ["+1"]}, "needs a name"),
        ({"name": "t"}, "at least one number"),
        ({"name": "t", "numbers": ["+1"], "sip_trunk_id": "ST_1"}, "assigned by the server"),
    ],
)
def test_load_trunk_refuses_incomplete_files(tmp_path: Path, doc: object, problem: str) -> None:
    with pytest.raises(DataFileError, match=problem):
        load_trunk(write(tmp_path, "trunk.json", doc))


def test_load_reports_a_missing_or_broken_file_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="cannot read"):
        load_trunk(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataFileError) as e:
        load_trunk(tmp_path / "bad.json")
    assert "\n" not in str(e.value)
