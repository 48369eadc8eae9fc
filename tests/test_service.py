"""The webhook service end to end in-process: real aiohttp app, fake persona API, fake Twirp API."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from livekit import api
from livekit.protocol.agent import JobStatus

from config.settings import Settings
from contract.metadata import decode_persona_metadata
from dispatcher.call_setup import CallJoin
from dispatcher.caller import CallParty
from dispatcher.service import open_clients
from tests.conftest import PATH, ROOT, Client, LogCapture, post
from tests.harness.fake_livekit import FakeLiveKit
from tests.harness.fake_persona_api import FakeState
from tests.harness.signing import participant_joined, room_event, sign
from tests.harness.stack import eventually
from webhooks.app import create_app
from webhooks.keys import CALL_SETUP

pytestmark = pytest.mark.service


def persona_in(fake: FakeLiveKit, room: str) -> Any:
    return decode_persona_metadata(fake.rooms[room])


# --- HTTP answers ----------------------------------------------------------------------------


async def test_sip_join_writes_persona_then_dispatches_once(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState
) -> None:
    fake_lk.add_room("call_1", '{"crm": "keep me"}')
    status, body = await post(client, participant_joined("call_1", number="+918655701159"))
    assert status == 200
    assert body["status"] == "dispatched"
    assert body["persona_status"] == "loaded"
    meta = persona_in(fake_lk, "call_1")
    assert meta.persona.persona_id == "prs_3001"
    assert meta.caller == "8655701159"
    assert meta.status == "loaded"
    assert meta.source == "api"
    assert orjson.loads(fake_lk.rooms["call_1"])["crm"] == "keep me"
    assert [d.id for d in fake_lk.agent_dispatches("call_1", "friday")] == [body["dispatch_id"]]
    assert fake_lk.calls == [
        "ListRooms",
        "UpdateRoomMetadata",
        "ListDispatch",
        "CreateDispatch",
        "ListDispatch",  # settles a race with another replica
    ]
    dispatch_meta = orjson.loads(fake_lk.dispatches["call_1"][0].metadata)
    assert dispatch_meta["caller"] == "8655701159"
    assert dispatch_meta["persona_version"] == 2
    assert persona_state.last_path == "/mobile/8655701159"


async def test_a_foreign_caller_is_looked_up_by_e164_never_by_a_home_number(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState
) -> None:
    """`+65 9123 4567` was looked up as `6591234567`: a home customer's number and persona."""
    fake_lk.add_room("call_sg")
    status, body = await post(client, participant_joined("call_sg", number="+65 9123 4567"))
    assert status == 200
    assert body["status"] == "dispatched"
    assert persona_state.last_path == "/mobile/+6591234567"
    assert persona_in(fake_lk, "call_sg").caller == "+6591234567"


async def test_forged_signature_is_401_and_touches_nothing(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState
) -> None:
    fake_lk.add_room("call_1")
    body = participant_joined("call_1")
    status, answer = await post(client, body, sign(body, secret="x" * 40))
    assert status == 401
    assert "unauthorized" in answer["error"]
    assert fake_lk.calls == []
    assert persona_state.requests == 0


async def test_tampered_body_is_401(client: Client, fake_lk: FakeLiveKit) -> None:
    body = participant_joined("call_1")
    status, _ = await post(client, body.replace(b"8655701159", b"9000000002"), sign(body))
    assert status == 401
    assert fake_lk.calls == []


async def test_missing_authorization_is_401(client: Client) -> None:
    resp = await client.post(PATH, data=participant_joined("call_1"))
    assert resp.status == 401


async def test_oversized_body_is_413(
    aiohttp_client: Any, make_settings: Callable[..., Settings], fake_lk: FakeLiveKit
) -> None:
    client = await aiohttp_client(create_app(make_settings(WEBHOOK_MAX_BYTES="2048")))
    body = participant_joined("call_1", room_metadata="x" * 4096)
    status, answer = await post(client, body)
    assert status == 413
    assert "too large" in answer["error"]
    assert fake_lk.calls == []


