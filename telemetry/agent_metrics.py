"""The agent worker's Prometheus metrics: counted in its job processes, served by the worker.

Each call runs in a job process of its own, so the counts are kept with prometheus_client's
multiprocess mode: a job process that counts something writes it to a small file in the
worker's metrics directory (`count_in_files`, from the job process's set-up), and the worker's
endpoint (`serve_metrics`, `AGENT_METRICS_PORT`) sums the files of every job process, running or
ended, at each scrape.

Not livekit-agents' own metrics server (`prometheus_port`, `prometheus_multiproc_dir`): with a
multiprocess directory it also walks the whole process table twice a second to count its child
processes (`psutil.Process.children(recursive=True)`, 1.5-3.5 ms a time here), CPU an idle
worker would spend for a gauge no one here reads.

Only what is not counted elsewhere is counted here, and only what happens on some calls: a job
process that counts nothing writes no file. Call set-ups and their outcomes are the
dispatcher's metrics (telemetry/metrics.py). Counters with labels have no series until the first
count: an alert on `increase(...)` sees nothing rather than zero before that.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Literal

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

PREFIX = "persona_agent"
# Where prometheus_client's multiprocess values write their files.
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

FailedWrite = Literal["unavailable", "refused"]
DropReason = Literal["queue_full", "refused", "unwritten"]
TransferResult = Literal["transferred", "failed"]
AnnounceResult = Literal["spoken", "cut"]

CALL_STORE_FAILED_WRITES = Counter(
    f"{PREFIX}_call_store_failed_writes_total",
    "Writes of a call's database document (MONGO_URI) that failed, by error: unavailable (the "
    "database did not answer in time or could not be reached; retried with back-off) or refused "
    "(the database rejected the write; given up).",
    ["error"],
)
CALL_STORE_DROPPED_TURNS = Counter(
    f"{PREFIX}_call_store_dropped_turns_total",
    "Conversation turns missing from a call's database document (the transcript file keeps "
    "them), by reason: queue_full (more pending than MONGO_MAX_PENDING_TURNS while the database "
    "was down), refused (in a write the database rejected), unwritten (still pending when the "
    "call's flush time ran out).",
    ["reason"],
)
TRANSFERS = Counter(
    f"{PREFIX}_transfers_total",
    "Transfers of the caller to a human (the transfer_call tool), by outcome: transferred (the "
    "far end took the SIP REFER) or failed (refused, timed out or no caller; the call goes on).",
    ["outcome"],
)
ANNOUNCEMENTS = Counter(
    f"{PREFIX}_announcements_total",
    "Callers the CRM does not know told UNKNOWN_CALLER_MESSAGE and hung up on "
    "(UNKNOWN_CALLER_POLICY=announce), by outcome: spoken (the message played out) or cut (the "
    "caller hung up before its end).",
    ["outcome"],
)

COUNTERS = (CALL_STORE_FAILED_WRITES, CALL_STORE_DROPPED_TURNS, TRANSFERS, ANNOUNCEMENTS)


def count_failed_write(error: FailedWrite) -> None:
    CALL_STORE_FAILED_WRITES.labels(error=error).inc()


def count_dropped_turns(reason: DropReason, turns: int) -> None:
    if turns > 0:
        CALL_STORE_DROPPED_TURNS.labels(reason=reason).inc(turns)


def count_transfer(outcome: TransferResult) -> None:
    TRANSFERS.labels(outcome=outcome).inc()


def count_announcement(outcome: AnnounceResult) -> None:
    ANNOUNCEMENTS.labels(outcome=outcome).inc()


def count_in_files(directory: Path) -> None:
    """Keep this process's counts in `directory`, for the worker's endpoint to sum: called by
    each job process before its call. prometheus_client chooses where values live when it is
    first imported (by livekit-agents, long before a setting is read); the counters above have
    labels, so each series' value is made at its first count, by the class chosen here."""
    os.environ[MULTIPROC_DIR_ENV] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def exposition(directory: Path) -> bytes:
    """Every job process's counts in `directory`, summed, in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=True)
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def empty_directory(directory: Path) -> None:
    """A worker starts from no counts: a previous run's files are removed."""
    directory.mkdir(parents=True, exist_ok=True)
    for f in directory.glob("*.db"):
        f.unlink(missing_ok=True)


async def serve_metrics(host: str, port: int, directory: Path) -> web.AppRunner:
    """`GET /metrics` on `host:port`, read from `directory` off the event loop (a scrape reads
    a file per job process that counted); stop it with `await runner.cleanup()`."""

    async def metrics(_: web.Request) -> web.Response:
        body = await asyncio.to_thread(exposition, directory)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
