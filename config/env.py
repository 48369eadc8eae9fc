"""How settings are declared and read: each field of a settings dataclass names its environment
variable, its one default and its parser (`setting(...)`); `read_fields` reads them all, collecting
every problem instead of stopping at the first."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, field, fields
from pathlib import Path
from typing import Any, TypeVar

from dotenv import dotenv_values

from contract.errors import PersonaDispatcherError

T = TypeVar("T")


class SettingsError(PersonaDispatcherError, ValueError):
    """One or more settings are missing or malformed; the message lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n  - " + "\n  - ".join(problems))


class EnvReader:
    """The environment being read, and the problems found so far."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        """The stripped value of `name`, or None when unset or blank."""
        value = self._env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def done(self) -> None:
        if self.problems:
            raise SettingsError(self.problems)


# A parser turns one variable's raw text into a value; a parser that reports a problem to the reader
# leaves the field at its default (start-up then fails, listing every problem).
Parser = Callable[[EnvReader, str, str], Any]


def setting(env: str, default: T, parse: Parser, *, secret: bool = False) -> T:
    """A settings field read from `env` with `parse`; `default` is written here and nowhere else."""
    meta = {"env": env, "parse": parse}
    return field(default=default, metadata=meta, repr=not secret)


def required(env: str, parse: Parser, *, secret: bool = False) -> Any:
    """A settings field with no default: start-up fails when `env` is unset."""
    return field(metadata={"env": env, "parse": parse, "required": True}, repr=not secret)


def read_fields(cls: type[Any], r: EnvReader, **given: Any) -> dict[str, Any]:
    """Keyword arguments for the settings dataclass `cls`: each field's variable, parsed, when it is
    set; `given` for fields read some other way (nested settings)."""
    values: dict[str, Any] = dict(given)
    for f in fields(cls):
        if f.name in values or "env" not in f.metadata:
            continue
        name: str = f.metadata["env"]
        raw = r.raw(name)
        if raw is None:
            if f.metadata.get("required"):
                r.problem(f"{name} is required")
                values[f.name] = ""
            continue
        problems = len(r.problems)
        value = f.metadata["parse"](r, name, raw)
        if len(r.problems) == problems:
            values[f.name] = value
        elif _no_default(f):
            values[f.name] = ""  # the error is raised once every field has been read
    return values


def _no_default(f: Field[Any]) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def read_environment(env_file: str | os.PathLike[str] | None = ".env") -> dict[str, str]:
    """The process environment over the values of `env_file` (if it exists)."""
    merged: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ)
    return merged


# ---- parsers ------------------------------------------------------------------------------------


def text(_: EnvReader, __: str, raw: str) -> str:
    return raw


def path(_: EnvReader, __: str, raw: str) -> Path:
    return Path(raw)


def integer(minimum: int = 0, maximum: int | None = None) -> Parser:
    def parse(r: EnvReader, name: str, raw: str) -> int | None:
        try:
            value = int(raw)
        except ValueError:
            r.problem(f"{name}={raw!r} is not an integer")
            return None
        if value < minimum:
            r.problem(f"{name}={value} must be >= {minimum}")
            return None
        if maximum is not None and value > maximum:
            r.problem(f"{name}={value} must be <= {maximum}")
            return None
        return value

    return parse


def seconds(r: EnvReader, name: str, raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        r.problem(f"{name}={raw!r} is not a number of seconds")
        return None
    if not value > 0:
        r.problem(f"{name}={value} must be > 0")
        return None
    return value


def seconds_or_off(r: EnvReader, name: str, raw: str) -> float | None:
    """A number of seconds, or 0 to turn the feature off."""
    try:
        value = float(raw)
    except ValueError:
        r.problem(f"{name}={raw!r} is not a number of seconds (0: off)")
        return None
    if value < 0:
        r.problem(f"{name}={value} must be >= 0 (0: off)")
        return None
    return value


def flag(r: EnvReader, name: str, raw: str) -> bool | None:
    low = raw.lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    r.problem(f"{name}={raw!r} is not a boolean (true/false)")
    return None


def choice(*allowed: str) -> Parser:
    def parse(r: EnvReader, name: str, raw: str) -> str | None:
        value = raw.lower()
        if value not in allowed:
            r.problem(f"{name}={value!r} must be one of {', '.join(allowed)}")
            return None
        return value

    return parse


def url(*schemes: str) -> Parser:
    def parse(r: EnvReader, name: str, raw: str) -> str:
        if not raw.startswith(tuple(f"{s}://" for s in schemes)):
            r.problem(f"{name}={raw!r} must start with {' or '.join(schemes)}://")
        return raw.rstrip("/")

    return parse
