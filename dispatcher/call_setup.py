"""Set up one call, as the mission says: find the caller, resolve the persona, write it into the
room metadata, then make sure exactly one dispatch of the named agent exists.

`CallSetup.run` is those four steps in order; deduplication and single flight are around it
(`dispatcher.setup_guard`), and every LiveKit call goes through `dispatcher.livekit_api`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Literal

import structlog
from livekit import api
from livekit.protocol.agent import JobStatus

from config.settings import UnknownCallerPolicy
from contract.metadata import (
    DEFAULT_PERSONA,
    DEFAULT_UNKNOWN_CALLER_MESSAGE,
    Lookup,
    Persona,
    PersonaMetadata,
    PersonaTooLarge,
    Shape,
    dispatch_metadata,
    encode_fallback_metadata,
    encode_room_metadata,
)
from contract.phone_numbers import NumberPlan
from dispatcher.agent_choice import AgentRoster
from dispatcher.caller import (
    CallParty,
    DetectedNumber,
    call_id_of,
    detect_numbers,
    party_of,
)
from dispatcher.livekit_api import LiveKitError, LiveKitNotFound, LiveKitRooms, livekit_call
from dispatcher.persona_resolver import PersonaResolver, Resolution
from telemetry.logs import get_logger
from telemetry.metrics import Metrics, source_kind
from telemetry.timing import ms_since

log = get_logger(__name__)


Origin = Literal["webhook", "reconciler"]
UNKNOWN_CALLER_OUTCOMES = {"answer": "answered", "reject": "rejected", "announce": "announced"}


@dataclass(frozen=True)
class CallJoin:
    """What a webhook says about the call (no protobuf): a SIP participant's
    `participant_joined`, or the `room_started` of a room whose rule sets calls up as the room
    starts (no participant yet: the room's name carries the caller)."""

    event_id: str
    room: str
    room_metadata: str
    party: CallParty
    # How the call was found: its webhook, or the reconciler (its webhook was lost).
    origin: Origin = "webhook"
    at_room_start: bool = False
    # The room instance (webhooks and ListRooms carry it): a name is used again by later calls.
    room_sid: str = ""

    @property
    def call_id(self) -> str | None:
        return call_id_of(self.party)

    @property
    def room_key(self) -> str:
        """What set-up state is kept by: the room's sid, or its name where no sid is known."""
        return self.room_sid or self.room

    @classmethod
    def of_webhook(cls, event: api.WebhookEvent) -> CallJoin:
        """The call a verified `participant_joined` event describes."""
        return cls(
            event.id,
            event.room.name,
            event.room.metadata,
            party_of(event.participant),
            room_sid=event.room.sid,
        )

    @classmethod
    def of_room_started(cls, event: api.WebhookEvent) -> CallJoin:
        """The call a verified `room_started` event announces, before its caller has joined."""
        return cls(
            event.id,
            event.room.name,
            event.room.metadata,
            CallParty(),
            at_room_start=True,
            room_sid=event.room.sid,
        )


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
    ran_for: str = ""  # the event id of the delivery whose set-up this is

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
    number_plan: NumberPlan
    default_caller: str | None
    # A dispatch still without a job this long after its creation will never get one (LiveKit
    # does not retry a job request): the reconciler may replace it.
    agent_join_timeout_s: float = 10.0
    # The persona written when the resolved one does not fit beside the room's other keys.
    default_persona: Persona = DEFAULT_PERSONA
    # The other agents the CRM may name (AGENT_NAMES), and how long a dispatch of one of them
    # may go without a job before `agent_name` takes the call.
    agent_names: tuple[str, ...] = ()
    agent_job_timeout_s: float = 8.0
    # UNKNOWN_CALLER_POLICY and the line `announce` speaks.
    unknown_caller: UnknownCallerPolicy = "answer"
    unknown_caller_message: str = DEFAULT_UNKNOWN_CALLER_MESSAGE
    transfer_to: str | None = None  # TRANSFER_TO: for personas that name no target of their own

    @property
    def roster(self) -> AgentRoster:
        return AgentRoster(self.agent_name, self.agent_names)


@dataclass(frozen=True)
class Dispatch:
    """The one dispatch of our agent in the room, and how this set-up came by it."""

    dispatch_id: str
    created: bool
    reason: str  # created | already_dispatched | lost_race
    replaced: tuple[str, ...] = ()  # dispatches deleted because they never got a job


def agent_dispatches(
    listed: list[api.AgentDispatch], agent_names: str | tuple[str, ...]
) -> list[api.AgentDispatch]:
    """The dispatches of our agents (`agent_names`) among a room's, deleted ones left out (every
    room also lists an implicit dispatch with an empty agent name)."""
    names = (agent_names,) if isinstance(agent_names, str) else agent_names
    return [d for d in listed if d.agent_name in names and not d.state.deleted_at]


DispatchState = Literal["live", "waiting", "stale", "ended"]
# How often a new dispatch of a CRM-named agent is looked at while it waits for its job.
JOB_POLL_S = 0.25
_JOB_LIVE = (JobStatus.JS_PENDING, JobStatus.JS_RUNNING)


def dispatch_state(d: api.AgentDispatch, agent_join_timeout_s: float, now: float) -> DispatchState:
    """`live`: a job is pending or running (an agent is coming or there); `ended`: every job it
    had has ended (its agent left: it brings none again); `waiting`: no job yet, but LiveKit may
    still be assigning one; `stale`: no job this long after its creation, and LiveKit does not
    retry a job request, so none will come. `now`: LiveKit's time (its `created_at` is)."""
    if any(j.state.status in _JOB_LIVE for j in d.state.jobs):
        return "live"
    if d.state.jobs:
        return "ended"
    age_s = now - d.state.created_at / 1e9
    return "waiting" if age_s < agent_join_timeout_s else "stale"


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
            self.ms[name] = ms_since(t)

    def total_ms(self) -> float:
        return ms_since(self.started)


class CallSetup:
    """The four steps of a call's set-up; stateless, so one instance serves every call."""

    def __init__(
        self,
        rooms: LiveKitRooms,
        resolver: PersonaResolver,
        policy: SetupPolicy,
        metrics: Metrics,
    ) -> None:
        self._rooms = rooms
        self._resolver = resolver
        self._policy = policy
        self._metrics = metrics

    async def run(self, join: CallJoin) -> SetupResult:
        """Set up the call once; raises `LiveKitError` (`LiveKitNotFound`: the room is gone)."""
        steps = _Steps()
        numbers = self.find_caller(join)
        room = self._room(join.room)
        # The room's current metadata (the webhook's copy may be stale) is read while the persona
        # resolves, so keeping other components' keys costs no extra wait on a cache miss. At the
        # room's start the webhook carries what the room was created with, milliseconds old:
        # used as is, it spares the server a call per call when a burst loads it most.
        room.start_reading(join.room_metadata if join.at_room_start else None)
        try:
            with steps.timed("persona"):
                resolution = await self.resolve_persona(numbers)
            unknown = self.unknown_caller(join) if resolution.unknown_caller else None
            if unknown == "reject":
                with steps.timed("reject"):
                    await room.delete()
                return self._rejected(join, resolution.metadata(join.call_id), steps)
            with steps.timed("metadata"):
                # Whether our agent is already dispatched is asked while the persona is written,
                # so the dispatch follows the write at once (a dispatch another replica creates
                # meanwhile is settled after ours, as one created just before our create is).
                room.start_listing_dispatches()
                meta = self._with_transfer(
                    self._policy.roster.assign(resolution.metadata(join.call_id))
                )
                if unknown == "announce":
                    meta = replace(meta, announce=self._policy.unknown_caller_message)
                meta, size = await room.write_persona(meta)
            with steps.timed("dispatch"):
                dispatch, meta = await room.dispatch_answering_agent(meta)
        except LiveKitError as e:
            self._metrics.setup_failures.labels(e.step).inc()
            raise
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
            join.event_id,
        )
        log.info(
            "call.setup_done",
            duration_ms=result.duration_ms,
            status=meta.status,
            source=meta.source,
            dispatched=dispatch.created,
            agent_name=meta.agent,
            agent_reason=meta.agent_reason,
        )
        self._metrics.setups.labels(meta.status, source_kind(meta.source), join.origin).inc()
        if dispatch.created:
            self._metrics.agent_choices.labels(meta.agent_reason or "default").inc()
        self._metrics.setup_duration.observe(result.duration_ms / 1000)
        return result

    def _with_transfer(self, meta: PersonaMetadata) -> PersonaMetadata:
        """`meta` whose persona carries the deployment's TRANSFER_TO when it names none."""
        if meta.persona.transfer_to is not None or self._policy.transfer_to is None:
            return meta
        return replace(meta, persona=replace(meta.persona, transfer_to=self._policy.transfer_to))

    def unknown_caller(self, join: CallJoin) -> UnknownCallerPolicy:
        """What UNKNOWN_CALLER_POLICY does with this caller: logged and counted, by outcome."""
        policy = self._policy.unknown_caller
        log.info(
            "call.unknown_caller",
            policy=policy,
            outcome=UNKNOWN_CALLER_OUTCOMES[policy],
            reason="not_found",
            origin=join.origin,
        )
        self._metrics.unknown_callers.labels(policy, UNKNOWN_CALLER_OUTCOMES[policy]).inc()
        return policy

    def _rejected(self, join: CallJoin, meta: PersonaMetadata, steps: _Steps) -> SetupResult:
        """The set-up of a call rejected while it rang: no metadata, no dispatch."""
        result = SetupResult(
            join.room, "", False, meta, steps.total_ms(), "rejected", 0, steps.ms, join.event_id
        )
        log.info(
            "call.setup_done",
            duration_ms=result.duration_ms,
            status=meta.status,
            source=meta.source,
            dispatched=False,
            rejected=True,
        )
        return result

    async def redispatch(self, room: str, meta: PersonaMetadata) -> Dispatch:
        """Step 4 again for a room whose persona is in place (the reconciler's repair): replace
        dispatches that never got a job, keep one whose job is pending or running; the agent is
        the one the metadata names, or `AGENT_NAME` when that one's dispatch never got a job."""
        dispatch, _ = await self._room(room).dispatch_answering_agent(meta, replace_jobless=True)
        return dispatch

    def _room(self, name: str) -> _Room:
        return _Room(
            self._rooms.for_room(name),
            name,
            self._policy,
            self._metrics,
            self._rooms.now,
            self._rooms.server,
        )

    def find_caller(self, join: CallJoin) -> list[DetectedNumber]:
        """Step 1: the numbers to look the persona up by, in `PERSONA_LOOKUP` order."""
        p = self._policy
        numbers = detect_numbers(
            join.party, join.room, join.room_metadata, p.lookups, p.number_plan, p.default_caller
        )
        if not numbers:
            log.warning("call.no_caller", identity_kind=join.party.identity.split("_")[0])
            return numbers
        first = numbers[0]
        # Masked by the logging's redaction, as every number in every field is.
        structlog.contextvars.bind_contextvars(caller=first.number)
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
            truncated=resolution.persona.truncated,
            lookup=resolution.lookup,
            duration_ms=round(resolution.duration_ms, 1),
        )
        return resolution


