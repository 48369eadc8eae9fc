"""The log inspector over a hand-made fixture: three calls across both services, plus noise."""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import signal
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from operator_tools.log_inspector import (
    Inspector,
    caller_matches,
    parse_line,
    parse_since,
    percentile,
    stats,
    timeline,
)
from operator_tools.log_inspector_cli import Run, build_parser, main, render_calls
from operator_tools.log_sources import follow_lines

pytestmark = pytest.mark.unit

LOGS = Path(__file__).parent / "fixtures" / "logs"
DISPATCHER = str(LOGS / "dispatcher.log")
AGENT = str(LOGS / "agent.log")
ROOM_A = "call_8655701159_a1b2"
ROOM_B = "call_4155550123_c3d4"
ROOM_C = "call_2125550199_e5f6"
# Foreign or malformed lines in the fixture: plain text, a free-text stdlib record and a cut line
# in dispatcher.log; livekit's own JSON, a free-text stdlib record and a JSON array in agent.log.
SKIPPED = 6
NOW = datetime(2026, 11, 25, 19, 45, tzinfo=UTC)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv, now=NOW)
    out, err = capsys.readouterr()
    return status, out, err


def json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def fixture_inspector(*, keep_lines: bool = False, files: tuple[str, ...] = ()) -> Inspector:
    inspector = Inspector(keep_lines=keep_lines)
    for path in files or (DISPATCHER, AGENT):
        inspector.feed_all(Path(path).read_bytes().splitlines(keepends=True))
    return inspector


# --- lines ---------------------------------------------------------------------------------------


def test_parse_line_reads_our_records_and_parses_their_time() -> None:
    rec = parse_line(
        b'{"event":"persona.resolved","level":"info","ts":"2026-11-25T19:40:02Z",'
        b'"service":"dispatcher","status":"cached"}\n'
    )
    assert rec is not None
    assert (rec.service, rec.level, rec.event) == ("dispatcher", "info", "persona.resolved")
    assert rec.t == datetime(2026, 11, 25, 19, 40, 2, tzinfo=UTC).timestamp()
    assert rec.fields["status"] == "cached"


@pytest.mark.parametrize(
    "line",
    [
        b"persona-dispatcher listening on 0.0.0.0:8080\n",
        b'{"level":"info","ts":1795635600.25,"logger":"livekit","msg":"registered worker"}\n',
        b'{"event":"registered worker","ts":"2026-11-25T19:40:00Z","service":"agent"}',
        b'{"event":"room.released","level":"info","ts":"2026-11-25T19:40:',
        b"[1, 2]\n",
        b'{"event":"call.ended","ts":"2026-11-25T19:40:00Z","service":"sip"}\n',
        b'{"event":"call.ended","ts":"yesterday","service":"agent"}\n',
    ],
    ids=["text", "livekit-server", "free-text", "cut", "array", "other-service", "bad-ts"],
)
def test_parse_line_rejects_foreign_and_malformed_lines(line: bytes) -> None:
    assert parse_line(line) is None


def test_malformed_and_foreign_lines_are_counted_but_blank_lines_are_not() -> None:
    inspector = fixture_inspector()
    assert inspector.skipped == SKIPPED
    # 47 lines, one of them blank.
    assert inspector.records == 47 - 1 - SKIPPED


# --- calls ---------------------------------------------------------------------------------------


def test_calls_lists_each_call_once_joined_across_services() -> None:
    rows = [c.row() for c in fixture_inspector().select()]
    assert [
        (r["start"], r["caller"], r["room"], r["call_id"], r["persona_status"], r["persona_source"])
        for r in rows
    ] == [
        ("2026-11-25T19:40:01.000Z", "******1159", ROOM_A, "SCL_a1", "loaded", "api"),
        ("2026-11-25T19:40:02.000Z", "******0123", ROOM_B, "SCL_b1", "cached", "cache"),
        ("2026-11-25T19:40:05.000Z", "******0199", ROOM_C, None, "default", "default"),
    ]
    assert [(r["setup_ms"], r["dispatched"], r["agent_joined"], r["errors"]) for r in rows] == [
        (412.5, True, True, 0),
        (35.0, True, True, 0),
        (None, False, False, 2),
    ]
    assert [r["events"] for r in rows] == [20, 12, 6]
    assert [r["ended"] for r in rows] == ["caller_hangup", "caller_hangup", None]


