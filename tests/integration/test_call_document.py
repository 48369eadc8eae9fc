"""Each call's document in a real MongoDB wire-protocol server (FerretDB), left by real calls
through the stack: livekit-server → webhook → dispatcher → persona in room metadata → dispatch →
the agent worker (fake models) with MONGO_URI set, writing beside its transcript file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from agent.fakes import FAKE_REPLY
from devstack.agent_worker import AgentWorker, start_agent_worker
from devstack.logs import HOME_REGION, clear_logs, read_log_events
from devstack.processes import ROOT
from operator_tools.log_inspector_cli import main as persona_logs
from telemetry.logs import redact_text
from tests.agent.helpers import (
    PIRATE,
    contract_dispatch_metadata,
    contract_metadata,
    wait_for_records,
)
from tests.harness.calls import SipCaller, create_dispatch, write_room_metadata
from tests.harness.ferretdb import FerretDB, start_ferretdb, stop_ferretdb
from tests.harness.fixture_personas import MEERA, PRIYA
from tests.harness.metrics import sample
from tests.harness.stack import (
    Stack,
    eventually,
    join_sip,
    participant_token,
    place_sip_call,
    start_stack,
    unique_number,
    unique_room,
)

pytestmark = pytest.mark.integration

LOG_DIR = ROOT / "var" / "log" / "call-document"
COLLECTION = "calls"
Doc = dict[str, Any]
# The worker's metrics of what the documents lost (telemetry/agent_metrics.py).
FAILED_WRITES = "persona_agent_call_store_failed_writes_total"
DROPPED_TURNS = "persona_agent_call_store_dropped_turns_total"


@pytest.fixture(scope="module")
def ferretdb() -> Iterator[FerretDB]:
    clear_logs(LOG_DIR)
    db = start_ferretdb(LOG_DIR / "ferretdb.log")
    try:
        yield db
    finally:
        stop_ferretdb(db)


@pytest.fixture(scope="module")
def chain(
    ferretdb: FerretDB, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, AgentWorker]]:
    stack = start_stack(LOG_DIR, tmp_path_factory.mktemp("stack"))
    try:
        worker = start_agent_worker(
            stack.livekit,
            LOG_DIR,
            MONGO_URI=ferretdb.uri,
            MONGO_COLLECTION=COLLECTION,
            MONGO_WRITE_TIMEOUT_S="1",
        )
        try:
            yield stack, worker
        finally:
            worker.stop()
    finally:
        stack.stop()


@pytest.fixture
async def calls(ferretdb: FerretDB) -> AsyncIterator[Any]:
    client: AsyncMongoClient[Doc] = AsyncMongoClient(
        ferretdb.uri, tz_aware=True, serverSelectionTimeoutMS=1000
    )
    yield client["persona_dispatcher"][COLLECTION]
    await client.close()


def transcript_path(worker: AgentWorker) -> Path:
    return Path(worker.env["TRANSCRIPT_PATH"])


def transcript_turns(worker: AgentWorker, room: str) -> list[tuple[str, str]]:
    """The call's turns as the transcript file holds them."""
    return [
        (r["role"], r["text"])
        for r in read_log_events(transcript_path(worker), room=room, event="turn")
    ]


async def say(worker: AgentWorker, caller: SipCaller, text: str, *, replies: int) -> None:
    """The caller's words (as chat text) once `replies` of the agent's turns are in."""
    room = caller.room.name

    def agent_turns(r: dict[str, Any]) -> bool:
        # The transcript masks numbers, by the numbering plan as the logs do.
        ours = r.get("room") in (room, redact_text(room, HOME_REGION))
        return ours and r.get("event") == "turn" and r.get("role") == "assistant"

    await wait_for_records(transcript_path(worker), agent_turns, count=replies)
    await caller.room.local_participant.send_text(text, topic="lk.chat")


async def hang_up_by_saying_goodbye(worker: AgentWorker, caller: SipCaller, replies: int) -> None:
    """The caller says goodbye; the agent speaks its closing line and deletes the room."""
    disconnected = asyncio.Event()
    caller.room.on("disconnected", lambda *_: disconnected.set())
    await say(worker, caller, "That is all, goodbye!", replies=replies)
    async with asyncio.timeout(60):
        await disconnected.wait()


async def document(calls: Any, room: str, *, complete: bool = True, within_s: float = 60) -> Doc:
    """The one document of the call in `room` (as stored: numbers masked), once it holds its
    end (or, with `complete=False`, once it exists)."""

    async def probe() -> list[Doc]:
        try:
            found = [d async for d in calls.find({"room": redact_text(room, HOME_REGION)})]
        except PyMongoError:
            return []
        return [d for d in found if not complete or "store" in d]

    found: list[Doc] = await eventually(probe, within_s, f"the document of {room}")
    assert len(found) == 1, found
    return found[0]


