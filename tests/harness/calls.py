"""Simulated phone calls against a real livekit-server, for tests and benches.

A `SipCaller` joins with a `kind=sip` token and the attributes livekit-sip sets, and records when
the agent joins and when its first audio frames arrive. `write_room_metadata` + `create_dispatch`
put a call's room in the state the dispatcher leaves it in, from metadata the caller spells out
(tests/agent/helpers.py writes it as docs/contract.md documents it, not with the contract
module, so that the agent is tested against the contract rather than against its own encoder).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
from livekit import api, rtc

from devstack.services import LiveKitServer

AGENT = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT


def sip_token(
    server: LiveKitServer, room: str, *, caller: str, call_id: str, dialed: str = "8000000000"
) -> str:
    """A token like the one livekit-sip uses for an inbound caller."""
    return (
        api.AccessToken(server.config.api_key, server.config.api_secret)
        .with_identity(f"sip_{caller}")
        .with_kind("sip")
        .with_attributes(
            {
                "sip.phoneNumber": caller,
                "sip.trunkPhoneNumber": dialed,
                "sip.callID": call_id,
                "sip.callStatus": "active",
            }
        )
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .to_jwt()
    )


def livekit_api(server: LiveKitServer) -> api.LiveKitAPI:
    return api.LiveKitAPI(server.http_url, server.config.api_key, server.config.api_secret)


async def write_room_metadata(lk: api.LiveKitAPI, room: str, metadata: str) -> None:
    """The (existing) room's metadata, replaced by `metadata` with UpdateRoomMetadata."""
    await lk.room.update_room_metadata(api.UpdateRoomMetadataRequest(room=room, metadata=metadata))


async def create_dispatch(
    lk: api.LiveKitAPI, room: str, agent_name: str, metadata: str
) -> api.AgentDispatch:
    """A dispatch of `agent_name` to `room` carrying `metadata`, as CreateDispatch makes it."""
    return await lk.agent_dispatch.create_dispatch(
        api.CreateAgentDispatchRequest(agent_name=agent_name, room=room, metadata=metadata)
    )


async def agent_in_room(lk: api.LiveKitAPI, room: str, within_s: float = 60.0) -> str:
    """Polls the server until an agent has joined `room` (before other participants see it,
    which is only once it is active); returns its identity."""
    async with asyncio.timeout(within_s):
        while True:
            listed = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
            for p in listed.participants:
                if p.kind == api.ParticipantInfo.Kind.AGENT:
                    return p.identity
            await asyncio.sleep(0.05)


@dataclass
class SipCaller:
    """A SIP-kind participant that notes when the agent joins and when its audio arrives."""

    url: str
    token: str
    room: rtc.Room = field(default_factory=rtc.Room)
    joined_at: float = 0.0
    agent_joined_at: float | None = None
    first_frame_at: float | None = None
    first_sound_at: float | None = None
    agent: rtc.RemoteParticipant | None = None
    _agent_joined: asyncio.Event = field(default_factory=asyncio.Event)
    _heard: asyncio.Event = field(default_factory=asyncio.Event)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def join(self) -> SipCaller:
        self.room.on("participant_connected", self._on_participant)
        self.room.on("track_subscribed", self._on_track)
        await self.room.connect(self.url, self.token)
        self.joined_at = time.perf_counter()
        for p in self.room.remote_participants.values():
            self._on_participant(p)
            for pub in p.track_publications.values():
                if pub.track is not None:
                    self._on_track(pub.track, pub, p)
        return self

    def _on_participant(self, p: rtc.RemoteParticipant) -> None:
        if p.kind == AGENT and self.agent is None:
            self.agent = p
            self.agent_joined_at = time.perf_counter()
            self._agent_joined.set()

    def _on_track(
        self, track: rtc.Track, _pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
    ) -> None:
        if p.kind == AGENT and track.kind == rtc.TrackKind.KIND_AUDIO:
            self._readers.append(asyncio.create_task(self._read(track)))

    async def _read(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track)
        try:
            async for ev in stream:
                now = time.perf_counter()
                if self.first_frame_at is None:
                    self.first_frame_at = now
                samples = np.frombuffer(ev.frame.data, dtype=np.int16)
                if samples.size and int(np.abs(samples).max()) > 1000:
                    self.first_sound_at = now
                    self._heard.set()
                    return
        finally:
            await stream.aclose()

    async def wait_for_agent(self, within_s: float = 60.0) -> rtc.RemoteParticipant:
        async with asyncio.timeout(within_s):
            await self._agent_joined.wait()
        assert self.agent is not None
        return self.agent

    async def wait_for_sound(self, within_s: float = 60.0) -> float:
        """Waits for the agent's first audible frame; returns its arrival time."""
        async with asyncio.timeout(within_s):
            await self._heard.wait()
        assert self.first_sound_at is not None
        return self.first_sound_at

    async def leave(self) -> None:
        for task in self._readers:
            task.cancel()
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.room.disconnect()
