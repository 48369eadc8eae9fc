"""What the services of a SIP test wrote: the dispatcher's and the agent worker's JSON log events,
and the lines the agent's fake stack spoke."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devstack.logs import read_json_lines


def records(path: Path, event: str) -> list[dict[str, Any]]:
    """The JSON log events named `event` in a service's log (other lines skipped)."""
    return read_json_lines(path, event=event)


def spoken(fake_llm_log: Path, room: str) -> list[str]:
    """What the agent's fake stack said in `room`, in order (its TTS requests)."""
    return [r["text"] for r in read_json_lines(fake_llm_log, kind="tts", room=room)]
