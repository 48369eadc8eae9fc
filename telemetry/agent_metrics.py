"""The agent worker's Prometheus metrics: counted in its job processes, served by the worker.

Each call runs in a job process of its own, so the counts are kept with prometheus_client's
multiprocess mode: a job process that counts something writes it to a small file in the
worker's metrics directory, and livekit-agents' metrics server (`AGENT_METRICS_PORT`) sums the
files of every job process, running or ended, at each scrape. The directory is emptied when the
worker starts.

Only what is not counted elsewhere is counted here, and only what happens on some calls: a job
process that counts nothing writes no file. Call set-ups and their outcomes are the
dispatcher's metrics (telemetry/metrics.py). Counters with labels have no series until the first
count: an alert on `increase(...)` sees nothing rather than zero before that.
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import Counter

PREFIX = "persona_agent"

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
