"""`persona-dispatch-call`: try a persona for a number without a phone call; or, with
`--refresh NUMBER`, make every replica's next call for that number ask the CRM (after an edit).

It runs the webhook path's own set-up (`SetupGuard` around `CallSetup.run`) for a fresh or given
room, then prints what happened and a join token so that a person can talk to the agent from a web
client. The set-up logs the events the service logs, as JSON lines, to MANUAL_DISPATCH_LOG, where
`persona-logs` reads the call's story beside the dispatcher's and the agent's logs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import orjson
import structlog
from livekit import api

from config.env import read_environment
from config.settings import Settings, SettingsError, load_settings
from contract.errors import PersonaDispatcherError
from dispatcher.call_setup import CallJoin, SetupResult, plan_room_metadata
from dispatcher.caller import (
    ATTR_CALL_ID,
    ATTR_CALLER,
    ATTR_DIALED,
    CallParty,
    detect_numbers,
    normalise_number,
)
from dispatcher.invalidation import invalidate
from dispatcher.livekit_api import (
    LiveKitError,
    LiveKitNotFound,
    LiveKitUnreachable,
    livekit_call,
)
from dispatcher.persona_resolver import Resolution
from dispatcher.service import open_clients, open_resolver, open_store
from dispatcher.shared_persona_store import SharedStoreUnavailable
from telemetry.logs import configure_logging, get_logger
from telemetry.timing import ms_since

log = get_logger(__name__)

TEST_NUMBER = "8655701159"
SERVICE = "manual-dispatch"

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_BAD_NUMBER = 3
EXIT_SETTINGS = 4
EXIT_UNREACHABLE = 5
EXIT_AUTH = 6
EXIT_LIVEKIT = 7


class CommandError(PersonaDispatcherError):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Outcome:
    number: str
    room: str
    resolution: Resolution | None
    result: SetupResult | None
    metadata_bytes: int
    token: str | None
    total_ms: float
    log_path: Path | None = None

    def to_json(self) -> dict[str, Any]:
        r = self.resolution
        meta = self.result.metadata if self.result else None
        persona = meta.persona if meta else (r.persona if r else None)
        return {
            "number": self.number,
            "room": self.room,
            "dry_run": self.result is None,
            "status": meta.status if meta else (r.status if r else None),
            "source": meta.source if meta else (r.source if r else None),
            "persona_id": persona.persona_id if persona else None,
            "name": persona.name if persona else None,
            "welcome": persona.welcome if persona else None,
            "instructions_chars": len(persona.instructions) if persona else 0,
            "metadata_bytes": self.metadata_bytes,
            "dispatch_id": self.result.dispatch_id if self.result else None,
            "dispatched": self.result.dispatched if self.result else False,
            "dispatch_reason": self.result.reason if self.result else None,
            "steps_ms": self.result.steps_ms
            if self.result
            else {"persona": r.duration_ms if r else 0},
            "total_ms": round(self.total_ms, 1),
            "token": self.token,
            "log": str(self.log_path) if self.log_path else None,
        }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="persona-dispatch-call", description=__doc__)
    parser.add_argument(
        "--number",
        help="the caller number whose persona to use (default DEFAULT_CALLER, else 8655701159)",
    )
    parser.add_argument("--room", help="room name (default a fresh call_<number>_<suffix>)")
    parser.add_argument("--agent", help="agent name to dispatch (default AGENT_NAME)")
    parser.add_argument("--dry-run", action="store_true", help="resolve and print; touch nothing")
    parser.add_argument(
        "--refresh",
        metavar="NUMBER",
        help="drop NUMBER's cached persona on every replica (the shared cache, PERSONA_CACHE_URL) "
        "so that its next call asks the CRM; sets nothing up",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--env-file", default=".env", help="settings file read under the environment (.env)"
    )
    return parser.parse_args(argv)


def join_token(settings: Settings, room: str, number: str) -> str:
    return (
        api.AccessToken(settings.livekit.api_key, settings.livekit.api_secret)
        .with_identity(f"tester_{number}")
        .with_name(f"Manual test for {number}")
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .with_ttl(datetime.timedelta(hours=2))
        .to_jwt()
    )


def caller_party(number: str) -> CallParty:
    """The SIP participant livekit-sip would bring in for a call from `number`."""
    return CallParty(
        identity=f"sip_{number}",
        attributes={
            ATTR_CALLER: number,
            ATTR_DIALED: number,
            ATTR_CALL_ID: f"manual_{uuid.uuid4().hex[:12]}",
        },
    )


async def run(settings: Settings, number: str, room: str, dry_run: bool) -> Outcome:
    """Resolve (dry run) or set up the call exactly as the webhook path does."""
    if dry_run:
        return await resolve_only(settings, number, room)
    return await set_up(settings, number, room)


async def resolve_only(settings: Settings, number: str, room: str) -> Outcome:
    """The persona the call would get (as the set-up would write it: the default one when the
    resolved one does not fit the budget) and its metadata's size; LiveKit is never touched (nor
    needs to be configured)."""
    started = time.perf_counter()
    party = caller_party(number)
    async with open_resolver(settings) as resolver:
        numbers = detect_numbers(party, room, "", settings.persona_lookup, settings.numbers.plan)
        resolution = await resolver.resolve(numbers)
        plan = plan_room_metadata(
            "", resolution.metadata(), settings.metadata_budget_bytes, resolver.default
        )
    if plan.too_large is not None:
        log.warning("persona.too_large", size=plan.too_large.size, budget=plan.too_large.budget)
    written = plan.meta
    resolution = replace(
        resolution, persona=written.persona, status=written.status, source=written.source
    )
    size = len(plan.encoded.encode())
    return Outcome(number, room, resolution, None, size, None, ms_since(started))


async def set_up(settings: Settings, number: str, room: str) -> Outcome:
    """The room created if needed, then the webhook path's own set-up for it, logged as the
    service logs a webhook's (bound to the room and call id, so the call's lines join)."""
    started = time.perf_counter()
    party = caller_party(number)
    join = CallJoin(f"manual_{uuid.uuid4().hex}", room, "", party)
    structlog.contextvars.bind_contextvars(event_id=join.event_id, room=room, call_id=join.call_id)
    log.info("manual_dispatch.started", agent_name=settings.agent_name)
    async with open_clients(settings) as clients:
        try:
            await livekit_call(
                "create_room",
                clients.livekit.room.create_room(api.CreateRoomRequest(name=room)),
                settings.livekit.api_timeout_s,
            )
            result = await clients.setup.handle_join(join)
        except LiveKitNotFound:
            log.info("manual_dispatch.room_gone")
            raise CommandError(f"room {room} closed during set-up", EXIT_LIVEKIT) from None
        except LiveKitError as e:
            log.error("call.setup_failed", error=str(e), step=e.step, livekit_status=e.status)
            raise _livekit_error(e, settings.livekit.url) from None
        token = join_token(settings, room, number)
        return Outcome(number, room, None, result, result.metadata_bytes, token, ms_since(started))


def _livekit_error(e: LiveKitError, url: str) -> CommandError:
    if isinstance(e, LiveKitUnreachable):
        return CommandError(f"LiveKit server at {url} is unreachable ({e})", EXIT_UNREACHABLE)
    if e.status in (401, 403):
        return CommandError(
            "LiveKit refused the API key/secret (LIVEKIT_API_KEY / LIVEKIT_API_SECRET)", EXIT_AUTH
        )
    return CommandError(f"LiveKit API error: {e}", EXIT_LIVEKIT)


def render(o: Outcome, settings: Settings) -> str:
    d = o.to_json()
    lines = [
        f"number        {d['number']}",
        f"persona       {d['status']} from {d['source']}",
        f"name          {d['name'] or '-'}  (id {d['persona_id'] or '-'})",
        f"welcome       {d['welcome'] or '-'}",
        f"instructions  {d['instructions_chars']} chars",
        f"metadata      {d['metadata_bytes']} bytes (budget {settings.metadata_budget_bytes})",
    ]
    if o.result is None:
        lines.append("dry run       LiveKit not touched")
    else:
        lines += [
            f"room          {d['room']}",
            f"dispatch      {d['dispatch_id']} ({d['dispatch_reason']}, "
            f"agent {settings.agent_name})",
        ]
    steps = "  ".join(f"{k} {v:.1f} ms" for k, v in d["steps_ms"].items())
    lines.append(f"timings       {steps}  total {d['total_ms']:.1f} ms")
    if o.token:
        lines += [
            f"join          {settings.livekit.url}  room {o.room}",
            f"token         {o.token}",
        ]
    if o.log_path:
        lines.append(f"log           {o.log_path}")
    return "\n".join(lines)


def open_set_up_log(path: Path) -> TextIO | None:
    """The set-up log opened for appending, or None (said on stderr) when it cannot be: the
    command's own log is never a reason for the command to fail."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("a", encoding="utf-8", buffering=1)
    except OSError as e:
        print(
            f"warning: cannot write {path} ({e.strerror or e}); logging to stderr", file=sys.stderr
        )
        return None