def test_a_room_with_only_ignored_webhooks_is_not_a_call() -> None:
    inspector = fixture_inspector()
    assert "lobby" not in {c.room for c in inspector.select()}
    assert [c.room for c in inspector.find("lobby")] == ["lobby"]


def test_calls_do_not_depend_on_which_service_log_is_read_first() -> None:
    forward = [c.row() for c in fixture_inspector().select()]
    backward = [c.row() for c in fixture_inspector(files=(AGENT, DISPATCHER)).select()]
    assert backward == forward


def test_lines_before_the_call_id_is_known_join_the_call_by_room() -> None:
    call = fixture_inspector().find("SCL_a1")[0]
    assert call.room == ROOM_A
    assert call.first_t == datetime(2026, 11, 25, 19, 40, 1, tzinfo=UTC).timestamp()


def test_a_room_reused_by_two_calls_gives_two_calls_and_room_only_lines_join_by_time() -> None:
    def line(ts: str, event: str, cid: str | None) -> bytes:
        fields = {"event": event, "ts": ts, "service": "agent", "room": "r1", "call_id": cid}
        return json.dumps(fields).encode()

    inspector = Inspector().feed_all(
        [
            line("2026-11-25T10:00:00Z", "persona.applied", "X"),
            line("2026-11-25T11:00:00Z", "persona.applied", "Y"),
            line("2026-11-25T10:00:05Z", "agent.turn", None),
            line("2026-11-25T11:00:05Z", "agent.turn", None),
            line("2026-11-25T11:00:06Z", "agent.turn", None),
        ]
    )
    assert [(c.call_id, c.events) for c in inspector.select()] == [("X", 2), ("Y", 3)]


def test_calls_json_prints_one_object_per_call(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["calls", "--json", DISPATCHER, AGENT], capsys)
    assert status == 0
    rows = json_lines(out)
    assert [r["room"] for r in rows] == [ROOM_A, ROOM_B, ROOM_C]
    assert rows[2]["call_id"] is None
    assert err.splitlines()[-1] == f"skipped {SKIPPED} malformed/foreign lines"


def test_calls_table_is_aligned_under_its_header(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["calls", str(LOGS / "*.log")], capsys)
    assert status == 0
    header, *rows = out.splitlines()
    assert header.split() == [
        "START",
        "CALLER",
        "ROOM",
        "CALL_ID",
        "PERSONA",
        "SETUP_MS",
        "DISPATCHED",
        "AGENT",
        "ERRORS",
    ]
    assert rows[0].split() == [
        "2026-11-25T19:40:01.000Z",
        "******1159",
        ROOM_A,
        "SCL_a1",
        "loaded/api",
        "412.5",
        "yes",
        "yes",
        "0",
    ]
    assert rows[2].split()[3:] == ["-", "default/default", "-", "no", "no", "2"]
    # Left-aligned text starts under its header; right-aligned numbers end under theirs.
    assert rows[1].index(ROOM_B) == header.index("ROOM")
    assert rows[1].index("35.0") + len("35.0") == header.index("SETUP_MS") + len("SETUP_MS")


def test_calls_table_says_so_when_there_is_no_call() -> None:
    assert render_calls([]) == "no calls\n"


# --- show ----------------------------------------------------------------------------------------


def test_show_orders_events_of_both_services_by_time_with_offsets() -> None:
    call = fixture_inspector(keep_lines=True).find("SCL_a1")[0]
    events = timeline(call.lines or [])
    assert [(e["service"], e["event"]) for e in events[5:11]] == [
        ("dispatcher", "agent.dispatched"),
        ("dispatcher", "call.setup_done"),
        ("agent", "job.received"),
        ("agent", "persona.applied"),
        ("agent", "agent.greeted"),
        ("dispatcher", "webhook.received"),
    ]
    assert [e["offset_ms"] for e in events[:3]] == [0.0, 2.0, 310.0]
    assert [(e["event"], e["offset_ms"]) for e in events[-2:]] == [
        ("call.ended", 88000.0),
        ("room.released", 89000.0),
    ]
    assert events[1]["fields"] == {"lookup": "caller", "origin": "attribute"}


def test_show_sorts_a_timestamp_without_microseconds_by_its_time() -> None:
    call = fixture_inspector(keep_lines=True).find("SCL_b1")[0]
    events = timeline(call.lines or [])
    # "19:40:02Z" sorts after "19:40:02.001000Z" as text, but comes first in time.
    assert [e["event"] for e in events[:2]] == ["webhook.received", "call.caller_detected"]


