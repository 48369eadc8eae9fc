"""The persona's first word as the caller hears it (INVITE → the first audible RTP reaching the
caller), ours against the agent-side fetch and the LiveKit-native floor, in one run.

The chain is `bench.ring_time`'s (sipp → livekit-sip → livekit-server, the dispatcher with the fake
CRM, the workers with the fake model stack, all on loopback), with three routes:
- ours: the dispatcher sets the call up (persona in the room, then the dispatch);
- fetch: the SIP rule dispatches `bench.agent_fetch` natively, and that agent fetches the persona
  from the CRM in its entrypoint, blocking, before its first word (our agent's code after that);
- floor: the bare agent of `tests/harness/native_floor.py` (no persona, a tone at once).
The CRM answers after each `--crm-ms` delay; ours is measured for new callers and for returning
ones (the same numbers again: the dispatcher's cache has them); the fetch agent has no cache
across calls (each job is a process), so its callers are new each time. Each concurrency
(`--concurrency`, e.g. 1 and 20) runs every scenario, and `--rounds` repeats the lot.

INVITE, 200 OK and first word come from a capture of loopback (`tests/harness/wire_capture.py`,
root only), not from any service's log; the other milestones from the logs, as ring_time reads
them. Prints p50/p95 per scenario, the parts, the worker's CPU seconds per call, and each
target's figure, met or not. `--json` ends with one JSON line.

    sudo .venv/bin/python -m bench.first_word --concurrency 1 --concurrency 20 --rounds 2
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

from bench.agent_fetch import CRM_BASE_VAR
from bench.ring_time import Chain, fmt, service_pids, settle, start_chain
from devstack.processes import ROOT
from tests.harness.fixture_personas import one_number_persona
from tests.harness.native_floor import create_floor_route
from tests.harness.proc_stats import (
    cpu_seconds_by_process,
    cpu_seconds_by_tree,
    descendants,
    foreign_cpu_seconds,
)
from tests.harness.ring_timeline import (
    CallTimeline,
    ServiceLogs,
    Spread,
    call_timelines,
    milestone_spreads,
    part_spreads,
    spread,
)
from tests.harness.sip_stack import SIPP_NICE
from tests.harness.sipp import Call, SippResult
from tests.harness.wire_capture import CallOnWire, WireCapture

Route = Literal["ours", "fetch", "floor"]
Callers = Literal["new", "returning", "any"]
LOG_DIR = ROOT / "var" / "log" / "bench-first-word"
FETCH_NUMBER = "+918000000098"
FETCH_AGENT = "agent-fetch"
# The warm-up's callers: groups no measured batch reaches.
WARMUP_GROUP = 999


@dataclass(frozen=True)
class Scenario:
    route: Route
    crm_ms: int | None  # None: the route asks no CRM (the floor)
    callers: Callers
    concurrency: int

    @property
    def name(self) -> str:
        crm = "-" if self.crm_ms is None else f"{self.crm_ms}ms"
        return f"{self.route}/{crm}/{self.callers}/x{self.concurrency}"


@dataclass
class Batch:
    scenario: Scenario
    round: int
    calls: int
    answered: int
    heard: int
    timelines: list[CallTimeline]
    worker_cpu_s: float
    cpu_s: dict[str, float]
    load_1m: float
    foreign_cpu_s: float
    wall_s: float

    @property
    def worker_cpu_per_call(self) -> float | None:
        return round(self.worker_cpu_s / self.answered, 3) if self.answered else None


def plan(concurrency: int, crm_ms: Sequence[int], *, floor_first: bool = False) -> list[Scenario]:
    """One concurrency's scenarios, in the order they run: for each CRM delay ours for new
    callers, the same callers again (returning), the fetch agent; the floor last, or first
    (`floor_first`, odd rounds: so that no route always runs on the warmer or the busier
    system)."""
    found: list[Scenario] = []
    for delay in crm_ms:
        found += [
            Scenario("ours", delay, "new", concurrency),
            Scenario("ours", delay, "returning", concurrency),
            Scenario("fetch", delay, "any", concurrency),
        ]
    floor = Scenario("floor", None, "any", concurrency)
    return [floor, *found] if floor_first else [*found, floor]


def numbers(group: int, n: int) -> list[str]:
    """`n` callers no other group of the run uses (10 digits, 9 first: valid callers)."""
    return [f"9{group:03d}{i:06d}" for i in range(n)]


def warm_up(args: argparse.Namespace) -> list[tuple[int, Scenario, list[str]]]:
    """Batches run before the measured ones and not reported: `--warmup-calls` calls one at a
    time through each route, so that no measured batch is the first through the chain (a
    route's first calls meet livekit-server, livekit-sip and the worker cold)."""
    if args.warmup_calls <= 0:
        return []
    return [
        (-1, scenario, numbers(WARMUP_GROUP - i, args.warmup_calls))
        for i, scenario in enumerate(plan(1, [0]))
        if scenario.callers != "returning"
    ]


def schedule(args: argparse.Namespace) -> list[tuple[int, Scenario, list[str]]]:
    """Every batch of the run in order, with its callers: new numbers for each batch but a
    returning one, which calls the numbers of the batch before it again."""
    runs: list[tuple[int, Scenario, list[str]]] = []
    group = 0
    for round_ in range(args.rounds):
        for conc in args.concurrency:
            n = args.calls_one if conc == 1 else args.calls
            callers: list[str] = []
            for scenario in plan(conc, args.crm_ms, floor_first=round_ % 2 == 1):
                if scenario.callers != "returning":
                    callers = numbers(group, n)
                    group += 1
                runs.append((round_, scenario, callers))
    return runs


def with_wire(timelines: list[CallTimeline], wire: dict[str, CallOnWire]) -> list[CallTimeline]:
    """The timelines with INVITE, 200 OK and first word as the capture saw them (by Call-ID)."""
    for t in timelines:
        seen = wire.get(t.sip_call_id)
        if seen is None or seen.invite is None:
            continue
        t.at["invite"] = seen.invite
        for name, ts in (("answered", seen.answered), ("first_word", seen.first_word)):
            if ts is not None:
                t.at[name] = ts
            else:
                t.at.pop(name, None)
        t.ring_ms = t.since_invite_ms("answered")
    return timelines


def worker_pids(chain: Chain) -> dict[str, int]:
    found = {}
    for route, worker in chain.workers.items():
        assert worker.process is not None
        found[route] = worker.process.pid
    return found


def dialled(chain: Chain, route: Route, fetch_number: str) -> str:
    return {"ours": chain.sip.trunk_number, "fetch": fetch_number, "floor": chain.floor.number}[
        route
    ]


def wait_for_rest(pid: int, processes: int, within_s: float = 60.0) -> None:
    """Wait until the worker's tree is back to its size at rest: every job process of the
    batch has ended (a call's process lives on for its shutdown after the caller hung up).
    Read before the batch's CPU, so that each batch's CPU holds its own jobs' whole lives, and
    the next batch does not meet a worker still busy ending this one's."""
    deadline = time.monotonic() + within_s
    while len(descendants(pid)) > processes and time.monotonic() < deadline:
        time.sleep(0.1)


def run_batch(
    chain: Chain,
    scenario: Scenario,
    round_: int,
    callers: Sequence[str],
    fetch_number: str,
    args: argparse.Namespace,
    rest_processes: int,
) -> Batch:
    worker = chain.workers[scenario.route]
    assert worker.process is not None
    load = os.getloadavg()[0]
    run = chain.sip.sipp(
        [Call(n, dialled(chain, scenario.route, fetch_number)) for n in callers],
        concurrent=scenario.concurrency,
        rate=args.rate,
        rtp_seconds=args.rtp_seconds,
        timeout=args.timeout,
        workdir=args.log_dir / "sipp" / f"{scenario.name.replace('/', '-')}-{round_}",
        nice=args.sipp_nice,
    )
    cpu_before = cpu_seconds_by_process()
    started = time.monotonic()
    with WireCapture(chain.sip.sip.sip_port) as capture:
        run.start()
        try:
            result: SippResult = run.wait()
        finally:
            run.stop()
    wall = time.monotonic() - started
    wait_for_rest(worker.process.pid, rest_processes)
    cpu_after = cpu_seconds_by_process()
    cpu = cpu_seconds_by_tree(cpu_before, cpu_after, service_pids(chain, worker, run))
    logs = ServiceLogs(
        livekit_sip=chain.sip.sip.log_path,
        livekit_server=chain.stack.livekit.log_path,
        dispatcher=chain.stack.dispatcher_log if scenario.route == "ours" else None,
    )
    timelines = with_wire(call_timelines(result.calls, logs), capture.calls())
    return Batch(
        scenario,
        round_,
        len(callers),
        sum(1 for t in timelines if "answered" in t.at),
        sum(1 for t in timelines if "first_word" in t.at),
        timelines,
        cpu.get("worker", 0.0),
        cpu,
        round(load, 2),
        foreign_cpu_seconds(cpu_before, cpu_after, os.getpid()),
        round(wall, 1),
    )


def first_word_ms(timelines: Sequence[CallTimeline]) -> Spread | None:
    return spread([t.since_invite_ms("first_word") for t in timelines])


def ring_ms(timelines: Sequence[CallTimeline]) -> Spread | None:
    return spread([t.ring_ms for t in timelines])


@dataclass(frozen=True)
class Target:
    name: str
    figure: str
    met: bool | None  # None: not measured in this run


def _within(a: Spread | None, b: Spread | None, factor: float, plus_ms: float = 0.0) -> bool | None:
    if a is None or b is None:
        return None
    return a.p50 <= b.p50 * factor + plus_ms and a.p95 <= b.p95 * factor + plus_ms


def _pair(a: Spread | None, b: Spread | None) -> str:
    if a is None or b is None:
        return "not measured"
    return f"{a.p50:.0f}/{a.p95:.0f} vs {b.p50:.0f}/{b.p95:.0f} ms (p50/p95)"


def targets(batches: Sequence[Batch], crm_ms: int = 300) -> list[Target]:
    """The issue's targets, from this run's figures."""

    def calls(
        route: Route, callers: Callers | None, conc: int, crm: int | None
    ) -> list[CallTimeline]:
        return [
            t
            for b in batches
            if b.scenario.route == route
            and b.scenario.concurrency == conc
            and (callers is None or b.scenario.callers == callers)
            and (crm is None or b.scenario.crm_ms == crm)
            for t in b.timelines
        ]

    def cpu(route: Route, conc: int) -> float | None:
        own = [b for b in batches if b.scenario.route == route and b.scenario.concurrency == conc]
        answered = sum(b.answered for b in own)
        return sum(b.worker_cpu_s for b in own) / answered if answered else None

    found = []
    for conc in sorted({b.scenario.concurrency for b in batches}):
        floor = calls("floor", None, conc, None)
        returning = first_word_ms(calls("ours", "returning", conc, crm_ms))
        found.append(
            Target(
                f"returning callers, CRM {crm_ms} ms, x{conc}: first word ours <= 1.05 x floor",
                _pair(returning, first_word_ms(floor)),
                _within(returning, first_word_ms(floor), 1.05),
            )
        )
        new = first_word_ms(calls("ours", "new", conc, crm_ms))
        if conc == 1:
            found.append(
                Target(
                    f"new callers, CRM {crm_ms} ms, x1: first word ours <= floor + 100 ms",
                    _pair(new, first_word_ms(floor)),
                    _within(new, first_word_ms(floor), 1.0, 100.0),
                )
            )
            fetch = first_word_ms(calls("fetch", None, conc, crm_ms))
            gap = None if new is None or fetch is None else fetch.p50 - new.p50
            found.append(
                Target(
                    f"new callers, CRM {crm_ms} ms, x1: ours beats the agent-side fetch"
                    " by >= 250 ms p50",
                    "not measured" if gap is None else f"by {gap:.0f} ms ({_pair(new, fetch)})",
                    None if gap is None else gap >= 250,
                )
            )
        ours_cpu, floor_cpu = cpu("ours", conc), cpu("floor", conc)
        found.append(
            Target(
                f"x{conc}: worker CPU per call ours <= 1.15 x floor",
                "not measured"
                if ours_cpu is None or floor_cpu is None
                else f"{ours_cpu:.3f} vs {floor_cpu:.3f} s ({ours_cpu / floor_cpu:.2f}x)",
                None if ours_cpu is None or floor_cpu is None else ours_cpu <= 1.15 * floor_cpu,
            )
        )
        if conc >= 20:
            ours_ring, floor_ring = ring_ms(calls("ours", None, conc, None)), ring_ms(floor)
            found.append(
                Target(
                    f"x{conc}: ring p95 ours <= 1.05 x floor",
                    _pair(ours_ring, floor_ring),
                    None
                    if ours_ring is None or floor_ring is None
                    else ours_ring.p95 <= 1.05 * floor_ring.p95,
                )
            )
    return found


def report(batches: list[Batch], args: argparse.Namespace) -> dict[str, Any]:
    by: dict[Scenario, list[Batch]] = {}
    for b in batches:
        by.setdefault(b.scenario, []).append(b)
    print(f"\n{args.calls} calls per batch (x1: {args.calls_one}), {args.rounds} round(s)")
    print(
        f"{'scenario':<28} {'round':>5} {'heard':>7} {'ring p50':>9} {'p95':>7} "
        f"{'word p50':>9} {'p95':>7} {'cpu s/call':>10} {'load1m':>7} {'other cpu':>9}"
    )
    for b in batches:
        print(
            f"{b.scenario.name:<28} {b.round:>5} {b.heard:>3}/{b.calls:<3} "
            f"{fmt(ring_ms(b.timelines))}  {fmt(first_word_ms(b.timelines))}  "
            f"{b.worker_cpu_per_call or 0:10.3f} {b.load_1m:7.2f} {b.foreign_cpu_s:9.1f}"
        )
    scenarios: dict[str, Any] = {}
    print("\nall rounds: ms after the INVITE (p50 p95), then the parts")
    for scenario, own in by.items():
        timelines = [t for b in own for t in b.timelines]
        answered = sum(b.answered for b in own)
        cpu_per_call = sum(b.worker_cpu_s for b in own) / answered if answered else None
        milestones, parts = milestone_spreads(timelines), part_spreads(timelines)
        print(f"\n{scenario.name}  (worker CPU {cpu_per_call or 0:.3f} s per call)")
        for k, v in {**milestones, **parts}.items():
            print(f"  {k:<30} {fmt(v)}")
        scenarios[scenario.name] = {
            **asdict(scenario),
            "calls": sum(b.calls for b in own),
            "answered": answered,
            "heard": sum(b.heard for b in own),
            "worker_cpu_s_per_call": None if cpu_per_call is None else round(cpu_per_call, 3),
            "milestones_ms": {k: asdict(v) for k, v in milestones.items()},
            "parts_ms": {k: asdict(v) for k, v in parts.items()},
        }
    found = targets(batches)
    print("\ntargets")
    for t in found:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[t.met]
        print(f"  {verdict:<13} {t.name}: {t.figure}")
    return {
        "rounds": args.rounds,
        "calls": args.calls,
        "calls_one_at_a_time": args.calls_one,
        "scenarios": scenarios,
        "targets": [asdict(t) for t in found],
        "batches": [
            {
                "scenario": b.scenario.name,
                "round": b.round,
                "answered": b.answered,
                "heard": b.heard,
                "worker_cpu_s": b.worker_cpu_s,
                "cpu_s": b.cpu_s,
                "load_1m": b.load_1m,
                "foreign_cpu_s": b.foreign_cpu_s,
                "wall_s": b.wall_s,
            }
            for b in batches
        ],
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="calls per batch (x20 and up)")
    parser.add_argument("--calls-one", type=int, default=10, help="calls per batch one at a time")
    parser.add_argument(
        "--concurrency", type=int, action="append", help="calls at once; repeatable (1 and 20)"
    )
    parser.add_argument(
        "--crm-ms", type=int, action="append", help="the CRM's delay; repeatable (0 and 300)"
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--rtp-seconds", type=float, default=3.0, help="call length after 200 OK")
    parser.add_argument("--settle-s", type=float, default=2.0, help="pause between batches")
    parser.add_argument("--timeout", type=float, default=60.0, help="a batch's limit")
    parser.add_argument(
        "--warmup-calls", type=int, default=2, help="calls through each route first, unreported"
    )
    parser.add_argument("--worker", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--sipp-nice", type=int, default=SIPP_NICE)
    parser.add_argument("--log-dir", type=Path, default=LOG_DIR)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    args.concurrency = args.concurrency or [1, 20]
    args.crm_ms = args.crm_ms or [0, 300]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    shutil.rmtree(args.log_dir, ignore_errors=True)
    args.log_dir.mkdir(parents=True)
    print(f"load average before start: {os.getloadavg()}; logs in {args.log_dir}", flush=True)
    batches: list[Batch] = []
    stop: list[Callable[[], object]] = []
    try:
        worker_env = dict(kv.split("=", 1) for kv in args.worker)
        fetch_dir = args.log_dir / "fetch"
        # Returning callers must find their persona cached for the whole run.
        chain = start_chain(
            args.log_dir,
            worker_env,
            stop,
            dispatcher_env={"PERSONA_CACHE_TTL_S": "3600"},
            more_workers=[("fetch", fetch_dir, "bench.agent_fetch", FETCH_AGENT)],
            crm_env=CRM_BASE_VAR,
        )

        async def fetch_route() -> str:
            async with chain.stack.api() as lk:
                route = await create_floor_route(lk, number=FETCH_NUMBER, agent_name=FETCH_AGENT)
                return route.number

        fetch_number = asyncio.run(fetch_route())
        runs = [*warm_up(args), *schedule(args)]
        personas = {n: one_number_persona(n) for _, _, callers in runs for n in callers}
        asyncio.run(settle(chain, args.settle_s))
        at_rest = {route: len(descendants(pid)) for route, pid in worker_pids(chain).items()}
        for round_, scenario, callers in runs:
            if scenario.route == "ours" and scenario.callers == "new":
                chain.stack.persona_control(delay_s=(scenario.crm_ms or 0) / 1000, extra=personas)
            batch = run_batch(
                chain, scenario, round_, callers, fetch_number, args, at_rest[scenario.route]
            )
            if round_ >= 0:  # the warm-up's batches are not reported
                batches.append(batch)
            print(
                f"{scenario.name} {'warm-up' if round_ < 0 else f'round {round_}'}: "
                f"{batch.heard}/{batch.calls} heard, "
                f"first word p50 {fmt(first_word_ms(batch.timelines))}, "
                f"load {batch.load_1m}",
                flush=True,
            )
            asyncio.run(settle(chain, args.settle_s))
    finally:
        for stop_one in reversed(stop):
            stop_one()
    summary = report(batches, args)
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
