"""The call's database document (agent/call_store.py) against a real MongoDB wire-protocol server
(FerretDB over SQLite, tests/harness/ferretdb.py): what one call leaves, and a database that dies,
hangs or is shared by two workers never costing the call anything nor duplicating a document."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from agent.call_record import RUNS, CallStart, persona_fields, storable, turn_entry, turns_write
from agent.call_store import CallStore, calls_collection, new_client
from agent.persona import AppliedPersona
from config.agent_settings import AgentSettings, load_agent_settings
from contract.metadata import default_persona_metadata
from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET
from tests.agent.helpers import PIRATE, loaded
from tests.conftest import CountsSince, LogCapture
from tests.harness.ferretdb import FerretDB, start_ferretdb, stop_ferretdb
from tests.harness.stack import eventually

pytestmark = pytest.mark.integration

CALLER = "918655701159"
ROOM = f"call_{CALLER}_ab12cd34"

Doc = dict[str, Any]
# The worker's metrics of what the document lost (telemetry/agent_metrics.py).
FAILED = "persona_agent_call_store_failed_writes_total"
DROPPED = "persona_agent_call_store_dropped_turns_total"


@pytest.fixture(scope="module")
def ferretdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerretDB]:
    db = start_ferretdb(tmp_path_factory.mktemp("ferretdb") / "ferretdb.log")
    try:
        yield db
    finally:
        stop_ferretdb(db)


def agent_settings(uri: str, collection: str, **env: str) -> AgentSettings:
    return load_agent_settings(
        {
            "LIVEKIT_URL": "ws://127.0.0.1:7880",
            "LIVEKIT_API_KEY": DEV_API_KEY,
            "LIVEKIT_API_SECRET": DEV_API_SECRET,
            "AGENT_STACK": "fake",
            "MONGO_URI": uri,
            "MONGO_COLLECTION": collection,
            "MONGO_WRITE_TIMEOUT_S": "1",
            **env,
        }
    )


@pytest.fixture
def collection() -> str:
    return f"calls_{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def reader(ferretdb: FerretDB) -> AsyncIterator[AsyncMongoClient[Doc]]:
    client: AsyncMongoClient[Doc] = AsyncMongoClient(ferretdb.uri, tz_aware=True)
    yield client
    await client.close()


async def documents(reader: AsyncMongoClient[Doc], collection: str) -> list[Doc]:
    return [d async for d in reader["persona_dispatcher"][collection].find({})]


def call_start(job_id: str, call_id: str = "SCL_1") -> CallStart:
    return CallStart(
        job_id=job_id,
        room=ROOM,
        room_sid="RM_1",
        agent_name="friday",
        dispatch_id="AD_1",
        caller=CALLER,
        call_id=call_id,
        started_at=datetime.now(UTC),
    )


def turn(role: str, text: str) -> Doc:
    return turn_entry({"role": role, "text": text, "interrupted": False}, datetime.now(UTC))


def open_store(settings: AgentSettings, job_id: str) -> CallStore:
    return CallStore.open(settings, job_id=job_id, room=ROOM)


async def test_one_call_leaves_one_document_with_its_start_persona_turns_and_end(
    ferretdb: FerretDB, collection: str, reader: AsyncMongoClient[Doc]
) -> None:
    store = open_store(agent_settings(ferretdb.uri, collection), "AJ_one")
    store.started(call_start("AJ_one"))
    applied = AppliedPersona(loaded(PIRATE, caller=CALLER), "job", 0)
    store.set(persona_fields(applied, event="persona_loaded", when=datetime.now(UTC)))
    store.add_turn(turn("assistant", PIRATE.welcome or ""))
    store.add_turn(turn("user", f"My number is {CALLER}."))
    store.ended({"reason": "participant_disconnected", "error": None}, datetime.now(UTC))
    await store.close(timeout_s=10)

    [doc] = await documents(reader, collection)
    assert doc["_id"] == "AJ_one"
    assert (doc["room"], doc["call_id"], doc["dispatch_id"]) == (
        "call_********1159_ab12cd34",
        "SCL_1",
        "AD_1",
    )
    assert doc["caller"] == "********1159"
    persona = doc["persona"]
    assert (persona["persona_id"], persona["name"], persona["status"]) == (
        PIRATE.persona_id,
        PIRATE.name,
        "loaded",
    )
    assert (persona["instructions"], persona["welcome"], persona["closing"]) == (
        PIRATE.instructions,
        PIRATE.welcome,
        PIRATE.closing,
    )
    assert [e["event"] for e in doc["events"]] == ["persona_loaded"]
    assert [(t["role"], t["text"]) for t in doc["turns"]] == [
        ("assistant", PIRATE.welcome),
        ("user", "My number is ********1159."),
    ]
    assert doc["started_at"] <= doc["turns"][0]["at"] <= doc["ended_at"]
    assert doc["end"] == {"reason": "participant_disconnected", "error": None}
    assert doc["store"]["dropped_turns"] == 0
    [run] = doc[RUNS].values()
    assert run["turns"] == 2


async def test_full_numbers_are_kept_when_the_team_asks_for_them(
    ferretdb: FerretDB, collection: str, reader: AsyncMongoClient[Doc]
) -> None:
    store = open_store(agent_settings(ferretdb.uri, collection, MONGO_UNMASKED="true"), "AJ_full")
    store.started(call_start("AJ_full"))
    store.add_turn(turn("user", f"My number is {CALLER}."))
    await store.close(timeout_s=10)
    [doc] = await documents(reader, collection)
    assert (doc["caller"], doc["room"]) == (CALLER, ROOM)
    assert doc["turns"][0]["text"] == f"My number is {CALLER}."


async def test_a_default_persona_is_recorded_as_not_found(
    ferretdb: FerretDB, collection: str, reader: AsyncMongoClient[Doc]
) -> None:
    store = open_store(agent_settings(ferretdb.uri, collection), "AJ_default")
    store.started(call_start("AJ_default"))
    fallback = default_persona_metadata(caller=CALLER, call_id="SCL_1")
    applied = AppliedPersona(fallback, "none", 2000, problems=("room metadata is empty",))
    store.set(persona_fields(applied, event="persona_not_found", when=datetime.now(UTC)))
    await store.close(timeout_s=10)
    [doc] = await documents(reader, collection)
    assert (doc["persona"]["status"], doc["persona"]["read_from"]) == ("default", "none")
    assert doc["persona"]["problems"] == ["room metadata is empty"]
    assert [e["event"] for e in doc["events"]] == ["persona_not_found"]
    assert doc["end"] == {"reason": "job_ended", "error": None}


async def test_keys_the_server_refuses_are_stored_made_safe(
    ferretdb: FerretDB, collection: str, reader: AsyncMongoClient[Doc]
) -> None:
    """FerretDB refuses keys with `.` or a leading `$` and arrays in arrays (as the writer's own
    probe of it showed); a mapping carrying them, made storable, is stored all the same."""
    store = open_store(agent_settings(ferretdb.uri, collection), "AJ_keys")
    store.started(call_start("AJ_keys"))
    store.set({"extra": storable({"model.temperature": 0.3, "$ref": "x", "grid": [[1, 2]]})})
    await store.close(timeout_s=10)
    [doc] = await documents(reader, collection)
    assert doc["extra"] == {
        "model%2Etemperature": 0.3,
        "%24ref": "x",
        "grid": [{"items": [1, 2]}],
    }


async def test_a_write_the_server_refuses_is_given_up_and_holds_nothing_up(
    ferretdb: FerretDB,
    collection: str,
    reader: AsyncMongoClient[Doc],
    logs: LogCapture,
    counted: CountsSince,
) -> None:
    """A write the server refuses for good (here a `$` key inside a field, which FerretDB
    refuses) is logged and dropped at once; the turns behind it are written all the same."""
    store = open_store(agent_settings(ferretdb.uri, collection), "AJ_refused")
    store.started(call_start("AJ_refused"))
    store.set({"extra": {"$odd": 1}})
    store.add_turn(turn("user", "still here"))
    await eventually(lambda: turns_of(reader, collection, "AJ_refused", 1), 10, "the turn")
    await store.close(timeout_s=10)
    [refused] = logs.named("call_store.write_refused")
    assert refused["write"] == "fields"
    [doc] = await documents(reader, collection)
    assert "extra" not in doc
    assert doc["store"] == {"failed_writes": 1, "dropped_turns": 0}
    assert counted(FAILED, error="refused") == 1
    assert counted(FAILED, error="unavailable") == 0


async def test_a_turns_write_repeated_after_a_lost_answer_adds_nothing_twice(
    ferretdb: FerretDB, collection: str, reader: AsyncMongoClient[Doc]
) -> None:
    settings = agent_settings(ferretdb.uri, collection).call_store
    client = new_client(settings)
    calls = calls_collection(client, settings)
    await calls.insert_one({"_id": "AJ_twice", "turns": []})
    batch = [turn("user", "hello"), turn("assistant", "hi")]
    for _ in range(2):  # the second is the retry of a write whose answer never came
        write = turns_write("AJ_twice", "w1", 0, batch)
        await calls.update_one(write.filter, write.update, upsert=write.upsert)
    await client.close()
    [doc] = await documents(reader, collection)
    assert [t["text"] for t in doc["turns"]] == ["hello", "hi"]


async def test_the_database_killed_mid_call_writes_resume_when_it_is_back(
    ferretdb: FerretDB,
    collection: str,
    reader: AsyncMongoClient[Doc],
    logs: LogCapture,
    counted: CountsSince,
) -> None:
    store = open_store(agent_settings(ferretdb.uri, collection), "AJ_kill")
    store.started(call_start("AJ_kill"))
    store.add_turn(turn("assistant", "before"))
    await eventually(lambda: turns_of(reader, collection, "AJ_kill", 1), 10, "the first turn")

    ferretdb.kill()
    store.add_turn(turn("user", "while down 1"))
    store.add_turn(turn("assistant", "while down 2"))
    await eventually(lambda: logs.named("call_store.unavailable"), 10, "the outage noticed")
    ferretdb.start()
    store.add_turn(turn("user", "after"))
    await eventually(lambda: turns_of(reader, collection, "AJ_kill", 4), 30, "writes resumed")
    await store.close(timeout_s=10)

    [doc] = await documents(reader, collection)
    assert [t["text"] for t in doc["turns"]] == ["before", "while down 1", "while down 2", "after"]
    assert doc["store"]["dropped_turns"] == 0
    assert doc["store"]["failed_writes"] >= 1
    # At least the document's count, taken as the call ended, before its last writes.
    assert counted(FAILED, error="unavailable") >= doc["store"]["failed_writes"]
    assert len(logs.named("call_store.unavailable")) == 1
    [recovered] = logs.named("call_store.recovered")
    assert recovered["failed_writes"] >= 1
    [closed] = logs.named("call_store.closed")
    assert (closed["dropped_turns"], closed["unwritten"]) == (0, 0)


async def turns_of(reader: AsyncMongoClient[Doc], collection: str, job_id: str, n: int) -> bool:
    try:
        doc = await reader["persona_dispatcher"][collection].find_one({"_id": job_id})
    except PyMongoError:  # the reader's own connection, across the restart
        return False
    return doc is not None and len(doc.get("turns", [])) >= n


class LoopLag:
    """The event loop's worst lateness while it runs: what a blocked call would feel."""

    def __init__(self, every_s: float = 0.01) -> None:
        self.every_s = every_s
        self.worst_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _probe(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.every_s)
            self.worst_s = max(self.worst_s, time.perf_counter() - before - self.every_s)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._probe())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers: a hung database."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


