"""The livekit-agents worker: registers under `AGENT_NAME` and runs one `PersonaAgent` per job.

Jobs run in child processes: the entrypoint and the process setup are picklable objects holding
the (frozen) settings, so each child gets exactly the worker's settings.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog
from livekit import api
from livekit.agents import AgentServer, JobContext, JobProcess, JobRequest, room_io
from livekit.protocol import sip

from agent.call_record import CallStart, persona_fields
from agent.call_store import CallStore
from agent.models import StackFactory, models_used, new_session, preload_models, stack_factory
from agent.persona import SIP_KIND, AppliedPersona, resolve_persona, with_call_id
from agent.persona_agent import PersonaAgent, TransferOutcome
from agent.transcript import TranscriptLog
from config.agent_settings import AgentSettings
from contract.metadata import DispatchInfo, parse_dispatch_metadata
from telemetry.agent_metrics import count_in_files
from telemetry.logs import configure_forwarded_logging, get_logger

log = get_logger(__name__)

FactoryMaker = Callable[[AgentSettings, dict[str, Any]], StackFactory]
WARMUP_MODULE = "agent.warmup"
# Where a job process keeps its call's store for the session-end hook.
CALL_STORE = "call_store"
# A transfer waits for the far end to take the REFER (livekit-api's own wait covers its ringing).
TRANSFER_TIMEOUT_S = 60.0
STS_TRANSFER_FAILED = sip.SIPTransferStatus.STS_TRANSFER_FAILED


class RoomCallControl:
    """Ends a call by deleting its room: that disconnects the SIP participant (the caller's line
    hangs up) and every other participant, then ends the job."""

    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx

    async def hang_up(self, reason: str) -> None:
        await self._ctx.delete_room()
        log.info("call.hung_up", reason=reason)
        self._ctx.shutdown(reason=reason)

    async def transfer(self, to: str) -> TransferOutcome:
        """SIP REFER of the caller to `to`, a dial tone playing meanwhile. livekit-api answers
        with a status that must be read even when nothing raised."""
        caller = next(
            (p for p in self._ctx.room.remote_participants.values() if p.kind == SIP_KIND), None
        )
        if caller is None:
            return TransferOutcome(False, "no caller in the room")
        request = api.TransferSIPParticipantRequest(
            room_name=self._ctx.room.name,
            participant_identity=caller.identity,
            transfer_to=to,
            play_dialtone=True,
        )
        try:
            async with asyncio.timeout(TRANSFER_TIMEOUT_S):
                answer = await self._ctx.api.sip.transfer_sip_participant(request)
        except (api.TwirpError, TimeoutError, aiohttp.ClientError) as e:
            return TransferOutcome(False, f"{type(e).__name__}: {e}")
        if answer.status == STS_TRANSFER_FAILED:
            reason = sip.SIPTransferReason.Name(answer.reason)
            return TransferOutcome(False, f"{reason} (SIP {answer.sip_status})")
        return TransferOutcome(True, sip.SIPTransferStatus.Name(answer.status))


class JobProcessSetup:
    """Runs once in each job process before it takes a job: logging, its counts kept for the
    worker's metrics endpoint, then per-process models."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings

    def __call__(self, proc: JobProcess) -> None:
        configure_forwarded_logging(self.settings.logs.level, service="agent")
        if self.settings.metrics_dir is not None:
            count_in_files(self.settings.metrics_dir)
        proc.userdata["models"] = preload_models(self.settings)


class JobEntrypoint:
    """The `rtc_session` entrypoint: persona first, then the session built for it."""

    def __init__(self, settings: AgentSettings, make_factory: FactoryMaker = stack_factory) -> None:
        self.settings = settings
        self.make_factory = make_factory

    async def __call__(self, ctx: JobContext) -> None:
        factory = self.make_factory(self.settings, ctx.proc.userdata.get("models", {}))
        await run_call(ctx, self.settings, factory)


