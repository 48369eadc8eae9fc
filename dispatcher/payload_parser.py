"""Decodes persona API bodies into personas without blocking the event loop.

`orjson.loads` of an 8 MiB body of tiny objects holds the loop for over 100 ms (and freeing the
document ~40 ms more), whatever the parser after it does. Bodies up to `INLINE_MAX_BYTES` are
decoded in place (a few milliseconds at worst); larger ones in a worker process, which also keeps
their peak memory (the whole document as Python objects) out of the service. Only the bounded
persona comes back.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from contract.metadata import Persona
from dispatcher.persona_payload import PersonaLimits, PersonaPayloadError, parse_persona_body
from telemetry.logs import get_logger

log = get_logger(__name__)

# Worst case decoded inline: ~4 ms of loop time for 256 KiB of `[{},{},...]`.
INLINE_MAX_BYTES = 256 * 1024
# Two big bodies decoded at once; each worker peaks at ~13x its body in memory.
WORKERS = 2


class PayloadParser:
    """One per process; `aclose` stops its worker processes."""

    def __init__(self, limits: PersonaLimits, inline_max_bytes: int = INLINE_MAX_BYTES) -> None:
        self._limits = limits
        self._inline_max = inline_max_bytes
        self._pool: ProcessPoolExecutor | None = None
        self._no_workers = False

    async def parse(self, body: bytes) -> Persona:
        """The persona in `body`; raises `PersonaPayloadError` / `PersonaNotInPayload`."""
        if len(body) <= self._inline_max or self._no_workers:
            return parse_persona_body(body, self._limits)
        loop = asyncio.get_running_loop()
        job = functools.partial(parse_persona_body, body, self._limits)
        try:
            future = loop.run_in_executor(self._workers(), job)
        except (RuntimeError, OSError) as e:
            # No process can be started here (a main module without its `__main__` guard, or
            # no resources): decoding in place blocks the loop, but the caller gets the persona.
            log.error("persona.parser_workers_unavailable", error=str(e).strip()[:200])
            self._no_workers = True
            self._shutdown()
            return parse_persona_body(body, self._limits)
        try:
            return await future
        except BrokenProcessPool:
            # A worker died (killed for memory, say): the next big body gets a new pool.
            log.error("persona.parser_worker_lost", bytes=len(body))
            self._shutdown()
            raise PersonaPayloadError("the payload's parser process died") from None

    def _workers(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # Spawned, not forked: the service's threads and sockets stay out of the workers.
            self._pool = ProcessPoolExecutor(
                max_workers=WORKERS, mp_context=multiprocessing.get_context("spawn")
            )
        return self._pool

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def aclose(self) -> None:
        self._shutdown()
