"""Ring time (INVITE → 200 OK) through the whole chain, ours against the LiveKit-native floor in
the same run.

sipp places the calls, as a softphone would, to livekit-sip, on loopback with everything else:
Redis, livekit-server, livekit-sip, the dispatcher (fake CRM API) and our agent worker (fake
models). The floor is a second trunk whose dispatch rule names a bare agent (it only connects and
publishes a tone) in `room_config.agents`: no webhook, no persona, and a worker built with the
same options as ours (`tests/harness/native_floor.py`). Batches of ours and of the floor take
turns (`--rounds`), each on a settled system: the previous batch's rooms closed, the idle pool
refilled.

Prints p50/p95 of the ring time and of each part, the worker's memory at rest and at the peak of
a batch, and how much CPU the rest of the machine used meanwhile (the numbers only mean something
on a quiet machine). `--json` adds one JSON object as the last line.

    .venv/bin/python -m bench.ring_time --calls 20 --concurrency 20 --rounds 2
    .venv/bin/python -m bench.ring_time --calls 20 --concurrency 1 --worker AGENT_IDLE_PROCESSES=4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from livekit import api

from devstack.agent_worker import AgentWorker, agent_worker_env
from devstack.processes import ROOT
from devstack.services import start_redis
from tests.harness.agent_names import refresh_agent_names
from tests.harness.fixture_personas import one_number_persona
from tests.harness.native_floor import FLOOR_AGENT, FloorRoute, create_floor_route
from tests.harness.proc_stats import (
    Memory,
    PeakMemory,
    cpu_seconds_by_process,
    cpu_seconds_by_tree,
    foreign_cpu_seconds,
    tree_memory,
)
from tests.harness.ring_timeline import (
    MILESTONES,
    CallTimeline,
    ServiceLogs,
    Spread,
    call_timelines,
    milestone_spreads,
    part_spreads,
    spread,
)
from tests.harness.sip_stack import SIPP_NICE, SipStack, start_sip_stack
from tests.harness.sipp import Call, SippResult, SippRun
from tests.harness.stack import Stack, eventually, start_stack

Route = Literal["ours", "floor"]
LOG_DIR = ROOT / "var" / "log" / "bench-ring-time"


@dataclass
class Batch:
    """One sipp run on one route."""

    route: Route
    round: int
    calls: int
    answered: int
    timelines: list[CallTimeline]
    load_1m: float
    foreign_cpu_s: float
    cpu_s: dict[str, float]
    wall_s: float
    memory_rest: Memory
    memory_peak: Memory | None
    sipp_errors: str = ""


@dataclass
class Chain:
    stack: Stack
    sip: SipStack
    floor: FloorRoute
    workers: dict[str, AgentWorker]


WorkerKind = tuple[str, Path, str, str | None]  # route, workdir, module, AGENT_NAME (None: ours)


def start_chain(
    log_dir: Path,
    worker_env: dict[str, str],
    stop: list[Callable[[], object]],
    *,
    dispatcher_env: dict[str, str] | None = None,
    more_workers: Sequence[WorkerKind] = (),
    crm_env: str | None = None,
) -> Chain:
    """Start every service; `stop` gets each one's stop, in start order, as it starts.
    `more_workers`: workers besides ours and the floor's (the first-word benchmark's);
    `crm_env`: a variable that tells the workers the fake CRM's base URL."""
    redis = start_redis(log_path=log_dir / "redis.log")
    stop.append(redis.stop)
    stack = start_stack(
        log_dir,
        log_dir / "work",
        redis_address=redis.address,
        record_webhooks=False,
        dispatcher_env={"LOG_UNMASKED": "true", **(dispatcher_env or {})},
    )
    stop.append(stack.stop)
    sip = start_sip_stack(log_dir, redis=redis, livekit=stack.livekit)
    stop.append(sip.stop)

    async def floor_route() -> FloorRoute:
        async with stack.api() as lk:
            return await create_floor_route(lk)

    floor = asyncio.run(floor_route())
    workers: dict[str, AgentWorker] = {}
    kinds: list[WorkerKind] = [
        ("ours", log_dir, "agent", None),
        ("floor", log_dir / "floor", "tests.harness.tone_agent", FLOOR_AGENT),
        *more_workers,
    ]
    for route, workdir, module, name in kinds:
        env = agent_worker_env(stack.livekit, workdir, LOG_UNMASKED="true")
        env.update(worker_env)
        if crm_env is not None:
            env[crm_env] = f"{stack.persona_api_url}/mobile"
        if name is not None:
            env["AGENT_NAME"] = name
        workers[route] = AgentWorker(env, workdir / "agent-worker.log", module).start()
        stop.append(workers[route].stop)
    return Chain(stack, sip, floor, workers)


def callers(round_: int, n: int) -> list[str]:
    return [f"9{round_ % 100:02d}{i:07d}" for i in range(n)]


