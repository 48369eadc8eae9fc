"""A loop-lag probe: the longest stretch the event loop's thread worked without letting a task
that wakes every millisecond run, measured in that thread's CPU time.

CPU time, not wall time, so that a machine busy with other processes (which delays the probe
without the loop doing anything) does not count as the loop being blocked.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType


class LoopLag:
    """`async with LoopLag() as lag:` ... `lag.max_blocked_ms`."""

    def __init__(self, tick_s: float = 0.001) -> None:
        self._tick = tick_s
        self.max_blocked_ms = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.thread_time()
            await asyncio.sleep(self._tick)
            self.ticks += 1
            self.max_blocked_ms = max(self.max_blocked_ms, (time.thread_time() - before) * 1000)

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
