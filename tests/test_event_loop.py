"""The dispatcher's event loop: uvloop where it is installed, asyncio's own where it is not
(pyproject.toml makes uvloop a dependency on every platform but Windows)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from webhooks.__main__ import install_fast_loop

pytestmark = pytest.mark.unit


def test_without_uvloop_the_service_starts_on_asyncios_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    policy = asyncio.get_event_loop_policy()
    assert install_fast_loop() is False
    assert asyncio.get_event_loop_policy() is policy


def test_with_uvloop_it_is_installed() -> None:
    policy = asyncio.get_event_loop_policy()
    try:
        assert install_fast_loop() is True
        assert type(asyncio.get_event_loop_policy()).__module__.startswith("uvloop")
    finally:
        asyncio.set_event_loop_policy(policy)
