"""`persona-logs`: the log inspector's command line (calls, show, stats) and its text rendering;
`stored` reads a call back from the agent's database instead (operator_tools/call_documents.py).

Exit status: 0 done, 1 an input cannot be read or `show` found no call, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import Any, NoReturn, Protocol, TextIO

import orjson

from config.agent_settings import load_call_store_settings
from config.env import SettingsError
from config.settings import load_number_settings
from operator_tools.call_documents import CallDocumentsError, call_json, find_calls, render_call
from operator_tools.log_inspector import (
    PERSONA_STATUSES,
    Call,
    CallFilter,
    Inspector,
    iso,
    parse_since,
    stats,
    timeline,
)
from operator_tools.log_sources import LogSourceError, expand, follow_lines, read_lines

PROG = "persona-logs"
STATS_REFRESH_S = 5.0

CALL_COLUMNS = (
    "START",
    "CALLER",
    "ROOM",
    "CALL_ID",
    "PERSONA",
    "SETUP_MS",
    "DISPATCHED",
    "AGENT",
    "ERRORS",
)
# Widths used when rows are printed as they come (`--follow`) and cannot be measured first.
FOLLOW_WIDTHS = (24, 12, 28, 14, 16, 8, 10, 5, 6)
FOLLOW_SHOW_WIDTHS = (9, 15, 7, 22, 0)
NUMERIC = frozenset({"SETUP_MS", "ERRORS", "OFFSET_MS", "CALLS", "COUNT"})


# --- rendering (pure) --------------------------------------------------------------------------


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], widths: Sequence[int] | None = None
) -> list[str]:
    """Aligned text rows under a header; numeric columns right-aligned."""
    rows = [list(r) for r in rows]
    if widths is None:
        widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    right = [h in NUMERIC for h in headers]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def call_cells(call: Call) -> list[str]:
    """One `calls` row as text cells, in CALL_COLUMNS order."""
    persona = "-"
    if call.persona_status:
        persona = f"{call.persona_status}/{call.persona_source or '?'}"
    return [
        iso(call.first_t),
        call.caller or "-",
        call.room or "-",
        call.call_id or "-",
        persona,
        _ms(call.setup_ms),
        _yes(call.dispatched),
        _yes(call.agent_joined),
        str(len(call.errors)),
    ]


def render_calls(calls: list[Call]) -> str:
    """The `calls` table."""
    if not calls:
        return "no calls\n"
    return "\n".join(table(CALL_COLUMNS, map(call_cells, calls))) + "\n"


def _value(v: Any) -> str:
    if type(v) is str and v and " " not in v and "=" not in v:
        return v
    return orjson.dumps(v).decode()


def details(fields: dict[str, Any]) -> str:
    """An event's own fields as `key=value` pairs."""
    return " ".join(f"{k}={_value(v)}" for k, v in fields.items())


def call_header(call: Call) -> str:
    return (
        f"call {call.call_id or '-'}  room {call.room or '-'}  caller {call.caller or '-'}"
        f"  started {iso(call.first_t)}  ({call.events} events, {len(call.errors)} errors)"
    )


TIMELINE_COLUMNS = ("OFFSET_MS", "SERVICE", "LEVEL", "EVENT", "DETAILS")


def timeline_cells(event: dict[str, Any]) -> list[str]:
    return [
        f"{event['offset_ms']:.1f}",
        event["service"],
        event["level"],
        event["event"],
        details(event["fields"]),
    ]


def render_timeline(call: Call, events: list[dict[str, Any]]) -> str:
    """A call's header and its events, one per line."""
    rows = table(TIMELINE_COLUMNS, map(timeline_cells, events))
    return "\n".join([call_header(call), *("  " + r for r in rows)]) + "\n"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def render_stats(s: dict[str, Any]) -> str:
    """The `stats` report."""
    setup = s["setup_ms"]
    cache = s["cache"]
    errors = s["errors"]
    out = [
        f"calls           {s['calls']}",
        f"dispatched      {s['dispatched']}",
        f"agent joined    {s['agent_joined']}",
        f"setup ms        p50 {_ms(setup['p50'])}  p95 {_ms(setup['p95'])}"
        f"  p99 {_ms(setup['p99'])}  max {_ms(setup['max'])}  (n={setup['count']})",
        f"cache hit rate  {_pct(cache['hit_rate'])}"
        f"  ({cache['cached']} of {cache['resolutions']} persona resolutions served from cache;"
        f" events: {cache['cache_hit_events']} cache_hit, {cache['fetched_events']} fetched,"
        f" {cache['fallback_events']} fallback)",
        "persona by status/source",
    ]
    persona_rows = [
        [status, source, str(n)]
        for status, sources in s["persona"].items()
        for source, n in sources.items()
    ]
    out += ["  " + r for r in table(("STATUS", "SOURCE", "CALLS"), persona_rows)]
    out.append(f"errors          {errors['total']}")
    if errors["by_kind"]:
        kinds = [[k, str(n)] for k, n in errors["by_kind"].items()]
        out += ["  " + r for r in table(("KIND", "COUNT"), kinds)]
    return "\n".join(out) + "\n"