class JobSessionEnd:
    """livekit-agents' session-end hook (it runs once the session is closed, with a longer budget
    than the shutdown callbacks): the call's last writes to the database."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings

    async def __call__(self, ctx: JobContext) -> None:
        store: CallStore | None = ctx.proc.userdata.pop(CALL_STORE, None)
        if store is not None:
            await store.close(timeout_s=self.settings.call_store.flush_timeout_s)


def log_applied(applied: AppliedPersona, *, room: str) -> None:
    """`persona.applied` (and `persona.missing` first when the default had to be used); the
    caller's number is masked by the worker's log redaction."""
    log = get_logger(__name__)
    if applied.is_default:
        # The dispatcher guarantees a persona before dispatch: this is its bug, not the caller's.
        log.warning("persona.missing", room=room, problems=list(applied.problems))
    log.info(
        "persona.applied",
        room=room,
        caller=applied.meta.caller,
        **applied.log_fields(),
    )


def transcript_persona_event(applied: AppliedPersona) -> str:
    """The transcript's name for the persona in effect, in the team's words (their transcript
    logger and manual call test look for these, see shared/origin-notes.md): `persona_loaded`
    for a persona from the API, the cache, a stale copy or a file; `persona_not_found` when the
    default persona had to be used."""
    return "persona_not_found" if applied.meta.status == "default" else "persona_loaded"


def call_start(ctx: JobContext, dispatch: DispatchInfo) -> CallStart:
    """What the job knows of its call before connecting: the start of its database document."""
    job = ctx.job
    return CallStart(
        job_id=job.id,
        room=job.room.name,
        room_sid=job.room.sid,
        agent_name=job.agent_name,
        dispatch_id=job.dispatch_id,
        caller=dispatch.caller,
        call_id=dispatch.call_id,
        started_at=datetime.now(UTC),
    )


def open_call_store(ctx: JobContext, settings: AgentSettings, dispatch: DispatchInfo) -> CallStore:
    """The call's database document, started now (a call cut before anything else still leaves
    it) and closed by `JobSessionEnd`; a store that does nothing without MONGO_URI."""
    store = CallStore.open(settings, job_id=ctx.job.id, room=ctx.job.room.name)
    if store.enabled:
        store.started(call_start(ctx, dispatch))
        ctx.proc.userdata[CALL_STORE] = store
    return store


def call_room_options() -> room_io.RoomOptions:
    """What a call's session reads from and writes to its room: the caller's audio and chat text
    in, the agent's audio out; no transcription out. A phone caller cannot read one, and
    livekit-agents' default would run a synchroniser over the agent's audio and send its words
    as text streams into the room: CPU on every call, on the first word's path, for no one (the
    transcript file is written from the session's own events)."""
    return room_io.RoomOptions(text_output=False)


async def run_call(ctx: JobContext, settings: AgentSettings, factory: StackFactory) -> None:
    """One call: resolve the persona from room metadata, then start the agent in the room."""
    room = ctx.job.room.name
    structlog.contextvars.bind_contextvars(room=room, job_id=ctx.job.id)
    dispatch = parse_dispatch_metadata(ctx.job.metadata)
    store = open_call_store(ctx, settings, dispatch)
    applied = await resolve_persona(
        job_room_metadata=ctx.job.room.metadata,
        room=ctx.room,
        connect=ctx.connect,
        wait_s=settings.persona_wait_s,
        dispatch=dispatch,
    )
    applied = with_call_id(applied, ctx.room.remote_participants.values())
    meta = applied.meta
    structlog.contextvars.bind_contextvars(call_id=meta.call_id)
    log_applied(applied, room=room)

    transcript = TranscriptLog(
        settings.transcript_path if settings.transcript_file else None,
        room=room,
        call_id=meta.call_id,
        unmasked=settings.logs.unmasked,
        region=settings.numbers.region,
    )
    persona_event = transcript_persona_event(applied)
    transcript.write(persona_event, caller=meta.caller, **applied.log_fields())
    store.set(persona_fields(applied, event=persona_event, when=datetime.now(UTC)))
    store.follow_caller(ctx.room)
    stack = factory(meta.persona)
    store.set({"models": models_used(settings.stack, stack)})
    session = new_session(stack)
    transcript.attach(session)
    store.attach(session)

    @session.on("close")
    def _on_close(_: object) -> None:
        # The session ends when the caller hangs up; the job (and its process) must end too.
        ctx.shutdown(reason="session closed")

    agent = PersonaAgent(
        meta.persona, call=RoomCallControl(ctx), transcript=transcript, announce=meta.announce
    )
    # No session host either: it streams every session event (each state change, each turn)
    # into the room as byte streams, for a client that a phone call never has.
    await session.start(agent, room=ctx.room, room_options=call_room_options(), session_host=False)
    log.info("agent.started", persona_id=meta.persona.persona_id)


