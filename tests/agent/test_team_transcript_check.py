"""The team's own check of a call passes unchanged (shared/origin-notes.md, "Testing steps", step
3): after a call, `conversations/transcripts.jsonl` or `conversations/transcript_session_*.json`
contains `persona_loaded` or `persona_not_found` events.

The worker runs as they run it: from a project directory, TRANSCRIPT_PATH left at its default.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from livekit import api

from devstack.agent_worker import AgentWorker, agent_worker_env
from devstack.logs import HOME_REGION
from devstack.services import LiveKitServer
from telemetry.logs import redact_text
from tests.agent.helpers import (
    PIRATE,
    contract_dispatch_metadata,
    contract_metadata,
    wait_for_records,
)
from tests.harness.calls import SipCaller, create_dispatch, sip_token, write_room_metadata

pytestmark = pytest.mark.integration


def their_check(project: Path) -> list[str]:
    """Step 3 of their manual test, as written: which of `persona_loaded` / `persona_not_found`
    the transcript files contain (empty: the check fails)."""
    conversations = project / "conversations"
    files = [conversations / "transcripts.jsonl"]
    files += sorted(conversations.glob("transcript_session_*.json"))
    text = "".join(f.read_text() for f in files if f.is_file())
    return [name for name in ("persona_loaded", "persona_not_found") if name in text]


def their_events(project: Path, room: str) -> list[dict[str, Any]]:
    path = project / "conversations" / "transcripts.jsonl"
    records = [orjson.loads(line) for line in path.read_bytes().splitlines() if line]
    return [
        r
        for r in records
        if r["event"] in ("persona_loaded", "persona_not_found")
        and r["room"] == redact_text(room, HOME_REGION)
    ]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("their-project")


@pytest.fixture(scope="module")
def worker_in_project(livekit_server: LiveKitServer, project: Path) -> Iterator[AgentWorker]:
    env = agent_worker_env(livekit_server, project, AGENT_PERSONA_WAIT_S="0.5")
    del env["TRANSCRIPT_PATH"]  # the default, relative to where the worker runs
    worker = AgentWorker(env, project / "agent-worker.log", cwd=project).start()
    try:
        yield worker
    finally:
        worker.stop()


async def call(
    livekit_server: LiveKitServer,
    lk: api.LiveKitAPI,
    worker: AgentWorker,
    room: str,
    caller_number: str,
    metadata: str | None,
) -> None:
    """A SIP-kind caller in `room`; the persona (if any) written, the agent dispatched; returns
    once the agent has spoken."""
    token = sip_token(livekit_server, room, caller=caller_number, call_id=f"SCL_{room[-4:]}")
    caller = await SipCaller(livekit_server.ws_url, token).join()
    try:
        if metadata is not None:
            await write_room_metadata(lk, room, metadata)
        await create_dispatch(
            lk, room, "friday", contract_dispatch_metadata(caller_number, f"SCL_{room[-4:]}")
        )
        await caller.wait_for_sound()
        await wait_for_records(
            Path(worker.env["AGENT_FAKE_LLM_LOG"]),
            lambda r: r.get("room") == room and r.get("kind") == "tts",
        )
    finally:
        await caller.leave()


async def test_their_check_finds_persona_loaded_then_persona_not_found(
    worker_in_project: AgentWorker,
    livekit_server: LiveKitServer,
    lk_api: api.LiveKitAPI,
    project: Path,
) -> None:
    loaded_room = "call_9876543210_load"
    meta = contract_metadata(
        PIRATE, status="file", source="user-mapping/num_9876543210.json", caller="9876543210"
    )
    await call(livekit_server, lk_api, worker_in_project, loaded_room, "9876543210", meta)
    assert their_check(project) == ["persona_loaded"]
    [loaded] = their_events(project, loaded_room)
    assert loaded["event"] == "persona_loaded"
    assert loaded["caller"] == "******3210"
    assert (loaded["persona_id"], loaded["status"]) == ("persona-pirate", "file")
    assert loaded["source"] == "user-mapping/num_******3210.json"

    # No persona in the room: the default persona, and their other event.
    missing_room = "call_9123456789_miss"
    await call(livekit_server, lk_api, worker_in_project, missing_room, "9123456789", None)
    assert their_check(project) == ["persona_loaded", "persona_not_found"]
    [not_found] = their_events(project, missing_room)
    assert not_found["event"] == "persona_not_found"
    assert not_found["caller"] == "******6789"
    assert (not_found["persona_id"], not_found["status"], not_found["source"]) == (
        None,
        "default",
        "default",
    )