async def test_a_hung_database_never_blocks_the_call_and_gives_up_at_its_end(
    silent_server: int, collection: str, logs: LogCapture, counted: CountsSince
) -> None:
    """Writes to a database that never answers: the call's steps never wait, the queue stays
    bounded (the turns past it are counted as dropped), and the end gives up on what is left."""
    uri = f"mongodb://127.0.0.1:{silent_server}/"
    settings = agent_settings(uri, collection, MONGO_MAX_PENDING_TURNS="5")
    store = open_store(settings, "AJ_hung")
    with LoopLag() as lag:
        store.started(call_start("AJ_hung"))
        for i in range(8):
            store.add_turn(turn("user", f"turn {i}"))
        await eventually(lambda: logs.named("call_store.unavailable"), 20, "the outage noticed")
        async with asyncio.timeout(30):  # a hang guard: close gives up after its own 1 s
            await store.close(timeout_s=1)
    assert lag.worst_s < 0.5
    assert store.dropped == 8  # 3 past the bound at once, the 5 pending ones at the end
    assert counted(DROPPED, reason="queue_full") == 3
    assert counted(DROPPED, reason="unwritten") == 5
    assert counted(FAILED, error="unavailable") == store.failed > 0
    assert len(logs.named("call_store.turns_dropped")) == 1
    assert logs.named("call_store.recovered") == []
    [closed] = logs.named("call_store.closed")
    assert closed["dropped_turns"] == 8
    assert closed["unwritten"] > 0