@dataclass(frozen=True)
class MetadataPlan:
    """The room metadata step 3 writes, and the persona in it."""

    encoded: str
    meta: PersonaMetadata
    too_large: PersonaTooLarge | None = None  # why the default persona replaced the resolved one
    shape: Shape = "with_room_keys"


def plan_room_metadata(
    existing: str, meta: PersonaMetadata, budget: int, default: Persona
) -> MetadataPlan:
    """`meta` beside the room's other keys; when they do not fit together, the default persona
    (beside them, alone, or the minimal one: whatever fits). Never fails."""
    try:
        return MetadataPlan(encode_room_metadata(existing, meta, budget), meta)
    except PersonaTooLarge as e:
        too_large = e
    fallback = replace(meta, persona=default, status="default", source="default")
    encoded, written, shape = encode_fallback_metadata(existing, fallback, budget)
    return MetadataPlan(encoded, written, too_large, shape)


class _Room:
    """Steps 3 and 4 on one room, through one room-scoped client."""

    def __init__(
        self,
        lk: api.LiveKitAPI,
        name: str,
        policy: SetupPolicy,
        metrics: Metrics,
        clock: Callable[[], float],
        server: api.LiveKitAPI | None = None,
    ) -> None:
        self._lk = lk
        # Deleting a room needs the server's own grants (roomCreate), not the room-scoped token.
        self._server = server or lk
        self._clock = clock  # LiveKit's time
        self._name = name
        self._policy = policy
        self._metrics = metrics
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

    async def delete(self) -> None:
        """Delete the room: a caller still ringing hears busy (livekit-sip answers 486)."""
        with contextlib.suppress(LiveKitNotFound):  # the caller hung up first
            await livekit_call(
                "delete_room",
                self._server.room.delete_room(api.DeleteRoomRequest(room=self._name)),
                self._policy.api_timeout_s,
            )
        log.info("room.deleted", reason="unknown_caller")

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
        encoded, meta = self._encode(existing, meta)
        started = time.perf_counter()
        await livekit_call(
            "update_room_metadata",
            self._lk.room.update_room_metadata(
                api.UpdateRoomMetadataRequest(room=self._name, metadata=encoded)
            ),
            self._policy.api_timeout_s,
        )
        size = len(encoded.encode())
        log.info("room.metadata_written", bytes=size, duration_ms=ms_since(started))
        return meta, size

    def _encode(self, existing: str, meta: PersonaMetadata) -> tuple[str, PersonaMetadata]:
        plan = plan_room_metadata(
            existing, meta, self._policy.metadata_budget, self._policy.default_persona
        )
        if plan.too_large is not None:
            e = plan.too_large
            log.error("persona.too_large", size=e.size, budget=e.budget, status=meta.status)
            self._metrics.persona_fallbacks.labels("too_large", "default").inc()
        if plan.shape != "with_room_keys":
            log.warning(
                "room.metadata_reduced", shape=plan.shape, budget=self._policy.metadata_budget
            )
        return plan.encoded, plan.meta

    async def ensure_one_dispatch(
        self, meta: PersonaMetadata, *, replace_jobless: bool = False
    ) -> Dispatch:
        """Step 4: keep our agent's dispatch if the room has one, else create it and settle a
        race with another replica that created one at the same moment.

        With `replace_jobless`, a dispatch that never got a job within the agent-join timeout
        is deleted first: it will never bring an agent, and deleting it cannot remove one.
        """
        agent_name = self._policy.roster.agent_of(meta)
        started = time.perf_counter()
        listed = await (self._listing or self._our_dispatches())
        self._listing = None  # a second look lists afresh
        # A dispatch whose jobs have all ended brings no agent again: as good as absent.
        ours = [d for d in listed if not self._ended(d)]
        replaced: list[str] = []
        if replace_jobless:
            for d in [d for d in ours if self._jobless(d)]:
                await self._delete(d.id)
                replaced.append(d.id)
            ours = [d for d in ours if d.id not in replaced]
        if ours:
            log.info(
                "agent.dispatch_skipped",
                reason="already_dispatched",
                agent_name=agent_name,
                dispatch_id=ours[0].id,
            )
            return Dispatch(ours[0].id, False, "already_dispatched", tuple(replaced))
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
            duration_ms=ms_since(started),
        )
        winner = await self._settle(created)
        if winner.id != created.id:
            return Dispatch(winner.id, False, "lost_race", tuple(replaced))
        return Dispatch(created.id, True, "created", tuple(replaced))

    async def dispatch_answering_agent(
        self, meta: PersonaMetadata, *, replace_jobless: bool = False
    ) -> tuple[Dispatch, PersonaMetadata]:
        """Step 4 for the agent `meta` names; when that is not `AGENT_NAME` and its dispatch gets
        no job within `AGENT_JOB_TIMEOUT_S` (no worker serves the name, or it stopped), that
        dispatch is deleted and `AGENT_NAME` dispatched instead, the metadata saying so."""
        chosen = self._policy.roster.agent_of(meta)
        if chosen == self._policy.agent_name:
            return await self.ensure_one_dispatch(meta, replace_jobless=replace_jobless), meta
        if replace_jobless and (stale := await self._jobless_dispatch_of(chosen)) is not None:
            # The reconciler's repair: the chosen agent already had its chance.
            meta = await self._record_fallback(meta, chosen, stale)
            return await self.ensure_one_dispatch(meta, replace_jobless=True), meta
        dispatch = await self.ensure_one_dispatch(meta, replace_jobless=replace_jobless)
        if not dispatch.created or await self._gets_job(dispatch.dispatch_id):
            return dispatch, meta
        await self._delete(dispatch.dispatch_id)
        meta = await self._record_fallback(meta, chosen, dispatch.dispatch_id)
        fallback = await self.ensure_one_dispatch(meta)
        return replace(fallback, replaced=(*dispatch.replaced, dispatch.dispatch_id)), meta

    async def _jobless_dispatch_of(self, agent_name: str) -> str | None:
        """The id of a dispatch of `agent_name` that never got a job in time, if there is one."""
        listed = await self._our_dispatches()
        stale = [d.id for d in listed if d.agent_name == agent_name and self._jobless(d)]
        return stale[0] if stale else None

    async def _gets_job(self, dispatch_id: str) -> bool:
        """Whether the dispatch gets a job within `AGENT_JOB_TIMEOUT_S`: its state lists one, or
        an agent has joined the room (seen before the job in the dispatch's state, at times);
        also True when it is gone meanwhile (another replica settled it: not ours to replace)."""
        deadline = time.monotonic() + self._policy.agent_job_timeout_s
        while True:
            listed = {d.id: d for d in await self._our_dispatches()}
            d = listed.get(dispatch_id)
            if d is None or d.state.jobs or await self._agent_in_room():
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(JOB_POLL_S)

    async def _agent_in_room(self) -> bool:
        listed = await livekit_call(
            "list_participants",
            self._lk.room.list_participants(api.ListParticipantsRequest(room=self._name)),
            self._policy.api_timeout_s,
        )
        return any(p.kind == api.ParticipantInfo.Kind.AGENT for p in listed.participants)

    async def _record_fallback(
        self, meta: PersonaMetadata, chosen: str, dispatch_id: str
    ) -> PersonaMetadata:
        """`AGENT_NAME` in place of `chosen`, whose dispatch got no job: logged, counted and
        written into the room's metadata."""
        default = self._policy.agent_name
        log.warning(
            "call.agent_fallback",
            agent_name=chosen,
            fallback=default,
            dispatch_id=dispatch_id,
            timeout_s=self._policy.agent_job_timeout_s,
        )
        self._metrics.agent_fallbacks.labels("no_job").inc()
        if self._reading is None:
            self.start_reading()
        written, _ = await self.write_persona(replace(meta, agent=default, agent_reason="no_job"))
        return written

    def _ended(self, d: api.AgentDispatch) -> bool:
        return dispatch_state(d, self._policy.agent_join_timeout_s, self._clock()) == "ended"

    def _jobless(self, d: api.AgentDispatch) -> bool:
        return dispatch_state(d, self._policy.agent_join_timeout_s, self._clock()) == "stale"

    async def _delete(self, dispatch_id: str) -> None:
        with contextlib.suppress(LiveKitNotFound):  # another replica deleted it first
            await livekit_call(
                "delete_dispatch",
                self._lk.agent_dispatch.delete_dispatch(dispatch_id, self._name),
                self._policy.api_timeout_s,
            )

    async def _our_dispatches(self) -> list[api.AgentDispatch]:
        listed = await livekit_call(
            "list_dispatch",
            self._lk.agent_dispatch.list_dispatch(self._name),
            self._policy.api_timeout_s,
        )
        return agent_dispatches(listed, self._policy.roster.all)

    async def _settle(self, ours: api.AgentDispatch) -> api.AgentDispatch:
        """Another replica may have created a dispatch between our check and our create: all
        replicas keep the earliest one and delete their own otherwise, which ends its job."""
        mine = [d for d in await self._our_dispatches() if not self._ended(d)] or [ours]
        winner = min(mine, key=lambda d: (d.state.created_at, d.id))
        if winner.id != ours.id:
            await self._delete(ours.id)
            log.warning(
                "agent.dispatch_deduplicated",
                kept=winner.id,
                deleted=ours.id,
                dispatches=len(mine),
            )
            self._metrics.dispatch_races.labels("deleted").inc()
        elif len(mine) > 1:
            self._metrics.dispatch_races.labels("kept").inc()
        return winner
