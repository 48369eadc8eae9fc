"""Running the app as a server: listen, and on SIGTERM (or SIGINT) drain before closing.

aiohttp's `run_app` stops its sites (closes the listening socket) first and runs `on_shutdown`,
where draining started, only then: a balancer's health check and LiveKit's webhooks met a refused
connection, never the 503 that moves traffic away. Here the sequence is:

1. the signal: the process turns draining: `/readyz` and new webhooks answer 503 (LiveKit
   redelivers a webhook answered 503), and the reconciler stops taking on repairs;
2. it keeps listening for `DRAIN_GRACE_S`, long enough for a balancer's health checks to take
   the replica out of rotation;
3. it stops listening, lets the requests in flight finish, and closes its clients once the
   set-ups still running have finished (`SetupGuard.drain`).
"""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from telemetry.logs import get_logger
from webhooks.keys import READINESS

log = get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def serve(app: web.Application, host: str, port: int, drain_grace_s: float) -> None:
    """Serve `app` on `host:port` until SIGTERM or SIGINT, then drain and stop as above."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("service.listening", host=host, port=port)
        received = await _stop_signal()
        log.info("service.stopping", signal=received.name, drain_grace_s=drain_grace_s)
        app[READINESS].start_draining()
        # The grace itself: the balancer sees /readyz 503 while this process still answers.
        await asyncio.sleep(drain_grace_s)
    finally:
        await runner.cleanup()
    log.info("service.stopped")


async def _stop_signal() -> signal.Signals:
    """Wait for the first of `STOP_SIGNALS`."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await received
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
