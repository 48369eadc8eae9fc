"""Start and stop the agent worker (`python -m agent`) as a separate process (tests, benches)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from devstack.processes import ROOT, LiveKitServer

REGISTERED = "registered worker"


def agent_worker_env(server: LiveKitServer, workdir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a worker on `server` with the fake model stack, writing under
    `workdir`: `fake-llm.jsonl` (the fake stack's record) and `transcripts.jsonl`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "AGENT_"))}
    env.update(
        {
            "LIVEKIT_URL": server.ws_url,
            "LIVEKIT_API_KEY": server.config.api_key,
            "LIVEKIT_API_SECRET": server.config.api_secret,
            "AGENT_STACK": "fake",
            "AGENT_FAKE_LLM_LOG": str(workdir / "fake-llm.jsonl"),
            "TRANSCRIPT_PATH": str(workdir / "transcripts.jsonl"),
            "AGENT_HTTP_PORT": "0",
            "AGENT_IDLE_PROCESSES": "2",
            # Load by job count, not CPU: a busy 2-core test machine must not make the worker
            # (or the server, which skips workers reporting full load) refuse jobs.
            "AGENT_MAX_JOBS": "50",
            "AGENT_DRAIN_TIMEOUT_S": "3",
            "LOG_LEVEL": "info",
        }
    )
    env.update(overrides)
    return env


@dataclass
class AgentWorker:
    """One `python -m agent` process; its JSON log goes to `log_path`."""

    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self, timeout: float = 60.0) -> AgentWorker:
        """Start the worker and return once it is registered with the server."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent"],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"agent worker exited with {self.proc.returncode}:\n{self.log_text(offset)}"
                )
            if any(r.get("event") == REGISTERED for r in self.log_records(offset)):
                return self
            time.sleep(0.1)
        raise TimeoutError(f"agent worker not registered in {timeout}s:\n{self.log_text(offset)}")

    def log_text(self, offset: int = 0) -> str:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def log_records(self, offset: int = 0) -> list[dict[str, Any]]:
        """The worker's JSON log lines (other lines skipped)."""
        records = []
        for line in self.log_text(offset).splitlines():
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(value, dict):
                records.append(value)
        return records

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (the worker drains, then exits); the whole process group is killed if it
        has not exited within `timeout`. Returns the exit code."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.proc is not None:
            # Job processes of a killed worker may outlive it in its group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode if self.proc is not None else None


def start_agent_worker(
    server: LiveKitServer, workdir: Path, *, timeout: float = 60.0, **overrides: str
) -> AgentWorker:
    """A registered worker on `server` with the fake stack (see `agent_worker_env`)."""
    env = agent_worker_env(server, workdir, **overrides)
    return AgentWorker(env, workdir / "agent-worker.log").start(timeout)