async def settle(
    chain: Chain, settle_s: float, *, warm: bool = True, within_s: float = 20.0
) -> None:
    """Wait for the last batch's rooms to close (deleting those still open after `within_s`:
    calls never answered ring for minutes), then for the idle pool to refill.

    `warm`: make livekit-server refresh its agent-name cache before the batch and let the
    refresh finish (see tests/harness/agent_names.py): the batch then measures the steady state.
    Without it, a burst may meet the refresh (always does after a quiet minute) and wait up to
    5 s for its jobs."""
    async with chain.stack.api() as lk:

        async def open_rooms() -> list[str]:
            return [r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]

        async def no_rooms() -> bool:
            return not await open_rooms()

        try:
            await eventually(no_rooms, within_s, "the rooms to close", 0.25)
        except AssertionError:
            left = await open_rooms()
            print(f"deleting {len(left)} room(s) still open", flush=True)
            for name in left:
                await lk.room.delete_room(api.DeleteRoomRequest(room=name))
            await eventually(no_rooms, within_s, "the rooms to close", 0.25)
        if warm:
            server = chain.stack.livekit
            await refresh_agent_names(
                lk, server.ws_url, server.config.api_key, server.config.api_secret
            )
    await asyncio.sleep(settle_s)


def service_pids(chain: Chain, worker: AgentWorker, run: SippRun) -> dict[str, int]:
    """The root pid of each service a batch runs through (the batch's own worker only)."""
    pids = {
        "livekit-server": chain.stack.livekit.process,
        "livekit-sip": chain.sip.sip.process,
        "dispatcher": chain.stack.dispatcher,
        "persona-api": chain.stack.persona_api,
        "worker": worker.process,
        "sipp": run.process,
    }
    return {name: p.pid for name, p in pids.items() if p is not None}


def run_batch(
    chain: Chain,
    route: Route,
    round_: int,
    numbers: Sequence[str],
    args: argparse.Namespace,
) -> Batch:
    dialled = chain.sip.trunk_number if route == "ours" else chain.floor.number
    worker = chain.workers[route]
    assert worker.process is not None
    rest = tree_memory(worker.process.pid)
    load = os.getloadavg()[0]
    cpu_before = cpu_seconds_by_process()
    run = chain.sip.sipp(
        [Call(n, dialled) for n in numbers],
        concurrent=args.concurrency,
        rate=args.rate,
        rtp_seconds=args.rtp_seconds,
        timeout=args.timeout,
        workdir=args.log_dir / "sipp" / f"{route}-{round_}",
        nice=args.sipp_nice,
    )
    started = time.monotonic()
    with PeakMemory(worker.process.pid) as peak:
        run.start()
        try:
            result: SippResult = run.wait()
        finally:
            run.stop()
    wall = time.monotonic() - started
    cpu_after = cpu_seconds_by_process()
    foreign = foreign_cpu_seconds(cpu_before, cpu_after, os.getpid())
    cpu = cpu_seconds_by_tree(cpu_before, cpu_after, service_pids(chain, worker, run))
    logs = ServiceLogs(
        livekit_sip=chain.sip.sip.log_path,
        livekit_server=chain.stack.livekit.log_path,
        dispatcher=chain.stack.dispatcher_log if route == "ours" else None,
    )
    return Batch(
        route,
        round_,
        len(numbers),
        len(result.ring_times_ms()),
        call_timelines(result.calls, logs),
        round(load, 2),
        foreign,
        cpu,
        round(wall, 1),
        rest,
        peak.peak(),
        result.errors[-500:],
    )


def fmt(s: Spread | None) -> str:
    return f"{s.p50:7.0f} {s.p95:7.0f}" if s is not None else f"{'-':>7} {'-':>7}"


def ratio(a: Spread | None, b: Spread | None) -> tuple[float | None, float | None]:
    if a is None or b is None or not b.p50 or not b.p95:
        return None, None
    return round(a.p50 / b.p50, 3), round(a.p95 / b.p95, 3)


