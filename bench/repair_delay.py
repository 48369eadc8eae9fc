"""How long a caller whose webhook was lost waits for the reconciler: SIP-kind callers join rooms
of a real livekit-server whose webhooks reach no dispatcher; the dispatcher (a process, default
RECONCILE_INTERVAL_S and RECONCILE_GRACE_S unless given) finds them. Prints p50/p95 of
join → dispatch created (the server's own timestamps).

Usage: .venv/bin/python -m bench.repair_delay [--calls 20] [--interval 2] [--grace 3]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import tempfile
from pathlib import Path

from livekit import api, rtc

from devstack.processes import ROOT
from tests.harness.stack import agent_dispatches, eventually, join_sip, start_stack, unique_room
from tests.harness.timings import percentile


async def run(calls: int, interval: str, grace: str) -> None:
    stack = start_stack(
        ROOT / "var" / "log" / "bench-repair",
        Path(tempfile.mkdtemp()),
        dispatcher_env={"RECONCILE_INTERVAL_S": interval, "RECONCILE_GRACE_S": grace},
        lose_webhooks=True,
    )
    lk = stack.api()
    joined: list[rtc.Room] = []
    delays: list[float] = []
    try:
        rooms = []
        for _ in range(calls):
            room = unique_room("8655701159")
            joined.append(await join_sip(stack, room, "8655701159"))
            rooms.append(room)
            await asyncio.sleep(random.uniform(0, float(interval)))  # arrivals spread over ticks
        for room in rooms:
            [dispatch] = await eventually(
                functools.partial(agent_dispatches, lk, room, "friday"), 60, "a dispatch"
            )
            listed = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
            [caller] = [p for p in listed.participants if p.kind == api.ParticipantInfo.Kind.SIP]
            delays.append(dispatch.state.created_at / 1e6 - caller.joined_at_ms)
        print(
            f"repair delay (join -> dispatch), {calls} lost webhooks, interval {interval} s, "
            f"grace {grace} s: p50 {percentile(delays, 50):.0f} ms  "
            f"p95 {percentile(delays, 95):.0f} ms  max {max(delays):.0f} ms"
        )
    finally:
        for r in joined:
            await r.disconnect()
        await lk.aclose()
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--interval", default="2")
    parser.add_argument("--grace", default="3")
    args = parser.parse_args()
    asyncio.run(run(args.calls, args.interval, args.grace))


if __name__ == "__main__":
    main()
