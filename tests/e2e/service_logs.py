"""What the services of a SIP test wrote: the dispatcher's and the agent worker's JSON log events,
and the lines the agent's fake stack spoke."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.fakes import read_records


def records(path: Path, event: str) -> list[dict[str, Any]]:
    """The JSON log events named `event` in a service's log (other lines skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            if r.get("event") == event:
                out.append(r)
    return out


def spoken(fake_llm_log: Path, room: str) -> list[str]:
    """What the agent's fake stack said in `room`, in order (its TTS requests)."""
    return [r["text"] for r in read_records(fake_llm_log, "tts") if r.get("room") == room]
