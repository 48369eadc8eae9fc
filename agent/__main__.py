"""`persona-agent`: run the agent worker in production (`start`) mode.

Not livekit-agents' `dev`/`console` modes: those send turn detection to a hosted service, and this
worker keeps every model call explicit (see agent/models.py). The first SIGINT/SIGTERM drains
running calls (up to `AGENT_DRAIN_TIMEOUT_S`), a second one exits at once.

Why not `livekit.agents.cli.run_app(server)`, whose `start` command does the same: it reads its
own command line (a subcommand and flags, not our settings), and its `setup_logging` adds a second
handler with livekit's own JSON format to the root logger. Every line would then be written twice,
once without our fields and redaction, and `persona-logs` could not follow a call. So `serve` runs
the server with the same start-mode steps (run, drain on the first signal, close), and settings and
logging stay ours.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web
from livekit.agents import AgentServer

from agent.call_store import ensure_indexes
from agent.models import validate_stack
from agent.worker import create_server
from config.agent_settings import AgentSettings, load_agent_settings
from config.settings import SettingsError
from telemetry.agent_metrics import empty_directory, serve_metrics
from telemetry.logs import configure_logging, get_logger

log = get_logger("agent")

# livekit-agents reads these from the environment, in the worker and in each job process (forked
# from a forkserver that inherits it); an operator's own value wins.
FRAMEWORK_DEFAULTS = {
    # The forkserver would otherwise load livekit's local turn-detection weights (~250 MB) that
    # no stack here uses; the pipeline's Silero VAD is loaded per job process by its setup.
    "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE": "0",
    # Its event-loop block monitor wakes every 20 ms in each job process, idle or not: ~14 ms of
    # CPU a second each, a sixth of a core while twenty calls ring on two. Off unless asked for
    # (`LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS=100` brings its reports back).
    "LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS": "0",
}


def apply_framework_defaults(environ: MutableMapping[str, str]) -> None:
    for name, value in FRAMEWORK_DEFAULTS.items():
        environ.setdefault(name, value)


@contextmanager
def metrics_directory(settings: AgentSettings) -> Iterator[AgentSettings]:
    """`settings` with the directory where job processes keep their counts for the metrics
    endpoint: AGENT_METRICS_DIR (emptied: a worker starts from no counts), else a temporary
    directory removed when the worker exits. No directory without an endpoint."""
    if not settings.metrics_port:
        yield dataclasses.replace(settings, metrics_dir=None)
        return
    if settings.metrics_dir is not None:
        empty_directory(settings.metrics_dir)
        yield settings
        return
    with tempfile.TemporaryDirectory(prefix="persona-agent-metrics-") as directory:
        yield dataclasses.replace(settings, metrics_dir=Path(directory))


async def start_metrics(settings: AgentSettings) -> web.AppRunner | None:
    """The worker's Prometheus endpoint, when it has one (see telemetry/agent_metrics.py)."""
    if settings.metrics_dir is None:
        return None
    runner = await serve_metrics(settings.http_host, settings.metrics_port, settings.metrics_dir)
    log.info("worker.metrics", url=f"http://{settings.http_host}:{settings.metrics_port}/metrics")
    return runner


def mark_registration(server: AgentServer, registered_file: Path | None) -> None:
    """Remove `registered_file` (a previous run's), and write the worker's id to it once LiveKit
    has registered the worker: from then on a dispatch reaches it."""
    if registered_file is None:
        return
    registered_file.unlink(missing_ok=True)

    def registered(worker_id: str, _server_info: object) -> None:
        registered_file.parent.mkdir(parents=True, exist_ok=True)
        registered_file.write_text(worker_id + "\n")
        log.info("worker.registered", worker_id=worker_id, registered_file=str(registered_file))

    server.on("worker_registered", registered)


async def serve(server: AgentServer, settings: AgentSettings) -> int:
    """Run `server`, its metrics endpoint beside it, until a signal or until it fails."""
    metrics = await start_metrics(settings)
    try:
        return await run_until_signal(server, settings)
    finally:
        if metrics is not None:
            await metrics.cleanup()


async def run_until_signal(server: AgentServer, settings: AgentSettings) -> int:
    """Run `server` until a signal (then drain and close) or until it fails."""
    loop = asyncio.get_running_loop()
    mark_registration(server, settings.registered_file)
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            os._exit(1)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)

    running = asyncio.create_task(server.run(devmode=False), name="agent-worker")
    # The database's indexes, in the background: a database that is down delays no call. The
    # task ends once they exist (asyncio.run cancels it if the worker stops first).
    _indexes = (
        asyncio.create_task(ensure_indexes(settings.call_store), name="call-store-indexes")
        if settings.call_store.enabled
        else None
    )
    stopping = asyncio.create_task(stop.wait(), name="agent-stop")
    await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if running.done():
        stopping.cancel()
        error = running.exception()
        log.error("worker.failed", error=repr(error))
        await server.aclose()
        return 1

    log.info("worker.draining", timeout_s=settings.drain_timeout_s)
    try:
        await server.drain(timeout=settings.drain_timeout_s)
    except TimeoutError:
        log.warning("worker.drain_timeout")
    await server.aclose()
    await asyncio.gather(running, return_exceptions=True)
    log.info("worker.stopped")
    return 0


def main(build: Callable[[AgentSettings], AgentServer] = create_server) -> int:
    """Read the settings, configure logging and serve the worker `build` makes (ours by default;
    the ring-time benchmark's bare agent passes its own)."""
    try:
        settings = load_agent_settings()
        validate_stack(settings)
    except SettingsError as e:
        print(f"persona-agent: {e}", file=sys.stderr)
        return 2
    configure_logging(
        settings.logs.level,
        settings.logs.format,
        service="agent",
        unmasked=settings.logs.unmasked,
        phone_region=settings.numbers.region,
    )
    # The framework's own job lifecycle records (registration, job received, job ended).
    logging.getLogger("livekit.agents").setLevel(settings.logs.level.upper())
    apply_framework_defaults(os.environ)
    log.info(
        "worker.starting",
        agent_name=settings.agent_name,
        stack=settings.stack,
        livekit_url=settings.livekit.url,
        metrics_port=settings.metrics_port or None,
    )
    if settings.stack == "fake":
        log.warning(
            "worker.fake_stack",
            hint="calls are answered by scripted lines and a tone, no model: set AGENT_STACK "
            "(openai-realtime or pipeline) and its API keys for a real conversation",
        )
    with metrics_directory(settings) as settings:
        return asyncio.run(serve(build(settings), settings))


if __name__ == "__main__":
    sys.exit(main())