def report(batches: list[Batch], args: argparse.Namespace) -> dict[str, Any]:
    by: dict[Route, list[CallTimeline]] = {"ours": [], "floor": []}
    for b in batches:
        by[b.route] += b.timelines
    ring = {r: spread([t.ring_ms for t in by[r]]) for r in by}
    print(
        f"\n{args.calls} calls, {args.concurrency} at once, {args.rounds} round(s); "
        f"worker {args.worker or 'defaults'}; {'cold' if args.cold else 'warm'} server"
    )
    print(f"{'batch':<10} {'answered':>9} {'ring p50':>9} {'p95':>7} {'load1m':>7} "
          f"{'other cpu s':>12} {'mem rest':>9} {'peak':>7} {'procs':>6}")  # fmt: skip
    for b in batches:
        s = spread([t.ring_ms for t in b.timelines])
        peak = b.memory_peak
        print(
            f"{b.route}-{b.round:<5} {b.answered:>4}/{b.calls:<4} {fmt(s)}  {b.load_1m:7.2f} "
            f"{b.foreign_cpu_s:12.2f} {b.memory_rest.pss_mib:9.0f} "
            f"{(peak.pss_mib if peak else 0):7.0f} {(peak.processes if peak else 0):6d}"
        )
    print("\nCPU seconds used during each batch, by service")
    for b in batches:
        shares = "  ".join(f"{k} {v:.1f}" for k, v in b.cpu_s.items())
        print(f"{b.route}-{b.round:<5} {shares}")
    print("\nms after the INVITE          ours p50     p95   floor p50     p95")
    ours_m, floor_m = milestone_spreads(by["ours"]), milestone_spreads(by["floor"])
    print(f"{'ring (sipp)':<26} {fmt(ring['ours'])}     {fmt(ring['floor'])}")
    for m in MILESTONES[1:]:
        print(f"{m:<26} {fmt(ours_m.get(m))}     {fmt(floor_m.get(m))}")
    print("\nparts (ms)                   ours p50     p95   floor p50     p95")
    ours_p, floor_p = part_spreads(by["ours"]), part_spreads(by["floor"])
    for k in list(dict.fromkeys([*ours_p, *floor_p])):
        print(f"{k:<26} {fmt(ours_p.get(k))}     {fmt(floor_p.get(k))}")
    r50, r95 = ratio(ring["ours"], ring["floor"])
    print(f"\nratio ours/floor  p50 {r50}  p95 {r95}")
    summary: dict[str, Any] = {
        "calls": args.calls,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "worker": args.worker,
        "cold": args.cold,
        "ring_ms_p50": ring["ours"].p50 if ring["ours"] else None,
        "ring_ms_p95": ring["ours"].p95 if ring["ours"] else None,
        "floor_ring_ms_p50": ring["floor"].p50 if ring["floor"] else None,
        "floor_ring_ms_p95": ring["floor"].p95 if ring["floor"] else None,
        "ratio_p50": r50,
        "ratio_p95": r95,
        "answered": [b.answered for b in batches if b.route == "ours"],
        "floor_answered": [b.answered for b in batches if b.route == "floor"],
        "milestones_ms": {
            "ours": {k: asdict(v) for k, v in ours_m.items()},
            "floor": {k: asdict(v) for k, v in floor_m.items()},
        },
        "parts_ms": {
            "ours": {k: asdict(v) for k, v in ours_p.items()},
            "floor": {k: asdict(v) for k, v in floor_p.items()},
        },
        "batches": [
            {
                "route": b.route,
                "round": b.round,
                "answered": b.answered,
                "load_1m": b.load_1m,
                "foreign_cpu_s": b.foreign_cpu_s,
                "cpu_s": b.cpu_s,
                "wall_s": b.wall_s,
                "memory_rest": asdict(b.memory_rest),
                "memory_peak": asdict(b.memory_peak) if b.memory_peak else None,
            }
            for b in batches
        ],
    }
    return summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="calls per batch")
    parser.add_argument("--concurrency", type=int, default=1, help="calls at once")
    parser.add_argument("--rounds", type=int, default=1, help="batches of each route, in turns")
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="calls sipp starts per second (at most)"
    )
    parser.add_argument("--rtp-seconds", type=float, default=2.0, help="call length after 200 OK")
    parser.add_argument("--settle-s", type=float, default=3.0, help="pause between batches")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="a batch's limit (unanswered calls count)"
    )
    parser.add_argument(
        "--worker",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="worker setting for both workers (e.g. AGENT_IDLE_PROCESSES=4); repeatable",
    )
    parser.add_argument(
        "--sipp-nice",
        type=int,
        default=SIPP_NICE,
        help=f"run sipp at this nice value (default {SIPP_NICE}: ahead of the services as root)",
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="no agent-name cache refresh before a batch (see settle(): a burst may meet one)",
    )
    parser.add_argument("--only", choices=("ours", "floor"), help="run one route only")
    parser.add_argument("--log-dir", type=Path, default=LOG_DIR)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    worker_env = dict(kv.split("=", 1) for kv in args.worker)
    shutil.rmtree(args.log_dir, ignore_errors=True)
    args.log_dir.mkdir(parents=True)
    print(f"load average before start: {os.getloadavg()}; logs in {args.log_dir}")
    routes: list[Route] = [args.only] if args.only else ["ours", "floor"]
    batches: list[Batch] = []
    stop: list[Callable[[], object]] = []
    try:
        chain = start_chain(args.log_dir, worker_env, stop)
        numbers = sorted({n for r in range(args.rounds) for n in callers(r, args.calls)})
        chain.stack.persona_control(extra={n: one_number_persona(n) for n in numbers})
        asyncio.run(settle(chain, args.settle_s, warm=not args.cold))
        for round_ in range(args.rounds):
            # Take turns, so that neither route always runs on the warmer system.
            order = routes if round_ % 2 == 0 else routes[::-1]
            for route in order:
                batch = run_batch(chain, route, round_, callers(round_, args.calls), args)
                batches.append(batch)
                print(
                    f"{route} round {round_}: {batch.answered}/{batch.calls} answered, "
                    f"load {batch.load_1m}, other processes {batch.foreign_cpu_s} CPU s",
                    flush=True,
                )
                asyncio.run(settle(chain, args.settle_s, warm=not args.cold))
    finally:
        for stop_one in reversed(stop):
            stop_one()
    summary = report(batches, args)
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
