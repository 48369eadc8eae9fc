"""Watch call rooms, and stand in for the agent in a room.

`SipParticipantWatcher` polls `RoomService` until SIP participants from given callers are in
rooms; `wait_sip_webhook` waits for their `participant_joined` webhooks instead. `AnsweringPeer`
joins a room with the real client SDK and publishes an audio track: livekit-sip answers the
INVITE once it has subscribed to a track published by someone else in the room, which is what the
agent does when its session starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf import json_format
from livekit import api, rtc
from livekit.protocol.models import ParticipantInfo

from tests.harness.stack import WebhookRecorder

SAMPLE_RATE = 16000
# The tone's frames. Each capture is a request to the client SDK, whose every answer is handed to
# every waiting request of the process: with twenty peers, 20 ms frames kept this process's event
# loop busy with the SDK's fan-out until a publish's answer waited behind it for good.
FRAME_MS = 100
# How long one of the peer's steps (join, publish, leave) may take on a loaded machine: past it
# the test fails, instead of waiting forever on a client SDK call that never completes.
STEP_S = 60.0
T = TypeVar("T")


@dataclass(frozen=True)
class SipJoin:
    """A SIP participant found in a room, and how long after `since` it was first seen."""

    room: str
    participant: ParticipantInfo
    seen_after_s: float


class SipParticipantWatcher:
    """Finds SIP participants as they join `call_*` rooms, for any number of waiting calls.

    One poll loop serves every waiter (twenty calls do not mean twenty pollers loading the
    server); rooms whose SIP participant was already seen are not listed again. Every API call
    is bounded, as LiveKitAPI does not bound a request that hangs.
    """

    def __init__(
        self, lkapi: api.LiveKitAPI, *, room_prefix: str = "call_", poll_s: float = 0.05
    ) -> None:
        self._lkapi = lkapi
        self._prefix = room_prefix
        self._poll_s = poll_s
        self._seen: dict[str, tuple[str, ParticipantInfo, float]] = {}  # by participant SID
        self._done_rooms: set[str] = set()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._waiters = 0

    async def _poll(self) -> None:
        while True:
            async with asyncio.timeout(5):
                rooms = await self._lkapi.room.list_rooms(api.ListRoomsRequest())
            names = [
                r.name
                for r in rooms.rooms
                if r.name.startswith(self._prefix) and r.name not in self._done_rooms
            ]
            found = False
            for name in names:
                async with asyncio.timeout(5):
                    req = api.ListParticipantsRequest(room=name)
                    resp = await self._lkapi.room.list_participants(req)
                for p in resp.participants:
                    if p.kind == ParticipantInfo.Kind.SIP and p.sid not in self._seen:
                        self._seen[p.sid] = (name, p, time.monotonic())
                        self._done_rooms.add(name)
                        found = True
            if found:
                async with self._changed:
                    self._changed.notify_all()
            await asyncio.sleep(self._poll_s)

    def _match(self, caller: str, sip_call_id: str | None) -> tuple[str, ParticipantInfo, float]:
        for room, p, at in self._seen.values():
            attrs = p.attributes
            if attrs.get("sip.phoneNumber") == caller and (
                sip_call_id is None or attrs.get("sip.callIDFull") == sip_call_id
            ):
                return room, p, at
        raise LookupError(caller)

    async def wait(
        self, caller: str, *, since: float, sip_call_id: str | None = None, within_s: float = 30
    ) -> SipJoin:
        """The SIP participant whose `sip.phoneNumber` is `caller` (and whose `sip.callIDFull`
        is `sip_call_id`, the SIP Call-ID, when given). `since` is a `time.monotonic()` reading
        (when the INVITE left); `seen_after_s` counts from it."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        self._waiters += 1
        try:
            async with asyncio.timeout(max(since + within_s - time.monotonic(), 0)):
                async with self._changed:
                    while True:
                        if self._task.done():
                            self._task.result()  # the poller failed: raise its error
                        with contextlib.suppress(LookupError):
                            room, p, at = self._match(caller, sip_call_id)
                            return SipJoin(room, p, at - since)
                        await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"no SIP participant from {caller} in a {self._prefix}* room in {within_s}s"
            ) from None
        finally:
            self._waiters -= 1
            if self._waiters == 0 and self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._task = None


async def wait_sip_participant(
    lkapi: api.LiveKitAPI,
    caller: str,
    *,
    since: float,
    sip_call_id: str | None = None,
    within_s: float = 30.0,
) -> SipJoin:
    """Wait for one call's SIP participant (see `SipParticipantWatcher.wait`)."""
    watcher = SipParticipantWatcher(lkapi)
    return await watcher.wait(caller, since=since, sip_call_id=sip_call_id, within_s=within_s)


