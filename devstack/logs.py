"""The one reader of the services' JSON-lines logs (and of the agent's transcript and the fake
model stack's record): what tests, benchmarks and the dev command read back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from config.settings import NumberSettings
from telemetry.logs import redact

# The numbering plan the services run with here (the default one).
HOME_REGION = NumberSettings().region


def read_json_lines(path: Path, offset: int = 0, **match: Any) -> list[dict[str, Any]]:
    """The JSON objects of `path` from byte `offset` whose fields equal `match`; other lines (a
    server's plain text, a line still being written) are skipped, a missing file is empty."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return []
    records = []
    for line in data.splitlines():
        if not line.startswith(b"{"):
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict) and all(value.get(k) == v for k, v in match.items()):
            records.append(value)
    return records


def read_log_events(path: Path, offset: int = 0, **match: Any) -> list[dict[str, Any]]:
    """`read_json_lines` for what the services write (logs, the transcript), which mask phone
    numbers unless LOG_UNMASKED: a `match` value equals a field as written or as masked (by the
    plan, as the services' logs; every run of digits, as the transcript), so `room=` takes a
    room's real name (`call_8655701159_ab12` matches `call_******1159_ab12`)."""
    wanted = {k: (v, redact(v, HOME_REGION), redact(v)) for k, v in match.items()}
    return [
        r for r in read_json_lines(path, offset) if all(r.get(k) in vs for k, vs in wanted.items())
    ]


def clear_logs(log_dir: Path, *patterns: str) -> None:
    """Remove a previous run's logs and figures from `log_dir` (`*.log` and `*.jsonl`, or
    `patterns`), so that a run's files hold that run alone."""
    for pattern in patterns or ("*.log", "*.jsonl"):
        for old in log_dir.glob(pattern):
            old.unlink(missing_ok=True)
