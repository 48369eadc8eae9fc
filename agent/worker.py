"""The livekit-agents worker: registers under `AGENT_NAME` and runs one `PersonaAgent` per job.

Jobs run in child processes: the entrypoint and the process setup are picklable objects holding
the (frozen) settings, so each child gets exactly the worker's settings.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from livekit.agents import AgentServer, JobContext, JobProcess, JobRequest, room_io

from agent.models import StackFactory, new_session, preload_models, stack_factory
from agent.persona import AppliedPersona, resolve_persona, with_call_id
from agent.persona_agent import PersonaAgent
from agent.transcript import TranscriptLog
from config.agent_settings import AgentSettings
from contract.metadata import parse_dispatch_metadata
from telemetry.logs import configure_forwarded_logging, get_logger

log = get_logger(__name__)

FactoryMaker = Callable[[AgentSettings, dict[str, Any]], StackFactory]
WARMUP_MODULE = "agent.warmup"


class RoomCallControl:
    """Ends a call by deleting its room: that disconnects the SIP participant (the caller's line
    hangs up) and every other participant, then ends the job."""

    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx

    async def hang_up(self, reason: str) -> None:
        await self._ctx.delete_room()
        log.info("call.hung_up", reason=reason)
        self._ctx.shutdown(reason=reason)


class JobProcessSetup:
    """Runs once in each job process before it takes a job: logging, then per-process models."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings

    def __call__(self, proc: JobProcess) -> None:
        configure_forwarded_logging(self.settings.logs.level, service="agent")
        proc.userdata["models"] = preload_models(self.settings)


class JobEntrypoint:
    """The `rtc_session` entrypoint: persona first, then the session built for it."""

    def __init__(self, settings: AgentSettings, make_factory: FactoryMaker = stack_factory) -> None:
        self.settings = settings
        self.make_factory = make_factory

    async def __call__(self, ctx: JobContext) -> None:
        factory = self.make_factory(self.settings, ctx.proc.userdata.get("models", {}))
        await run_call(ctx, self.settings, factory)


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
    applied = await resolve_persona(
        job_room_metadata=ctx.job.room.metadata,
        room=ctx.room,
        connect=ctx.connect,
        wait_s=settings.persona_wait_s,
        dispatch=parse_dispatch_metadata(ctx.job.metadata),
    )
    applied = with_call_id(applied, ctx.room.remote_participants.values())
    meta = applied.meta
    structlog.contextvars.bind_contextvars(call_id=meta.call_id)
    log_applied(applied, room=room)

    transcript = TranscriptLog(
        settings.transcript_path,
        room=room,
        call_id=meta.call_id,
        unmasked=settings.logs.unmasked,
    )
    transcript.write(transcript_persona_event(applied), caller=meta.caller, **applied.log_fields())
    session = new_session(factory(meta.persona))
    transcript.attach(session)

    @session.on("close")
    def _on_close(_: object) -> None:
        # The session ends when the caller hangs up; the job (and its process) must end too.
        ctx.shutdown(reason="session closed")

    agent = PersonaAgent(meta.persona, call=RoomCallControl(ctx), transcript=transcript)
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
    server.rtc_session(entrypoint, agent_name=settings.agent_name, on_request=capacity)
    return server


def create_server(
    settings: AgentSettings, make_factory: FactoryMaker = stack_factory
) -> AgentServer:
    """The worker for `settings`: explicit dispatch only, under `settings.agent_name`."""
    return new_agent_server(settings, JobEntrypoint(settings, make_factory))
