"""Structured logging, configured once per process: JSON lines rendered by structlog with orjson."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def mask_number(number: str | None, *, unmasked: bool = False) -> str | None:
    """`8655701159` -> `******1159`: logs keep the last four digits only."""
    if number is None or unmasked:
        return number
    if len(number) <= 4:
        return "*" * len(number)
    return "*" * (len(number) - 4) + number[-4:]


def _orjson_dumps(obj: Any, default: Any) -> str:
    # The stdlib handler writes text, so decode orjson's bytes once here.
    return orjson.dumps(obj, default=default).decode()


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]


def configure_logging(
    level: str = "info",
    fmt: str = "json",
    *,
    service: str = "dispatcher",
    stream: TextIO | None = None,
    through_stdlib: bool = False,
    cache: bool = True,
) -> None:
    """Configure structlog to write one JSON object per line, and render stdlib records alike.

    `through_stdlib` routes structlog events through stdlib logging: the agent worker needs it,
    since livekit-agents forwards its job processes' stdlib records to the parent. The
    dispatcher writes directly, which costs a fraction of the time per event. `cache=False`
    lets tests reconfigure the output of loggers already in use.
    """
    stream = stream or sys.stdout
    numeric = _LEVELS.get(level, 20)
    shared = [*_shared_processors(), _add_service(service)]
    if fmt == "console":
        renderer: Any = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)

    if through_stdlib:
        structlog.configure(
            processors=[
                *shared,
                structlog.processors.format_exc_info,
                structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
            ],
            wrapper_class=structlog.make_filtering_bound_logger(numeric),
            logger_factory=structlog.stdlib.LoggerFactory(),
            cache_logger_on_first_use=cache,
        )
    else:
        structlog.configure(
            processors=[*shared, structlog.processors.format_exc_info, renderer],
            wrapper_class=structlog.make_filtering_bound_logger(numeric),
            logger_factory=structlog.WriteLoggerFactory(file=stream),
            cache_logger_on_first_use=cache,
        )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _drop_forwarded_message],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # aiohttp's access log duplicates `webhook.received`; keep library chatter at warning.
    for noisy in ("aiohttp.access", "asyncio", "livekit"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))


def _drop_forwarded_message(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # livekit-agents forwards job-process records with `message` set to the formatted text,
    # which repeats `event`.
    if event_dict.get("message") == event_dict.get("event"):
        event_dict.pop("message", None)
    return event_dict


def _add_service(service: str) -> Any:
    def add(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        event_dict.setdefault("service", service)
        return event_dict

    return add


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; `event` names are fixed strings, variable parts are fields."""
    return structlog.get_logger(name)


def configure_forwarded_logging(level: str = "info", *, service: str = "agent") -> None:
    """Configure structlog in a livekit-agents job process, whose root handler forwards stdlib
    records to the worker process: events become plain records (event name as the message,
    fields as `extra`) that the worker's `configure_logging` formatter renders."""
    numeric = _LEVELS.get(level, 20)
    structlog.configure(
        processors=[
            *_shared_processors(),
            _add_service(service),
            structlog.processors.format_exc_info,
            structlog.stdlib.render_to_log_kwargs,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    logging.getLogger().setLevel(numeric)
    for noisy in ("asyncio", "livekit"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
