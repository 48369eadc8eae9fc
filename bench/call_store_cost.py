"""What writing each call's document to MongoDB costs (agent/call_store.py), on a burst of calls.

A real livekit-server and the agent worker (a process, fake model stack), twice: without
MONGO_URI, then with it, writing to FerretDB (the tests' MongoDB wire-protocol server). Each run
places `--calls` calls at once, each as the dispatcher leaves it (persona in room metadata, then
a dispatch): the agent greets, the caller says a line, the agent answers, the caller says
goodbye, the agent speaks its closing line and hangs up. Printed: the worker's CPU (its whole
process tree: the worker, the forkserver, every job process) per call in each run and the
difference, the requests and bytes each call's writes took (from `call_store.closed`), and the
database's own CPU; then the writer's CPU alone, in this process, over as many simulated calls
(the same writes, no call around them). With `--show-document`, one stored document (numbers
masked) as JSON.

    .venv/bin/python -m bench.call_store_cost --calls 20

Figures for reading, never asserted on; the machine's other work during each run is printed
beside it (a shared machine makes single runs noisy: `--rounds` repeats both runs).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from livekit import api
from pymongo import MongoClient

from agent.call_record import CallStart, persona_fields, turn_entry
from agent.call_store import CallStore
from agent.persona import AppliedPersona
from config.agent_settings import AgentSettings, load_agent_settings
from devstack.agent_worker import AgentWorker, start_agent_worker
from devstack.logs import read_log_events
from devstack.services import LiveKitServer, start_livekit_server
from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET
from telemetry.logs import configure_logging
from tests.agent.helpers import LIBRARIAN, contract_dispatch_metadata, contract_metadata, loaded
from tests.harness.calls import SipCaller, create_dispatch, livekit_api, sip_token
from tests.harness.calls import write_room_metadata as write_metadata
from tests.harness.ferretdb import FerretDB, start_ferretdb, stop_ferretdb
from tests.harness.proc_stats import cpu_seconds_by_process, descendants, foreign_cpu_seconds
from tests.harness.stack import eventually
from tests.harness.timings import percentile

AGENT_NAME = "friday"
COLLECTION = "calls"


def number(n: int) -> str:
    return f"98765{n:05d}"


def agent_turns(transcript: Path, room: str) -> int:
    """How many turns the agent has spoken in `room` (the transcript masks numbers)."""
    turns = read_log_events(transcript, room=room, event="turn", role="assistant")
    return len(turns)


async def one_call(server: LiveKitServer, lk: api.LiveKitAPI, transcript: Path, n: int) -> bool:
    """One call from greeting to the agent's hang-up; False if it did not get that far (under a
    burst livekit-server has been seen to give a dispatch no job)."""
    room = f"call_{number(n)}_{uuid.uuid4().hex[:8]}"
    call_id = f"SCL_bench_{n}"
    caller = SipCaller(server.ws_url, sip_token(server, room, caller=number(n), call_id=call_id))
    await caller.join()
    gone = asyncio.Event()
    caller.room.on("disconnected", lambda *_: gone.set())
    try:
        meta = contract_metadata(LIBRARIAN, caller=number(n), call_id=call_id)
        await write_metadata(lk, room, meta)
        await create_dispatch(lk, room, AGENT_NAME, contract_dispatch_metadata(number(n), call_id))
        await eventually(lambda: agent_turns(transcript, room) >= 1, 120, "the greeting")
        await caller.room.local_participant.send_text("When do you open?", topic="lk.chat")
        await eventually(lambda: agent_turns(transcript, room) >= 2, 120, "the answer")
        await caller.room.local_participant.send_text("Thanks, goodbye!", topic="lk.chat")
        async with asyncio.timeout(120):
            await gone.wait()
        return True
    except (AssertionError, TimeoutError) as e:
        print(f"call {n} did not complete: {e}")
        return False
    finally:
        await caller.leave()


@dataclass
class Burst:
    mode: str
    calls: int
    completed: int
    cpu_s: float
    other_cpu_s: float
    db_cpu_s: float | None
    wall_s: float


async def burst(
    server: LiveKitServer, worker: AgentWorker, calls: int, offset: int, db: FerretDB | None
) -> Burst:
    """`calls` calls at once; the worker tree's CPU from before the first until every job
    process of the burst has exited."""
    assert worker.process is not None
    root = worker.process.pid
    settled = len(descendants(root))
    transcript = Path(worker.env["TRANSCRIPT_PATH"])
    lk = livekit_api(server)
    before = cpu_seconds_by_process()
    started = time.monotonic()
    try:
        done = await asyncio.gather(
            *(one_call(server, lk, transcript, offset + n) for n in range(calls))
        )
    finally:
        await lk.aclose()
    # Every job process of the burst has ended, its last writes with it.
    await eventually(lambda: len(descendants(root)) <= settled, 120, "the jobs' end", 0.2)
    wall = time.monotonic() - started
    after = cpu_seconds_by_process()
    tree = descendants(root)
    used = sum(t - before.get(pid, 0.0) for pid, t in after.items() if pid in tree)
    db_used = None
    if db is not None and db.process is not None:
        db_pid = db.process.pid
        db_used = round(after.get(db_pid, 0.0) - before.get(db_pid, 0.0), 2)
    return Burst(
        "with MONGO_URI" if db is not None else "without",
        calls,
        sum(done),
        round(used, 2),
        foreign_cpu_seconds(before, after, root),
        db_used,
        round(wall, 1),
    )


async def simulated_call(settings: AgentSettings, n: int) -> None:
    """One call's writes as a job makes them (its own client, start, persona, caller, models,
    six turns as they come, the end), without the call around them."""
    job_id = f"AJ_sim_{uuid.uuid4().hex[:10]}"
    store = CallStore.open(settings, job_id=job_id, room=f"call_{number(n)}_sim")
    now = datetime.now(UTC)
    store.started(
        CallStart(
            job_id,
            f"call_{number(n)}_sim",
            "RM_x",
            AGENT_NAME,
            "AD_x",
            number(n),
            f"SCL_sim_{n}",
            now,
        )
    )
    applied = AppliedPersona(loaded(LIBRARIAN, caller=number(n), call_id=f"SCL_sim_{n}"), "job", 0)
    store.set(persona_fields(applied, event="persona_loaded", when=now))
    store.set({"dialed": "8000000000", "answered_at": now})
    store.set({"models": {"stack": "fake", "llm": "recording-fake", "tts": "tone-fake"}})
    for i in range(6):
        await asyncio.sleep(0.3)  # turns come apart, as in a call
        role = "assistant" if i % 2 == 0 else "user"
        store.add_turn(turn_entry({"role": role, "text": f"line {i}", "interrupted": False}, now))
    store.ended({"reason": "user_initiated", "error": None}, datetime.now(UTC))
    await store.close(timeout_s=30)


async def writer_cpu_per_call(db: FerretDB, calls: int) -> float:
    """CPU seconds per call of the writer alone (this process), `calls` simulated calls at once."""
    settings = load_agent_settings(
        {
            "LIVEKIT_URL": "ws://127.0.0.1:7880",
            "LIVEKIT_API_KEY": DEV_API_KEY,
            "LIVEKIT_API_SECRET": DEV_API_SECRET,
            "AGENT_STACK": "fake",
            "MONGO_URI": db.uri,
            "MONGO_COLLECTION": "simulated",
            "MONGO_WRITE_TIMEOUT_S": "30",  # the figure is CPU per call, not retries
        }
    )
    await simulated_call(settings, 0)  # imports and first connection, once
    before = time.process_time()
    await asyncio.gather(*(simulated_call(settings, n) for n in range(calls)))
    return (time.process_time() - before) / calls


def write_costs(worker: AgentWorker) -> list[dict[str, Any]]:
    return worker.log_records(event="call_store.closed")


def report(bursts: list[Burst], costs: list[dict[str, Any]]) -> None:
    print(
        f"{'run':16} {'calls':>5} {'done':>4} {'worker cpu s':>12} {'ms/call':>8}"
        f" {'other cpu s':>11} {'db cpu s':>8} {'wall s':>6}"
    )
    for b in bursts:
        db = "-" if b.db_cpu_s is None else f"{b.db_cpu_s:.2f}"
        print(
            f"{b.mode:16} {b.calls:5} {b.completed:4} {b.cpu_s:12.2f}"
            f" {b.cpu_s / b.calls * 1000:8.1f} {b.other_cpu_s:11.2f} {db:>8} {b.wall_s:6.1f}"
        )
    off = [b.cpu_s / b.calls for b in bursts if b.db_cpu_s is None]
    on = [b.cpu_s / b.calls for b in bursts if b.db_cpu_s is not None]
    if off and on:
        added = (sum(on) / len(on) - sum(off) / len(off)) * 1000
        print(f"added CPU per call in the worker (mean of runs with - without): {added:.1f} ms")
    if costs:
        for field in ("requests", "bytes", "failed_writes", "dropped_turns", "duration_ms"):
            values = [float(c[field]) for c in costs]
            print(
                f"per call {field:14} p50 {percentile(values, 50):8.0f}"
                f"  max {max(values):8.0f}  (n={len(values)})"
            )


async def run(args: argparse.Namespace, workdir: Path) -> None:
    db = start_ferretdb(workdir / "ferretdb.log")
    server = start_livekit_server(log_path=workdir / "livekit-server.log")
    bursts: list[Burst] = []
    costs: list[dict[str, Any]] = []
    try:
        for round_ in range(args.rounds):
            for use_db in (False, True):
                mode_dir = workdir / f"round{round_}-{'mongo' if use_db else 'file'}"
                if use_db:
                    worker = start_agent_worker(
                        server, mode_dir, MONGO_URI=db.uri, MONGO_COLLECTION=COLLECTION
                    )
                else:
                    worker = start_agent_worker(server, mode_dir)
                try:
                    offset = (round_ * 2 + use_db) * 1000
                    await burst(server, worker, 1, offset + 900, db if use_db else None)  # warm
                    bursts.append(
                        await burst(server, worker, args.calls, offset, db if use_db else None)
                    )
                    costs += write_costs(worker)[1:]  # the warm-up call's first
                finally:
                    worker.stop()
        report(bursts, costs)
        cpu = await writer_cpu_per_call(db, args.calls)
        print(f"writer CPU per call, alone ({args.calls} simulated calls): {cpu * 1000:.1f} ms")
        if args.show_document:
            client: MongoClient[dict[str, Any]]
            with MongoClient(db.uri, tz_aware=True) as client:
                doc = client["persona_dispatcher"][COLLECTION].find_one(
                    {"end": {"$exists": True}}, sort=[("started_at", -1)]
                )
            print(orjson.dumps(doc, default=str, option=orjson.OPT_INDENT_2).decode())
    finally:
        server.stop()
        stop_ferretdb(db)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--show-document", action="store_true")
    args = parser.parse_args()
    # The simulated calls' own log lines (call_store.closed) would bury the figures.
    configure_logging("warning")
    workdir = Path(tempfile.mkdtemp(prefix="call-store-bench-"))
    asyncio.run(run(args, workdir))
    print(f"logs in {workdir}")


if __name__ == "__main__":
    main()
