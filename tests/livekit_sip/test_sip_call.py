"""A real SIP call into livekit-sip, placed by sipp, with no dispatcher and no agent: what the
SIP side alone does (a test peer stands in for the agent). The dispatcher + agent calls are in
tests/e2e."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time

import pytest
from livekit import api
from livekit.protocol.models import ParticipantInfo

from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET
from tests.harness.room_peer import (
    AnsweringPeer,
    SipJoin,
    wait_sip_participant,
    wait_sip_webhook,
)
from tests.harness.sip_stack import SipStack
from tests.harness.sipp import TEST_CALLER, Call, read_injection
from tests.harness.stack import WebhookRecorder, eventually
from tests.harness.timings import percentile, record_timings
from tests.livekit_sip.conftest import LOG_DIR


async def test_invite_rings_and_puts_the_caller_in_a_call_room_as_a_sip_participant(
    sip_stack: SipStack, lk: api.LiveKitAPI, webhooks: WebhookRecorder
) -> None:
    """With nobody to answer, livekit-sip joins the caller to `call_<number>_<id>` as a SIP
    participant carrying the caller's attributes, and keeps ringing."""
    run = sip_stack.sipp(rtp_seconds=1, timeout=60)
    started = time.monotonic()
    run.start()
    join: SipJoin | None = None
    try:
        join = await wait_sip_participant(
            lk, TEST_CALLER, since=started, sip_call_id=run.call_id(1), within_s=60
        )
        p = join.participant
        assert join.room.startswith(f"call_{TEST_CALLER}_")
        assert p.identity == f"sip_{TEST_CALLER}"
        attrs = dict(p.attributes)
        assert attrs["sip.phoneNumber"] == TEST_CALLER
        assert attrs["sip.trunkPhoneNumber"] == sip_stack.trunk_number
        assert attrs["sip.trunkID"] == sip_stack.setup.trunk_id
        assert attrs["sip.ruleID"] == sip_stack.setup.rule_id
        assert attrs["sip.callID"].startswith("SCL_")
        assert attrs["sip.callStatus"] == "ringing"

        room = join.room
        joined = await eventually(
            lambda: webhooks.find("participant_joined", room), 60, "participant_joined webhook"
        )
        hooked = joined[0].event["participant"]
        assert hooked["kind"] == "SIP"
        assert hooked["attributes"]["sip.phoneNumber"] == TEST_CALLER
        hooked_at = time.monotonic() - started

        # No one has published a track, so there is nothing for livekit-sip to subscribe to:
        # it does not answer, however long the caller waits.
        await asyncio.sleep(2)
        resp = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        [sip] = [x for x in resp.participants if x.kind == ParticipantInfo.Kind.SIP]
        assert sip.attributes["sip.callStatus"] == "ringing"
        record_timings(
            LOG_DIR,
            "ringing",
            invite_to_participant_ms=round(join.seen_after_s * 1000),
            invite_to_webhook_ms=round(hooked_at * 1000),
        )
    finally:
        run.stop()
        if join is not None:
            with contextlib.suppress(api.TwirpError):
                await lk.room.delete_room(api.DeleteRoomRequest(room=join.room))


async def test_call_is_answered_once_a_peer_publishes_audio_and_ends_with_bye(
    sip_stack: SipStack, lk: api.LiveKitAPI, webhooks: WebhookRecorder
) -> None:
    """A participant publishing audio in the room makes livekit-sip answer (200 OK); the caller's
    RTP reaches the room; sipp's BYE takes the SIP participant out."""
    run = sip_stack.sipp(rtp_seconds=3, timeout=60)
    started = time.monotonic()
    run.start()
    try:
        join = await wait_sip_participant(
            lk, TEST_CALLER, since=started, sip_call_id=run.call_id(1), within_s=60
        )
        peer = AnsweringPeer(
            sip_stack.livekit.ws_url, DEV_API_KEY, DEV_API_SECRET, join.room, "answering-peer"
        )
        async with peer:
            result = await asyncio.to_thread(run.wait)
            frames = peer.frames_received
    finally:
        run.stop()

    assert result.successful == 1, result.summary()
    [call] = result.calls
    assert call.ring_ms is not None, result.summary()
    assert call.ended_ms is not None, result.summary()
    # 3 s of the caller's RTP, as 10 ms frames on the peer's side (some lost to start-up).
    assert frames > 100, f"the peer got {frames} audio frames from the caller"

    sip_identity = f"sip_{TEST_CALLER}"
    await eventually(
        lambda: [
            r
            for r in webhooks.find("participant_left", join.room)
            if r.event["participant"]["identity"] == sip_identity
        ],
        60,
        "participant_left for the SIP participant",
    )
    record_timings(
        LOG_DIR,
        "one call",
        invite_to_participant_ms=round(join.seen_after_s * 1000),
        invite_to_200_ms=call.ring_ms,
    )


@pytest.mark.parametrize(
    ("mode", "concurrent", "rtp_seconds"), [("concurrent", 20, 3.0), ("sequential", 1, 1.0)]
)
async def test_twenty_calls_are_each_answered_in_their_own_room(
    sip_stack: SipStack, webhooks: WebhookRecorder, mode: str, concurrent: int, rtp_seconds: float
) -> None:
    """Twenty callers (sipp's injection file), all at once or one after the other: twenty rooms,
    each with its own caller's number, every call answered once a peer publishes audio in it."""
    calls = [Call(c.caller, sip_stack.trunk_number) for c in read_injection()]
    assert len({c.caller for c in calls}) == 20
    run = sip_stack.sipp(
        calls, concurrent=concurrent, rate=20, rtp_seconds=rtp_seconds, timeout=180
    )
    ws_url = sip_stack.livekit.ws_url

    async with contextlib.AsyncExitStack() as peers:

        async def answer(n: int, caller: str) -> SipJoin:
            # Each call is answered as soon as its webhook arrives, as the dispatcher would.
            join = await wait_sip_webhook(
                webhooks, caller, since=started, sip_call_id=run.call_id(n), within_s=150
            )
            peer = AnsweringPeer(
                ws_url, DEV_API_KEY, DEV_API_SECRET, join.room, f"peer-{n}", count_frames=False
            )
            await peers.enter_async_context(peer)
            return join

        started = time.monotonic()
        run.start()
        try:
            joins = await asyncio.gather(*(answer(n, c.caller) for n, c in enumerate(calls, 1)))
            result = await asyncio.to_thread(run.wait)
        finally:
            run.stop()

    assert result.successful == 20, result.summary()
    assert len({j.room for j in joins}) == 20
    for c, j in zip(calls, joins, strict=True):
        assert j.room.startswith(f"call_{c.caller}_")
        assert j.participant.attributes["sip.phoneNumber"] == c.caller
    timings = {t.call_id: t for t in result.calls}
    assert sorted(t.caller for t in timings.values()) == sorted(c.caller for c in calls)
    rings = [float(r) for r in result.ring_times_ms()]
    assert len(rings) == 20, result.summary()
    # sipp's clock starts with its process, a few ms after `started`: close enough here.
    hooks = [
        j.seen_after_s * 1000 - timings[run.call_id(n)].invite_ms for n, j in enumerate(joins, 1)
    ]
    record_timings(
        LOG_DIR,
        f"twenty {mode}",
        invite_to_200_ms_p50=statistics.median(rings),
        invite_to_200_ms_p95=percentile(rings, 95),
        invite_to_200_ms_max=max(rings),
        invite_to_webhook_ms_p50=round(statistics.median(hooks)),
        invite_to_webhook_ms_max=round(max(hooks)),
    )
