"""What masking phone numbers costs per log line, by the numbering plan (`phone_region`) and by
the every-run rule (no plan).

It redacts a typical set-up event (room, caller, event id, byte count, call id, time) and prints
the mean microseconds per event: warm (the same call's numbers again, as a call's ~10 lines are)
and cold (a new room and number every event, the parser's cache missed).

Usage: .venv/bin/python -m bench.redaction [--events 20000]
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from telemetry.logs import redact


def event(number: int, suffix: str) -> dict[str, Any]:
    return {
        "event": "call.setup_done",
        "room": f"call_{number}_{suffix}",
        "caller": str(number),
        "event_id": "EV_123456784866",
        "duration_ms": 12.3,
        "bytes": 1048576,
        "ts": "2026-11-25T19:28:34.671888Z",
        "call_id": "SCL_e78353174e03",
    }


def per_event_us(events: list[dict[str, Any]], region: str | None) -> float:
    started = time.perf_counter()
    for e in events:
        redact(e, region)
    return (time.perf_counter() - started) / len(events) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args()
    rng = random.Random(17)
    warm = [event(8655701159, "ab12cd34")] * args.events
    cold = [
        event(rng.randrange(6 * 10**9, 10**10), f"{rng.randrange(16**8):08x}")
        for _ in range(args.events)
    ]
    print(f"{'rule':<12} {'warm us/event':>14} {'cold us/event':>14}")
    for name, region in (("plan (IN)", "IN"), ("every run", None)):
        print(f"{name:<12} {per_event_us(warm, region):>14.1f} {per_event_us(cold, region):>14.1f}")


if __name__ == "__main__":
    main()
