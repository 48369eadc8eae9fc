"""Set up one call: persona into room metadata, then exactly one dispatch of the named agent."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from typing import TypeVar

import aiohttp
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
from dispatcher.caller import CallParty, NumberFormat, call_id_of, detect_numbers
from dispatcher.livekit_rooms import LiveKitRooms
from dispatcher.persona_resolver import PersonaResolver
from telemetry.logs import get_logger, mask_number

log = get_logger(__name__)
T = TypeVar("T")


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


class LiveKitUnavailable(Exception):
    """A LiveKit server API call failed or timed out; the webhook should be redelivered."""

    def __init__(self, step: str, detail: str, status: int | None = None) -> None:
        super().__init__(f"{step}: {detail}")
        self.step = step
        self.status = status


class RoomGone(Exception):
    """The room no longer exists: the call ended before it was set up."""


@dataclass(frozen=True)
class CallJoin:
    """What a SIP participant's `participant_joined` says about the call (no protobuf)."""

    event_id: str
    room: str
    room_metadata: str
    party: CallParty

    @property
    def call_id(self) -> str | None:
        return call_id_of(self.party)


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
    remember: int
    unmasked_logs: bool = False


class CallSetup:
    """One per process. Deduplicates by event id and by room (single flight per room)."""

    def __init__(self, lk: LiveKitRooms, resolver: PersonaResolver, policy: SetupPolicy) -> None:
        self._lk = lk
        self._resolver = resolver
        self._policy = policy
        self._rooms: OrderedDict[str, asyncio.Task[SetupResult]] = OrderedDict()
        self._events: OrderedDict[str, SetupResult] = OrderedDict()

    def rooms_held(self) -> int:
        """How many rooms this process keeps state for (until participant_left/room_finished)."""
        return len(self._rooms)

    async def drain(self, within_s: float) -> None:
        """Let set-ups still running finish (bounded) before the clients they use are closed."""
        pending = [t for t in self._rooms.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=within_s)

    def release(self, room: str) -> bool:
        task = self._rooms.get(room)
        if task is None or not task.done():
            return False  # a set-up still running owns the entry; it ends on its own
        del self._rooms[room]
        return True

    async def handle_join(self, join: CallJoin) -> SetupResult:
        """Set up the call once, whatever the number of deliveries; raises LiveKitUnavailable."""
        seen = self._events.get(join.event_id)
        if seen is not None:
            log.info(
                "agent.dispatch_skipped", reason="duplicate_event", dispatch_id=seen.dispatch_id
            )
            return seen.again("duplicate_event")
        task = self._rooms.get(join.room)
        later = "in_flight"
        if task is None:
            task = asyncio.create_task(self._setup(join), name=f"setup-{join.room}")
            self._rooms[join.room] = task
            self._bound(self._rooms)
            first = True
        else:
            first = False
            if task.done():
                later = "room_already_set_up"
        try:
            # shield: a webhook request cancelled by a disconnect must not cancel the set-up that
            # a concurrent delivery of the same call is waiting for.
            result = await asyncio.shield(task)
        except BaseException:
            if task.done() and self._rooms.get(join.room) is task:
                del self._rooms[join.room]  # failed: a redelivery must try again
            raise
        if not first and result.dispatched:
            log.info("agent.dispatch_skipped", reason=later, dispatch_id=result.dispatch_id)
            result = result.again(later)
        self._events[join.event_id] = result
        self._bound(self._events)
        return result

    def _bound(self, d: OrderedDict[str, T]) -> None:
        while len(d) > self._policy.remember:
            d.popitem(last=False)

    async def _call(self, step: str, aw: Awaitable[T]) -> T:
        # LiveKitAPI ignores its own timeout setting, and retries nothing against a self-hosted
        # server: the deadline is ours, and LiveKit's redelivery (after our 503) is the retry.
        try:
            async with asyncio.timeout(self._policy.api_timeout_s):
                return await aw
        except api.TwirpError as e:
            if e.status == 404 or e.code == api.TwirpErrorCode.NOT_FOUND:
                raise RoomGone(step) from e
            raise LiveKitUnavailable(step, f"{e.code}: {e.message}", e.status) from e
        except (aiohttp.ClientError, TimeoutError) as e:
            raise LiveKitUnavailable(step, type(e).__name__) from e

    async def _setup(self, join: CallJoin) -> SetupResult:
        p = self._policy
        started = time.perf_counter()
        numbers = detect_numbers(
            join.party, join.room, join.room_metadata, p.lookups, p.number_format, p.default_caller
        )
        if numbers:
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
        else:
            log.warning("call.no_caller", identity_kind=join.party.identity.split("_")[0])

        # The room's current metadata (the webhook's copy may be stale) is read while the persona
        # resolves, so keeping other components' keys costs no extra wait on a cache miss.
        lk = self._lk.for_room(join.room)
        resolving = asyncio.create_task(self._resolver.resolve(numbers))
        try:
            room_metadata = await self._current_metadata(lk, join.room)
            resolution = await resolving
        finally:
            resolving.cancel()  # only matters when the room read failed
        log.info(
            "persona.resolved",
            status=resolution.status,
            source=resolution.source,
            persona_id=resolution.persona.persona_id,
            lookup=resolution.lookup,
            duration_ms=round(resolution.duration_ms, 1),
        )
        meta = resolution.metadata(join.call_id)
        try:
            encoded = encode_room_metadata(room_metadata, meta, p.metadata_budget)
        except PersonaTooLarge as e:
            log.error("persona.too_large", size=e.size, budget=e.budget)
            meta = replace(meta, persona=DEFAULT_PERSONA, status="default", source="default")
            encoded = encode_room_metadata(room_metadata, meta, p.metadata_budget)

        steps = {"persona": round(resolution.duration_ms, 1)}
        t = time.perf_counter()
        await self._call(
            "update_room_metadata",
            lk.room.update_room_metadata(
                api.UpdateRoomMetadataRequest(room=join.room, metadata=encoded)
            ),
        )
        steps["metadata"] = _ms_since(t)
        size = len(encoded.encode())
        log.info("room.metadata_written", bytes=size, duration_ms=steps["metadata"])

        t = time.perf_counter()
        existing = await self._call("list_dispatch", lk.agent_dispatch.list_dispatch(join.room))
        ours = [d for d in existing if d.agent_name == p.agent_name]
        if ours:
            dispatch_id, dispatched, reason = ours[0].id, False, "already_dispatched"
            log.info(
                "agent.dispatch_skipped",
                reason=reason,
                agent_name=p.agent_name,
                dispatch_id=dispatch_id,
            )
        else:
            created = await self._call(
                "create_dispatch",
                lk.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(
                        room=join.room, agent_name=p.agent_name, metadata=dispatch_metadata(meta)
                    )
                ),
            )
            dispatch_id, dispatched, reason = created.id, True, "created"
            log.info(
                "agent.dispatched",
                agent_name=p.agent_name,
                dispatch_id=dispatch_id,
                duration_ms=_ms_since(t),
            )
            winner = await self._settle(lk, join.room, created)
            if winner.id != created.id:
                dispatch_id, dispatched, reason = winner.id, False, "lost_race"
        steps["dispatch"] = _ms_since(t)
        result = SetupResult(
            join.room,
            dispatch_id,
            dispatched,
            meta,
            _ms_since(started),
            reason,
            size,
            steps,
        )
        log.info(
            "call.setup_done",
            duration_ms=result.duration_ms,
            status=meta.status,
            source=meta.source,
            dispatched=dispatched,
        )
        return result

    async def _settle(
        self, lk: api.LiveKitAPI, room: str, ours: api.AgentDispatch
    ) -> api.AgentDispatch:
        """Another replica may have created a dispatch between our check and our create: all
        replicas keep the earliest one and delete their own otherwise, which ends its job."""
        listed = await self._call("list_dispatch", lk.agent_dispatch.list_dispatch(room))
        mine = [d for d in listed if d.agent_name == self._policy.agent_name] or [ours]
        winner = min(mine, key=lambda d: (d.state.created_at, d.id))
        if winner.id != ours.id:
            await self._call("delete_dispatch", lk.agent_dispatch.delete_dispatch(ours.id, room))
            log.warning(
                "agent.dispatch_deduplicated",
                kept=winner.id,
                deleted=ours.id,
                dispatches=len(mine),
            )
        return winner

    async def _current_metadata(self, lk: api.LiveKitAPI, room: str) -> str:
        listed = await self._call(
            "list_rooms", lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
        )
        if not listed.rooms:
            raise RoomGone("list_rooms")
        return listed.rooms[0].metadata
