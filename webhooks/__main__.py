"""`persona-dispatcher` / `python -m webhooks`: run the webhook receiver."""

from __future__ import annotations

import asyncio
import sys

from config.settings import SettingsError, load_settings
from telemetry.logs import configure_logging, get_logger
from webhooks.app import create_app
from webhooks.server import serve


def install_fast_loop() -> bool:
    """uvloop, which roughly halves the event loop's share of each webhook's CPU time, where it
    is installed (a dependency except on Windows: pyproject.toml); asyncio's own loop elsewhere.
    Whether uvloop runs."""
    try:
        import uvloop
    except ImportError:
        get_logger(__name__).info("service.uvloop_unavailable", loop="asyncio")
        return False
    uvloop.install()
    return True


def main() -> None:
    try:
        settings = load_settings()
        app = create_app(settings)
    except SettingsError as e:
        print(e, file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(
        settings.logs.level,
        settings.logs.format,
        service="dispatcher",
        unmasked=settings.logs.unmasked,
        phone_region=settings.numbers.region,
    )
    get_logger(__name__).info(
        "service.starting",
        host=settings.host,
        port=settings.port,
        agent_name=settings.agent_name,
        persona_api=settings.persona_api_base or "off",
        lookup=",".join(settings.persona_lookup),
    )
    install_fast_loop()
    asyncio.run(serve(app, settings.host, settings.port, settings.drain_grace_s))


if __name__ == "__main__":
    main()
