"""Phone numbers are masked in every field of every log line (both services' logging paths) and in
the transcript, unless LOG_UNMASKED; the log inspector still finds a call by the number typed."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from agent.transcript import TranscriptLog
from devstack.logs import read_log_events
from operator_tools.log_inspector import Inspector
from telemetry.logs import configure_forwarded_logging, configure_logging, get_logger, redact_text

pytestmark = pytest.mark.unit

# The room LiveKit's individual dispatch rule (scripts/setup_sip.py) creates for a call from
# 8655701159, and what livekit-sip names the caller.
ROOM = "call_8655701159_ab12"
IDENTITY = "sip_8655701159"
MAPPING = "user-mapping/num_8655701159.json"


@pytest.mark.parametrize(
    ("text", "logged"),
    [
        (ROOM, "call_******1159_ab12"),
        ("call_+918655701159_x9Yz", "call_+********1159_x9Yz"),
        (IDENTITY, "sip_******1159"),
        (MAPPING, "user-mapping/num_******1159.json"),
        ("/srv/user-mapping/num_8655701159.json", "/srv/user-mapping/num_******1159.json"),
        ("sip:+918655701159@192.0.2.2:5060", "sip:+********1159@192.0.2.2:5060"),
        ("8655701159", "******1159"),
        ("from 8655701159 to 8000000001", "from ******1159 to ******0001"),
    ],
)
def test_numbers_are_masked_wherever_they_sit_in_a_text(text: str, logged: str) -> None:
    assert redact_text(text) == logged


@pytest.mark.parametrize(
    "text",
    [
        "SCL_e78353174e03",  # livekit-sip call ids: digits among letters
        "AD_PTKEv98DRL2b",
        "2026-11-25T19:28:34.671888+00:00",  # the fraction of a time
        "1512.6",
        "http://127.0.0.1:8080/mobile",
        "prs_3001",
        "12345",  # too short for a phone number
    ],
)
def test_ids_times_and_short_numbers_are_left_alone(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.parametrize(
    ("text", "logged"),
    [
        (ROOM, "call_******1159_ab12"),
        ("call_+918655701159_x9Yz", "call_+********1159_x9Yz"),
        (IDENTITY, "sip_******1159"),
        (MAPPING, "user-mapping/num_******1159.json"),
        ("sip:+918655701159@192.0.2.2:5060", "sip:+********1159@192.0.2.2:5060"),
        ("+91 86557 01159", "+** ***** *1159"),
        ("+65 9123 4567", "+** **** 4567"),
        ("caller +6591234567", "caller +******4567"),
        ("attempt 2 8655701159", "attempt 2 ******1159"),
        ("caller +91 86557 01159 2 times", "caller +** ***** *1159 2 times"),
        ("2026-11-25 8655701159", "2026-11-25 ******1159"),
        ("+687 75.12.34", "+*** **.12.34"),  # dots between groups (New Caledonia)
        ("from 8655701159 to 8000000001", "from ******1159 to ******0001"),
    ],
)
def test_with_the_plan_phone_numbers_are_masked(text: str, logged: str) -> None:
    assert redact_text(text, "IN") == logged


@pytest.mark.parametrize(
    "text",
    [
        "EV_123456784866",  # an event id: was EV_********4866
        "1048576",  # a byte count
        "1764669502123",  # epoch milliseconds
        "duration 123456 us",
        "2026-11-25T19:28:34.671888+00:00",
        "SCL_e78353174e03",
        "+15550100",  # too short for its country
        "http://127.0.0.1:8080/mobile",
        "192.168.100.200",
        "1512.6",
    ],
)
def test_with_the_plan_what_is_no_phone_number_is_left_alone(text: str) -> None:
    assert redact_text(text, "IN") == text


def test_numbers_in_keys_are_masked(restore_logging: Any) -> None:
    """Keys were never redacted: a mapping keyed by number logged every number in full."""
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream, cache=False, phone_region="IN")
    get_logger("t").info(
        "persona.cache_state",
        entries={"8655701159": "loaded", "+6591234567": "not_found"},
        bytes=1048576,
        event_id="EV_123456784866",
        **{"9000000002": "a key of the event itself"},
    )
    text = stream.getvalue()
    assert "8655701159" not in text
    assert "91234567" not in text
    assert "9000000002" not in text
    [line] = log_lines(stream)
    assert line["entries"] == {"******1159": "loaded", "+******4567": "not_found"}
    assert line["******0002"] == "a key of the event itself"
    assert (line["bytes"], line["event_id"]) == (1048576, "EV_123456784866")


def log_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines() if line]


@pytest.fixture
def restore_logging() -> Any:
    yield
    configure_logging("info", "json", cache=False)


def test_dispatcher_log_masks_every_field(restore_logging: Any) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", service="dispatcher", stream=stream, cache=False)
    structlog.contextvars.bind_contextvars(room=ROOM, caller="8655701159")
    try:
        get_logger("t").info(
            "persona.resolved",
            source=MAPPING,
            identity=IDENTITY,
            attributes={"sip.phoneNumber": "+918655701159", "sip.callID": "SCL_e78353174e03"},
            problems=[f"no file {MAPPING}"],
        )
    finally:
        structlog.contextvars.clear_contextvars()
    text = stream.getvalue()
    assert "8655701159" not in text
    [line] = log_lines(stream)
    assert line["room"] == "call_******1159_ab12"
    assert line["caller"] == "******1159"
    assert line["source"] == "user-mapping/num_******1159.json"
    assert line["identity"] == "sip_******1159"
    assert line["attributes"] == {
        "sip.phoneNumber": "+********1159",
        "sip.callID": "SCL_e78353174e03",
    }
    assert line["problems"] == ["no file user-mapping/num_******1159.json"]
    assert line["ts"].endswith("Z")


def test_log_unmasked_keeps_full_numbers(restore_logging: Any) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream, cache=False, unmasked=True)
    get_logger("t").info("call.caller_detected", room=ROOM, caller="8655701159")
    [line] = log_lines(stream)
    assert (line["room"], line["caller"]) == (ROOM, "8655701159")


def test_agent_logging_path_masks_job_records_and_library_records(restore_logging: Any) -> None:
    """The worker renders through stdlib: the events its job processes forward (stdlib records
    carrying the fields as `extra`) and livekit's own records are masked alike."""
    stream = io.StringIO()
    configure_logging("info", "json", service="agent", stream=stream, through_stdlib=True)
    # What a job process sends: configure_forwarded_logging turns an event into a record (event
    # as message, fields as extra) that livekit-agents hands to the worker's root handler.
    configure_forwarded_logging("info", service="agent")
    root = logging.getLogger()
    forwarded: list[logging.LogRecord] = []

    class Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            forwarded.append(record)

    handlers = root.handlers[:]
    root.handlers = [Forward()]
    try:
        get_logger("agent.worker").info("persona.applied", room=ROOM, caller="8655701159")
    finally:
        root.handlers = handlers
    [record] = forwarded
    for handler in root.handlers:
        handler.handle(record)
    logging.getLogger("livekit.agents").warning(
        "received job request", extra={"room_name": ROOM, "participant_identity": IDENTITY}
    )
    text = stream.getvalue()
    assert "8655701159" not in text
    applied, received = log_lines(stream)
    assert (applied["event"], applied["room"], applied["caller"]) == (
        "persona.applied",
        "call_******1159_ab12",
        "******1159",
    )
    assert received["room_name"] == "call_******1159_ab12"
    assert received["participant_identity"] == "sip_******1159"


