"""Around the call set-up: each room is set up once, however many deliveries of its webhook
arrive, in whatever order, and however often LiveKit redelivers them.

Deduplicates by event id (a redelivered webhook gets the first answer again) and by room (one
set-up in flight per room, which every concurrent delivery shares). A room is known by its sid:
its name may be used again by a later call, on a replica that never saw the first call end.
Forgets a room when the call ends, and bounds what it remembers.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import TypeVar

from dispatcher.call_setup import CallJoin, SetupResult
from telemetry.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")


class SetupGuard:
    """One per process, around `run` (`CallSetup.run`)."""

    def __init__(
        self, run: Callable[[CallJoin], Coroutine[None, None, SetupResult]], remember: int
    ) -> None:
        self._run = run
        self._remember = remember
        self._rooms: OrderedDict[str, asyncio.Task[SetupResult]] = OrderedDict()
        self._events: OrderedDict[str, SetupResult] = OrderedDict()
        self._absent: set[str] = set()  # rooms missing from the last listing (`keep_only`)

    def rooms_held(self) -> int:
        """How many rooms this process keeps state for (until participant_left/room_finished)."""
        return len(self._rooms)

    async def drain(self, within_s: float) -> None:
        """Let set-ups still running finish (bounded) before the clients they use are closed."""
        pending = [t for t in self._rooms.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=within_s)

    def release(self, room: str) -> bool:
        """Forget `room` (its sid, or name without one: its call ended); False when nothing was
        held or a set-up still runs."""
        task = self._rooms.get(room)
        if task is None or not task.done():
            return False  # a set-up still running owns the entry; it ends on its own
        del self._rooms[room]
        return True

    def keep_only(self, live: set[str]) -> int:
        """Forget the finished set-ups of rooms missing from two listings in a row of the rooms
        that exist (`live`: their sids and names), whose end events went to another replica; a
        room created after one listing is in the next. How many were forgotten."""
        absent = {k for k, t in self._rooms.items() if k not in live and t.done()}
        gone = absent & self._absent
        for key in gone:
            del self._rooms[key]
        self._absent = absent - gone
        return len(gone)

    async def handle_join(self, join: CallJoin) -> SetupResult:
        """Set up the call once, whatever the number of deliveries; raises `LiveKitError`."""
        seen = self._events.get(join.event_id)
        if seen is not None:
            log.info(
                "agent.dispatch_skipped", reason="duplicate_event", dispatch_id=seen.dispatch_id
            )
            return seen.again("duplicate_event")
        key = join.room_key
        task = self._rooms.get(key)
        later = "in_flight"
        if task is None:
            task = asyncio.create_task(self._run(join), name=f"setup-{join.room}")
            self._rooms[key] = task
            self._bound(self._rooms)
            first = True
        else:
            first = False
            if task.done():
                later = "room_already_set_up"
        try:
            # shield: a webhook request cancelled by a disconnect must not cancel the set-up that
            # a concurrent delivery of the same call is waiting for.
            result = await asyncio.shield(task)
        except BaseException:
            if task.done() and self._rooms.get(key) is task:
                del self._rooms[key]  # failed: a redelivery must try again
            raise
        if not first and result.dispatched:
            log.info("agent.dispatch_skipped", reason=later, dispatch_id=result.dispatch_id)
            result = result.again(later)
        self._events[join.event_id] = result
        self._bound(self._events)
        return result

    def _bound(self, d: OrderedDict[str, T]) -> None:
        while len(d) > self._remember:
            d.popitem(last=False)
