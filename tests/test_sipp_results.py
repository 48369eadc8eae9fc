"""Reading sipp's files: the injection file, the statistics file and the scenario's log lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.sipp import (
    CALLERS_CSV,
    SCENARIO,
    TEST_CALLER,
    Call,
    parse_log_lines,
    parse_stat_file,
    read_injection,
    write_injection,
)

pytestmark = pytest.mark.unit


def test_committed_injection_file_has_twenty_different_callers_to_the_trunk_number() -> None:
    calls = read_injection(CALLERS_CSV)
    assert len(calls) == 20
    assert len({c.caller for c in calls}) == 20
    assert calls[0].caller == TEST_CALLER
    assert {c.dialled for c in calls} == {"+918000000001"}


def test_injection_file_round_trips(tmp_path: Path) -> None:
    calls = [Call("8655701159", "+918000000001"), Call("9000000002", "8000000001")]
    path = write_injection(tmp_path / "calls.csv", calls)
    assert path.read_text().splitlines()[0] == "SEQUENTIAL"
    assert read_injection(path) == calls


def test_log_lines_give_each_call_its_ring_time() -> None:
    text = "\n".join(
        [
            "invite;8655701159;1-77@127.0.0.1;1000",
            "invite;9000000002;2-77@127.0.0.1;1010",
            "answered;8655701159;1-77@127.0.0.1;1250",
            "some other sipp line",
            "ended;8655701159;1-77@127.0.0.1;4300",
        ]
    )
    first, second = parse_log_lines(text)
    assert (first.caller, first.ring_ms, first.ended_ms) == ("8655701159", 250, 4300)
    assert (second.caller, second.ring_ms) == ("9000000002", None)


def test_stat_file_gives_the_last_line_by_header(tmp_path: Path) -> None:
    path = tmp_path / "stats.csv"
    path.write_text(
        "SuccessfulCall(C);FailedCall(C);\n0;0;\n19;1;\n",
    )
    assert parse_stat_file(path)["SuccessfulCall(C)"] == "19"
    assert parse_stat_file(path)["FailedCall(C)"] == "1"


def test_scenario_logs_invite_answer_and_end_with_the_caller_field() -> None:
    text = SCENARIO.read_text()
    for step in ("invite", "answered", "ended"):
        assert f'<log message="{step};[field0];[call_id];[clock_tick]"/>' in text
    assert "play_pcap_audio" in text