class JobCountLoad:
    """Worker load as the share of `max_jobs` in use."""

    def __init__(self, max_jobs: int) -> None:
        self.max_jobs = max_jobs

    def __call__(self, server: AgentServer) -> float:
        return min(len(server.active_jobs) / self.max_jobs, 1.0)


class JobCapacity:
    """Takes a job while fewer than `max_jobs` run or are starting, else lets another worker
    have it.

    livekit-agents' own check counts a job accepted but not yet running as `load_threshold /
    idle processes` of load while no job runs (a whole half of the capacity with two idle
    processes): a burst of calls on an idle worker had two jobs accepted and the rest refused at
    once, and livekit-server offers a refused job to no one again, so those callers rang until
    they hung up. With `AGENT_MAX_JOBS` that check is off (an infinite threshold) and this one
    counts jobs instead; the load reported to the server is still `JobCountLoad`'s."""

    def __init__(self, max_jobs: int) -> None:
        self.max_jobs = max_jobs
        self.server: AgentServer | None = None
        self._starting = 0

    async def __call__(self, request: JobRequest) -> None:
        running = len(self.server.active_jobs) if self.server is not None else 0
        if running + self._starting >= self.max_jobs:
            log.warning("job.refused", running=running, starting=self._starting)
            await request.reject(terminate=False)
            return
        self._starting += 1
        try:
            await request.accept()  # returns once the job runs in its process or thread
        finally:
            self._starting -= 1


def new_agent_server(
    settings: AgentSettings, entrypoint: Callable[[JobContext], Awaitable[None]]
) -> AgentServer:
    """A worker running `entrypoint` for explicit dispatches of `settings.agent_name`, with
    `settings`' capacity, idle pool and process set-up: the one place the worker's options are
    decided (the ring-time benchmark's bare agent uses it too)."""
    lk = settings.livekit
    capacity = JobCapacity(settings.max_jobs) if settings.max_jobs else None
    server = AgentServer(
        ws_url=lk.url,
        api_key=lk.api_key,
        api_secret=lk.api_secret,
        host=settings.http_host,
        port=settings.http_port,
        num_idle_processes=settings.idle_processes,
        load_threshold=math.inf if capacity else settings.load_threshold,
        load_fnc=JobCountLoad(settings.max_jobs) if settings.max_jobs else None,
        drain_timeout=settings.drain_timeout_s,
        setup_fnc=JobProcessSetup(settings),
        # Imported once by the forkserver that job processes are forked from, not by each of
        # them as it starts or takes its call: less CPU per call, pages shared.
        preload_modules=[type(entrypoint).__module__, WARMUP_MODULE],
        log_level=settings.logs.level.upper(),
    )
    if capacity is not None:
        capacity.server = server
    server.rtc_session(
        entrypoint,
        agent_name=settings.agent_name,
        on_request=capacity,
        on_session_end=JobSessionEnd(settings) if settings.call_store.enabled else None,
    )
    return server


def create_server(
    settings: AgentSettings, make_factory: FactoryMaker = stack_factory
) -> AgentServer:
    """The worker for `settings`: explicit dispatch only, under `settings.agent_name`."""
    return new_agent_server(settings, JobEntrypoint(settings, make_factory))
