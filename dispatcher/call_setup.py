"""Set up one call, as the mission says: find the caller, resolve the persona, write it into the
room metadata, then make sure exactly one dispatch of the named agent exists.

`CallSetup.run` is those four steps in order; deduplication and single flight are around it
(`dispatcher.setup_guard`), and every LiveKit call goes through `dispatcher.livekit_api`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import structlog
from livekit import api

from contract.metadata import (
    DEFAULT_PERSONA,
    Lookup,
    PersonaMetadata,
    PersonaTooLarge,
    dispatch_metadata,
    encode_room_metadata,
)
from dispatcher.caller import (
    CallParty,
    DetectedNumber,
    NumberFormat,
    call_id_of,
    detect_numbers,
    party_of,
)
from dispatcher.livekit_api import LiveKitNotFound, LiveKitRooms, livekit_call
from dispatcher.persona_resolver import PersonaResolver, Resolution
from telemetry.logs import get_logger, mask_number

log = get_logger(__name__)


@dataclass(frozen=True)
class CallJoin:
    """What a webhook says about the call (no protobuf): a SIP participant's
    `participant_joined`, or the `room_started` of a room whose rule sets calls up as the room
    starts (no participant yet: the room's name carries the caller)."""

    event_id: str
    room: str
    room_metadata: str
    party: CallParty
    at_room_start: bool = False

    @property
    def call_id(self) -> str | None:
        return call_id_of(self.party)

    @classmethod
    def of_webhook(cls, event: api.WebhookEvent) -> CallJoin:
        """The call a verified `participant_joined` event describes."""
        return cls(event.id, event.room.name, event.room.metadata, party_of(event.participant))

    @classmethod
    def of_room_started(cls, event: api.WebhookEvent) -> CallJoin:
        """The call a verified `room_started` event announces, before its caller has joined."""
        return cls(event.id, event.room.name, event.room.metadata, CallParty(), at_room_start=True)


@dataclass(frozen=True)
class SetupResult:
    room: str
    dispatch_id: str
    dispatched: bool  # False: an existing dispatch was found and kept
    metadata: PersonaMetadata
    duration_ms: float
    reason: str = "created"
    metadata_bytes: int = 0
    steps_ms: dict[str, float] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.metadata.status

    @property
    def source(self) -> str:
        return self.metadata.source

    def again(self, reason: str) -> SetupResult:
        """The same set-up as seen by a later delivery: nothing dispatched, nothing timed."""
        return replace(self, dispatched=False, duration_ms=0.0, reason=reason, steps_ms={})


@dataclass(frozen=True)
class SetupPolicy:
    agent_name: str
    metadata_budget: int
    api_timeout_s: float
    lookups: tuple[Lookup, ...]
    number_format: NumberFormat
    default_caller: str | None
    unmasked_logs: bool = False


@dataclass(frozen=True)
class Dispatch:
    """The one dispatch of our agent in the room, and how this set-up came by it."""

    dispatch_id: str
    created: bool
    reason: str  # created | already_dispatched | lost_race


class _Steps:
    """Wall time of each named step, in milliseconds."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.ms: dict[str, float] = {}

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = _ms_since(t)

    def total_ms(self) -> float:
        return _ms_since(self.started)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


class CallSetup:
    """The four steps of a call's set-up; stateless, so one instance serves every call."""

    def __init__(self, rooms: LiveKitRooms, resolver: PersonaResolver, policy: SetupPolicy) -> None:
        self._rooms = rooms
        self._resolver = resolver
        self._policy = policy

    async def run(self, join: CallJoin) -> SetupResult:
        """Set up the call once; raises `LiveKitError` (`LiveKitNotFound`: the room is gone)."""
        steps = _Steps()
        numbers = self.find_caller(join)
        room = _Room(self._rooms.for_room(join.room), join.room, self._policy)
        # The room's current metadata (the webhook's copy may be stale) is read while the persona
        # resolves, so keeping other components' keys costs no extra wait on a cache miss. At the
        # room's start the webhook carries what the room was created with, milliseconds old:
        # used as is, it spares the server a call per call when a burst loads it most.
        room.start_reading(join.room_metadata if join.at_room_start else None)
        try:
            with steps.timed("persona"):
                resolution = await self.resolve_persona(numbers)
            with steps.timed("metadata"):
                # Whether our agent is already dispatched is asked while the persona is written,
                # so the dispatch follows the write at once (a dispatch another replica creates
                # meanwhile is settled after ours, as one created just before our create is).
                room.start_listing_dispatches()
                meta, size = await room.write_persona(resolution.metadata(join.call_id))
            with steps.timed("dispatch"):
                dispatch = await room.ensure_one_dispatch(meta)
        finally:
            room.stop_reading()
        result = SetupResult(
            join.room,
            dispatch.dispatch_id,
            dispatch.created,
            meta,
            steps.total_ms(),
            dispatch.reason,
            size,
            steps.ms,
        )
        log.info(
            "call.setup_done",
            duration_ms=result.duration_ms,
            status=meta.status,
            source=meta.source,
            dispatched=dispatch.created,
        )
        return result

    def find_caller(self, join: CallJoin) -> list[DetectedNumber]:
        """Step 1: the numbers to look the persona up by, in `PERSONA_LOOKUP` order."""
        p = self._policy
        numbers = detect_numbers(
            join.party, join.room, join.room_metadata, p.lookups, p.number_format, p.default_caller
        )
        if not numbers:
            log.warning("call.no_caller", identity_kind=join.party.identity.split("_")[0])
            return numbers
        first = numbers[0]
        structlog.contextvars.bind_contextvars(
            caller=mask_number(first.number, unmasked=p.unmasked_logs)
        )
        log.info(
            "call.caller_detected",
            lookup=first.lookup,
            origin=first.origin,
            candidates=len(numbers),
        )
        return numbers

    async def resolve_persona(self, numbers: list[DetectedNumber]) -> Resolution:
        """Step 2: the persona, within the deadline; never fails (the default is the floor)."""
        resolution = await self._resolver.resolve(numbers)
        log.info(
            "persona.resolved",
            status=resolution.status,
            source=resolution.source,
            persona_id=resolution.persona.persona_id,
            lookup=resolution.lookup,
            duration_ms=round(resolution.duration_ms, 1),
        )
        return resolution


class _Room:
    """Steps 3 and 4 on one room, through one room-scoped client."""

    def __init__(self, lk: api.LiveKitAPI, name: str, policy: SetupPolicy) -> None:
        self._lk = lk
        self._name = name
        self._policy = policy
        self._reading: asyncio.Future[str] | None = None
        self._listing: asyncio.Task[list[api.AgentDispatch]] | None = None

    def start_reading(self, current: str | None = None) -> None:
        """Read the room's metadata in the background, unless `current` is known already."""
        if current is None:
            self._reading = asyncio.create_task(self._current_metadata())
        else:
            self._reading = asyncio.get_running_loop().create_future()
            self._reading.set_result(current)

    def start_listing_dispatches(self) -> None:
        self._listing = asyncio.create_task(self._our_dispatches())

    def stop_reading(self) -> None:
        """Cancel the reads still running (an earlier step failed); a read that failed too is
        marked seen, as the step's own error is the one that counts."""
        for task in (self._reading, self._listing):
            if task is None:
                continue
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()

    async def _current_metadata(self) -> str:
        listed = await livekit_call(
            "list_rooms",
            self._lk.room.list_rooms(api.ListRoomsRequest(names=[self._name])),
            self._policy.api_timeout_s,
        )
        if not listed.rooms:
            raise LiveKitNotFound("list_rooms", "NOT_FOUND", "no such room", 404)
        return listed.rooms[0].metadata

    async def write_persona(self, meta: PersonaMetadata) -> tuple[PersonaMetadata, int]:
        """Step 3: the persona into the room's metadata, other keys kept, within the budget."""
        assert self._reading is not None, "start_reading() first"
        existing = await self._reading
        budget = self._policy.metadata_budget
        try:
            encoded = encode_room_metadata(existing, meta, budget)
        except PersonaTooLarge as e:
            log.error("persona.too_large", size=e.size, budget=e.budget)
            meta = replace(meta, persona=DEFAULT_PERSONA, status="default", source="default")
            encoded = encode_room_metadata(existing, meta, budget)
        started = time.perf_counter()
        await livekit_call(
            "update_room_metadata",
            self._lk.room.update_room_metadata(
                api.UpdateRoomMetadataRequest(room=self._name, metadata=encoded)
            ),
            self._policy.api_timeout_s,
        )
        size = len(encoded.encode())
        log.info("room.metadata_written", bytes=size, duration_ms=_ms_since(started))
        return meta, size

    async def ensure_one_dispatch(self, meta: PersonaMetadata) -> Dispatch:
        """Step 4: keep our agent's dispatch if the room has one, else create it and settle a
        race with another replica that created one at the same moment."""
        agent_name = self._policy.agent_name
        started = time.perf_counter()
        ours = await (self._listing or self._our_dispatches())
        if ours:
            log.info(
                "agent.dispatch_skipped",
                reason="already_dispatched",
                agent_name=agent_name,
                dispatch_id=ours[0].id,
            )
            return Dispatch(ours[0].id, False, "already_dispatched")
        created = await livekit_call(
            "create_dispatch",
            self._lk.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(
                    room=self._name, agent_name=agent_name, metadata=dispatch_metadata(meta)
                )
            ),
            self._policy.api_timeout_s,
        )
        log.info(
            "agent.dispatched",
            agent_name=agent_name,
            dispatch_id=created.id,
            duration_ms=_ms_since(started),
        )
        winner = await self._settle(created)
        if winner.id != created.id:
            return Dispatch(winner.id, False, "lost_race")
        return Dispatch(created.id, True, "created")

    async def _our_dispatches(self) -> list[api.AgentDispatch]:
        # Every room also lists an implicit dispatch with an empty agent name: match ours.
        listed = await livekit_call(
            "list_dispatch",
            self._lk.agent_dispatch.list_dispatch(self._name),
            self._policy.api_timeout_s,
        )
        return [d for d in listed if d.agent_name == self._policy.agent_name]

    async def _settle(self, ours: api.AgentDispatch) -> api.AgentDispatch:
        """Another replica may have created a dispatch between our check and our create: all
        replicas keep the earliest one and delete their own otherwise, which ends its job."""
        mine = await self._our_dispatches() or [ours]
        winner = min(mine, key=lambda d: (d.state.created_at, d.id))
        if winner.id != ours.id:
            await livekit_call(
                "delete_dispatch",
                self._lk.agent_dispatch.delete_dispatch(ours.id, self._name),
                self._policy.api_timeout_s,
            )
            log.warning(
                "agent.dispatch_deduplicated",
                kept=winner.id,
                deleted=ours.id,
                dispatches=len(mine),
            )
        return winner