async def test_a_call_leaves_one_complete_document_with_the_persona_spoken_and_its_turns(
    chain: tuple[Stack, AgentWorker], calls: Any, callers: list[SipCaller]
) -> None:
    stack, worker = chain
    stack.persona_control()
    caller = await place_sip_call(stack, callers, "8655701159")
    room = caller.room.name
    await say(worker, caller, "Hello, who is this?", replies=1)
    await hang_up_by_saying_goodbye(worker, caller, replies=2)

    doc = await document(calls, room)
    persona = doc["persona"]
    assert (persona["persona_id"], persona["name"], persona["status"], persona["source"]) == (
        PRIYA.persona_id,
        PRIYA.name,
        "loaded",
        "api",
    )
    assert persona["welcome"] == PRIYA.welcome
    assert PRIYA.matches_instructions(persona["instructions"])
    llm_log = Path(worker.env["AGENT_FAKE_LLM_LOG"])
    [request, *_] = read_log_events(llm_log, room=room, kind="llm")
    assert request["instructions"] == persona["instructions"]  # what the model was given
    assert [e["event"] for e in doc["events"]] == ["persona_loaded"]

    spoken = [(t["role"], t["text"]) for t in doc["turns"] if t["role"] != "tool"]
    assert spoken == transcript_turns(worker, room)
    assert spoken[0] == ("assistant", PRIYA.welcome)
    assert ("assistant", FAKE_REPLY) in spoken
    assert [t["name"] for t in doc["turns"] if t["role"] == "tool"] == ["end_call"]

    assert (doc["call_id"], doc["caller"], doc["agent_name"]) == (
        f"SCL_{room[-8:]}",
        "******1159",
        "friday",
    )
    assert doc["started_at"] <= doc["answered_at"] <= doc["turns"][0]["at"] <= doc["ended_at"]
    assert doc["end"]["reason"] in ("participant_disconnected", "job_shutdown", "user_initiated")
    assert doc["models"] == {"stack": "fake", "llm": "recording-fake", "tts": "tone-fake"}
    assert doc["store"]["dropped_turns"] == 0


async def test_a_call_answered_by_the_default_persona_says_so(
    chain: tuple[Stack, AgentWorker], calls: Any, callers: list[SipCaller]
) -> None:
    stack, worker = chain
    stack.persona_control()
    caller = await place_sip_call(stack, callers, unique_number())
    await say(worker, caller, "Hello?", replies=1)
    await caller.leave()
    callers.remove(caller)

    doc = await document(calls, caller.room.name)
    assert (doc["persona"]["status"], doc["persona"]["source"]) == ("default", "default")
    assert [e["event"] for e in doc["events"]] == ["persona_not_found"]
    assert doc["persona"]["persona_id"] is None


async def test_a_call_hung_up_before_the_answer_leaves_its_started_document(
    chain: tuple[Stack, AgentWorker], calls: Any
) -> None:
    """The caller's SIP participant is still ringing (nothing answered it) when it leaves, as
    soon as the agent is dispatched: the job's first write is there all the same."""
    stack, _ = chain
    stack.persona_control()
    number = unique_number()
    room = unique_room(number)
    ringing = await join_sip(stack, room, number)
    await eventually(
        lambda: stack.dispatcher_events(event="agent.dispatched", room=room), 60, "the dispatch"
    )
    await ringing.disconnect()

    doc = await document(calls, room, complete=False)
    assert doc["started_at"] is not None
    assert doc["caller"] == redact_text(number)
    assert doc["dispatch_id"].startswith("AD_")
    assert "answered_at" not in doc


async def test_the_database_killed_mid_call_costs_the_call_nothing_and_loses_no_turn(
    chain: tuple[Stack, AgentWorker],
    ferretdb: FerretDB,
    calls: Any,
    callers: list[SipCaller],
) -> None:
    stack, worker = chain
    stack.persona_control()
    caller = await place_sip_call(stack, callers, "9000000002")
    room = caller.room.name
    await document(calls, room, complete=False)  # the start is written
    failed_before = sample(worker.metrics_url, FAILED_WRITES, error="unavailable")

    ferretdb.kill()
    await say(worker, caller, "Tell me about the offer.", replies=1)
    await wait_for_records(
        transcript_path(worker),
        lambda r: r.get("room") == redact_text(room, HOME_REGION) and r.get("text") == FAKE_REPLY,
    )  # the call goes on: the agent answered while the database was down
    await eventually(
        lambda: worker.log_records(event="call_store.unavailable", room=room), 30, "the outage"
    )
    ferretdb.start()
    await hang_up_by_saying_goodbye(worker, caller, replies=2)

    doc = await document(calls, room)
    turns = transcript_turns(worker, room)
    assert turns[0] == ("assistant", MEERA.welcome)
    assert ("user", "Tell me about the offer.") in turns
    assert ("user", "That is all, goodbye!") in turns
    assert [(t["role"], t["text"]) for t in doc["turns"] if t["role"] != "tool"] == turns
    assert doc["store"]["dropped_turns"] == 0
    assert doc["store"]["failed_writes"] >= 1
    # Counted in the call's job process, served by the worker: every failure the document
    # records, and any of its last writes (after the document took its count at the call's end).
    failed = sample(worker.metrics_url, FAILED_WRITES, error="unavailable") - failed_before
    assert failed >= doc["store"]["failed_writes"]
    assert sample(worker.metrics_url, DROPPED_TURNS, reason="unwritten") == 0
    assert len(worker.log_records(event="call_store.unavailable", room=room)) == 1
    assert len(worker.log_records(event="call_store.recovered", room=room)) == 1