async def test_oversized_chunked_body_is_413(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> None:
    client = await aiohttp_client(create_app(make_settings(WEBHOOK_MAX_BYTES="2048")))

    async def chunks() -> Any:
        for _ in range(8):
            yield b"x" * 1024

    # A valid token (the body is read only then), for a body over the limit.
    resp = await client.post(PATH, data=chunks(), headers={"Authorization": sign(b"x" * 8192)})
    assert resp.status == 413


async def test_malformed_json_is_400(client: Client) -> None:
    body = b'{"event": "participant_joined", '
    status, answer = await post(client, body)
    assert status == 400
    assert "bad request" in answer["error"]


@pytest.mark.parametrize(
    "kind", [api.ParticipantInfo.Kind.STANDARD, api.ParticipantInfo.Kind.AGENT]
)
async def test_non_sip_participants_are_ignored(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState, kind: int
) -> None:
    fake_lk.add_room("call_1")
    status, answer = await post(client, participant_joined("call_1", kind=kind))
    assert (status, answer["status"]) == (200, "ignored")
    assert fake_lk.calls == []
    assert persona_state.requests == 0


async def test_sip_join_in_a_room_whose_rule_turned_set_up_off_is_left_alone(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState
) -> None:
    """Another route's call (its dispatch rule sends its own agent): no persona, no dispatch."""
    fake_lk.add_room("floor_1")
    body = participant_joined("floor_1", room_metadata='{"call_setup": "off"}')
    status, answer = await post(client, body)
    assert (status, answer["status"]) == (200, "ignored")
    assert fake_lk.calls == []
    assert persona_state.requests == 0


async def test_other_events_are_ignored(client: Client, fake_lk: FakeLiveKit) -> None:
    status, answer = await post(client, room_event("call_1", "room_started"))
    assert (status, answer["status"]) == (200, "ignored")
    assert fake_lk.calls == []


EARLY = '{"call_setup": "on_room_started"}'  # what our SIP dispatch rule's rooms start with


async def test_room_our_rule_started_is_set_up_before_the_caller_joins(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState, logs: LogCapture
) -> None:
    """The persona is written and the agent dispatched from `room_started` (the room's name
    carries the caller); the caller's join then shares that set-up: one persona fetch, one
    dispatch, and the metadata written before the dispatch."""
    room = "call_8655701159_Xy12"
    fake_lk.add_room(room, EARLY)
    status, answer = await post(client, room_event(room, "room_started", room_metadata=EARLY))
    assert (status, answer["status"]) == (200, "dispatched")
    meta = persona_in(fake_lk, room)
    assert (meta.caller, meta.persona.persona_id, meta.call_id) == ("8655701159", "prs_3001", None)
    assert orjson.loads(fake_lk.rooms[room])["call_setup"] == "on_room_started"  # kept
    assert "ListRooms" not in fake_lk.calls  # the event carries what the room started with
    [detected] = logs.named("call.caller_detected")
    assert detected["origin"] == "room_name"
    assert fake_lk.calls.index("UpdateRoomMetadata") < fake_lk.calls.index("CreateDispatch")

    joined = participant_joined(room, number="+918655701159", room_metadata=fake_lk.rooms[room])
    status, answer = await post(client, joined)
    assert (status, answer["status"]) == (200, "room_already_set_up")
    assert len(fake_lk.agent_dispatches(room, "friday")) == 1
    assert persona_state.requests == 1


@pytest.mark.parametrize(
    ("room", "room_metadata", "env"),
    [
        ("call_8655701159_Xy12", "", {}),  # a rule that does not ask for it
        ("call_8655701159_Xy12", '{"call_setup": "off"}', {}),
        ("call_1159_Xy12", EARLY, {}),  # a hidden number: only its last digits
        ("call_8655701159_Xy12", EARLY, {"PERSONA_LOOKUP": "dialed"}),  # known at the join
        ("call_8655701159_Xy12", EARLY, {"PERSONA_LOOKUP": "caller,dialed"}),
    ],
)
async def test_room_start_waits_for_the_join_unless_the_name_gives_the_lookup(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    fake_lk: FakeLiveKit,
    persona_state: FakeState,
    room: str,
    room_metadata: str,
    env: dict[str, str],
) -> None:
    client = await aiohttp_client(create_app(make_settings(**env)))
    fake_lk.add_room(room, room_metadata)
    body = room_event(room, "room_started", room_metadata=room_metadata)
    status, answer = await post(client, body)
    assert (status, answer["status"]) == (200, "ignored")
    assert fake_lk.calls == []
    assert persona_state.requests == 0


async def test_set_up_begun_with_the_room_fails_and_the_callers_join_tries_again(
    client: Client, fake_lk: FakeLiveKit
) -> None:
    room = "call_8655701159_Xy12"
    fake_lk.add_room(room, EARLY)
    fake_lk.fail["CreateDispatch"] = 500
    status, _ = await post(client, room_event(room, "room_started", room_metadata=EARLY))
    assert status == 503
    del fake_lk.fail["CreateDispatch"]
    status, answer = await post(client, participant_joined(room, room_metadata=EARLY))
    assert (status, answer["status"]) == (200, "dispatched")
    assert len(fake_lk.agent_dispatches(room, "friday")) == 1


async def test_livekit_failure_is_503_and_redelivery_then_dispatches_once(
    client: Client, fake_lk: FakeLiveKit, logs: LogCapture
) -> None:
    fake_lk.add_room("call_1")
    fake_lk.fail["CreateDispatch"] = 500
    body = participant_joined("call_1")
    status, answer = await post(client, body)
    assert status == 503
    assert answer["step"] == "create_dispatch"
    assert fake_lk.agent_dispatches("call_1", "friday") == []
    assert logs.named("call.setup_failed")[0]["step"] == "create_dispatch"
    del fake_lk.fail["CreateDispatch"]
    status, answer = await post(client, body)  # LiveKit redelivers the same body
    assert (status, answer["status"]) == (200, "dispatched")
    assert len(fake_lk.agent_dispatches("call_1", "friday")) == 1


async def test_livekit_timeout_is_503(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    fake_lk: FakeLiveKit,
    logs: LogCapture,
) -> None:
    """Our own per-call deadline cuts a LiveKit call that hangs: the fake would have answered
    (and written the metadata) after 2 s, so a 503 means the 0.2 s timeout fired first."""
    client = await aiohttp_client(create_app(make_settings(LIVEKIT_API_TIMEOUT_S="0.2")))
    fake_lk.add_room("call_1")
    fake_lk.delay_s["UpdateRoomMetadata"] = 2.0
    status, answer = await post(client, participant_joined("call_1"))
    assert status == 503
    assert answer["step"] == "update_room_metadata"
    [failed] = logs.named("call.setup_failed")
    assert (failed["step"], failed["error"]) == (
        "update_room_metadata",
        "update_room_metadata: TimeoutError",
    )
    assert fake_lk.rooms["call_1"] == ""
    assert "CreateDispatch" not in fake_lk.calls


async def test_room_gone_is_200_without_dispatch(client: Client, fake_lk: FakeLiveKit) -> None:
    status, answer = await post(client, participant_joined("call_gone"))
    assert (status, answer["status"]) == (200, "room_gone")
    assert "CreateDispatch" not in fake_lk.calls


async def test_shutdown_lets_a_running_set_up_finish(
    make_settings: Callable[..., Settings], fake_lk: FakeLiveKit, persona_state: FakeState
) -> None:
    """Closing the app's clients waits for a set-up in flight instead of cutting it off."""
    fake_lk.add_room("call_1")
    persona_state.delay_s = 0.3
    async with open_clients(make_settings()) as clients:
        join = CallJoin(
            "EV_1", "call_1", "", CallParty(attributes={"sip.phoneNumber": "8655701159"})
        )
        running = asyncio.create_task(clients.setup.handle_join(join))
        await asyncio.sleep(0.05)
    result = await running
    assert result.dispatched
    assert len(fake_lk.agent_dispatches("call_1", "friday")) == 1


async def test_health_and_readiness(client: Client, fake_lk: FakeLiveKit) -> None:
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    assert resp.status == 200
    answer = await resp.json()
    assert answer["ready"] is True
    assert answer["persona_cache"] == "local"  # no PERSONA_CACHE_URL: this process's own
    assert fake_lk.calls == ["ListRooms"]  # LiveKit was asked, with our keys


async def test_readiness_checks_livekit_at_most_every_few_seconds(
    client: Client, fake_lk: FakeLiveKit
) -> None:
    """A LiveKit failure makes /readyz 503 with the reason; probes within the check's lifetime
    are answered from it, without asking LiveKit again."""
    fake_lk.fail["ListRooms"] = 500
    answers = [await client.get("/readyz") for _ in range(3)]
    assert [r.status for r in answers] == [503, 503, 503]
    assert (await answers[0].json())["reason"] == "livekit"
    assert fake_lk.calls == ["ListRooms"]


@pytest.mark.parametrize(("livekit_status", "ready"), [(None, 200), (500, 503)])
async def test_many_concurrent_probes_share_one_check_and_none_is_500(
    client: Client, fake_lk: FakeLiveKit, livekit_status: int | None, ready: int
) -> None:
    """A balancer and an orchestrator probing at once, while LiveKit answers slowly: every probe
    gets the one shared check's answer (it was [200, 500, 500, ...]: the first waiter cleared the
    check the others still awaited)."""
    fake_lk.delay_s["ListRooms"] = 0.2
    if livekit_status is not None:
        fake_lk.fail["ListRooms"] = livekit_status
    answers = await asyncio.gather(*(client.get("/readyz") for _ in range(16)))
    assert [r.status for r in answers] == [ready] * 16
    assert fake_lk.calls == ["ListRooms"]


async def test_draining_refuses_new_webhooks_while_a_running_set_up_finishes(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState, logs: LogCapture
) -> None:
    """Shutdown starts with draining: a new webhook gets 503 (LiveKit redelivers it), /readyz
    503, and the set-up already running still dispatches its agent."""
    fake_lk.add_room("call_1")
    fake_lk.add_room("call_2")
    persona_state.delay_s = 0.3  # keeps call_1's set-up running
    running = asyncio.create_task(post(client, participant_joined("call_1")))
    await eventually(lambda: persona_state.requests, 60, "call_1's set-up to start", 0.01)
    await client.app.shutdown()  # aiohttp's first step on SIGTERM (on_shutdown)
    status, answer = await post(client, participant_joined("call_2"))
    assert (status, answer) == (503, {"error": "draining"})
    ready = await client.get("/readyz")
    assert (ready.status, await ready.json()) == (
        503,
        {"ready": False, "reason": "draining", "persona_cache": "local"},
    )
    status, answer = await running
    assert (status, answer["status"]) == (200, "dispatched")
    assert len(fake_lk.agent_dispatches("call_1", "friday")) == 1
    assert fake_lk.agent_dispatches("call_2", "friday") == []
    assert fake_lk.rooms["call_2"] == ""  # call_2 was not set up at all
    assert logs.named("webhook.rejected")[0]["reason"] == "draining"


# --- rooms by sid ----------------------------------------------------------------------------


async def test_a_room_name_used_again_is_set_up_afresh_on_a_replica_that_missed_the_end(
    aiohttp_client: Any, make_settings: Callable[..., Settings], fake_lk: FakeLiveKit
) -> None:
    """Two replicas behind a balancer: A sets up a call in `call_1`, B receives its end; a
    later call in a new room of the same name reaches A, which sets it up (it answered
    `room_already_set_up` with the previous call's dispatch)."""
    a = await aiohttp_client(create_app(make_settings()))
    b = await aiohttp_client(create_app(make_settings()))
    fake_lk.add_room("call_1")
    status, first = await post(a, participant_joined("call_1", room_sid="RM_first"))
    assert (status, first["status"]) == (200, "dispatched")
    status, ended = await post(b, room_event("call_1", room_sid="RM_first"))
    assert (status, ended["status"]) == (200, "released")
    # The same name again: a new room, without the old one's metadata or dispatches.
    fake_lk.rooms["call_1"] = ""
    fake_lk.dispatches.pop("call_1")
    status, second = await post(
        a, participant_joined("call_1", number="9000000002", room_sid="RM_second")
    )
    assert (status, second["status"]) == (200, "dispatched")
    assert second["dispatch_id"] != first["dispatch_id"]
    assert persona_in(fake_lk, "call_1").caller == "9000000002"
    assert [d.id for d in fake_lk.agent_dispatches("call_1", "friday")] == [second["dispatch_id"]]


async def test_a_dispatch_whose_jobs_all_ended_counts_as_absent(
    client: Client, fake_lk: FakeLiveKit
) -> None:
    """Our agent's dispatch is in the room, but its only job has ended (the agent left): a
    new set-up dispatches again instead of keeping it as `already_dispatched`."""
    fake_lk.add_room("call_1")
    fake_lk.dispatches["call_1"] = [
        api.AgentDispatch(
            id="AD_old",
            agent_name="friday",
            room="call_1",
            state=api.AgentDispatchState(
                created_at=0,  # the earliest: a race settled on it would delete the new one
                jobs=[api.Job(id="AJ_old", state=api.JobState(status=JobStatus.JS_SUCCESS))],
            ),
        )
    ]
    status, body = await post(client, participant_joined("call_1", room_sid="RM_again"))
    assert (status, body["status"]) == (200, "dispatched")
    assert body["dispatch_id"] != "AD_old"
    assert fake_lk.deleted == []
    assert body["dispatch_id"] in [d.id for d in fake_lk.agent_dispatches("call_1", "friday")]


# --- exactly one dispatch --------------------------------------------------------------------


async def test_concurrent_duplicate_webhooks_give_one_dispatch(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState
) -> None:
    fake_lk.add_room("call_1")
    persona_state.delay_s = 0.2  # keep the first set-up in flight while the others arrive
    body = participant_joined("call_1")
    other = participant_joined("call_1")  # a different event id for the same room
    results = await asyncio.gather(*(post(client, b) for b in (body, body, other, body)))
    assert all(status == 200 for status, _ in results)
    statuses = sorted(answer["status"] for _, answer in results)
    assert statuses.count("dispatched") == 1
    assert len(fake_lk.agent_dispatches("call_1", "friday")) == 1
    assert fake_lk.calls.count("CreateDispatch") == 1
    assert persona_state.requests == 1


async def test_redelivered_webhook_later_is_not_dispatched_again(
    client: Client, fake_lk: FakeLiveKit
) -> None:
    fake_lk.add_room("call_1")
    body = participant_joined("call_1")
    assert (await post(client, body))[1]["status"] == "dispatched"
    calls = len(fake_lk.calls)
    status, answer = await post(client, body)
    assert (status, answer["status"]) == (200, "duplicate_event")
    assert len(fake_lk.calls) == calls  # answered from memory, no LiveKit call
    assert len(fake_lk.agent_dispatches("call_1", "friday")) == 1


async def test_second_sip_participant_in_a_set_up_room_gets_no_second_agent(
    client: Client, fake_lk: FakeLiveKit
) -> None:
    fake_lk.add_room("call_1")
    assert (await post(client, participant_joined("call_1")))[1]["status"] == "dispatched"
    status, answer = await post(client, participant_joined("call_1", number="9000000002"))
    assert (status, answer["status"]) == (200, "room_already_set_up")
    assert len(fake_lk.agent_dispatches("call_1", "friday")) == 1


async def test_another_replica_finds_the_existing_dispatch(
    aiohttp_client: Any, make_settings: Callable[..., Settings], fake_lk: FakeLiveKit
) -> None:
    """A second process (no shared memory) receiving the redelivery checks ListDispatch."""
    fake_lk.add_room("call_1")
    body = participant_joined("call_1")
    first = await aiohttp_client(create_app(make_settings()))
    second = await aiohttp_client(create_app(make_settings()))
    assert (await post(first, body))[1]["status"] == "dispatched"
    status, answer = await post(second, body)
    assert (status, answer["status"]) == (200, "already_dispatched")
    assert len(fake_lk.agent_dispatches("call_1", "friday")) == 1


async def test_replicas_racing_on_one_call_settle_on_one_dispatch(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    fake_lk: FakeLiveKit,
    logs: LogCapture,
) -> None:
    """Two processes both see no dispatch and both create one: the later one deletes its own."""
    fake_lk.add_room("call_1")
    fake_lk.delay_s["CreateDispatch"] = 0.1  # both list before either has created
    body = participant_joined("call_1")
    replicas = [await aiohttp_client(create_app(make_settings())) for _ in range(2)]
    results = await asyncio.gather(*(post(r, body) for r in replicas))
    assert sorted(a["status"] for _, a in results) == ["dispatched", "lost_race"]
    kept = fake_lk.agent_dispatches("call_1", "friday")
    assert len(kept) == 1
    assert {a["dispatch_id"] for _, a in results} == {kept[0].id}
    assert len(fake_lk.deleted) == 1
    assert fake_lk.deleted[0] != kept[0].id
    assert logs.named("agent.dispatch_deduplicated")[0]["kept"] == kept[0].id


async def test_room_finished_releases_room_state(client: Client, fake_lk: FakeLiveKit) -> None:
    fake_lk.add_room("call_1")
    await post(client, participant_joined("call_1"))
    setup = client.app[CALL_SETUP]
    assert setup.rooms_held() == 1
    status, answer = await post(client, room_event("call_1", "room_finished"))
    assert (status, answer["status"], answer["held"]) == (200, "released", True)
    assert setup.rooms_held() == 0


async def test_sip_participant_left_releases_room_state(
    client: Client, fake_lk: FakeLiveKit
) -> None:
    fake_lk.add_room("call_1")
    await post(client, participant_joined("call_1"))
    await post(client, participant_joined("call_1", event="participant_left"))
    assert client.app[CALL_SETUP].rooms_held() == 0


# --- persona resolution: retries, deadline, fallbacks ----------------------------------------


async def test_retries_5xx_then_loads(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState, logs: LogCapture
) -> None:
    fake_lk.add_room("call_1")
    persona_state.fail_status, persona_state.fail_times = 503, 2
    status, answer = await post(client, participant_joined("call_1"))
    assert (status, answer["persona_status"]) == (200, "loaded")
    assert persona_state.per_number["8655701159"] == 3
    assert logs.named("persona.fetched")[0]["attempts"] == 3


async def test_429_is_retried(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState
) -> None:
    fake_lk.add_room("call_1")
    persona_state.fail_status, persona_state.fail_times = 429, 1
    _, answer = await post(client, participant_joined("call_1"))
    assert answer["persona_status"] == "loaded"
    assert persona_state.requests == 2


async def test_404_is_not_retried_and_falls_back_to_default(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState
) -> None:
    fake_lk.add_room("call_1")
    _, answer = await post(client, participant_joined("call_1", number="9111111111"))
    assert answer["persona_status"] == "default"
    assert persona_state.per_number == {"9111111111": 1}
    assert persona_in(fake_lk, "call_1").caller == "9111111111"
    assert len(fake_lk.agent_dispatches("call_1", "friday")) == 1


async def test_400_is_not_retried(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState
) -> None:
    fake_lk.add_room("call_1")
    persona_state.fail_status = 400
    _, answer = await post(client, participant_joined("call_1"))
    assert answer["persona_status"] == "default"
    assert persona_state.requests == 1


async def test_api_failure_falls_back_to_local_file(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    fake_lk: FakeLiveKit,
    persona_state: FakeState,
) -> None:
    settings = make_settings()
    shutil.copy(ROOT / "user-mapping" / "num_8655701159.json", settings.user_mapping_dir)
    client = await aiohttp_client(create_app(settings))
    fake_lk.add_room("call_1")
    persona_state.fail_status = 500
    _, answer = await post(client, participant_joined("call_1"))
    assert answer["persona_status"] == "file"
    meta = persona_in(fake_lk, "call_1")
    assert meta.persona.persona_id == "prs_3001"
    assert meta.source.endswith("num_8655701159.json")
    assert persona_state.requests == 3  # every attempt used before falling back


async def test_not_found_falls_back_to_local_file(
    aiohttp_client: Any, make_settings: Callable[..., Settings], fake_lk: FakeLiveKit
) -> None:
    settings = make_settings()
    (settings.user_mapping_dir / "num_9111111111.json").write_bytes(
        (ROOT / "tests/fixtures/personas/num_9000000003.json").read_bytes()
    )
    client = await aiohttp_client(create_app(settings))
    fake_lk.add_room("call_1")
    _, answer = await post(client, participant_joined("call_1", number="9111111111"))
    assert answer["persona_status"] == "file"
    assert persona_in(fake_lk, "call_1").persona.name == "Asha"


async def test_stale_cache_is_used_when_the_api_fails(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    fake_lk: FakeLiveKit,
    persona_state: FakeState,
) -> None:
    client = await aiohttp_client(
        create_app(make_settings(PERSONA_CACHE_TTL_S="0.05", PERSONA_REVALIDATE_S="0"))
    )
    fake_lk.add_room("call_1")
    fake_lk.add_room("call_2")
    assert (await post(client, participant_joined("call_1")))[1]["persona_status"] == "loaded"
    await asyncio.sleep(0.1)
    persona_state.fail_status = 502
    _, answer = await post(client, participant_joined("call_2"))
    assert answer["persona_status"] == "stale"
    assert persona_in(fake_lk, "call_2").persona.persona_id == "prs_3001"


async def test_fresh_cache_skips_the_api(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState, logs: LogCapture
) -> None:
    fake_lk.add_room("call_1")
    fake_lk.add_room("call_2")
    await post(client, participant_joined("call_1"))
    _, answer = await post(client, participant_joined("call_2"))
    assert answer["persona_status"] == "cached"
    assert persona_state.requests == 1
    assert len(logs.named("persona.cache_hit")) == 1


async def test_slow_api_falls_back_within_the_deadline(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    fake_lk: FakeLiveKit,
    persona_state: FakeState,
    logs: LogCapture,
) -> None:
    """The persona deadline (0.3 s), not the API's answer (3 s, inside the 5 s attempt timeout),
    ends the wait: one attempt, the default persona, and the log names the deadline."""
    client = await aiohttp_client(
        create_app(make_settings(PERSONA_DEADLINE_S="0.3", PERSONA_ATTEMPT_TIMEOUT_S="5"))
    )
    fake_lk.add_room("call_1")
    persona_state.delay_s = 3.0
    status, answer = await post(client, participant_joined("call_1"))
    assert (status, answer["persona_status"]) == (200, "default")
    [fallback] = logs.named("persona.fallback")
    assert (fallback["reason"], fallback["status"]) == ("timeout", "default")
    assert persona_state.requests == 1
    assert len(fake_lk.agent_dispatches("call_1", "friday")) == 1


async def test_garbage_payload_falls_back(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState
) -> None:
    fake_lk.add_room("call_1")
    persona_state.garbage = True
    _, answer = await post(client, participant_joined("call_1"))
    assert answer["persona_status"] == "default"
    assert persona_state.requests == 1  # a 200 with garbage is not retried


async def test_oversized_payload_is_refused_and_falls_back(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    fake_lk: FakeLiveKit,
    persona_state: FakeState,
    logs: LogCapture,
) -> None:
    client = await aiohttp_client(create_app(make_settings(PERSONA_MAX_BYTES="2048")))
    fake_lk.add_room("call_1")
    persona_state.extra["9111111111"] = {
        "campaigns": [{"voiceAgents": [{"persona": {"personality": "p" * 4000}}]}]
    }
    _, answer = await post(client, participant_joined("call_1", number="9111111111"))
    assert answer["persona_status"] == "default"
    assert "over 2048" in logs.named("persona.upstream_error")[0]["error"]


async def test_api_unreachable_falls_back_to_default(
    aiohttp_client: Any, make_settings: Callable[..., Settings], fake_lk: FakeLiveKit
) -> None:
    client = await aiohttp_client(
        create_app(make_settings(PERSONA_API_BASE="http://127.0.0.1:9/mobile"))
    )
    fake_lk.add_room("call_1")
    _, answer = await post(client, participant_joined("call_1"))
    assert answer["persona_status"] == "default"
    assert len(fake_lk.agent_dispatches("call_1", "friday")) == 1


async def test_concurrent_calls_from_one_number_share_one_request(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState
) -> None:
    persona_state.delay_s = 0.2
    rooms = [f"call_{i}" for i in range(5)]
    for r in rooms:
        fake_lk.add_room(r)
    results = await asyncio.gather(*(post(client, participant_joined(r)) for r in rooms))
    assert [a["persona_status"] for _, a in results] == ["loaded"] * 5
    assert persona_state.requests == 1


async def test_dialed_lookup_keys_persona_by_trunk_number(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    fake_lk: FakeLiveKit,
    persona_state: FakeState,
) -> None:
    client = await aiohttp_client(create_app(make_settings(PERSONA_LOOKUP="dialed")))
    fake_lk.add_room("call_1")
    await post(client, participant_joined("call_1", number="9111111111", dialed="+919000000002"))
    meta = persona_in(fake_lk, "call_1")
    assert (meta.lookup, meta.caller, meta.persona.persona_id) == (
        "dialed",
        "9000000002",
        "prs_festive",
    )
    assert persona_state.last_path == "/mobile/9000000002"


async def test_caller_then_dialed_tries_dialed_on_not_found(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    fake_lk: FakeLiveKit,
    persona_state: FakeState,
) -> None:
    client = await aiohttp_client(create_app(make_settings(PERSONA_LOOKUP="caller,dialed")))
    fake_lk.add_room("call_1")
    await post(client, participant_joined("call_1", number="9111111111", dialed="9000000002"))
    meta = persona_in(fake_lk, "call_1")
    assert (meta.lookup, meta.status) == ("dialed", "loaded")
    assert persona_state.per_number == {"9111111111": 1, "9000000002": 1}


async def test_non_number_caller_never_reaches_a_url(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState, logs: LogCapture
) -> None:
    fake_lk.add_room("room-x")
    body = participant_joined("room-x", number="../../admin?x=1", identity="sip_../../admin")
    _, answer = await post(client, body)
    assert answer["persona_status"] == "default"
    assert persona_state.requests == 0
    assert logs.named("call.no_caller")


async def test_persona_too_large_for_budget_uses_default(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    fake_lk: FakeLiveKit,
    persona_state: FakeState,
    logs: LogCapture,
) -> None:
    client = await aiohttp_client(create_app(make_settings(METADATA_BUDGET_BYTES="2048")))
    fake_lk.add_room("call_1")
    persona_state.extra["9111111111"] = {
        "campaigns": [{"voiceAgents": [{"persona": {"personality": "p" * 5000}}]}]
    }
    _, answer = await post(client, participant_joined("call_1", number="9111111111"))
    assert answer["persona_status"] == "default"
    assert logs.named("persona.too_large")[0]["budget"] == 2048
    assert len(fake_lk.rooms["call_1"].encode()) <= 2048


# --- logs ------------------------------------------------------------------------------------


async def test_each_step_logs_one_event_with_call_context(
    client: Client, fake_lk: FakeLiveKit, logs: LogCapture
) -> None:
    fake_lk.add_room("call_1")
    await post(client, participant_joined("call_1", call_id="SCL_abc"))
    names = [e["event"] for e in logs.events]
    for step in (
        "webhook.received",
        "call.caller_detected",
        "persona.fetched",
        "persona.resolved",
        "room.metadata_written",
        "agent.dispatched",
        "call.setup_done",
    ):
        assert names.count(step) == 1, step
        event = logs.named(step)[0]
        assert event["room"] == "call_1"
        assert event["call_id"] == "SCL_abc"
        assert event["event_id"].startswith("EV_")
        assert event["ts"].endswith("Z")
    assert logs.named("persona.fetched")[0]["caller"] == "******1159"
    assert isinstance(logs.named("call.setup_done")[0]["duration_ms"], float)
    assert "8655701159" not in logs.text


# --- requests anyone can send ------------------------------------------------------------------


async def test_a_request_without_a_valid_token_is_refused_before_its_body_is_read(
    client: Client,
) -> None:
    """401 as soon as the headers are in: the 1 MiB body announced is never waited for."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: forged\r\n"
            "Content-Type: application/webhook+json\r\nContent-Length: 1048576\r\n\r\n".encode()
        )
        await writer.drain()
        async with asyncio.timeout(10):  # a hang guard: without the check, it waits for the body
            status_line = await reader.readline()
    finally:
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 401"), status_line


async def test_a_flood_of_unauthorized_requests_logs_one_line(
    client: Client, logs: LogCapture
) -> None:
    """Each is refused and counted, one warning stands for all within its interval."""
    body = participant_joined("call_1")
    for _ in range(30):
        status, _ = await post(client, body, sign(body, secret="x" * 40))
        assert status == 401
    rejected = logs.named("webhook.rejected")
    assert len(rejected) == 1, rejected
    assert rejected[0]["suppressed"] == 0
    metrics = (await (await client.get("/metrics")).text()).splitlines()
    assert any('answer="unauthorized"' in m and m.endswith(" 30.0") for m in metrics), metrics
