"""The LiveKit-native floor of the ring-time benchmark: what a call costs with no dispatcher at all.

A second inbound trunk (its own number) whose individual dispatch rule names a bare agent in
`room_config.agents`, so livekit-server dispatches it as it creates the room: no webhook, no
persona. The bare agent only connects and publishes a tone, and runs in a worker built with our
worker's own options (`agent.worker.new_agent_server`): the same idle pool, executor and process
set-up, so that ours and the floor differ only in what the dispatcher and our agent add.

The route is made here with the LiveKit API, not by `provisioning/` (whose job is our route).
Its rooms carry `call_setup: off`, so the dispatcher leaves them alone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from livekit import api, rtc
from livekit.agents import AgentServer, JobContext
from livekit.protocol.sip import (
    CreateSIPDispatchRuleRequest,
    CreateSIPInboundTrunkRequest,
    SIPDispatchRuleInfo,
    SIPInboundTrunkInfo,
)

from agent.fakes import ToneTTS, tone_pcm
from agent.worker import new_agent_server
from config.agent_settings import AgentSettings
from dispatcher.call_rooms import CALL_SETUP_KEY
from telemetry.logs import get_logger

FLOOR_NUMBER = "+918000000099"
FLOOR_AGENT = "floor-tone"
FLOOR_ROOM_PREFIX = "floor"
TONE_RATE = ToneTTS.SAMPLE_RATE
TONE_SECONDS = 1.5  # as long as the fake stack's longest spoken line

log = get_logger(__name__)


@dataclass(frozen=True)
class FloorRoute:
    trunk_id: str
    rule_id: str
    number: str
    agent_name: str


async def create_floor_route(
    lk: api.LiveKitAPI, *, number: str = FLOOR_NUMBER, agent_name: str = FLOOR_AGENT
) -> FloorRoute:
    """The floor's trunk and its rule, which dispatches `agent_name` into each call's room."""
    trunk = await lk.sip.create_inbound_trunk(
        CreateSIPInboundTrunkRequest(
            trunk=SIPInboundTrunkInfo(
                name="ring-time-native-floor",
                numbers=[number],
                allowed_addresses=["127.0.0.0/8"],
            )
        )
    )
    rule = await lk.sip.create_dispatch_rule(
        CreateSIPDispatchRuleRequest(
            dispatch_rule=SIPDispatchRuleInfo(
                name="ring-time-native-floor",
                trunk_ids=[trunk.sip_trunk_id],
                rule=api.SIPDispatchRule(
                    dispatch_rule_individual=api.SIPDispatchRuleIndividual(
                        room_prefix=FLOOR_ROOM_PREFIX
                    )
                ),
                room_config=api.RoomConfiguration(
                    metadata=f'{{"{CALL_SETUP_KEY}": "off"}}',
                    agents=[api.RoomAgentDispatch(agent_name=agent_name)],
                ),
            )
        )
    )
    return FloorRoute(trunk.sip_trunk_id, rule.sip_dispatch_rule_id, number, agent_name)


def tone_frames(seconds: float = TONE_SECONDS, frame_ms: int = 20) -> list[rtc.AudioFrame]:
    """A quiet 440 Hz tone cut in frames, as the fake TTS speaks a line."""
    per_frame = TONE_RATE * frame_ms // 1000
    pcm = tone_pcm(seconds, TONE_RATE)
    step = per_frame * 2  # bytes: 16-bit samples
    return [
        rtc.AudioFrame(pcm[i : i + step], TONE_RATE, 1, per_frame)
        for i in range(0, len(pcm) - step + 1, step)
    ]


class ToneEntrypoint:
    """Connect, publish a track, play a tone; end the job when the caller hangs up."""

    async def __call__(self, ctx: JobContext) -> None:
        caller_left = asyncio.Event()

        def on_left(p: rtc.RemoteParticipant) -> None:
            if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP:
                caller_left.set()

        ctx.room.on("participant_disconnected", on_left)
        await ctx.connect()
        source = rtc.AudioSource(TONE_RATE, 1)
        track = rtc.LocalAudioTrack.create_audio_track("tone", source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await ctx.room.local_participant.publish_track(track, options)
        log.info("tone.published", room=ctx.job.room.name, job_id=ctx.job.id)
        for frame in tone_frames():
            await source.capture_frame(frame)
        await caller_left.wait()
        ctx.shutdown(reason="caller left")


def floor_server(settings: AgentSettings) -> AgentServer:
    """The bare agent's worker: our worker's options, the tone entrypoint, `AGENT_NAME`."""
    return new_agent_server(settings, ToneEntrypoint())