async def test_the_indexes_are_created_at_worker_start(
    chain: tuple[Stack, AgentWorker], calls: Any
) -> None:
    _, worker = chain
    await eventually(
        lambda: worker.log_records(event="call_store.indexes_ready"), 30, "the indexes"
    )
    keys = [list(ix["key"]) for ix in await (await calls.list_indexes()).to_list()]
    for key in (["call_id"], ["caller"], ["started_at"], ["persona.persona_id"]):
        assert key in keys


async def test_persona_logs_stored_reads_the_call_back_from_the_database(
    chain: tuple[Stack, AgentWorker],
    ferretdb: FerretDB,
    calls: Any,
    callers: list[SipCaller],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stack, worker = chain
    stack.persona_control()
    caller = await place_sip_call(stack, callers, "9000000002")
    await say(worker, caller, "Which offer?", replies=1)
    await wait_for_records(
        transcript_path(worker),
        lambda r: (
            r.get("room") == redact_text(caller.room.name, HOME_REGION)
            and r.get("text") == FAKE_REPLY
        ),
    )
    await caller.leave()
    callers.remove(caller)
    doc = await document(calls, caller.room.name)
    monkeypatch.setenv("MONGO_URI", ferretdb.uri)
    monkeypatch.setenv("MONGO_COLLECTION", COLLECTION)

    assert await asyncio.to_thread(persona_logs, ["stored", doc["call_id"]]) == 0
    text = capsys.readouterr().out
    assert f"call {doc['call_id']}" in text
    assert f"persona {MEERA.persona_id} {MEERA.name}  status loaded/api" in text
    assert f"assistant  {MEERA.welcome}" in text
    assert "user       Which offer?" in text

    assert await asyncio.to_thread(persona_logs, ["stored", doc["_id"], "--json"]) == 0
    [stored] = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert stored["persona"]["persona_id"] == MEERA.persona_id
    assert stored["turns"][1]["text"] == "Which offer?"

    assert await asyncio.to_thread(persona_logs, ["stored", "SCL_no_such_call"]) == 1


async def test_with_transcript_file_off_the_database_alone_keeps_the_call(
    chain: tuple[Stack, AgentWorker],
    ferretdb: FerretDB,
    calls: Any,
    callers: list[SipCaller],
    tmp_path: Path,
) -> None:
    """TRANSCRIPT_FILE=false: a worker (its own agent name, dispatched by the test as the
    dispatcher does) writes no transcript file, and the call's document holds its turns."""
    stack, _ = chain
    name = "friday-db-only"
    worker = start_agent_worker(
        stack.livekit,
        tmp_path,
        AGENT_NAME=name,
        TRANSCRIPT_FILE="false",
        MONGO_URI=ferretdb.uri,
        MONGO_COLLECTION=COLLECTION,
    )
    try:
        room = unique_room("8655701159")
        # Not SIP-kind: the stack's dispatcher must not set this room up for its own agent.
        token = participant_token(room, "web-caller", kind="standard")
        caller = await SipCaller(stack.livekit.ws_url, token).join()
        callers.append(caller)
        async with stack.api() as lk:
            await write_room_metadata(lk, room, contract_metadata(PIRATE, call_id="SCL_db_only"))
            await create_dispatch(lk, room, name, contract_dispatch_metadata(None, "SCL_db_only"))
        await caller.wait_for_sound()
        doc = await document(calls, room, complete=False)
        await eventually(
            lambda: turns_in(calls, doc["_id"], 1), 60, "the welcome turn in the document"
        )
        await caller.leave()
        callers.remove(caller)
        doc = await document(calls, room)
    finally:
        worker.stop()
    first = doc["turns"][0]
    assert (first["role"], first["text"]) == ("assistant", PIRATE.welcome)
    assert doc["persona"]["persona_id"] == PIRATE.persona_id
    assert not transcript_path(worker).exists()


async def turns_in(calls: Any, job_id: str, count: int) -> bool:
    try:
        doc = await calls.find_one({"_id": job_id})
    except PyMongoError:
        return False
    return doc is not None and len(doc.get("turns", [])) >= count
