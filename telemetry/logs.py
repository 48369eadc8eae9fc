"""Structured logging, configured once per process: JSON lines rendered by structlog with orjson."""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

from contract.phone_numbers import parse_number

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


# Without a numbering plan (a tool that reads no settings): every run of 6-15 digits, `+`
# allowed in front, that no letter, digit or decimal point touches. So
# `call_8655701159_ab12` (the rooms LiveKit's individual dispatch rule names),
# `sip_+918655701159`, `user-mapping/num_8655701159.json` and `tel:8655701159` are masked,
# while ids such as `SCL_e78353174e03` and the fraction of an ISO time are not.
_NUMBER = re.compile(r"(?<![A-Za-z0-9.])(\+?)(\d{6,15})(?![A-Za-z0-9]|\.\d)")
# With the deployment's plan: a stretch that may be a phone number (digits, single spaces,
# hyphens or dots between them, `+` in front), masked only if libphonenumber finds it a valid
# number, as the persona lookup does. Event ids, byte counts and epoch milliseconds are not.
_CANDIDATE = re.compile(r"(?<![A-Za-z0-9.+])\+?\d(?:[ .\-]?\d){5,18}(?![A-Za-z0-9]|\.\d)")
_GROUP = re.compile(r"\+?\d+")
# Never personal data, and parsed by readers as written.
_NOT_REDACTED = frozenset({"ts"})


def _mask_digits(text: str) -> str:
    """Every digit of `text` but the last four masked, separators kept."""
    hide = sum(c.isdigit() for c in text) - 4
    out = []
    for c in text:
        if c.isdigit() and hide > 0:
            hide -= 1
            c = "*"
        out.append(c)
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def _is_phone_number(text: str, region: str) -> bool:
    return parse_number(text, region) is not None


def _mask_phone_numbers(m: re.Match[str], region: str) -> str:
    """The stretch with the phone numbers in it masked: the whole, or, where it took in its
    neighbours (`attempt 2 8655701159`, `+91 86557 01159 2 times`), the longest runs of its
    digit groups that are numbers, from the left."""
    found = m.group(0)
    groups = [(g.start(), g.end()) for g in _GROUP.finditer(found)]
    out: list[str] = []
    kept_to = i = 0
    while i < len(groups):
        for j in range(len(groups), i, -1):
            start, end = groups[i][0], groups[j - 1][1]
            if _is_phone_number(found[start:end], region):
                out += [found[kept_to:start], _mask_digits(found[start:end])]
                kept_to, i = end, j
                break
        else:
            i += 1
    out.append(found[kept_to:])
    return "".join(out)


def redact_text(text: str, region: str | None = None) -> str:
    """`text` with every phone number in it masked to its last four digits (`******1159`):
    what parses as a valid number in `region`'s plan (`+` numbers in any), or without a region
    every run of 6-15 digits."""
    if region is None:
        return _NUMBER.sub(lambda m: _mask_digits(m.group(0)), text)
    return _CANDIDATE.sub(lambda m: _mask_phone_numbers(m, region), text)


def redact(value: Any, region: str | None = None) -> Any:
    """`value` with the phone numbers in its strings and its keys masked, however deep."""
    if isinstance(value, str):
        return redact_text(value, region)
    if isinstance(value, dict):
        return {
            _redact_key(k, region): v if k in _NOT_REDACTED else redact(v, region)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, region) for v in value]
    return value


def _redact_key(key: Any, region: str | None) -> Any:
    return redact_text(key, region) if isinstance(key, str) else key


class NumberRedaction:
    """The processor that keeps phone numbers out of every field (and key) of every log line:
    room names, identities, file paths and attribute values carry them, not only `caller`."""

    def __init__(self, region: str | None) -> None:
        self.region = region

    def __call__(
        self, _: Any, __: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        redacted = redact(dict(event_dict), self.region)
        event_dict.clear()
        event_dict.update(redacted)
        return event_dict


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
    unmasked: bool = False,
    phone_region: str | None = None,
) -> None:
    """Configure structlog to write one JSON object per line, and render stdlib records alike.

    `through_stdlib` routes structlog events through stdlib logging: the agent worker needs it,
    since livekit-agents forwards its job processes' stdlib records to the parent. The
    dispatcher writes directly, which costs a fraction of the time per event. `cache=False`
    lets tests reconfigure the output of loggers already in use. Phone numbers are masked in every
    field, of our events and of stdlib records alike, unless `unmasked` (LOG_UNMASKED): those of
    `phone_region`'s numbering plan (the deployment's), or without one every run of digits.
    """
    numeric = _LEVELS.get(level, 20)
    shared = [*_shared_processors(), _add_service(service)]
    # Last before rendering: after the exception is formatted, which may quote a number too.
    output = [*([] if unmasked else [NumberRedaction(phone_region)]), _renderer(fmt)]
    stream = stream or sys.stdout
    _configure_structlog(shared, output, numeric, stream, through_stdlib, cache)
    _route_stdlib_records(shared, output, numeric, stream)


def _renderer(fmt: str) -> Any:
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(colors=False)
    return structlog.processors.JSONRenderer(serializer=_orjson_dumps)


def _configure_structlog(
    shared: list[Any],
    output: list[Any],
    level: int,
    stream: TextIO,
    through_stdlib: bool,
    cache: bool,
) -> None:
    """Our own events: rendered here and written to `stream`, or handed to stdlib logging (whose
    handler renders them) when `through_stdlib`."""
    if through_stdlib:
        processors = [
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ]
        factory: Any = structlog.stdlib.LoggerFactory()
    else:
        processors = [*shared, structlog.processors.format_exc_info, *output]
        factory = structlog.WriteLoggerFactory(file=stream)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=cache,
    )


def _route_stdlib_records(shared: list[Any], output: list[Any], level: int, stream: TextIO) -> None:
    """Stdlib records (libraries', and the agent's forwarded ones) rendered as our events are: one
    root handler, replacing any earlier one."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _drop_forwarded_message],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            *output,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # aiohttp's access log duplicates `webhook.received`; keep library chatter at warning.
    for noisy in ("aiohttp.access", "asyncio", "livekit"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


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
    fields as `extra`) that the worker's `configure_logging` formatter renders, and redacts."""
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
