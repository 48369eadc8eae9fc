"""A fake of the three LiveKit Twirp calls the dispatcher makes, for faults a real server will not
produce on demand (a 500 on one call, a slow answer). Real-server behaviour is tested against
livekit-server itself in tests/integration."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate

from aiohttp import web
from google.protobuf.message import Message
from livekit import api
from livekit.protocol.agent import JobStatus


@dataclass
class FakeLiveKit:
    rooms: dict[str, str] = field(default_factory=dict)  # name -> metadata
    dispatches: dict[str, list[api.AgentDispatch]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)  # method -> HTTP status to answer
    delay_s: dict[str, float] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    deleted_rooms: list[str] = field(default_factory=list)
    # For the reconciler's listing: each room's participants, and its creation (epoch seconds,
    # 0: long ago) and sid (default `RM_<name>`).
    participants: dict[str, list[api.ParticipantInfo]] = field(default_factory=dict)
    created: dict[str, int] = field(default_factory=dict)
    sids: dict[str, str] = field(default_factory=dict)
    # A server whose clock is not ours (epoch seconds): its answers' `Date` and its dispatches'
    # `created_at` follow it. None: our clock, and `created_at` a counter (1, 2, ...: long ago).
    server_clock: Callable[[], float] | None = None
    # The agent names a worker serves: a dispatch of one gets a running job at once, of any other
    # name none (as livekit-server leaves it). None: no dispatch gets a job.
    serving: set[str] | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def add_room(self, name: str, metadata: str = "") -> None:
        self.rooms[name] = metadata

    def agent_dispatches(self, room: str, agent_name: str) -> list[api.AgentDispatch]:
        return [d for d in self.dispatches.get(room, []) if d.agent_name == agent_name]

    def room(self, name: str) -> api.Room:
        return api.Room(
            name=name,
            metadata=self.rooms[name],
            sid=self.sids.get(name, f"RM_{name}"),
            creation_time=self.created.get(name, 0),
            num_participants=len(self.participants.get(name, [])),
        )


FAKE = web.AppKey("fake_livekit", FakeLiveKit)


def _error(status: int, code: str, msg: str) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status)


def _proto(message: Message) -> web.Response:
    return web.Response(body=message.SerializeToString(), content_type="application/protobuf")


async def twirp(request: web.Request) -> web.Response:
    fake = request.app[FAKE]
    method = request.match_info["method"]
    fake.calls.append(method)
    if delay := fake.delay_s.get(method):
        await asyncio.sleep(delay)
    if status := fake.fail.get(method):
        return _error(status, "internal", "injected failure")
    body = await request.read()
    if method == "UpdateRoomMetadata":
        req = api.UpdateRoomMetadataRequest.FromString(body)
        if req.room not in fake.rooms:
            return _error(404, "not_found", "requested room does not exist")
        fake.rooms[req.room] = req.metadata
        return _proto(api.Room(name=req.room, metadata=req.metadata))
    if method == "ListRooms":
        rreq = api.ListRoomsRequest.FromString(body)
        names = [n for n in rreq.names if n in fake.rooms] if rreq.names else list(fake.rooms)
        return _proto(api.ListRoomsResponse(rooms=[fake.room(n) for n in names]))
    if method == "DeleteRoom":
        room_name = api.DeleteRoomRequest.FromString(body).room
        if fake.rooms.pop(room_name, None) is None:
            return _error(404, "not_found", "room not found")
        fake.dispatches.pop(room_name, None)
        fake.deleted_rooms.append(room_name)
        return _proto(api.DeleteRoomResponse())
    if method == "ListParticipants":
        preq = api.ListParticipantsRequest.FromString(body)
        return _proto(api.ListParticipantsResponse(participants=fake.participants.get(preq.room)))
    if method == "ListDispatch":
        lreq = api.ListAgentDispatchRequest.FromString(body)
        return _proto(
            api.ListAgentDispatchResponse(agent_dispatches=fake.dispatches.get(lreq.room, []))
        )
    if method == "CreateDispatch":
        creq = api.CreateAgentDispatchRequest.FromString(body)
        n = next(fake._ids)
        d = api.AgentDispatch(
            id=f"AD_fake{n}",
            agent_name=creq.agent_name,
            room=creq.room,
            metadata=creq.metadata,
            state=api.AgentDispatchState(
                created_at=int(fake.server_clock() * 1e9) if fake.server_clock else n,
                jobs=[api.Job(id=f"AJ_fake{n}", state=api.JobState(status=JobStatus.JS_RUNNING))]
                if fake.serving is not None and creq.agent_name in fake.serving
                else [],
            ),
        )
        fake.dispatches.setdefault(creq.room, []).append(d)
        return _proto(d)
    if method == "DeleteDispatch":
        dreq = api.DeleteAgentDispatchRequest.FromString(body)
        kept = [d for d in fake.dispatches.get(dreq.room, []) if d.id != dreq.dispatch_id]
        deleted = [d for d in fake.dispatches.get(dreq.room, []) if d.id == dreq.dispatch_id]
        if not deleted:
            return _error(404, "not_found", "dispatch ID not found")
        fake.dispatches[dreq.room] = kept
        fake.deleted.append(dreq.dispatch_id)
        return _proto(deleted[0])
    return _error(404, "bad_route", method)


@web.middleware
async def server_date(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    resp = await handler(request)
    clock = request.app[FAKE].server_clock
    if clock is not None:
        resp.headers["Date"] = formatdate(clock(), usegmt=True)
    return resp


def make_app(fake: FakeLiveKit) -> web.Application:
    app = web.Application(middlewares=[server_date])
    app[FAKE] = fake
    app.router.add_post("/twirp/livekit.{service}/{method}", twirp)
    return app
