"""Each call's document in MongoDB (MONGO_URI), beside the transcript file: a record of the call,
never a condition of it.

The job hands its facts to a `CallStore` without waiting: each method only notes them. One task
per job writes them in order (the start upsert, then pending fields, then turns in batches), each
write within MONGO_WRITE_TIMEOUT_S. A write that fails is retried with back-off until it goes
through or the call's end gives up on it; meanwhile fields coalesce and turns queue, up to
MONGO_MAX_PENDING_TURNS (later ones are dropped and counted; the transcript file keeps them).
An outage logs `call_store.unavailable` once and `call_store.recovered` when a write goes
through again; `call_store.closed` counts each call's requests, bytes, failed writes and
dropped turns.

Why PyMongo's `AsyncMongoClient`: the official driver's own asyncio client (stable since 4.13);
Motor, the older asyncio wrapper, reached end of life.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import datetime
from typing import Any, Literal

import bson
from livekit import rtc
from livekit.agents.voice import AgentSession
from livekit.agents.voice.events import (
    CloseEvent,
    ConversationItemAddedEvent,
    FunctionToolsExecutedEvent,
)
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError, WriteError

from agent.call_record import (
    INDEXES,
    TURNS,
    CallStart,
    Write,
    at,
    caller_fields,
    end_fields,
    fields_write,
    is_answered,
    masked,
    start_write,
    store_fields,
    tool_entry,
    turn_entry,
    turns_write,
)
from agent.persona import SIP_KIND
from agent.transcript import close_fields, tool_call_fields, turn_fields
from config.agent_settings import AgentSettings, CallStoreSettings
from telemetry.agent_metrics import (
    DropReason,
    FailedWrite,
    count_dropped_turns,
    count_failed_write,
)
from telemetry.logs import get_logger
from telemetry.timing import ms_since

log = get_logger(__name__)

Document = dict[str, Any]
# What became of one attempt at a write.
Outcome = Literal["written", "refused", "retry"]

RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0
# Turns per write at most: a long backlog goes in a few writes, none of them huge.
MAX_BATCH = 100


def backoff_s(attempt: int) -> float:
    """The wait before retry number `attempt` (from 0): doubling up to RETRY_MAX_S, jittered so
    that the calls of a worker do not retry in step."""
    ceiling: float = min(RETRY_MAX_S, RETRY_FIRST_S * 2.0**attempt)
    return ceiling * random.uniform(0.5, 1.0)


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:300]


class CommandCounter(monitoring.CommandListener):
    """Counts the commands a client sends and their size (BSON bytes): a call's write cost."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.requests += 1
        self.bytes += len(bson.encode(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def new_client(
    settings: CallStoreSettings, counter: CommandCounter | None = None
) -> AsyncMongoClient[Document]:
    """A client whose every operation (server selection and connecting included) gives up after
    MONGO_WRITE_TIMEOUT_S; it connects on first use."""
    ms = round(settings.write_timeout_s * 1000)
    return AsyncMongoClient(
        settings.uri,
        appname="persona-agent",
        timeoutMS=ms,
        serverSelectionTimeoutMS=ms,
        connectTimeoutMS=ms,
        tz_aware=True,
        event_listeners=[counter] if counter is not None else [],
    )


def calls_collection(
    client: AsyncMongoClient[Document], settings: CallStoreSettings
) -> AsyncCollection[Document]:
    return client[settings.database][settings.collection]


async def create_indexes(collection: AsyncCollection[Document]) -> list[str]:
    """The indexes of `INDEXES` (creating one that exists is a no-op); their names."""
    return [await collection.create_index([(key, direction)]) for key, direction in INDEXES]


async def ensure_indexes(settings: CallStoreSettings) -> None:
    """At worker start: the indexes, retried with back-off while the database cannot be reached
    (`call_store.indexes_failed` once), until they exist (`call_store.indexes_ready`)."""
    client = new_client(settings)
    try:
        attempt = 0
        while True:
            try:
                names = await create_indexes(calls_collection(client, settings))
            except PyMongoError as e:
                if attempt == 0:
                    log.warning("call_store.indexes_failed", error=_error(e))
                await asyncio.sleep(backoff_s(attempt))
                attempt += 1
                continue
            log.info(
                "call_store.indexes_ready",
                database=settings.database,
                collection=settings.collection,
                indexes=names,
            )
            return
    finally:
        await client.close()


class CallStore:
    """One job's writer of its call's document; without MONGO_URI every method does nothing."""

    def __init__(
        self,
        collection: AsyncCollection[Document] | None,
        *,
        job_id: str,
        room: str,
        write_timeout_s: float = 2.0,
        max_pending_turns: int = 500,
        unmasked: bool = False,
        region: str | None = None,
        client: AsyncMongoClient[Document] | None = None,
        counter: CommandCounter | None = None,
    ) -> None:
        self.job_id = job_id
        self.room = room
        self.call_id: str | None = None
        # This run of the job, as the document's `runs` map names it.
        self.writer = uuid.uuid4().hex[:12]
        self.failed = 0
        self.dropped = 0
        self._collection = collection
        self._client = client
        self._counter = counter or CommandCounter()
        self._write_timeout_s = write_timeout_s
        self._max_pending_turns = max_pending_turns
        self._unmasked = unmasked
        self._region = region
        self._start: Write | None = None
        self._fields: Document = {}
        self._turns: list[Document] = []
        self._written = 0
        self._caller: Document = {}
        self._answered = False
        self._queue_was_full = False
        self._ended = False
        self._closing = False
        self._closed = False
        self._retries = 0
        self._down_since: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, settings: AgentSettings, *, job_id: str, room: str) -> CallStore:
        """The store for one job under `settings` (off without MONGO_URI)."""
        cs = settings.call_store
        options: dict[str, Any] = {
            "job_id": job_id,
            "room": room,
            "write_timeout_s": cs.write_timeout_s,
            "max_pending_turns": cs.max_pending_turns,
            "unmasked": cs.unmasked or settings.logs.unmasked,
            "region": settings.numbers.region,
        }
        if not cs.enabled:
            return cls(None, **options)
        counter = CommandCounter()
        client = new_client(cs, counter)
        return cls(calls_collection(client, cs), client=client, counter=counter, **options)

    @property
    def enabled(self) -> bool:
        return self._collection is not None

    # ---- what the call tells it (never waits) ---------------------------------------------

    def started(self, start: CallStart) -> None:
        """The call's first trace: an upsert at job start."""
        self.call_id = start.call_id
        self._start = start_write(start, self.writer, unmasked=self._unmasked, region=self._region)
        self._kick()

    def set(self, fields: Document) -> None:
        """Top-level fields of the document (masked here unless unmasked)."""
        if not self.enabled or not fields:
            return
        self.call_id = fields.get("call_id", self.call_id)
        self._fields.update(masked(fields, unmasked=self._unmasked, region=self._region))
        self._kick()

    def add_turn(self, entry: Document) -> None:
        """A turn of the conversation, or a tool call; dropped (and counted) past the bound."""
        if not self.enabled:
            return
        if len(self._turns) >= self._max_pending_turns:
            if not self._queue_was_full:
                self._queue_was_full = True
                log.warning(
                    "call_store.turns_dropped",
                    room=self.room,
                    call_id=self.call_id,
                    pending=len(self._turns),
                )
            self._drop("queue_full", 1)
            return
        self._turns.append(masked(entry, unmasked=self._unmasked, region=self._region))
        self._kick()

    def ended(self, end: Document, when: datetime) -> None:
        """How the call ended (the first account wins: the session's, else the job's)."""
        if self._ended:
            return
        self._ended = True
        self.set(end_fields(end, when))

    def attach(self, session: AgentSession[Any]) -> None:
        """Record the session's turns, tool calls and its end, as the transcript file does."""
        if not self.enabled:
            return
        session.on("conversation_item_added", self._on_item)
        session.on("function_tools_executed", self._on_tools)
        session.on("close", self._on_close)

    def follow_caller(self, room: rtc.Room) -> None:
        """The caller's SIP participant: its call id and numbers, when it is answered, when it
        leaves."""
        if not self.enabled:
            return
        for participant in room.remote_participants.values():
            self._on_participant(participant)
        room.on("participant_connected", self._on_participant)
        room.on("participant_attributes_changed", self._on_attributes)
        room.on("participant_disconnected", self._on_left)

    def _on_item(self, ev: ConversationItemAddedEvent) -> None:
        if (turn := turn_fields(ev)) is not None:
            self.add_turn(turn_entry(turn, at(ev.created_at)))

    def _on_tools(self, ev: FunctionToolsExecutedEvent) -> None:
        for call in tool_call_fields(ev):
            self.add_turn(tool_entry(call, at(ev.created_at)))

    def _on_close(self, ev: CloseEvent) -> None:
        self.ended(close_fields(ev), at(ev.created_at))

    def _on_participant(self, p: rtc.RemoteParticipant) -> None:
        if p.kind != SIP_KIND:
            return
        fields = {k: v for k, v in caller_fields(p.attributes).items() if self._caller.get(k) != v}
        self._caller.update(fields)
        if not self._answered and is_answered(p.attributes):
            self._answered = True
            fields["answered_at"] = at(time.time())
        self.set(fields)

    def _on_attributes(self, _changed: dict[str, str], p: rtc.Participant) -> None:
        if isinstance(p, rtc.RemoteParticipant):
            self._on_participant(p)

    def _on_left(self, p: rtc.RemoteParticipant) -> None:
        if p.kind == SIP_KIND:
            self.set({"caller_left_at": at(time.time())})

    # ---- the writer ---------------------------------------------------------------------------

    def _fail(self, error: FailedWrite) -> None:
        """A write that failed: in the document's count and the worker's metric."""
        self.failed += 1
        count_failed_write(error)

    def _drop(self, reason: DropReason, turns: int) -> None:
        """Turns that will not reach the document: in its count and the worker's metric."""
        self.dropped += turns
        count_dropped_turns(reason, turns)

    def _kick(self) -> None:
        if not self.enabled or self._closed:
            return
        if self._task is None:
            self._task = asyncio.create_task(self._write_all(), name="call-store")
        self._wake.set()

    def _next(self) -> Write | None:
        """The next write, from what is pending now (so a retry carries what came meanwhile)."""
        if self._start is not None:
            return self._start
        if self._fields:
            return fields_write(self.job_id, dict(self._fields))
        if self._turns:
            return turns_write(self.job_id, self.writer, self._written, self._turns[:MAX_BATCH])
        return None

    def _done(self, write: Write, outcome: Outcome) -> None:
        """`write` is no longer pending: written, or refused for good (its turns dropped)."""
        if write.kind == "started":
            self._start = None
        elif write.kind == "fields":
            for key, value in write.update["$set"].items():
                if self._fields.get(key) is value:  # not replaced while the write was out
                    del self._fields[key]
        else:
            sent = len(write.update["$push"][TURNS]["$each"])
            del self._turns[:sent]
            if outcome == "written":
                self._written += sent
            else:
                self._drop("refused", sent)

    async def _write_all(self) -> None:
        assert self._collection is not None
        while True:
            write = self._next()
            if write is None:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            outcome = await self._try(self._collection, write)
            if outcome == "retry":
                await asyncio.sleep(backoff_s(self._retries))
                self._retries += 1
                continue
            self._retries = 0
            self._done(write, outcome)

    async def _try(self, collection: AsyncCollection[Document], write: Write) -> Outcome:
        """One attempt at `write`: written, refused by the server for good, or to be retried
        (the outage noted)."""
        try:
            async with asyncio.timeout(self._write_timeout_s):
                await collection.update_one(write.filter, write.update, upsert=write.upsert)
        except DuplicateKeyError:
            # Two runs of the job upserted the new document at once; the other one made it, so
            # the same upsert now updates it.
            return "retry"
        except WriteError as e:
            # The server refuses this write as it is: retrying cannot help, and it must not hold
            # up the writes queued behind it.
            self._fail("refused")
            log.warning(
                "call_store.write_refused",
                room=self.room,
                call_id=self.call_id,
                write=write.kind,
                error=_error(e),
            )
            return "refused"
        except (PyMongoError, TimeoutError) as e:
            self._fail("unavailable")
            if self._down_since is None:
                self._down_since = time.perf_counter()
                log.warning(
                    "call_store.unavailable",
                    room=self.room,
                    call_id=self.call_id,
                    write=write.kind,
                    error=_error(e),
                )
            return "retry"
        if self._down_since is not None:
            log.info(
                "call_store.recovered",
                room=self.room,
                call_id=self.call_id,
                down_ms=ms_since(self._down_since),
                failed_writes=self.failed,
            )
            self._down_since = None
        return "written"

    async def close(self, *, timeout_s: float, end_reason: str = "job_ended") -> None:
        """The call's end: its last fields written within `timeout_s`, whatever is left then
        given up (and counted), the client closed. `end_reason` when the session never said."""
        if not self.enabled:
            return
        started = time.perf_counter()
        self.ended({"reason": end_reason, "error": None}, at(time.time()))
        self.set(store_fields(failed=self.failed, dropped=self.dropped))
        self._closing = True
        self._wake.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=timeout_s)
            if not done:
                self._task.cancel()
            [outcome] = await asyncio.gather(self._task, return_exceptions=True)
            if isinstance(outcome, Exception):
                log.error("call_store.writer_failed", room=self.room, exc_info=outcome)
        self._closed = True
        self._drop("unwritten", len(self._turns))
        log.info(
            "call_store.closed",
            room=self.room,
            call_id=self.call_id,
            requests=self._counter.requests,
            bytes=self._counter.bytes,
            failed_writes=self.failed,
            dropped_turns=self.dropped,
            unwritten=len(self._turns) + len(self._fields) + (self._start is not None),
            duration_ms=ms_since(started),
        )
        if self._client is not None:
            await self._client.close()