def _json(obj: Any) -> str:
    return orjson.dumps(obj).decode() + "\n"


# --- arguments ---------------------------------------------------------------------------------


def _suffix(value: str) -> str:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not the digits of a number")
    return value


def _add_common(parser: argparse.ArgumentParser, now: datetime) -> None:
    def since(value: str) -> float:
        try:
            return parse_since(value, now)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("--since ")) from None

    parser.add_argument(
        "inputs", nargs="+", metavar="LOG", help="log files, globs (quoted), .gz, or - for stdin"
    )
    parser.add_argument(
        "--since", type=since, help="only lines from this ISO time, or this age: 10m, 2h, 1d"
    )
    parser.add_argument("--caller", type=_suffix, help="only calls from a number ending so")
    parser.add_argument("--status", choices=PERSONA_STATUSES, help="only calls with this persona")
    parser.add_argument("--errors", action="store_true", help="only calls that logged errors")
    parser.add_argument("--json", action="store_true", help="JSON output")
    parser.add_argument("--follow", "-f", action="store_true", help="keep reading, like tail -f")


def build_parser(now: datetime | None = None) -> argparse.ArgumentParser:
    """The `persona-logs` argument parser; relative `--since` ages count back from `now`."""
    now = now or datetime.now(UTC)
    parser = argparse.ArgumentParser(
        prog=PROG, description="Read calls back from the dispatcher's and agent's JSON-line logs."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_common(sub.add_parser("calls", help="one row per call"), now)
    show = sub.add_parser("show", help="one call's timeline across both services")
    show.add_argument("selector", help="a call_id, a room name, or a number suffix")
    _add_common(show, now)
    stored = sub.add_parser(
        "stored", help="one call's transcript and persona as the agent stored them (MONGO_URI)"
    )
    stored.add_argument("selector", help="a call_id, a room name, a job id, or a number suffix")
    stored.add_argument("--json", action="store_true", help="the stored document as JSON")
    _add_common(sub.add_parser("stats", help="set-up times, persona sources, errors"), now)
    return parser


# --- running -----------------------------------------------------------------------------------


class Run:
    """One invocation: the inspector, the filter and where output goes."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self.keep = CallFilter(caller=args.caller, status=args.status, errors_only=args.errors)
        self.inspector = Inspector(
            since=args.since,
            keep_lines=args.command == "show",
            phone_region=load_number_settings().region,
        )

    def report(self) -> int:
        """Print the whole result for what has been read; the exit status."""
        cmd = self.args.command
        if cmd == "calls":
            calls = self.inspector.select(self.keep)
            if self.args.json:
                self.out.write("".join(_json(c.row()) for c in calls))
            else:
                self.out.write(render_calls(calls))
        elif cmd == "stats":
            self.out.write(self.stats_text())
        else:
            calls = [c for c in self.inspector.find(self.args.selector) if self.keep(c)]
            if not calls:
                print(f"{PROG}: no call matches {self.args.selector!r}", file=sys.stderr)
                return 1
            for i, call in enumerate(calls):
                events = timeline(call.lines or [])
                if self.args.json:
                    self.out.write(_json({"call": call.row(), "events": events}))
                else:
                    self.out.write(("\n" if i else "") + render_timeline(call, events))
        return 0

    def stats_text(self) -> str:
        """The `stats` output for the calls read so far."""
        calls = self.inspector.select(self.keep)
        unscoped = None if self.keep.active else self.inspector.unscoped_errors
        s = stats(calls, unscoped)
        return _json(s) if self.args.json else render_stats(s)

    def follow(self, lines: Iterator[bytes | None]) -> None:
        """Read until interrupted, printing what is new each time the input caught up."""
        followers: dict[str, Callable[[Run], _Follower]] = {
            "calls": _FollowCalls,
            "show": _FollowShow,
            "stats": _FollowStats,
        }
        follower = followers[self.args.command](self)
        feed = self.inspector.feed
        # `kill`, `timeout` and service managers stop with SIGTERM: finish as on Ctrl-C.
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            for raw in lines:
                if raw is None:
                    follower.caught_up()
                    self.out.flush()
                    continue
                if feed(raw) is not None:
                    follower.fed()
        except KeyboardInterrupt:
            follower.interrupted()
        finally:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


class _Follower(Protocol):
    def fed(self) -> None: ...
    def caught_up(self) -> None: ...
    def interrupted(self) -> None: ...


class _FollowCalls:
    """Prints each call once, with its final state: when it ends, or on Ctrl-C."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.printed: set[int] = set()
        self.header = False

    def fed(self) -> None:
        pass

    def _print(self, calls: list[Call]) -> None:
        run = self.run
        for call in calls:
            self.printed.add(id(call))
            if run.args.json:
                run.out.write(_json(call.row()))
                continue
            if not self.header:
                run.out.write(table(CALL_COLUMNS, [], FOLLOW_WIDTHS)[0] + "\n")
                self.header = True
            run.out.write(table(CALL_COLUMNS, [call_cells(call)], FOLLOW_WIDTHS)[1] + "\n")

    def caught_up(self) -> None:
        calls = self.run.inspector.select(self.run.keep)
        self._print([c for c in calls if c.ended and id(c) not in self.printed])

    def interrupted(self) -> None:
        calls = self.run.inspector.select(self.run.keep)
        self._print([c for c in calls if id(c) not in self.printed])


class _FollowShow:
    """Prints the timeline so far, then each new event of the call as it arrives."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.started = False
        self.shown: dict[int, tuple[float, int]] = {}  # id(call) -> (first t, lines printed)

    def fed(self) -> None:
        pass

    def caught_up(self) -> None:
        run = self.run
        calls = [c for c in run.inspector.find(run.args.selector) if run.keep(c)]
        for call in calls:
            lines = call.lines or []
            if id(call) not in self.shown:
                self.shown[id(call)] = (call.first_t, 0)
                if not run.args.json:
                    run.out.write(call_header(call) + "\n")
                    run.out.write("  " + table(TIMELINE_COLUMNS, [], FOLLOW_SHOW_WIDTHS)[0] + "\n")
            t0, done = self.shown[id(call)]
            for event in timeline(lines[done:], t0):
                if run.args.json:
                    run.out.write(_json({"call": call.key, **event}))
                else:
                    row = table(TIMELINE_COLUMNS, [timeline_cells(event)], FOLLOW_SHOW_WIDTHS)[1]
                    run.out.write("  " + row + "\n")
            self.shown[id(call)] = (t0, len(lines))
        if not calls and not self.started:
            print(f"{PROG}: waiting for a call matching {run.args.selector!r}", file=sys.stderr)
        self.started = True

    def interrupted(self) -> None:
        pass


class _FollowStats:
    """Reprints the stats at most every few seconds while lines arrive, and on Ctrl-C."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.last = 0.0
        self.dirty = True

    def fed(self) -> None:
        self.dirty = True

    def caught_up(self) -> None:
        now = time.monotonic()
        if self.dirty and now - self.last >= STATS_REFRESH_S:
            self.run.out.write(self.run.stats_text() + ("" if self.run.args.json else "\n"))
            self.last = now
            self.dirty = False

    def interrupted(self) -> None:
        if self.dirty:
            self.run.out.write(self.run.stats_text())


def main(argv: list[str] | None = None, *, now: datetime | None = None) -> int:
    """Entry point of `persona-logs` and scripts/inspect_logs.py; `now` anchors relative --since."""
    parser = build_parser(now)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its message; keep main() returning
        return exc.code if isinstance(exc.code, int) else 2
    if args.command == "stored":
        return show_stored(args.selector, as_json=args.json, out=sys.stdout)
    run = Run(args, sys.stdout)
    try:
        status = _run(run)
    except LogSourceError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader (`| head`) went away; point stdout at devnull so exit does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    print(f"skipped {run.inspector.skipped} malformed/foreign lines", file=sys.stderr)
    return status


def show_stored(selector: str, *, as_json: bool, out: TextIO) -> int:
    """`stored`: the calls `selector` names as the agent stored them; the exit status."""
    try:
        calls = find_calls(load_call_store_settings(), selector)
    except (SettingsError, CallDocumentsError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    if not calls:
        print(f"{PROG}: no stored call matches {selector!r}", file=sys.stderr)
        return 1
    for i, doc in enumerate(calls):
        out.write(call_json(doc) if as_json else ("\n" if i else "") + render_call(doc))
    return 0


def _run(run: Run) -> int:
    paths = expand(run.args.inputs)
    if run.args.follow:
        run.follow(follow_lines(paths))
        status = 0
    else:
        try:
            run.inspector.feed_all(read_lines(paths))
        except KeyboardInterrupt:
            return 130
        status = run.report()
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
