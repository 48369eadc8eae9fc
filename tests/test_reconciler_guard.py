"""The reconciler cannot die: a room whose repair raises something unforeseen is logged once with
its traceback, counted and backed off, while the other rooms are still repaired; a pass that
fails is counted and the next one comes; a task that ends anyway is restarted. Against the fake
LiveKit, where a poison room can be made on demand."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from livekit import api

from config.settings import Settings
from dispatcher.call_setup import CallJoin, SetupResult
from dispatcher.caller import CallParty
from dispatcher.reconciler import ReconcilePolicy, Reconciler
from dispatcher.service import Clients, open_clients
from dispatcher.setup_guard import SetupGuard
from tests.conftest import LogCapture
from tests.harness.fake_livekit import FakeLiveKit
from tests.harness.stack import eventually

pytestmark = pytest.mark.service

INTERVAL_S = 0.02
POLICY = ReconcilePolicy(
    interval_s=INTERVAL_S,
    grace_s=1.0,
    agent_join_timeout_s=10.0,
    agent_name="friday",
    api_timeout_s=2.0,
)


class PoisonRoom(Exception):
    """What no code path expected (a bug, or a room unlike any seen)."""


def poisoned(
    run: Callable[[CallJoin], Coroutine[None, None, SetupResult]], room: str
) -> Callable[[CallJoin], Coroutine[None, None, SetupResult]]:
    """The call set-up, except that `room`'s raises."""

    async def setup(join: CallJoin) -> SetupResult:
        if join.room == room:
            raise PoisonRoom(room)
        return await run(join)

    return setup


def ringing(fake: FakeLiveKit, room: str, number: str) -> None:
    """A room whose SIP caller joined long ago and whose webhook was lost."""
    fake.add_room(room)
    fake.participants[room] = [
        api.ParticipantInfo(
            sid=f"PA_{room}",
            identity=f"sip_{number}",
            kind=api.ParticipantInfo.Kind.SIP,
            attributes={"sip.phoneNumber": number, "sip.callID": f"SCL_{room}"},
            joined_at=1,
        )
    ]


def sample(clients: Clients, name: str, **labels: str) -> float:
    return clients.metrics.registry.get_sample_value(name, labels) or 0.0


def reconciler_of(clients: Clients, guard: SetupGuard, clock: Any = None) -> Reconciler:
    extra = {} if clock is None else {"clock": clock}
    return Reconciler(clients.rooms, clients.call_setup, guard, POLICY, clients.metrics, **extra)


async def test_a_poison_room_is_backed_off_while_the_others_are_repaired(
    make_settings: Callable[..., Settings], fake_lk: FakeLiveKit, logs: LogCapture
) -> None:
    ringing(fake_lk, "call_poison", "9000000001")
    ringing(fake_lk, "call_good", "8655701159")
    async with open_clients(make_settings()) as clients:
        guard = SetupGuard(poisoned(clients.call_setup.run, "call_poison"), remember=100)
        task = asyncio.create_task(reconciler_of(clients, guard).run())
        try:
            await eventually(
                lambda: fake_lk.agent_dispatches("call_good", "friday"), 10, "the good repair"
            )
            # Many passes: every interval, while the poison room waits longer each time.
            await eventually(
                lambda: (
                    sample(clients, "persona_dispatcher_reconcile_ticks_total", result="ok") >= 40
                ),
                10,
                "forty passes",
                0.01,
            )
            assert not task.done()
            failures = sample(
                clients, "persona_dispatcher_reconcile_room_failures_total", kind="unexpected"
            )
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    # Backed off (1, 2, 4, 8 ... intervals): a handful of tries in forty passes, not forty.
    assert 2 <= failures <= 7
    [failed] = logs.named("reconcile.room_failed")
    assert failed["room"] == "call_poison"
    assert failed["kind"] == "unexpected"
    assert "PoisonRoom" in failed["exception"]  # the traceback, once
    assert logs.named("reconcile.failed") == []
    assert len(fake_lk.agent_dispatches("call_good", "friday")) == 1


async def test_a_pass_that_fails_unexpectedly_is_counted_and_the_next_one_comes(
    make_settings: Callable[..., Settings], fake_lk: FakeLiveKit, logs: LogCapture
) -> None:
    ringing(fake_lk, "call_good", "8655701159")
    readings = 0

    def clock() -> float:
        nonlocal readings
        readings += 1
        if readings == 1:
            raise OverflowError("a clock reading no code path expected")
        return time.time()

    async with open_clients(make_settings()) as clients:
        task = asyncio.create_task(reconciler_of(clients, clients.setup, clock).run())
        try:
            await eventually(
                lambda: fake_lk.agent_dispatches("call_good", "friday"), 10, "the repair"
            )
            assert not task.done()
            failed = sample(clients, "persona_dispatcher_reconcile_ticks_total", result="failed")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert failed == 1
    [logged] = logs.named("reconcile.failed")
    assert "OverflowError" in logged["exception"]


class EndsTwice(Reconciler):
    """A reconciler whose `run` ends twice (a crash, then a plain return) before it runs on."""

    runs = 0
    running = asyncio.Event()

    async def run(self) -> None:
        self.runs += 1
        if self.runs == 1:
            raise PoisonRoom("the task itself")
        if self.runs == 3:
            self.running.set()
            await asyncio.Event().wait()


async def test_a_task_that_ends_anyway_is_logged_and_restarted(
    make_settings: Callable[..., Settings], logs: LogCapture
) -> None:
    async with open_clients(make_settings()) as clients:
        reconciler = EndsTwice(
            clients.rooms, clients.call_setup, clients.setup, POLICY, clients.metrics
        )
        reconciler.running = asyncio.Event()
        task = asyncio.create_task(reconciler.keep_running())
        try:
            async with asyncio.timeout(10):
                await reconciler.running.wait()
            restarts = sample(clients, "persona_dispatcher_reconcile_restarts_total")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert restarts == 2
    assert "PoisonRoom" in logs.named("reconcile.crashed")[0]["exception"]
    assert len(logs.named("reconcile.stopped")) == 1


async def test_a_pass_forgets_rooms_that_ended_behind_another_replica(
    make_settings: Callable[..., Settings], fake_lk: FakeLiveKit
) -> None:
    """The end of a call set up here went to another replica: the passes, which list the rooms,
    forget it once it is missing from two listings (persona_dispatcher_rooms_held only grew)."""
    fake_lk.add_room("call_1")
    fake_lk.sids["call_1"] = "RM_1"
    async with open_clients(make_settings()) as clients:
        done = await clients.setup.handle_join(
            CallJoin(
                "EV_1",
                "call_1",
                "",
                CallParty(attributes={"sip.phoneNumber": "8655701159"}),
                room_sid="RM_1",
            )
        )
        assert done.dispatched
        await reconciler_of(clients, clients.setup).reconcile()
        held_while_live = clients.setup.rooms_held()
        del fake_lk.rooms["call_1"]  # the call ended; room_finished went elsewhere
        reconciler = reconciler_of(clients, clients.setup)
        await reconciler.reconcile()
        held_after_one = clients.setup.rooms_held()  # a listing may predate a new room
        await reconciler.reconcile()
        held_after = clients.setup.rooms_held()
        rooms_held = sample(clients, "persona_dispatcher_rooms_held")
    assert (held_while_live, held_after_one, held_after, rooms_held) == (1, 1, 0, 0)