async def wait_sip_webhook(
    recorder: WebhookRecorder,
    caller: str,
    *,
    since: float,
    sip_call_id: str | None = None,
    within_s: float = 30.0,
) -> SipJoin:
    """Wait for the `participant_joined` webhook of a SIP participant from `caller`: pushed by the
    server the moment the participant is active, as the dispatcher gets it, so no poll delay."""
    deadline = since + within_s
    checked = 0
    while time.monotonic() < deadline:
        deliveries = recorder.deliveries[checked:]
        checked += len(deliveries)
        for d in deliveries:
            event = d.event
            part = event.get("participant", {})
            attrs = part.get("attributes", {})
            if (
                event.get("event") == "participant_joined"
                and part.get("kind") == "SIP"
                and attrs.get("sip.phoneNumber") == caller
                and (sip_call_id is None or attrs.get("sip.callIDFull") == sip_call_id)
            ):
                info = json_format.ParseDict(part, ParticipantInfo(), ignore_unknown_fields=True)
                return SipJoin(event["room"]["name"], info, time.monotonic() - since)
        await asyncio.sleep(0.01)
    raise TimeoutError(f"no participant_joined webhook for a SIP call from {caller} in {within_s}s")


class AnsweringPeer:
    """A participant that publishes a quiet tone and counts the caller's audio frames."""

    def __init__(
        self,
        url: str,
        api_key: str,
        api_secret: str,
        room: str,
        identity: str,
        *,
        count_frames: bool = True,
    ) -> None:
        self._url = url
        # Counting reads the caller's audio: fifty 10 ms frames a second, each an event of the
        # client SDK that this process's loop must take.
        self._count_frames = count_frames
        self._token = (
            api.AccessToken(api_key, api_secret)
            .with_identity(identity)
            .with_grants(api.VideoGrants(room_join=True, room=room))
            .to_jwt()
        )
        self.room = rtc.Room()
        self.frames_received = 0
        self.subscribed = asyncio.Event()  # we get the caller's audio
        self.heard = asyncio.Event()  # someone (livekit-sip) subscribed to ours
        self.republished = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._player: asyncio.Task[None] | None = None
        self._source = rtc.AudioSource(SAMPLE_RATE, 1)

    async def __aenter__(self) -> AnsweringPeer:
        self.room.on("track_subscribed", self._on_track_subscribed)
        self.room.on("local_track_subscribed", lambda _track: self.heard.set())
        await _step("join", self.room.connect(self._url, self._token))
        sid = await self._publish()
        self._player = asyncio.create_task(self._play())
        self._spawn(self._republish_unless_heard(sid))
        return self

    async def _publish(self) -> str:
        track = rtc.LocalAudioTrack.create_audio_track("peer-audio", self._source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        publication = await _step(
            "publish", self.room.local_participant.publish_track(track, options)
        )
        return publication.sid

    async def _republish_unless_heard(self, sid: str, patience_s: float = 10.0) -> None:
        # On a loaded machine the server can give up on a publication ("publish time out") after
        # the client saw it succeed; nobody subscribes then, and the call would ring forever.
        for _ in range(3):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(patience_s):
                    await self.heard.wait()
                return
            self.republished += 1
            await _step("unpublish", self.room.local_participant.unpublish_track(sid))
            sid = await self._publish()

    async def __aexit__(self, *exc: object) -> None:
        # Stop feeding the source, leave the room, end the readers, then free the source: the
        # client SDK's native side must not be left with a live stream after its room is gone.
        if self._player is not None:
            await _cancel(self._player)
        await _step("leave", self.room.disconnect())
        await asyncio.gather(*(_cancel(t) for t in list(self._tasks)))
        await _step("source close", self._source.aclose())

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_track_subscribed(
        self, track: rtc.Track, _pub: rtc.RemoteTrackPublication, _p: rtc.RemoteParticipant
    ) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self.subscribed.set()
            if self._count_frames:
                self._spawn(self._count(track))

    async def _count(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
        try:
            async for _ in stream:
                self.frames_received += 1
        finally:
            await stream.aclose()

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


async def _step(name: str, step: Awaitable[T]) -> T:
    """`step` within STEP_S; an AssertionError naming it otherwise."""
    try:
        async with asyncio.timeout(STEP_S):
            return await step
    except TimeoutError:
        raise AssertionError(f"the answering peer's {name} took over {STEP_S:.0f} s") from None


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
