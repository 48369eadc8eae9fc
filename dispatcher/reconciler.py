"""No caller left ringing: find the calls the webhook path missed and set them up the same way.

LiveKit's webhooks are best-effort: an event is retried for about 15 s, then lost; a created
dispatch is not an agent either (a job request no worker took is not retried). At start-up and
then every `RECONCILE_INTERVAL_S` the reconciler lists the rooms once and repairs:

- `lost_webhook`: a room with a SIP caller but no `persona` key, older than the grace period
  (younger ones are left to their webhook) gets the webhook path's own set-up, through the same
  guard, so a webhook arriving meanwhile shares it;
- `no_dispatch` / `agent_missing`: a room whose persona was written more than
  `AGENT_JOIN_TIMEOUT_S` ago and where no agent has joined. Without a dispatch of ours it gets
  one; a dispatch that never got a job is replaced; one whose job is pending or running is left
  alone, since a second dispatch could put a second agent in the room (`call.agent_missing`).

Cost: one `ListRooms` per pass; per-room calls only for those candidates. A room seen healthy
(an agent in it) is not checked again while its participant count stays the same, so each call
costs one `ListParticipants` once its agent-join timeout has passed, not one per pass. Two facts
of livekit-server shape the filter: a room's `num_participants` counts no agent (agents are
"dependent" participants), and it is refreshed at most every 5 s, so a new room may still show 0.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import orjson
import structlog
from livekit import api

from contract.metadata import METADATA_KEY, ContractError, decode_persona_metadata
from dispatcher.call_rooms import call_setup_mode
from dispatcher.call_setup import CallJoin, CallSetup, agent_dispatches, dispatch_state
from dispatcher.caller import call_id_of, party_of
from dispatcher.lease import RedisLease
from dispatcher.livekit_api import LiveKitError, LiveKitNotFound, LiveKitRooms, livekit_call
from dispatcher.setup_guard import SetupGuard
from telemetry.logs import get_logger
from telemetry.metrics import Metrics

log = get_logger(__name__)
T = TypeVar("T")

SIP = api.ParticipantInfo.Kind.SIP
AGENT = api.ParticipantInfo.Kind.AGENT
# livekit-server refreshes a room's participant count at most this often (roomUpdateInterval).
COUNT_LAG_S = 5.0
# A room whose check keeps failing is looked at again after one interval, then twice as long
# each time, up to this: a poison room costs little and never holds up the others.
MAX_ROOM_BACKOFF_S = 300.0


@dataclass(frozen=True)
class ReconcilePolicy:
    interval_s: float  # 0: the reconciler is off
    grace_s: float
    agent_join_timeout_s: float
    agent_name: str
    api_timeout_s: float
    concurrency: int = 8  # per-room checks and repairs at once
    agent_names: tuple[str, ...] = ()  # AGENT_NAMES: dispatches of these are ours too


@dataclass
class PassReport:
    """What one pass saw and did (also the benchmark's reading)."""

    rooms: int = 0
    candidates: int = 0
    repaired: int = 0
    api_calls: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0


@dataclass
class _Failing:
    """A room whose check failed `times` in a row; not looked at again before `retry_at`."""

    times: int
    retry_at: float


@dataclass
class _Seen:
    """A room checked and left alone, until `until` or until its participant count changes."""

    participants: int
    until: float


class Reconciler:
    """One per dispatcher process; `run` is its background task."""

    def __init__(
        self,
        rooms: LiveKitRooms,
        setup: CallSetup,
        guard: SetupGuard,
        policy: ReconcilePolicy,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        lease: RedisLease | None = None,
    ) -> None:
        self._lease = lease
        self._rooms = rooms
        self._setup = setup
        self._guard = guard
        self._policy = policy
        self._metrics = metrics
        self._clock = clock  # LiveKit's time: its creation and join times are on it
        self._seen: dict[str, _Seen] = {}
        self._failing: dict[str, _Failing] = {}  # by room sid
        self._reported: set[str] = set()  # dispatch ids already logged as agent_missing

    async def run(self) -> None:
        """A pass now, then one every interval, until cancelled; a failed pass is logged and
        counted, and the next one comes all the same. With a lease (several replicas on one
        Redis), only its holder passes over the rooms."""
        try:
            while True:
                await self._guarded_pass()
                await asyncio.sleep(self._policy.interval_s)
        finally:
            if self._lease is not None:
                await asyncio.shield(self._lease.release())

    async def keep_running(self) -> None:
        """`run`, restarted (after one interval) whenever it ends other than by cancellation:
        the background task that no bug can end for good."""
        while True:
            try:
                await self.run()
                log.error("reconcile.stopped", restart_in_s=self._policy.interval_s)
            except Exception:
                log.exception("reconcile.crashed", restart_in_s=self._policy.interval_s)
            self._metrics.reconcile_restarts.inc()
            await asyncio.sleep(self._policy.interval_s)

    async def _guarded_pass(self) -> None:
        """One pass if this replica holds the lease; whatever fails is logged and counted."""
        try:
            if self._lease is None or await self._lease.held():
                await self.reconcile()
        except LiveKitError as e:
            self._metrics.reconcile_ticks.labels("failed").inc()
            log.warning("reconcile.failed", error=str(e), step=e.step)
        except Exception:
            # A bug, or a room no code path expected: the traceback says which; the loop goes on.
            self._metrics.reconcile_ticks.labels("failed").inc()
            log.exception("reconcile.failed", step="unexpected")

    async def reconcile(self) -> PassReport:
        """One pass over every room; raises `LiveKitError` when the rooms cannot be listed."""
        started = time.perf_counter()
        report = PassReport()
        listed = await self._call(
            report,
            "list_rooms",
            self._rooms.server.room.list_rooms(api.ListRoomsRequest()),
        )
        now = self._clock()
        report.rooms = len(listed.rooms)
        live = {r.sid for r in listed.rooms}
        self._seen = {sid: s for sid, s in self._seen.items() if sid in live}
        self._failing = {sid: f for sid, f in self._failing.items() if sid in live}
        # Rooms whose end this replica never heard of (it went to another replica).
        self._guard.keep_only(live | {r.name for r in listed.rooms})
        due = time.monotonic()
        candidates = [
            r for r in listed.rooms if self._is_candidate(r, now) and not self._backing_off(r, due)
        ]
        report.candidates = len(candidates)
        gate = asyncio.Semaphore(self._policy.concurrency)

        async def check(room: api.Room) -> bool:
            async with gate:
                with structlog.contextvars.bound_contextvars(room=room.name):
                    try:
                        repaired = await self._check(room, report)
                    except LiveKitNotFound:
                        return False  # the call ended meanwhile
                    except LiveKitError as e:
                        self._room_failed(room, "livekit", e)
                        return False
                    except Exception as e:
                        # One room's bug must not end the pass for the others, nor the task.
                        self._room_failed(room, "unexpected", e)
                        return False
                    self._failing.pop(room.sid, None)
                    return repaired

        repaired = await asyncio.gather(*(check(r) for r in candidates))
        report.repaired = sum(repaired)
        report.duration_s = time.perf_counter() - started
        self._metrics.reconcile_ticks.labels("ok").inc()
        self._metrics.reconcile_duration.observe(report.duration_s)
        if candidates:
            log.info(
                "reconcile.pass",
                rooms=report.rooms,
                candidates=report.candidates,
                repaired=report.repaired,
                duration_ms=round(report.duration_s * 1000, 1),
            )
        return report

    def _backing_off(self, room: api.Room, now: float) -> bool:
        failing = self._failing.get(room.sid)
        return failing is not None and now < failing.retry_at

    def _room_failed(self, room: api.Room, kind: str, error: Exception) -> None:
        """Count a room's failed check and back off from it; the first failure in a row is
        logged (an unexpected one with its traceback), later ones only counted."""
        failing = self._failing.get(room.sid) or _Failing(0, 0.0)
        failing.times += 1
        backoff_s = min(self._policy.interval_s * 2 ** (failing.times - 1), MAX_ROOM_BACKOFF_S)
        failing.retry_at = time.monotonic() + backoff_s
        self._failing[room.sid] = failing
        self._metrics.reconcile_room_failures.labels(kind).inc()
        if failing.times > 1:
            return
        fields = {"kind": kind, "retry_in_s": round(backoff_s, 1), "error": str(error)}
        if kind == "unexpected":
            log.error("reconcile.room_failed", exc_info=error, **fields)
        else:
            log.warning("reconcile.room_failed", step=getattr(error, "step", None), **fields)

    def _is_candidate(self, room: api.Room, now: float) -> bool:
        """From `ListRooms` alone: a room worth one look (no per-room call for the others)."""
        seen = self._seen.get(room.sid)
        if seen is not None and seen.participants == room.num_participants and now < seen.until:
            return False
        if call_setup_mode(room.metadata) == "off":
            return False  # another route's call: its dispatch rule sends its own agent
        created = room.creation_time_ms / 1000 if room.creation_time_ms else room.creation_time
        age = now - created
        if age < self._policy.grace_s:
            return False  # left to its webhook
        has_persona, resolved_at = _persona_state(room.metadata)
        if not has_persona:
            # Someone is in it, or it is too new for its count (0) to be believed.
            return room.num_participants > 0 or age < self._policy.grace_s + COUNT_LAG_S
        if room.num_participants == 0:
            return False  # the caller has left
        # `resolved_at` is a dispatcher's own time (the persona's), not LiveKit's.
        waited_s = time.time() - resolved_at if resolved_at is not None else None
        return waited_s is None or waited_s >= self._policy.agent_join_timeout_s

    async def _check(self, room: api.Room, report: PassReport) -> bool:
        """Look at one candidate and repair it if it needs it; True when repaired."""
        participants = await self._call(
            report,
            "list_participants",
            self._rooms.server.room.list_participants(api.ListParticipantsRequest(room=room.name)),
        )
        callers = [p for p in participants.participants if p.kind == SIP]
        agents = [p for p in participants.participants if p.kind == AGENT]
        now = self._clock()
        if agents:
            self._remember(room, now, forever=True)  # healthy: an agent is in the call
            return False
        if not callers:
            # Not a call, or not yet: look again after a grace period or when the count changes.
            self._remember(room, now, for_s=self._policy.grace_s)
            return False
        caller = min(callers, key=lambda p: p.joined_at_ms or p.joined_at * 1000)
        joined = caller.joined_at_ms / 1000 if caller.joined_at_ms else float(caller.joined_at)
        waited_s = round(now - joined, 1)
        party = party_of(caller)
        structlog.contextvars.bind_contextvars(call_id=call_id_of(party))
        has_persona, _ = _persona_state(room.metadata)
        if not has_persona:
            if waited_s < self._policy.grace_s:
                return False  # joined late into an older room: its webhook may still come
            join = CallJoin(
                f"reconcile_{room.sid}_{caller.sid}",
                room.name,
                room.metadata,
                party,
                origin="reconciler",
                room_sid=room.sid,
            )
            result = await self._guard.handle_join(join)
            if result.ran_for != join.event_id or not result.dispatched:
                return False  # the webhook path (here or in a replica) set it up: no repair
            self._repaired("lost_webhook", result.dispatch_id, waited_s, caller)
            return True
        return await self._repair_dispatch(room, caller, waited_s, report)

    async def _repair_dispatch(
        self, room: api.Room, caller: api.ParticipantInfo, waited_s: float, report: PassReport
    ) -> bool:
        try:
            meta = decode_persona_metadata(room.metadata)
        except ContractError:
            return False  # written by something else; the webhook path owns the key
        dispatches = await self._call(
            report,
            "list_dispatch",
            self._rooms.server.agent_dispatch.list_dispatch(room.name),
        )
        ours = agent_dispatches(dispatches, (self._policy.agent_name, *self._policy.agent_names))
        now = self._clock()
        states = {d.id: dispatch_state(d, self._policy.agent_join_timeout_s, now) for d in ours}
        live = [d for d in ours if states[d.id] == "live"]
        if live:
            # A job is pending or running: a second dispatch could bring a second agent.
            self._agent_missing(live[0], waited_s, job=True)
            self._remember(room, now)
            return False
        if any(state == "waiting" for state in states.values()):
            return False  # LiveKit may still assign it a job
        cause = "agent_missing" if ours else "no_dispatch"
        for d in ours:
            self._agent_missing(d, waited_s, job=False)
        dispatch = await self._setup.redispatch(room.name, meta)
        self._remember(room, now)
        if not dispatch.created:
            return False  # still too young to replace, or another replica repaired it first
        self._repaired(cause, dispatch.dispatch_id, waited_s, caller, replaced=dispatch.replaced)
        return True

    def _agent_missing(self, d: api.AgentDispatch, waited_s: float, *, job: bool) -> None:
        if d.id in self._reported:
            return
        self._reported.add(d.id)
        if len(self._reported) > 10_000:
            self._reported.clear()
        self._metrics.agents_missing.inc()
        log.warning(
            "call.agent_missing",
            dispatch_id=d.id,
            jobs=len(d.state.jobs),
            job_live=job,
            waited_s=waited_s,
            action="left alone: a job is pending or running" if job else "replaced",
        )

    def _repaired(
        self,
        cause: str,
        dispatch_id: str,
        waited_s: float,
        caller: api.ParticipantInfo,
        replaced: tuple[str, ...] = (),
    ) -> None:
        self._metrics.repairs.labels(cause).inc()
        number = caller.attributes.get("sip.phoneNumber") or None
        log.warning(
            "call.repaired",
            cause=cause,
            found_by="reconciler",
            dispatch_id=dispatch_id,
            replaced=list(replaced),
            waited_s=waited_s,
            caller=number,  # masked by the logging's redaction
        )

    def _remember(
        self, room: api.Room, now: float, *, forever: bool = False, for_s: float | None = None
    ) -> None:
        """Skip `room` while its participant count stays the same: forever, for `for_s`, or by
        default for the agent-join timeout (time for a new dispatch to bring its agent)."""
        wait = self._policy.agent_join_timeout_s if for_s is None else for_s
        self._seen[room.sid] = _Seen(room.num_participants, float("inf") if forever else now + wait)

    async def _call(self, report: PassReport, step: str, request: Awaitable[T]) -> T:
        report.api_calls[step] = report.api_calls.get(step, 0) + 1
        self._metrics.reconcile_api_calls.labels(step).inc()
        return await livekit_call(step, request, self._policy.api_timeout_s)


def _persona_state(raw: str) -> tuple[bool, float | None]:
    """Whether room metadata holds our key, and when its persona was resolved (epoch seconds)."""
    if not raw or METADATA_KEY not in raw:
        return False, None  # cheap: most rooms without our key never reach the JSON parser
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False, None
    if not isinstance(value, dict) or not isinstance(value.get(METADATA_KEY), dict):
        return False, None
    resolved = value[METADATA_KEY].get("resolved_at")
    if not isinstance(resolved, str):
        return True, None
    try:
        return True, datetime.fromisoformat(resolved.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return True, None
