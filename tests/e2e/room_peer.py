"""Watch call rooms through the server API, and stand in for the agent in a room.

`wait_sip_participant` polls `RoomService` until a SIP participant from a given caller is in a
room. `AnsweringPeer` joins that room with the real client SDK and publishes an audio track:
livekit-sip answers the INVITE once it has subscribed to a track published by someone else in
the room, which is what the agent does when its session starts.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from livekit import api, rtc
from livekit.protocol.models import ParticipantInfo

SAMPLE_RATE = 16000
FRAME_MS = 20


@dataclass(frozen=True)
class SipJoin:
    """A SIP participant found in a room, and how long after `since` it was first seen."""

    room: str
    participant: ParticipantInfo
    seen_after_s: float


async def wait_sip_participant(
    lkapi: api.LiveKitAPI,
    caller: str,
    *,
    since: float,
    within_s: float = 30.0,
    sip_call_id: str | None = None,
    room_prefix: str = "call_",
    poll_s: float = 0.05,
) -> SipJoin:
    """Poll until a participant of kind SIP whose `sip.phoneNumber` is `caller` is in a room.

    `sip_call_id` (the SIP Call-ID, `SippRun.call_id(n)`) picks one call among several from the
    same number: livekit-sip copies it into `sip.callIDFull`.
    `since` is a `time.monotonic()` reading (when the INVITE left); every API call is bounded,
    as LiveKitAPI does not bound a request that hangs.
    """
    deadline = since + within_s
    while time.monotonic() < deadline:
        async with asyncio.timeout(5):
            rooms = await lkapi.room.list_rooms(api.ListRoomsRequest())
        for room in rooms.rooms:
            if not room.name.startswith(room_prefix):
                continue
            async with asyncio.timeout(5):
                req = api.ListParticipantsRequest(room=room.name)
                resp = await lkapi.room.list_participants(req)
            for p in resp.participants:
                attrs = p.attributes
                if (
                    p.kind == ParticipantInfo.Kind.SIP
                    and attrs.get("sip.phoneNumber") == caller
                    and (sip_call_id is None or attrs.get("sip.callIDFull") == sip_call_id)
                ):
                    return SipJoin(room.name, p, time.monotonic() - since)
        await asyncio.sleep(poll_s)
    raise TimeoutError(f"no SIP participant from {caller} in a {room_prefix}* room in {within_s}s")


class AnsweringPeer:
    """A participant that publishes a quiet tone and counts the caller's audio frames."""

    def __init__(self, url: str, api_key: str, api_secret: str, room: str, identity: str) -> None:
        self._url = url
        self._token = (
            api.AccessToken(api_key, api_secret)
            .with_identity(identity)
            .with_grants(api.VideoGrants(room_join=True, room=room))
            .to_jwt()
        )
        self.room = rtc.Room()
        self.frames_received = 0
        self.subscribed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._source = rtc.AudioSource(SAMPLE_RATE, 1)

    async def __aenter__(self) -> AnsweringPeer:
        self.room.on("track_subscribed", self._on_track_subscribed)
        await self.room.connect(self._url, self._token)
        track = rtc.LocalAudioTrack.create_audio_track("peer-audio", self._source)
        await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        self._spawn(self._play())
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.room.disconnect()
        await self._source.aclose()

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_track_subscribed(
        self, track: rtc.Track, _pub: rtc.RemoteTrackPublication, _p: rtc.RemoteParticipant
    ) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self.subscribed.set()
            self._spawn(self._count(track))

    async def _count(self, track: rtc.Track) -> None:
        async for _ in rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1):
            self.frames_received += 1

    async def _play(self) -> None:
        # Silence would do for livekit-sip; a low square wave makes a capture audible.
        samples = SAMPLE_RATE * FRAME_MS // 1000
        period = SAMPLE_RATE // 440
        pcm = b"".join(
            (800 if (i % period) < period // 2 else -800).to_bytes(2, "little", signed=True)
            for i in range(samples)
        )
        frame = rtc.AudioFrame(pcm, SAMPLE_RATE, 1, samples)
        while True:
            await self._source.capture_frame(frame)
