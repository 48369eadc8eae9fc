"""Against a real livekit-server: its own webhooks drive the dispatcher."""

from __future__ import annotations

import asyncio
import functools
import shutil

import aiohttp
import pytest
from livekit import api

from tests.harness.fake_persona_api import FIXTURES
from tests.harness.fixture_personas import ASHA
from tests.harness.stack import (
    Stack,
    agent_dispatches,
    eventually,
    join,
    join_sip,
    room_persona,
    unique_number,
    unique_room,
)

AGENT = "friday"


async def test_sip_participant_gets_persona_then_one_dispatch(
    persona_api: Stack, lk: api.LiveKitAPI
) -> None:
    room = unique_room("8655701159")
    caller = await join_sip(persona_api, room, "+918655701159")
    try:
        dispatches = await eventually(lambda: agent_dispatches(lk, room, AGENT), 60, "a dispatch")
        meta = await room_persona(lk, room)
        assert meta is not None
        assert meta.status == "loaded"
        assert meta.persona.persona_id == "prs_3001"
        assert (meta.persona.welcome or "").startswith("Namaste!")
        assert meta.caller == "8655701159"
        assert (meta.call_id or "").startswith("SCL_")
        await asyncio.sleep(0.5)  # late duplicates would show up here
        assert len(await agent_dispatches(lk, room, AGENT)) == len(dispatches) == 1
        done = persona_api.dispatcher_events(event="call.setup_done", room=room)
        assert len(done) == 1
        assert done[0]["dispatched"] is True
    finally:
        await caller.disconnect()


@pytest.mark.parametrize("kind", ["standard", "agent"])
async def test_non_sip_participants_get_no_dispatch(
    persona_api: Stack, lk: api.LiveKitAPI, kind: str
) -> None:
    room = unique_room("8655701159")
    participant = await join(persona_api, room, f"{kind}_8655701159", kind=kind)
    try:
        ignored = await eventually(
            lambda: persona_api.dispatcher_events(
                event="webhook.ignored", room=room, event_type="participant_joined"
            ),
            60,
            "the dispatcher to ignore the join",
        )
        assert ignored[0]["reason"] == "not a SIP participant"
        assert await agent_dispatches(lk, room, AGENT) == []
        assert persona_api.persona_stats()["requests"] == 0
    finally:
        await participant.disconnect()


async def test_replayed_webhook_gives_no_second_dispatch(
    persona_api: Stack, lk: api.LiveKitAPI
) -> None:
    room = unique_room("9000000002")
    caller = await join_sip(persona_api, room, "9000000002")
    try:
        await eventually(lambda: agent_dispatches(lk, room, AGENT), 60, "a dispatch")
        await eventually(
            lambda: persona_api.dispatcher_events(event="call.setup_done", room=room),
            60,
            "the set-up to finish",
        )
        recorded = await eventually(
            lambda: persona_api.recorder.find("participant_joined", room),
            60,
            "the recorded webhook",
        )
        # The exact bytes and signature livekit-server sent, delivered again.
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                async with http.post(
                    persona_api.dispatcher_url + "/webhooks/livekit",
                    data=recorded[0].body,
                    headers={
                        "Authorization": recorded[0].authorization,
                        "Content-Type": "application/webhook+json",
                    },
                ) as resp:
                    assert resp.status == 200
        assert len(await agent_dispatches(lk, room, AGENT)) == 1
        skipped = persona_api.dispatcher_events(event="agent.dispatch_skipped", room=room)
        assert [e["reason"] for e in skipped] == ["duplicate_event"] * 3
    finally:
        await caller.disconnect()


@pytest.mark.parametrize("status", ["default", "file"])
async def test_persona_api_down_still_dispatches_within_deadline(
    persona_api: Stack, lk: api.LiveKitAPI, status: str
) -> None:
    """An API answering 503 is tried PERSONA_ATTEMPTS (3) times, no more; then the fallback
    persona is written and the agent dispatched, and the log says the API was the reason.

    The number is this test's own, so no earlier call left a cached copy: a number known to no
    one gets the default persona, one with a local file gets that file, never a stale copy."""
    number = unique_number()
    if status == "file":
        shutil.copy(
            FIXTURES / "num_9000000003.json", persona_api.user_mapping / f"num_{number}.json"
        )
    persona_api.persona_control(fail_status=503)
    room = unique_room(number)
    caller = await join_sip(persona_api, room, number)
    try:
        await eventually(functools.partial(agent_dispatches, lk, room, AGENT), 60, "a dispatch")
        meta = await room_persona(lk, room)
        assert meta is not None
        assert meta.status == status
        if status == "file":
            assert meta.source == str(persona_api.user_mapping / f"num_{number}.json")
            assert (meta.persona.name, meta.persona.instructions) == (ASHA.name, ASHA.personality)
        else:
            assert (meta.source, meta.persona.persona_id) == ("default", None)
        assert len(await agent_dispatches(lk, room, AGENT)) == 1
        [fallback] = persona_api.dispatcher_events(event="persona.fallback", room=room)
        assert (fallback["reason"], fallback["status"]) == ("upstream_error", status)
        [upstream] = persona_api.dispatcher_events(event="persona.upstream_error", room=room)
        assert upstream["http_status"] == 503
        assert persona_api.persona_stats()["per_number"][number] == 3
    finally:
        await caller.disconnect()


async def test_room_state_released_when_the_call_ends(
    persona_api: Stack, lk: api.LiveKitAPI
) -> None:
    room = unique_room("9000000003")
    caller = await join_sip(persona_api, room, "9000000003")
    await eventually(lambda: agent_dispatches(lk, room, AGENT), 60, "a dispatch")
    await caller.disconnect()
    released = await eventually(
        lambda: persona_api.dispatcher_events(event="room.released", room=room),
        60,
        "room.released",
    )
    assert released[0]["reason"] == "participant_left"
    assert released[0]["held"] is True