@pytest.mark.parametrize(
    ("selector", "room"),
    [("SCL_b1", ROOM_B), (ROOM_C, ROOM_C), ("0199", ROOM_C), ("8655701159", ROOM_A)],
    ids=["call_id", "room", "suffix", "full-number"],
)
def test_show_finds_a_call_by_call_id_room_or_number(
    selector: str, room: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(["show", selector, DISPATCHER, AGENT, "--json"], capsys)
    assert status == 0
    (shown,) = json_lines(out)
    assert shown["call"]["room"] == room
    times = [datetime.fromisoformat(e["ts"]) for e in shown["events"]]
    assert times == sorted(times)


def test_show_prints_a_header_and_one_line_per_event(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["show", "SCL_b1", DISPATCHER, AGENT], capsys)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"call SCL_b1  room {ROOM_B}  caller ******0123")
    assert lines[1].split() == ["OFFSET_MS", "SERVICE", "LEVEL", "EVENT", "DETAILS"]
    assert len(lines) == 2 + 12
    last = ["38000.0", "dispatcher", "info", "room.released", "reason=room_finished"]
    assert lines[-1].split() == last


def test_show_of_an_unknown_call_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["show", "SCL_nope", DISPATCHER], capsys)
    assert (status, out) == (1, "")
    assert "no call matches 'SCL_nope'" in err


# --- stats ---------------------------------------------------------------------------------------


def test_stats_match_a_hand_count_of_the_fixture(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["stats", "--json", DISPATCHER, AGENT], capsys)
    assert status == 0
    assert json.loads(out) == {
        "calls": 3,
        "dispatched": 2,
        "agent_joined": 2,
        # Set-up of a call is its first call.setup_done: A 412.5 (not its 20.0 re-run), B 35.0.
        "setup_ms": {"count": 2, "p50": 35.0, "p95": 412.5, "p99": 412.5, "max": 412.5},
        "persona": {"loaded": {"api": 1}, "cached": {"cache": 1}, "default": {"default": 1}},
        # Resolutions: A loaded + A cached, B cached, C default -> 2 of 4 from the cache.
        "cache": {
            "hit_rate": 0.5,
            "resolutions": 4,
            "cached": 2,
            "cache_hit_events": 2,
            "fetched_events": 1,
            "fallback_events": 1,
        },
        "errors": {
            "total": 3,
            "by_kind": {
                "persona.fallback:upstream_timeout": 1,
                "call.setup_failed": 1,
                "webhook.rejected:bad_signature": 1,
            },
        },
    }


def test_stats_table_shows_percentiles_rate_and_error_kinds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run(["stats", DISPATCHER, AGENT], capsys)
    assert status == 0
    assert "setup ms        p50 35.0  p95 412.5  p99 412.5  max 412.5  (n=2)" in out
    assert "cache hit rate  50.0%" in out
    assert "webhook.rejected:bad_signature" in out


def test_stats_of_filtered_calls_leave_out_errors_of_no_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out, _ = run(["stats", "--json", "--errors", DISPATCHER, AGENT], capsys)
    s = json.loads(out)
    assert s["calls"] == 1
    assert s["errors"]["by_kind"] == {
        "persona.fallback:upstream_timeout": 1,
        "call.setup_failed": 1,
    }


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, p) for p in (50, 95, 99, 100)] == [50.0, 95.0, 99.0, 100.0]
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_stats_of_no_calls_has_no_rate_and_no_percentiles() -> None:
    s = stats([])
    assert s["cache"]["hit_rate"] is None
    assert s["setup_ms"]["p50"] is None


