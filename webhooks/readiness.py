"""Readiness: whether this process can set up a call now, and draining on shutdown.

Ready means the LiveKit server API answers with our key and secret (checked with a ListRooms for
a name no room has: cheap, and refused for a wrong key) and the process is not draining. Probes
come every few seconds from every orchestrator that asks, so one check's answer stands for
`CHECK_TTL_S` and concurrent probes share the check in flight.

Draining starts on SIGTERM, while the process still listens (`webhooks.server`): new webhooks are
answered 503, which LiveKit redelivers (to another replica, or to this one restarted), and /readyz
turns 503 so traffic moves away, while set-ups already running finish before their clients close
(`SetupGuard.drain`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from contract.errors import PersonaDispatcherError
from dispatcher.livekit_api import LiveKitError
from telemetry.logs import get_logger

log = get_logger(__name__)

# Long enough that frequent probes cost one LiveKit call per few seconds, short enough that a
# server gone away (or keys rotated) shows within one probe period or two.
CHECK_TTL_S = 5.0
# One check's own deadline: a balancer's health check must not time out first.
READY_CHECK_S = 2.0


class ServiceDraining(PersonaDispatcherError):
    """The process is shutting down: answer 503 so that LiveKit delivers the webhook again."""


class Readiness:
    """One per app: the draining flag and the cached LiveKit check."""

    def __init__(
        self, check_livekit: Callable[[], Awaitable[None]], ttl_s: float = CHECK_TTL_S
    ) -> None:
        self._check_livekit = check_livekit
        self._ttl_s = ttl_s
        self.draining = False
        self._last: tuple[float, str | None] | None = None  # (when, why not ready)
        self._checking: asyncio.Task[str | None] | None = None
        self._reported: str | None = ""  # the last state logged ("" = none yet)
        self._on_drain: list[Callable[[], object]] = []

    def when_draining(self, stop: Callable[[], object]) -> None:
        """Call `stop` when draining starts: work this process would start on its own."""
        self._on_drain.append(stop)

    def start_draining(self) -> None:
        if not self.draining:
            self.draining = True
            log.info("service.draining")
            for stop in self._on_drain:
                stop()

    def refuse_if_draining(self) -> None:
        if self.draining:
            raise ServiceDraining("draining: shutting down")

    async def not_ready_because(self) -> str | None:
        """None when a call can be set up now, else why not."""
        reason = "draining" if self.draining else await self._livekit_problem()
        if reason != self._reported:
            self._reported = reason
            if reason is None:
                log.info("service.ready")
            else:
                log.warning("service.not_ready", reason=reason)
        return reason

    async def _livekit_problem(self) -> str | None:
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < self._ttl_s:
            return self._last[1]
        check = self._checking
        if check is None:
            check = self._checking = asyncio.create_task(self._check(), name="readiness-check")
            check.add_done_callback(self._checked)
        # shield: a probe that disconnects must not cancel the check others wait for.
        return await asyncio.shield(check)

    def _checked(self, check: asyncio.Task[str | None]) -> None:
        # Only the check itself clears its slot: every probe awaiting it holds its own reference,
        # and the next window's probes start a new one.
        if self._checking is check:
            self._checking = None

    async def _check(self) -> str | None:
        try:
            await self._check_livekit()
            problem = None
        except LiveKitError as e:
            problem = f"livekit: {e}"
        self._last = (time.monotonic(), problem)
        return problem
