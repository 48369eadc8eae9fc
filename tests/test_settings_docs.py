"""Every setting declared under config/ is in the README's settings tables with the same default,
and .env.example names only settings that exist: the documentation cannot drift from the code."""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import MISSING, fields, is_dataclass
from typing import Any

import pytest

import config
from tests.conftest import ROOT

pytestmark = pytest.mark.unit

README = ROOT / "README.md"
ENV_EXAMPLE = ROOT / ".env.example"
REQUIRED = "(required)"
UNSET = ("(unset)", "(built-in)")


def declared_settings() -> dict[str, Any]:
    """Each variable read by a settings dataclass under config/, and its default (REQUIRED for a
    variable without one)."""
    found: dict[str, Any] = {}
    for module_info in pkgutil.iter_modules(config.__path__):
        module = importlib.import_module(f"config.{module_info.name}")
        for value in vars(module).values():
            if not (isinstance(value, type) and is_dataclass(value)):
                continue
            for f in fields(value):
                if "env" in f.metadata:
                    found[f.metadata["env"]] = REQUIRED if f.default is MISSING else f.default
    return found


def as_written(default: Any) -> str | None:
    """A default as the README writes it (None: unset)."""
    if default is None:
        return None
    if default == REQUIRED:
        return REQUIRED
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    if isinstance(default, tuple):
        return ",".join(default) or None  # an empty list: unset
    return str(default)


def documented_defaults(text: str) -> dict[str, str | None]:
    """Each variable named in the first column of a README table row, and the default in its
    second: a `value`, REQUIRED, or None for (unset), (built-in) or an empty cell. A row naming
    several variables gives one default for all or one per variable, in order."""
    found: dict[str, str | None] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) < 3:
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
        if not names:
            continue  # a table of something else (a policy's values, say)
        tokens = re.findall(r"`[^`]*`|\([a-z-]+\)", cells[1])
        values = [
            t[1:-1] if t.startswith("`") else (REQUIRED if t == REQUIRED else None) for t in tokens
        ]
        if len(values) <= 1:
            values = (values or [None]) * len(names)
        if len(values) != len(names):
            raise AssertionError(f"README row with {len(names)} names, {len(values)} defaults")
        found.update(zip(names, values, strict=True))
    return found


def test_every_setting_is_documented_with_its_default() -> None:
    documented = documented_defaults(README.read_text())
    declared = declared_settings()
    missing = sorted(set(declared) - set(documented))
    assert missing == [], f"settings missing from the README's tables: {missing}"
    differ = {
        name: (as_written(default), documented[name])
        for name, default in declared.items()
        if as_written(default) != documented[name]
    }
    assert differ == {}, "(code, README) defaults that differ: " + repr(differ)


def test_env_example_names_only_declared_settings() -> None:
    names = re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.M)
    assert names, ENV_EXAMPLE
    assert sorted(set(names) - set(declared_settings())) == []


def test_the_readme_shows_no_absolute_checkout_path() -> None:
    """Sample output as any checkout prints it, not as one machine's did."""
    assert str(ROOT) not in README.read_text()
    assert not re.search(r"/work/\w+/", README.read_text())


def test_parser_reads_a_row_per_variable_and_shared_defaults() -> None:
    text = "\n".join(
        [
            "| `AA`, `BB` | `1`, (unset) | x |",
            "| `CC`, `DD` | (required) | y |",
            "| `EE` | | z |",
        ]
    )
    assert documented_defaults(text) == {
        "AA": "1",
        "BB": None,
        "CC": REQUIRED,
        "DD": REQUIRED,
        "EE": None,
    }
