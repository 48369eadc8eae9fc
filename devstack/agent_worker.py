"""Start and stop the agent worker (`python -m agent`) as a process: the dev command, tests and
benchmarks use it the same way. `module` runs another worker built with the same options (the
benchmark's bare agent)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.logs import read_log_events
from devstack.processes import ROOT, ManagedProcess, free_port, python_module
from devstack.services import LiveKitServer

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
            # Its Prometheus endpoint: what the job processes count, summed by the worker.
            "AGENT_METRICS_PORT": str(free_port()),
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
    """One `python -m agent` process, run in `cwd` (where relative paths such as the default
    TRANSCRIPT_PATH land); its JSON log goes to `log_path`."""

    env: dict[str, str]
    log_path: Path
    module: str = "agent"
    process: ManagedProcess | None = None
    cwd: Path = ROOT

    def start(self, timeout: float = 60.0) -> AgentWorker:
        """Start the worker and return once it is registered with the server."""
        self.process = ManagedProcess(
            "agent worker",
            python_module(self.module),
            self.log_path,
            env=self.env,
            inherit_env=False,
            cwd=self.cwd,
            ready=lambda: self.log_records(event=REGISTERED),
            # SIGTERM drains running calls first (AGENT_DRAIN_TIMEOUT_S).
            stop_grace_s=15.0,
        )
        self.process.start(timeout)
        return self

    def log_records(self, **match: Any) -> list[dict[str, Any]]:
        """The worker's JSON log lines since this start whose fields equal `match` (as logged:
        phone numbers masked)."""
        offset = self.process.log_offset if self.process is not None else 0
        return read_log_events(self.log_path, offset, **match)

    @property
    def metrics_url(self) -> str | None:
        """The worker's Prometheus endpoint, None when it has none (AGENT_METRICS_PORT=0)."""
        port = int(self.env.get("AGENT_METRICS_PORT") or 0)
        return f"http://127.0.0.1:{port}/metrics" if port else None

    def stop(self) -> int | None:
        """SIGTERM (the worker drains, then exits); its whole process group is killed if it has
        not exited within the grace period. Returns the exit code."""
        return self.process.stop() if self.process is not None else None


def start_agent_worker(
    server: LiveKitServer, workdir: Path, *, timeout: float = 60.0, **overrides: str
) -> AgentWorker:
    """A registered worker on `server` with the fake stack (see `agent_worker_env`)."""
    env = agent_worker_env(server, workdir, **overrides)
    return AgentWorker(env, workdir / "agent-worker.log").start(timeout)