def test_transcript_masks_numbers_unless_unmasked(tmp_path: Path) -> None:
    path = tmp_path / "transcripts.jsonl"
    TranscriptLog(path, room=ROOM, call_id="SCL_1").write(
        "turn", role="user", text="my number is 8655701159"
    )
    TranscriptLog(path, room=ROOM, call_id="SCL_1", unmasked=True).write("turn", text="8655701159")
    masked, unmasked = (orjson.loads(line) for line in path.read_bytes().splitlines())
    assert (masked["room"], masked["text"]) == ("call_******1159_ab12", "my number is ******1159")
    assert (unmasked["room"], unmasked["text"]) == (ROOM, "8655701159")


def masked_call_lines() -> list[bytes]:
    """A call as the services log it now: numbers masked in room and caller; the agent's lines
    name the room only."""
    room = "call_******1159_ab12"
    lines: list[dict[str, Any]] = [
        {"event": "webhook.received", "service": "dispatcher", "room": room},
        {"event": "call.caller_detected", "service": "dispatcher", "room": room,
         "call_id": "SCL_1", "caller": "******1159"},
        {"event": "call.setup_done", "service": "dispatcher", "room": room, "call_id": "SCL_1",
         "duration_ms": 12.0, "dispatched": True},
        {"event": "agent.started", "service": "agent", "room": room},
    ]  # fmt: skip
    return [
        orjson.dumps({**line, "level": "info", "ts": f"2026-11-25T19:40:0{i}Z"})
        for i, line in enumerate(lines)
    ]


@pytest.mark.parametrize(
    "selector", ["8655701159", "1159", "01159", ROOM, "call_******1159_ab12", "SCL_1"]
)
def test_inspector_finds_a_masked_call_by_what_the_operator_types(selector: str) -> None:
    found = Inspector(keep_lines=True).feed_all(masked_call_lines()).find(selector)
    assert [(c.call_id, c.room, c.events) for c in found] == [("SCL_1", "call_******1159_ab12", 4)]


def test_inspector_does_not_find_another_number() -> None:
    inspector = Inspector().feed_all(masked_call_lines())
    assert inspector.find("8655702222") == []
    assert inspector.find("call_8655702222_ab12") == []


def test_a_room_whose_suffix_is_all_digits_is_found_as_the_services_masked_it(
    tmp_path: Path,
) -> None:
    """The plan masks the number and leaves `02025224` (no phone number) alone, where the
    every-run rule masked both: the inspector and the tests' log reader match either form."""
    room = "call_8655701159_02025224"
    logged = redact_text(room, "IN")
    assert logged == "call_******1159_02025224" != redact_text(room)
    line = {"event": "persona.resolved", "service": "dispatcher", "room": logged}
    log = tmp_path / "dispatcher.log"
    log.write_bytes(orjson.dumps({**line, "ts": "2026-11-25T19:40:00Z"}) + b"\n")
    assert [r["room"] for r in read_log_events(log, room=room)] == [logged]
    inspector = Inspector(phone_region="IN").feed_all([log.read_bytes()])
    assert [c.room for c in inspector.find(room)] == [logged]


def test_transcript_with_the_plan_masks_phone_numbers_not_call_ids(tmp_path: Path) -> None:
    """With the deployment's plan (as the worker passes it), an id whose random part happens to be
    all digits stays whole, as in the logs; the caller's number is still masked."""
    path = tmp_path / "t.jsonl"
    TranscriptLog(path, room=ROOM, call_id="SCL_84794759", region="IN").write(
        "turn", text="call me on 8655701159"
    )
    [record] = [orjson.loads(line) for line in path.read_text().splitlines()]
    assert record["call_id"] == "SCL_84794759"
    assert record["text"] == "call me on ******1159"