async def refresh(settings: Settings, number: str) -> None:
    """Drop `number` from the shared persona cache and tell every replica, as
    `POST /personas/invalidate` does."""
    if not settings.persona_cache_url:
        raise CommandError(
            "--refresh needs the replicas' shared cache (PERSONA_CACHE_URL); without it each "
            "replica keeps its own: POST /personas/invalidate to each",
            EXIT_SETTINGS,
        )
    async with open_store(settings) as (store, metrics):
        try:
            await invalidate(store, metrics, [number], "cli")
        except SharedStoreUnavailable as e:
            raise CommandError(f"the shared cache did not answer: {e}", EXIT_UNREACHABLE) from None


def log_warnings_to_stderr(settings: Settings) -> None:
    """Warnings only, on stderr (stdout is for the summary), numbers masked by the plan."""
    configure_logging(
        "warning",
        settings.logs.format,
        service=SERVICE,
        stream=sys.stderr,
        unmasked=settings.logs.unmasked,
        phone_region=settings.numbers.region,
    )


def refresh_main(args: argparse.Namespace) -> int:
    """`--refresh NUMBER`: touches no LiveKit, logs as a dry run does (warnings, on stderr)."""
    try:
        settings = load_settings(read_environment(args.env_file), livekit=False)
    except SettingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_SETTINGS
    number = normalise_number(args.refresh, settings.numbers.plan)
    if number is None:
        print(f"error: {args.refresh!r} is not a phone number", file=sys.stderr)
        return EXIT_BAD_NUMBER
    log_warnings_to_stderr(settings)
    try:
        asyncio.run(refresh(settings, number))
    except CommandError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    if args.json:
        print(orjson.dumps({"refreshed": number}).decode())
    else:
        print(f"refreshed     {number}: its next call on any replica asks the CRM")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.refresh is not None:
        return refresh_main(args)
    try:
        # A dry run touches nothing of LiveKit: right after a clone it needs no settings at all.
        settings = load_settings(read_environment(args.env_file), livekit=not args.dry_run)
    except SettingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_SETTINGS
    args.number = args.number or settings.default_caller or TEST_NUMBER
    number = normalise_number(args.number, settings.numbers.plan)
    if number is None:
        print(f"error: {args.number!r} is not a phone number", file=sys.stderr)
        return EXIT_BAD_NUMBER
    if args.agent:
        settings = replace(settings, agent_name=args.agent)
    room = args.room or f"call_{number}_{uuid.uuid4().hex[:6]}"
    # stdout is for the summary. A set-up's story goes to its log as JSON lines (what
    # persona-logs reads); a dry run, or a log that cannot be opened, warns on stderr instead.
    log_file = None if args.dry_run else open_set_up_log(settings.manual_dispatch_log)
    if log_file is not None:
        configure_logging(
            settings.logs.level,
            "json",
            service=SERVICE,
            stream=log_file,
            unmasked=settings.logs.unmasked,
            phone_region=settings.numbers.region,
        )
    else:
        log_warnings_to_stderr(settings)
    try:
        outcome = asyncio.run(run(settings, number, room, args.dry_run))
    except CommandError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except SettingsError as e:  # DEFAULT_PERSONA_FILE holds no persona
        print(f"error: {e}", file=sys.stderr)
        return EXIT_SETTINGS
    finally:
        if log_file is not None:
            log_file.close()
    if log_file is not None:
        outcome = replace(outcome, log_path=settings.manual_dispatch_log)
    if args.json:
        print(orjson.dumps(outcome.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(outcome, settings))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
