"""What the services of a SIP test wrote: the dispatcher's and the agent worker's JSON log events,
and the lines the agent's fake stack spoke."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devstack.logs import HOME_REGION, read_json_lines
from telemetry.logs import redact_text


def records(path: Path, event: str) -> list[dict[str, Any]]:
    """The JSON log events named `event` in a service's log (other lines skipped)."""
    return read_json_lines(path, event=event)


def spoken(fake_llm_log: Path, room: str) -> list[str]:
    """What the agent's fake stack said in `room` (its real name, or as the logs mask it), in
    order (its TTS requests; the fake stack's record is not a log and names rooms in full)."""
    return [
        r["text"]
        for r in read_json_lines(fake_llm_log, kind="tts")
        if room in (r.get("room"), redact_text(str(r.get("room")), HOME_REGION))
    ]