# --- filters -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "rooms"),
    [
        (["--caller", "0123"], [ROOM_B]),
        (["--caller", "8655701159"], [ROOM_A]),
        (["--caller", "5550123"], [ROOM_B]),
        (["--caller", "9999"], []),
        (["--status", "cached"], [ROOM_B]),
        (["--status", "default"], [ROOM_C]),
        (["--errors"], [ROOM_C]),
        (["--status", "default", "--errors", "--caller", "0199"], [ROOM_C]),
        # Calls come in the order of their first line kept: C 19:40:05, A 19:40:06, B 19:40:39.
        (["--since", "2026-11-25T19:40:04.5Z"], [ROOM_C, ROOM_A, ROOM_B]),
        (["--since", "2026-11-25T19:40:45Z"], [ROOM_A]),
        (["--since", "5m"], [ROOM_A, ROOM_B, ROOM_C]),
        (["--since", "4m"], [ROOM_A]),
    ],
)
def test_filters_select_calls(
    args: list[str], rooms: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(["calls", "--json", DISPATCHER, AGENT, *args], capsys)
    assert status == 0
    assert [r["room"] for r in json_lines(out)] == rooms


def test_since_drops_earlier_lines_from_each_call(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(
        ["calls", "--json", "--since", "2026-11-25T19:40:04.5Z", DISPATCHER, AGENT], capsys
    )
    c, a, b = json_lines(out)
    assert a["start"] == "2026-11-25T19:40:06.000Z"
    assert (b["persona_status"], b["ended"]) == (None, "caller_hangup")
    assert c["persona_status"] == "default"


def test_parse_since_reads_iso_and_relative_times() -> None:
    assert parse_since("10m", NOW) == NOW.timestamp() - 600
    assert parse_since("2h", NOW) == NOW.timestamp() - 7200
    assert parse_since("2026-11-25T19:00:00", NOW) == NOW.timestamp() - 2700
    with pytest.raises(ValueError, match="10m, 2h"):
        parse_since("ten minutes", NOW)


def test_caller_matches_a_masked_number_by_its_visible_digits() -> None:
    assert caller_matches("******1159", "59")
    assert caller_matches("******1159", "8655701159")
    assert not caller_matches("******1159", "1158")
    assert not caller_matches("******1159", "123458655701159")
    assert caller_matches("******1159", "918655701159")  # typed with its country code
    assert not caller_matches(None, "1159")


def test_a_foreign_caller_is_found_by_the_number_as_typed() -> None:
    """A foreign caller is logged masked in E.164 (`+******4567`); typed with its `+`, spaces
    or as a URI, the number finds the call."""
    line = (
        '{"event":"call.caller_detected","level":"info","ts":"2026-11-25T19:40:02Z",'
        '"service":"dispatcher","room":"call_+******4567_x1","call_id":"SCL_sg1",'
        '"caller":"+******4567"}\n'
    )
    inspector = Inspector().feed_all([line.encode()])
    for typed in ("+65 9123 4567", "tel:+65-9123-4567", "6591234567", "4567"):
        assert [c.call_id for c in inspector.find(typed)] == ["SCL_sg1"], typed
    assert inspector.find("+65 9123 4568") == []


# --- inputs and exit codes -----------------------------------------------------------------------


def test_reads_stdin_and_gzip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gz = tmp_path / "agent.log.gz"
    gz.write_bytes(gzip.compress(Path(AGENT).read_bytes()))
    stdin = io.TextIOWrapper(io.BytesIO(Path(DISPATCHER).read_bytes()))
    monkeypatch.setattr(sys, "stdin", stdin)
    status, out, err = run(["calls", "--json", "-", str(gz)], capsys)
    assert status == 0
    assert [r["agent_joined"] for r in json_lines(out)] == [True, True, False]
    assert err.endswith(f"skipped {SKIPPED} malformed/foreign lines\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["calls", "missing.log"], "missing.log: no such file"),
        (["calls", "nowhere/*.log"], "no file matches nowhere/*.log"),
        (["calls", str(LOGS)], "is not a file"),
    ],
    ids=["missing", "glob", "directory"],
)
def test_unreadable_inputs_exit_1_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(argv, capsys)
    assert (status, out) == (1, "")
    assert message in err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["calls"], "the following arguments are required: LOG"),
        (["calls", DISPATCHER, "--since", "yesterday"], "argument --since: 'yesterday'"),
        (["calls", DISPATCHER, "--caller", "+1-865"], "not the digits of a number"),
        (["calls", DISPATCHER, "--status", "fresh"], "invalid choice: 'fresh'"),
        (["tail", DISPATCHER], "invalid choice: 'tail'"),
        ([], "required: COMMAND"),
    ],
    ids=["no-input", "since", "caller", "status", "command", "nothing"],
)
def test_bad_arguments_exit_2_with_usage(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(argv, capsys)
    assert (status, out) == (2, "")
    assert message in err
    assert "usage:" in err


# --- follow --------------------------------------------------------------------------------------


def test_follow_lines_yields_appended_lines_and_waits_for_a_line_to_be_complete(
    tmp_path: Path,
) -> None:
    log = tmp_path / "agent.log"
    log.write_bytes(b"one\ntwo\n")
    lines = follow_lines([str(log)], poll_s=0)
    assert [next(lines), next(lines), next(lines)] == [b"one\n", b"two\n", None]
    with log.open("ab") as f:
        f.write(b"thr")
        f.flush()
        assert next(lines) is None
        f.write(b"ee\n")
    assert [next(lines), next(lines)] == [b"three\n", None]
    log.write_bytes(b"new\n")
    assert next(lines) is None  # notices the truncation on this poll, rereads on the next
    assert next(lines) == b"new\n"
    lines.close()


def test_follow_calls_prints_each_call_once_when_it_ends_and_the_rest_on_ctrl_c(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = main_args(["calls", "--json", "--follow", DISPATCHER])
    out = io.StringIO()
    run_ = Run(args, out)

    def lines() -> Iterator[bytes | None]:
        yield from Path(DISPATCHER).read_bytes().splitlines(keepends=True)
        yield None
        yield from Path(AGENT).read_bytes().splitlines(keepends=True)
        yield None
        raise KeyboardInterrupt

    run_.follow(lines())
    rows = json_lines(out.getvalue())
    # A and B were released in dispatcher.log; C never ended, so it comes on Ctrl-C.
    assert [(r["room"], r["agent_joined"]) for r in rows] == [
        (ROOM_A, False),
        (ROOM_B, False),
        (ROOM_C, False),
    ]


def main_args(argv: list[str]) -> argparse.Namespace:
    return build_parser(NOW).parse_args(argv)


def test_follow_finishes_on_sigterm_as_on_ctrl_c() -> None:
    args = main_args(["calls", "--json", "--follow", DISPATCHER])
    out = io.StringIO()

    def lines() -> Iterator[bytes | None]:
        yield from Path(DISPATCHER).read_bytes().splitlines(keepends=True)
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):  # the handler raises at the next bytecode; never reaches the end
            yield None
        raise AssertionError("SIGTERM did not stop --follow")

    Run(args, out).follow(lines())
    assert [r["room"] for r in json_lines(out.getvalue())] == [ROOM_A, ROOM_B, ROOM_C]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_follow_show_prints_new_events_of_the_call_as_they_arrive() -> None:
    args = main_args(["show", "SCL_b1", "--json", "--follow", DISPATCHER])
    out = io.StringIO()
    agent_lines = Path(AGENT).read_bytes().splitlines(keepends=True)

    def lines() -> Iterator[bytes | None]:
        yield from Path(DISPATCHER).read_bytes().splitlines(keepends=True)
        yield None
        yield from agent_lines
        yield None
        raise KeyboardInterrupt

    Run(args, out).follow(lines())
    events = json_lines(out.getvalue())
    assert {e["call"] for e in events} == {"SCL_b1"}
    assert [e["service"] for e in events] == ["dispatcher"] * 8 + ["agent"] * 4
    assert events[-1]["event"] == "call.ended"
    assert events[-1]["offset_ms"] == 37000.0


def test_a_calls_row_shows_who_answered_and_whether_anyone_did() -> None:
    """persona-logs shows each decision of issue 21: the agent and why, the unknown-caller
    policy's outcome, and a transfer."""

    def line(event: str, room: str, second: int, **fields: Any) -> str:
        ts = f"2026-11-25T19:40:{second:02d}.000Z"
        return json.dumps(
            {"event": event, "room": room, "ts": ts, "level": "info", "service": "dispatcher"}
            | fields
        )

    inspector = Inspector().feed_all(
        [
            line("call.agent_fallback", "call_1", 1, agent_name="ghost", fallback="friday"),
            line("call.setup_done", "call_1", 2, agent_name="friday", agent_reason="no_job"),
            line("call.transfer_failed", "call_1", 3, to="tel:+918000000009"),
            line("call.unknown_caller", "call_2", 4, policy="reject", outcome="rejected"),
            line("call.setup_done", "call_2", 5, dispatched=False, rejected=True),
        ]
    )
    rows = {r["room"]: r for r in (c.row() for c in inspector.select())}
    decided = {
        room: (r["agent"], r["agent_reason"], r["unknown_caller"], r["transfer"])
        for room, r in rows.items()
    }
    assert decided == {
        "call_1": ("friday", "no_job", None, "failed"),
        "call_2": (None, None, "rejected", None),
    }
