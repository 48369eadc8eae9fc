"""AGENT_REGISTERED_FILE: what a container's healthcheck reads to know the worker takes dispatches
(livekit-agents' own health answers OK before LiveKit has registered the worker, and a dispatch
created before then never reaches it)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
from livekit.agents import AgentServer
from livekit.agents.utils import EventEmitter

from agent.__main__ import mark_registration

pytestmark = pytest.mark.unit


def test_the_file_appears_once_livekit_registers_the_worker(tmp_path: Path) -> None:
    marker = tmp_path / "run" / "registered"
    marker.parent.mkdir()
    marker.write_text("AW_previous\n")  # a previous run's, in a restarted container
    server: EventEmitter[str] = EventEmitter()
    mark_registration(cast(AgentServer, server), marker)
    assert not marker.exists()
    server.emit("worker_registered", "AW_new", object())
    assert marker.read_text() == "AW_new\n"


def test_without_the_setting_nothing_is_written(tmp_path: Path) -> None:
    server: EventEmitter[str] = EventEmitter()
    mark_registration(cast(AgentServer, server), None)
    server.emit("worker_registered", "AW_new", object())
    assert list(tmp_path.iterdir()) == []