async def test_two_workers_writing_at_once_leave_one_document_per_call(
    ferretdb: FerretDB, collection: str, reader: AsyncMongoClient[Doc]
) -> None:
    """Two workers (two clients) write ten calls each at once, while one job runs twice (a
    dispatch retried on the other worker, the second run once the first has ended): 21
    documents, the shared one with both runs and every turn of each once. (The two runs are not
    simultaneous: FerretDB v1 applies concurrent updates of one document without isolation and
    may lose one, which MongoDB does not; this suite runs on FerretDB.)"""
    settings = agent_settings(ferretdb.uri, collection)

    async def one_call(job_id: str, words: str) -> None:
        store = open_store(settings, job_id)
        store.started(call_start(job_id))
        for i in range(3):
            store.add_turn(turn("user", f"{words} {i}"))
        await store.close(timeout_s=20)

    async def retried_job() -> None:
        await one_call("AJ_shared", "first")
        await one_call("AJ_shared", "second")

    calls = [one_call(f"AJ_{w}_{i}", w) for w in ("a", "b") for i in range(10)]
    await asyncio.gather(*calls, retried_job())

    docs = {d["_id"]: d for d in await documents(reader, collection)}
    assert len(docs) == 21
    shared = docs["AJ_shared"]
    assert len(shared[RUNS]) == 2
    texts = sorted(t["text"] for t in shared["turns"])
    assert texts == sorted(f"{w} {i}" for w in ("first", "second") for i in range(3))
    for job_id, doc in docs.items():
        if job_id != "AJ_shared":
            assert len(doc["turns"]) == 3, job_id


async def test_a_retried_job_adds_a_run_to_the_same_document(
    ferretdb: FerretDB, collection: str, reader: AsyncMongoClient[Doc]
) -> None:
    settings = agent_settings(ferretdb.uri, collection)
    first = open_store(settings, "AJ_retry")
    first.started(call_start("AJ_retry"))
    first.add_turn(turn("assistant", "hello from the first worker"))
    await eventually(lambda: turns_of(reader, collection, "AJ_retry", 1), 10, "first run")
    started_at = (await documents(reader, collection))[0]["started_at"]
    await first.close(timeout_s=10)  # its worker died; the server gave the job to another

    second = open_store(settings, "AJ_retry")
    second.started(call_start("AJ_retry"))
    second.add_turn(turn("assistant", "hello from the second worker"))
    second.ended({"reason": "user_initiated", "error": None}, datetime.now(UTC))
    await second.close(timeout_s=10)

    [doc] = await documents(reader, collection)
    assert len(doc[RUNS]) == 2
    assert doc["started_at"] == started_at
    assert [t["text"] for t in doc["turns"]] == [
        "hello from the first worker",
        "hello from the second worker",
    ]
