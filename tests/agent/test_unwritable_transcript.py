"""A transcript that cannot be written never stops a call: the real worker process, whose
TRANSCRIPT_PATH it may not write (as the container image's `nobody` in a root-owned /app could
not), still greets the caller, and says once per call that the transcript failed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import api

from devstack.agent_worker import AgentWorker, start_agent_worker
from devstack.services import LiveKitServer
from tests.agent.helpers import (
    PIRATE,
    contract_dispatch_metadata,
    contract_metadata,
    wait_for_records,
)
from tests.harness.calls import SipCaller, create_dispatch, sip_token, write_room_metadata
from tests.harness.stack import eventually

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker_without_transcript(
    livekit_server: LiveKitServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentWorker]:
    workdir = tmp_path_factory.mktemp("agent-unwritable")
    # A regular file where the transcript's directory should be: unwritable even for root.
    (workdir / "conversations").write_text("not a directory\n")
    worker = start_agent_worker(
        livekit_server,
        workdir,
        TRANSCRIPT_PATH=str(workdir / "conversations" / "transcripts.jsonl"),
    )
    try:
        yield worker
    finally:
        worker.stop()


async def test_worker_that_cannot_write_its_transcript_still_greets_the_caller(
    worker_without_transcript: AgentWorker, lk_api: api.LiveKitAPI, livekit_server: LiveKitServer
) -> None:
    worker = worker_without_transcript
    room = "call_9876543210_unwritable"
    token = sip_token(livekit_server, room, caller="9876543210", call_id="SCL_ro")
    caller = await SipCaller(livekit_server.ws_url, token).join()
    try:
        await write_room_metadata(lk_api, room, contract_metadata(PIRATE, call_id="SCL_ro"))
        await create_dispatch(lk_api, room, "friday", contract_dispatch_metadata(None, "SCL_ro"))
        await caller.wait_for_agent()
        await caller.wait_for_sound()
        fake_llm_log = Path(worker.env["AGENT_FAKE_LLM_LOG"])
        spoken = await wait_for_records(
            fake_llm_log, lambda r: r.get("room") == room and r.get("kind") == "tts"
        )
        assert spoken[0]["text"] == PIRATE.welcome
    finally:
        await caller.leave()
    # The call ended (persona, greeting and end of call all failed to write): one warning.
    await eventually(lambda: worker.log_records(event="process exiting", room=room), 60, "the end")
    failed = worker.log_records(event="transcript.write_failed", room=room)
    assert len(failed) == 1
    assert failed[0]["path"].endswith("conversations/transcripts.jsonl")
    assert failed[0]["call_id"] == "SCL_ro"
