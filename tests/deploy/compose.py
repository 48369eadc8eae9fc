"""`docker compose` run as a user runs it, on a copy of the checkout as a fresh clone has it.

The copy holds the files git would commit (tracked and new, not ignored: no `.env`, no `.venv`),
so that a developer's own `.env` never leaks into a test, and `.env` is what the test writes. The
compose files are used unchanged; the project name is the test's own (`-p`), so that a stack a
developer runs under the default name is left alone. The engine, the Compose plugin and the
stand-in images come from tests/deploy/install_engine.sh (`.ci/run` runs it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.logs import read_log_events
from devstack.processes import ROOT, require_system_binary

LOG_DIR = ROOT / "var" / "log" / "deploy"
# A hang guard for `up --build`: a cold image build (pip install of the lock) included.
UP_TIMEOUT_S = 900
VOLUME_ROOT = "/var/lib/persona-dispatcher"
TRANSCRIPT = f"{VOLUME_ROOT}/conversations/transcripts.jsonl"


class ComposeError(RuntimeError):
    """A `docker compose` command failed; the message carries its output."""


def require_engine() -> None:
    """A Docker engine that answers and the Compose v2 plugin, or one clear error."""
    docker = require_system_binary("docker", package="docker.io")
    for argv in ([docker, "info"], [docker, "compose", "version"]):
        if subprocess.run(argv, capture_output=True, check=False).returncode != 0:
            raise RuntimeError(f"`{' '.join(argv[1:])}` failed: run tests/deploy/install_engine.sh")


def remove_test_stacks(prefix: str = "persona-deploy-") -> list[str]:
    """Remove the containers of every test project (`-p {prefix}...`) a previous run left, which
    the engine restarts when it starts (`restart: unless-stopped`) and which hold the stack's
    fixed host ports; the names of the projects removed."""
    listed = subprocess.run(
        ["docker", "ps", "-a", "--format", '{{.ID}} {{.Label "com.docker.compose.project"}}'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = [line.split() for line in listed.splitlines() if len(line.split()) == 2]
    stale = [(cid, project) for cid, project in found if project.startswith(prefix)]
    if stale:
        ids = [cid for cid, _ in stale]
        subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True, check=True)
    return sorted({project for _, project in stale})


def copy_checkout(dest: Path) -> Path:
    """The files of the checkout that a clone would have (plus new, unignored ones) under `dest`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.is_file():  # deleted in the work tree, not yet committed
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return dest


@dataclass
class ComposeProject:
    """A copy of the checkout and the compose `files` run in it under the project `name`."""

    name: str
    files: Sequence[str] = ("docker-compose.yml",)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="persona-deploy-")))

    def __post_init__(self) -> None:
        require_engine()
        copy_checkout(self.workdir)
        LOG_DIR.mkdir(parents=True, exist_ok=True)

    def write_env(self, **values: str) -> None:
        """The project's `.env`, as a user writes it."""
        text = "".join(f"{k}={v}\n" for k, v in values.items())
        (self.workdir / ".env").write_text(text)

    def compose(
        self, *args: str, timeout: float = 120, check: bool = True, stdin_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = ["docker", "compose", "-p", self.name]
        for f in self.files:
            argv += ["-f", f]
        done = subprocess.run(
            [*argv, *args],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin_text,
            stdin=subprocess.DEVNULL if stdin_text is None else None,
        )
        if check and done.returncode != 0:
            raise ComposeError(
                f"docker compose {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def config(self) -> dict[str, Any]:
        """The compose model after interpolation and merging (`docker compose config`)."""
        parsed: dict[str, Any] = json.loads(self.compose("config", "--format", "json").stdout)
        return parsed

    def up(self, one_shot: Sequence[str] = ("sip-setup",)) -> None:
        """`up -d --build` as the README runs it, then wait until every service runs (healthy,
        where it has a healthcheck) and each `one_shot` service has exited 0. (`up --wait` takes
        a one-shot service's exit for a failure.)"""
        self.compose("up", "-d", "--build", timeout=UP_TIMEOUT_S)
        try:
            self.wait_for("the stack up", lambda: self.settled(one_shot), timeout=300)
        except TimeoutError as e:
            raise ComposeError(f"{e}\n{self.logs_text(tail=40)}") from None

    def settled(self, one_shot: Sequence[str]) -> bool:
        """Whether every service is up: the long-running ones running (and healthy, where they
        have a healthcheck), the `one_shot` ones exited 0. A failed one-shot raises."""
        for name, state in self.states().items():
            if name in one_shot:
                if state["State"] == "exited" and state["ExitCode"] != 0:
                    raise ComposeError(f"{name} exited {state['ExitCode']}\n{self.logs_text(name)}")
                if state["State"] != "exited":
                    return False
            elif state["State"] != "running" or state["Health"] not in ("", "healthy"):
                return False
        return True

    def down(self) -> None:
        """Stop and remove the containers and the named volume (what `down -v` removes)."""
        self.compose("down", "-v", "--remove-orphans", "--timeout", "30", timeout=300)

    def start_clean(self) -> None:
        """Before `up`: nothing of this project or of another test project's previous run."""
        remove_test_stacks()
        self.down()

    def states(self) -> dict[str, dict[str, Any]]:
        """Each service's container, as `docker compose ps -a` reports it, by service."""
        out = self.compose("ps", "-a", "--format", "json").stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return {row["Service"]: row for row in rows}

    def status_text(self) -> str:
        return self.compose("ps", "-a", check=False).stdout

    def inspect(self, service: str) -> dict[str, Any]:
        """`docker inspect` of `service`'s container (State.ExitCode, RestartCount, ...)."""
        container = self.compose("ps", "-a", "-q", service).stdout.strip()
        out = subprocess.run(
            ["docker", "inspect", "--format", "{{json .}}", container],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        found: dict[str, Any] = json.loads(out)
        return found

    def logs_text(self, *services: str, tail: int | None = None) -> str:
        args = ["logs", "--no-color", "--no-log-prefix"]
        if tail is not None:
            args += ["--tail", str(tail)]
        return self.compose(*args, *services, check=False).stdout

    def save_logs(self, service: str) -> Path:
        """`service`'s log as a file under var/log/deploy/, for the project's log readers."""
        path = LOG_DIR / f"{self.name}-{service}.log"
        path.write_text(self.logs_text(service))
        return path

    def events(self, service: str, event: str, **match: Any) -> list[dict[str, Any]]:
        """The JSON log events named `event` that `service` has written so far."""
        return read_log_events(self.save_logs(service), event=event, **match)

    def exec(
        self, service: str, *argv: str, timeout: float = 120, stdin_text: str | None = None
    ) -> str:
        """What `docker compose exec -T service argv...` prints (it must exit 0)."""
        return self.compose(
            "exec", "-T", service, *argv, timeout=timeout, stdin_text=stdin_text
        ).stdout

    def transcript(self, room: str) -> list[dict[str, Any]]:
        """The agent's transcript records of `room`, read from the named volume as the README
        reads it when the stack may be stopped (`run --rm --no-deps`: nothing else starts)."""
        path = LOG_DIR / f"{self.name}-transcripts.jsonl"
        read = self.compose("run", "--rm", "--no-deps", "-T", "persona-agent", "cat", TRANSCRIPT)
        path.write_text(read.stdout)
        return read_log_events(path, room=room)

    def wait_for(self, what: str, probe: Any, timeout: float) -> Any:
        """`probe()` until it returns something truthy (a hang guard of `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout} s\n{self.status_text()}")
            time.sleep(0.5)

    def remove_copy(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
