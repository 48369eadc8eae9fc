"""Call set-up latency of the agent worker against a real livekit-server, over N calls.

For each call a SIP-kind participant joins, then what the dispatcher does is simulated (a persona
lookup taking `--persona-ms`, the persona written into room metadata, an explicit dispatch), and
the caller notes when the agent joins and when its first audio frame (and first audible frame)
arrive. The worker runs as its own process with the fake model stack (tone TTS), so the numbers
are LiveKit + livekit-agents + this worker, not a model provider.

    .venv/bin/python -m bench.agent_latency --calls 20
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dispatcher.contract import Persona, PersonaMetadata
from scripts.agent_worker import start_agent_worker
from scripts.calls import SipCaller, dispatch_agent, livekit_api, seed_persona, sip_token
from scripts.stack import LiveKitServer, start_livekit_server

PERSONA = Persona(
    instructions="You are Priya, a polite assistant for a clinic's appointment line.",
    persona_id="bench",
    welcome="Hello, this is Priya from the clinic. How can I help?",
    closing="Thank you, goodbye.",
)


@dataclass(frozen=True)
class CallTimes:
    """Seconds from the SIP participant joining the room."""

    dispatched: float
    agent_joined: float
    first_frame: float
    first_sound: float


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


async def one_call(server: LiveKitServer, n: int, persona_ms: float, agent_name: str) -> CallTimes:
    room = f"bench-{n}-{time.monotonic_ns()}"
    caller_number = f"9198765{n:05d}"
    meta = PersonaMetadata(
        persona=PERSONA, status="loaded", source="api", caller=caller_number, call_id=f"B{n}"
    )
    token = sip_token(server, room, caller=caller_number, call_id=f"B{n}")
    caller = await SipCaller(server.ws_url, token).join()
    lk = livekit_api(server)
    try:
        await asyncio.sleep(persona_ms / 1000)  # the persona API answering
        await seed_persona(lk, room, meta)
        await dispatch_agent(lk, room, agent_name, meta)
        dispatched = time.perf_counter()
        await caller.wait_for_agent()
        await caller.wait_for_sound()
        assert caller.agent_joined_at is not None
        assert caller.first_frame_at is not None
        assert caller.first_sound_at is not None
        return CallTimes(
            dispatched=dispatched - caller.joined_at,
            agent_joined=caller.agent_joined_at - caller.joined_at,
            first_frame=caller.first_frame_at - caller.joined_at,
            first_sound=caller.first_sound_at - caller.joined_at,
        )
    finally:
        await caller.leave()
        await lk.aclose()


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


async def run(server: LiveKitServer, calls: int, persona_ms: float, agent_name: str) -> None:
    times = []
    for n in range(calls):
        times.append(await one_call(server, n, persona_ms, agent_name))
        # Let the previous call's job process exit, as between real calls.
        await asyncio.sleep(0.2)
    report(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--persona-ms", type=float, default=50.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="agent-bench-"))
    server = start_livekit_server(log_path=workdir / "livekit-server.log")
    worker = None
    try:
        worker = start_agent_worker(server, workdir)
        asyncio.run(run(server, args.calls, args.persona_ms, "friday"))
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
    print(f"logs in {workdir}")


if __name__ == "__main__":
    main()
