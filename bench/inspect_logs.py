"""Times `persona-logs calls` and `stats` over 1,000,000 generated log lines (numbers, no asserts).

Usage: .venv/bin/python bench/inspect_logs.py [--lines N] [--keep PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from operator_tools.log_inspector_cli import main

START = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
PERSONAS = [("loaded", "api", 60), ("cached", "cache", 30), ("stale", "cache", 4)]
PERSONAS += [("file", "file", 2), ("default", "default", 4)]
FOREIGN = [
    b'{"level":"info","ts":1795635600.25,"logger":"livekit","msg":"participant active"}\n',
    b'{"event":"registered worker","level":"info","ts":"2026-11-25T08:00:00Z","service":"agent"}\n',
    b"INFO livekit.agents - process exiting\n",
]


def _ts(t: datetime) -> str:
    # As structlog's TimeStamper(fmt="iso", utc=True) writes it.
    return t.isoformat().replace("+00:00", "Z")


def _call_lines(
    n: int, t: datetime, rng: random.Random
) -> Iterator[tuple[datetime, dict[str, Any]]]:
    """One call's lines from both services, roughly as the services log them."""
    number = f"{rng.randrange(2_000_000_000, 9_999_999_999)}"
    room = f"call_{number}_{n:06x}"
    cid = f"SCL_{n:08x}"
    caller = "******" + number[-4:]
    d = {"service": "dispatcher", "event_id": f"EV_{n}", "room": room, "call_id": cid}
    d["caller"] = caller
    a = {"service": "agent", "room": room, "call_id": cid}
    status, source, _ = rng.choices(PERSONAS, weights=[p[2] for p in PERSONAS])[0]
    fetch_ms = rng.lognormvariate(5.5, 0.5) if status == "loaded" else rng.uniform(0.5, 3)
    setup_ms = fetch_ms + rng.uniform(40, 120)

    def at(ms: float) -> datetime:
        return t + timedelta(milliseconds=ms)

    yield t, {**d, "call_id": None, "event": "webhook.received", "event_type": "participant_joined"}
    yield at(1), {**d, "event": "call.caller_detected", "lookup": "caller", "origin": "attribute"}
    if status == "cached":
        yield at(2), {**d, "event": "persona.cache_hit", "status": "fresh"}
    elif status == "loaded":
        yield at(fetch_ms), {**d, "event": "persona.fetched", "duration_ms": fetch_ms}
    else:
        yield at(fetch_ms), {**d, "level": "warning", "event": "persona.fallback", "status": status}
    yield at(fetch_ms + 1), {**d, "event": "persona.resolved", "status": status, "source": source}
    yield at(fetch_ms + 30), {**d, "event": "room.metadata_written", "bytes": 1843}
    yield at(setup_ms - 1), {**d, "event": "agent.dispatched", "agent_name": "friday"}
    yield at(setup_ms), {**d, "event": "call.setup_done", "duration_ms": round(setup_ms, 1)}
    yield at(setup_ms + 10), {"service": "agent", "room": room, "event": "job.received"}
    yield at(setup_ms + 200), {**a, "event": "persona.applied", "status": status}
    yield at(setup_ms + 600), {**a, "event": "agent.greeted", "ms_since_job": 590}
    turns = rng.randrange(2, 12)
    for i in range(turns):
        role = "user" if i % 2 == 0 else "assistant"
        yield at(setup_ms + 2000 + i * 3000), {**a, "event": "agent.turn", "role": role}
    end = setup_ms + 2000 + turns * 3000
    yield at(end), {**a, "event": "call.ended", "reason": "caller_hangup"}
    yield at(end + 900), {**d, "event": "room.released", "reason": "room_finished"}


def generate(path: Path, lines: int, seed: int = 5) -> int:
    """Write about `lines` log lines (about 1% foreign) and return how many were written."""
    rng = random.Random(seed)
    written = 0
    n = 0
    t = START
    with path.open("wb") as out:
        while written < lines:
            batch = []
            for when, fields in _call_lines(n, t, rng):
                fields.setdefault("level", "info")
                fields["ts"] = _ts(when)
                batch.append(orjson.dumps(fields) + b"\n")
            if rng.random() < 0.2:
                batch.append(rng.choice(FOREIGN))
            # Lines of a call are written near each other, not perfectly ordered across services.
            out.writelines(batch[: lines - written])
            written += min(len(batch), lines - written)
            n += 1
            t += timedelta(milliseconds=rng.uniform(200, 2000))
    return written


def timed(argv: list[str]) -> float:
    sink = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(io.StringIO()):
        status = main(argv)
    elapsed = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"{argv} exited {status}")
    return elapsed


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="write the generated log here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "bench.log"
        t0 = time.perf_counter()
        written = generate(path, args.lines)
        size_mb = os.path.getsize(path) / 1e6
        print(f"generated {written:,} lines ({size_mb:.0f} MB) in {time.perf_counter() - t0:.1f} s")
        runs = (
            ["calls", str(path)],
            ["stats", str(path)],
            ["calls", "--json", str(path)],
            ["show", "SCL_00000010", str(path)],  # keeps every call's lines: the memory-heavy one
        )
        for argv in runs:
            elapsed = timed(argv)
            what = " ".join(argv[:-1])
            print(f"{what:<20} {elapsed:6.2f} s  {written / elapsed:>12,.0f} lines/s")
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    run()
