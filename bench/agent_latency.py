"""Call set-up latency, SIP participant joined → agent joined → its first audio, over N calls.

The real chain: livekit-server sends `participant_joined` to the dispatcher (a process), which
resolves the persona from the fake CRM API (answering in `--persona-ms`, a distinct number per
call so that nothing is cached), writes it into the room and dispatches the agent worker (a
process, fake model stack: tone TTS). The caller notes when the agent joins and when its first
audio frame (and first audible frame) arrive; the dispatch time is read from the dispatcher's log.

    .venv/bin/python -m bench.agent_latency --calls 20
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from devstack.agent_worker import start_agent_worker
from tests.harness.calls import SipCaller, sip_token
from tests.harness.stack import Stack, start_stack
from tests.harness.timings import percentile

PERSONA_FIELDS = {
    "personality": "You are Priya, a polite assistant for a clinic's appointment line.",
    "messages": {"welcome": "Hello, this is Priya from the clinic. How can I help?"},
}


@dataclass(frozen=True)
class CallTimes:
    """Seconds from the SIP participant joining the room."""

    dispatched: float
    agent_joined: float
    first_frame: float
    first_sound: float


def number(n: int) -> str:
    return f"98765{n:05d}"


def payload(n: int) -> dict[str, object]:
    """The fake CRM API's answer for the bench's n-th caller."""
    return {
        "mobileNo": number(n),
        "campaigns": [{"voiceAgents": [{"persona": {"_id": f"bench-{n}", **PERSONA_FIELDS}}]}],
    }


def dispatched_at(stack: Stack, room: str) -> float | None:
    """Wall time of the dispatcher's `agent.dispatched` for `room`."""
    for e in stack.dispatcher_events(event="agent.dispatched", room=room):
        return datetime.fromisoformat(str(e["ts"]).replace("Z", "+00:00")).timestamp()
    return None


async def one_call(stack: Stack, n: int) -> CallTimes:
    server = stack.livekit
    room = f"call_{number(n)}_{time.monotonic_ns()}"
    token = sip_token(server, room, caller=number(n), call_id=f"B{n}")
    wall_minus_perf = time.time() - time.perf_counter()
    caller = await SipCaller(server.ws_url, token).join()
    try:
        await caller.wait_for_agent()
        await caller.wait_for_sound()
        assert caller.agent_joined_at is not None
        assert caller.first_frame_at is not None
        assert caller.first_sound_at is not None
        dispatched = dispatched_at(stack, room)
        assert dispatched is not None
        return CallTimes(
            dispatched=dispatched - wall_minus_perf - caller.joined_at,
            agent_joined=caller.agent_joined_at - caller.joined_at,
            first_frame=caller.first_frame_at - caller.joined_at,
            first_sound=caller.first_sound_at - caller.joined_at,
        )
    finally:
        await caller.leave()


def report(times: list[CallTimes]) -> None:
    print(f"{len(times)} calls; milliseconds from the SIP participant joining")
    print(f"{'':34} {'p50':>8} {'p95':>8} {'max':>8}")
    for label, values in (
        ("persona written + dispatched", [t.dispatched for t in times]),
        ("agent joined", [t.agent_joined for t in times]),
        ("first agent audio frame", [t.first_frame for t in times]),
        ("first audible agent frame", [t.first_sound for t in times]),
        ("dispatch -> agent joined", [t.agent_joined - t.dispatched for t in times]),
    ):
        ms = [v * 1000 for v in values]
        print(f"{label:34} {percentile(ms, 50):8.0f} {percentile(ms, 95):8.0f} {max(ms):8.0f}")


async def run(stack: Stack, calls: int) -> None:
    times = []
    for n in range(calls):
        times.append(await one_call(stack, n))
        # Let the previous call's job process exit, as between real calls.
        await asyncio.sleep(0.2)
    report(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--persona-ms", type=float, default=50.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="agent-bench-"))
    stack = start_stack(workdir, workdir)
    worker = None
    try:
        stack.persona_control(
            delay_s=args.persona_ms / 1000, extra={number(n): payload(n) for n in range(args.calls)}
        )
        worker = start_agent_worker(stack.livekit, workdir)
        asyncio.run(run(stack, args.calls))
    finally:
        if worker is not None:
            worker.stop()
        stack.stop()
    print(f"logs in {workdir}")


if __name__ == "__main__":
    main()
