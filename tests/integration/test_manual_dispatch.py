"""`scripts/dispatch_call.py` against the real livekit-server: the webhook path's own set-up."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import orjson
import pytest
from livekit import api

from devstack.agent_worker import AgentWorker
from devstack.logs import HOME_REGION
from devstack.processes import ROOT
from operator_tools.log_inspector_cli import main as persona_logs
from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET
from telemetry.logs import redact_text
from tests.harness.stack import Stack, agent_dispatches, eventually, room_persona, unique_room


def set_up_log(stack: Stack) -> str:
    """Where the command logs its set-ups in these tests: beside the dispatcher's log."""
    return str(stack.dispatcher_log.parent / "manual-dispatch.log")


async def dispatch_call(stack: Stack, *args: str, **env: str) -> tuple[int, str, str]:
    environment = {
        **os.environ,
        "LIVEKIT_URL": stack.livekit.ws_url,
        "LIVEKIT_API_KEY": DEV_API_KEY,
        "LIVEKIT_API_SECRET": DEV_API_SECRET,
        "PERSONA_API_BASE": stack.persona_api_url + "/mobile",
        "USER_MAPPING_DIR": str(stack.user_mapping),
        "MANUAL_DISPATCH_LOG": set_up_log(stack),
        **env,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scripts.dispatch_call",
        *args,
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_creates_room_writes_persona_and_dispatches_once(
    persona_api: Stack, lk: api.LiveKitAPI
) -> None:
    room = unique_room("8655701159")
    code, out, err = await dispatch_call(persona_api, "--room", room, "--json")
    assert code == 0, err
    summary = orjson.loads(out)
    assert summary["status"] == "loaded"
    assert summary["name"] == "Priya"
    assert summary["dispatched"] is True
    assert summary["token"]
    meta = await room_persona(lk, room)
    assert meta is not None
    assert meta.persona.persona_id == "prs_3001"
    dispatches = await agent_dispatches(lk, room, "friday")
    assert [d.id for d in dispatches] == [summary["dispatch_id"]]

    code, out, _ = await dispatch_call(persona_api, "--room", room)
    assert code == 0
    assert "already_dispatched" in out
    assert len(await agent_dispatches(lk, room, "friday")) == 1


async def test_human_summary_names_every_step(persona_api: Stack) -> None:
    code, out, _ = await dispatch_call(persona_api, "--number", "+91 90000 00002")
    assert code == 0
    for label in ("persona       loaded from api", "name          Meera", "metadata", "dispatch"):
        assert label in out
    assert "timings       persona" in out
    assert "token         ey" in out


async def test_dry_run_touches_nothing_in_livekit(persona_api: Stack, lk: api.LiveKitAPI) -> None:
    room = unique_room("9000000002")
    code, out, _ = await dispatch_call(
        persona_api, "--dry-run", "--number", "9000000002", "--room", room, "--json"
    )
    assert code == 0
    summary = orjson.loads(out)
    assert summary["dry_run"] is True
    assert summary["persona_id"] == "prs_festive"
    assert summary["dispatch_id"] is None
    listed = await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
    assert list(listed.rooms) == []


async def test_bad_inputs_give_one_line_and_distinct_exit_codes(persona_api: Stack) -> None:
    cases = {
        ("--number", "not-a-number"): ({}, 3, "is not a phone number"),
        (): ({"LIVEKIT_URL": ""}, 4, "LIVEKIT_URL is required"),
        ("--number", "8655701159"): ({"LIVEKIT_URL": "ws://127.0.0.1:9"}, 5, "unreachable"),
        ("--number", "9000000002"): (
            {"LIVEKIT_API_SECRET": "a-wrong-secret-that-is-long-enough-0123"},
            6,
            "refused the API key/secret",
        ),
    }
    for args, (env, expected, message) in cases.items():
        code, out, err = await dispatch_call(persona_api, *args, **env)
        assert code == expected, (args, err)
        assert message in err
        assert "Traceback" not in err
        assert out == ""


# A room whose random part is all digits (1 in 43 are): once missed by a test that masked it
# by the every-run rule while the logs mask by the numbering plan.
@pytest.mark.parametrize("suffix", [None, "03435958"], ids=["random", "all-digit-suffix"])
async def test_the_set_up_is_logged_where_persona_logs_reads_it_with_the_agents_lines(
    persona_api: Stack,
    lk: api.LiveKitAPI,
    worker: AgentWorker,
    capsys: pytest.CaptureFixture[str],
    suffix: str | None,
) -> None:
    """The command's set-up events (caller, persona, metadata, dispatch) land in its log, so
    `persona-logs calls` shows the call set up and dispatched, and `show` tells its whole story
    across the command's and the agent's logs."""
    room = unique_room("8655701159", suffix)
    code, out, err = await dispatch_call(persona_api, "--room", room, "--json")
    assert code == 0, err
    summary = orjson.loads(out)
    await eventually(lambda: worker.log_records(event="persona.applied", room=room), 60, "agent")
    logs = [set_up_log(persona_api), str(persona_api.dispatcher_log), str(worker.log_path)]

    assert persona_logs(["calls", "--json", *logs]) == 0
    rows = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    [row] = [r for r in rows if r["room"] == redact_text(room, HOME_REGION)]
    assert row["call_id"].startswith("manual_")
    assert row["caller"] == "******1159"
    assert (row["persona_status"], row["persona_id"]) == ("loaded", "prs_3001")
    assert isinstance(row["setup_ms"], float)
    assert (row["dispatched"], row["agent_joined"], row["errors"]) == (True, True, 0)

    assert persona_logs(["show", "--json", room, *logs]) == 0
    [shown] = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    events = [(e["service"], e["event"]) for e in shown["events"]]
    for step in (
        "manual_dispatch.started",
        "call.caller_detected",
        "persona.resolved",
        "room.metadata_written",
        "agent.dispatched",
        "call.setup_done",
    ):
        assert ("manual-dispatch", step) in events, step
    assert ("agent", "persona.applied") in events
    dispatched = next(e for e in shown["events"] if e["event"] == "agent.dispatched")
    assert dispatched["fields"]["dispatch_id"] == summary["dispatch_id"]
    assert summary["log"] == set_up_log(persona_api)  # the command says where it logged
