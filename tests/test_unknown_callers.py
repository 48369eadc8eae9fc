"""UNKNOWN_CALLER_POLICY: what a caller the CRM does not know gets (answer, reject, announce), and
that a CRM that is down, slow or broken never makes a caller unknown."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from config.settings import Settings
from contract.metadata import DEFAULT_UNKNOWN_CALLER_MESSAGE, decode_persona_metadata
from dispatcher.call_setup import CallJoin
from dispatcher.caller import CallParty
from dispatcher.service import open_clients
from tests.conftest import Client, LogCapture, post
from tests.harness.fake_livekit import FakeLiveKit
from tests.harness.fake_persona_api import FakeState
from tests.harness.signing import participant_joined
from webhooks.app import create_app

pytestmark = pytest.mark.service

UNKNOWN = "9222222222"  # no fixture, no file: the fake CRM answers 404


async def call(client: Client, fake_lk: FakeLiveKit, number: str = UNKNOWN) -> dict[str, Any]:
    fake_lk.add_room("call_1")
    status, body = await post(client, participant_joined("call_1", number=number))
    assert status == 200
    result: dict[str, Any] = body
    return result


async def service(aiohttp_client: Any, settings: Settings) -> Client:
    client: Client = await aiohttp_client(create_app(settings))
    return client


async def test_reject_deletes_the_ringing_callers_room_and_dispatches_nothing(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    fake_lk: FakeLiveKit,
    logs: LogCapture,
) -> None:
    client = await service(aiohttp_client, make_settings(UNKNOWN_CALLER_POLICY="reject"))
    body = await call(client, fake_lk)
    assert body["status"] == "rejected"
    assert fake_lk.deleted_rooms == ["call_1"]
    assert "CreateDispatch" not in fake_lk.calls
    assert "UpdateRoomMetadata" not in fake_lk.calls
    [event] = logs.named("call.unknown_caller")
    assert (event["policy"], event["outcome"], event["reason"]) == (
        "reject",
        "rejected",
        "not_found",
    )
    metrics = await (await client.get("/metrics")).text()
    assert (
        'persona_dispatcher_unknown_callers_total{outcome="rejected",policy="reject"} 1.0'
        in metrics
    )


@pytest.mark.parametrize(
    "crm", [{"fail_status": 503}, {"garbage": True}, {"delay_s": 5.0}], ids=str
)
async def test_a_crm_that_is_down_broken_or_slow_never_makes_a_caller_unknown(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    fake_lk: FakeLiveKit,
    persona_state: FakeState,
    logs: LogCapture,
    crm: dict[str, Any],
) -> None:
    persona_state.configure(crm)
    settings = make_settings(UNKNOWN_CALLER_POLICY="reject", PERSONA_DEADLINE_S="0.5")
    client = await service(aiohttp_client, settings)
    body = await call(client, fake_lk)
    assert body["status"] == "dispatched"
    assert fake_lk.deleted_rooms == []
    assert logs.named("call.unknown_caller") == []


async def test_a_payload_with_no_usable_persona_is_an_unknown_caller(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    fake_lk: FakeLiveKit,
    persona_state: FakeState,
) -> None:
    persona_state.extra[UNKNOWN] = {"campaigns": [{"status": "completed", "voiceAgents": []}]}
    client = await service(aiohttp_client, make_settings(UNKNOWN_CALLER_POLICY="reject"))
    body = await call(client, fake_lk)
    assert body["status"] == "rejected"
    assert fake_lk.deleted_rooms == ["call_1"]


async def test_announce_dispatches_the_agent_with_the_message_to_say(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    fake_lk: FakeLiveKit,
    logs: LogCapture,
) -> None:
    client = await service(aiohttp_client, make_settings(UNKNOWN_CALLER_POLICY="announce"))
    body = await call(client, fake_lk)
    assert body["status"] == "dispatched"
    meta = decode_persona_metadata(fake_lk.rooms["call_1"])
    assert meta.announce == DEFAULT_UNKNOWN_CALLER_MESSAGE
    assert [d.agent_name for d in fake_lk.dispatches["call_1"]] == ["friday"]
    assert [e["outcome"] for e in logs.named("call.unknown_caller")] == ["announced"]


async def test_a_known_caller_is_never_announced_to(
    aiohttp_client: Any, make_settings: Callable[..., Settings], fake_lk: FakeLiveKit
) -> None:
    client = await service(aiohttp_client, make_settings(UNKNOWN_CALLER_POLICY="announce"))
    await call(client, fake_lk, number="8655701159")
    assert decode_persona_metadata(fake_lk.rooms["call_1"]).announce is None


async def test_answer_is_the_default_and_counts_the_unknown_caller(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    fake_lk: FakeLiveKit,
    logs: LogCapture,
) -> None:
    client = await service(aiohttp_client, make_settings())
    body = await call(client, fake_lk)
    assert (body["status"], body["persona_status"]) == ("dispatched", "default")
    assert decode_persona_metadata(fake_lk.rooms["call_1"]).announce is None
    assert [e["outcome"] for e in logs.named("call.unknown_caller")] == ["answered"]


async def test_the_reconciler_never_sets_up_a_rejected_room_again(
    make_settings: Callable[..., Settings], fake_lk: FakeLiveKit
) -> None:
    async with open_clients(make_settings(UNKNOWN_CALLER_POLICY="reject")) as clients:
        fake_lk.add_room("call_1")
        party = CallParty(attributes={"sip.phoneNumber": UNKNOWN})
        first = await clients.setup.handle_join(CallJoin("EV_1", "call_1", "", party))
        again = await clients.setup.handle_join(
            CallJoin("reconcile_1", "call_1", "", party, origin="reconciler")
        )
    assert (first.reason, first.dispatched) == ("rejected", False)
    assert again.ran_for == "EV_1"
    assert "CreateDispatch" not in fake_lk.calls
    assert fake_lk.calls.count("DeleteRoom") == 1
