"""The one process supervisor for local services: start a child in its own process group with its
output in a log file, wait until it is ready, stop it (and whatever it forked) as a unit.

Also the small things every launcher needs: free ports below the ephemeral range, readiness
probes, and where `scripts/install_deps.sh` caches the Go binaries.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    return Path(os.environ.get("PERSONA_CACHE_DIR", Path.home() / ".cache" / "persona-dispatcher"))


def binary_path(name: str, version: str) -> Path:
    """Where scripts/install_deps.sh caches a Go binary it built."""
    return cache_dir() / "bin" / f"{name}-{version}"


def require_binary(name: str, version: str) -> Path:
    path = binary_path(name, version)
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} is missing: run scripts/install_deps.sh first")
    return path


def require_system_binary(name: str, package: str | None = None) -> str:
    """`name` on PATH (a Debian package `scripts/install_deps.sh` installs), or one clear error."""
    found = shutil.which(name)
    if found is None:
        from_package = f" (Debian {package})" if package else ""
        raise RuntimeError(f"{name} is missing: run scripts/install_deps.sh{from_package}")
    return found


# Ports we pick for servers: below Linux's ephemeral range (32768-60999), from which the kernel
# hands out source ports for every outgoing connection. A port picked there (as binding port 0
# does) can be taken by some connection before the server binds it, and the server exits.
PICK_LOW, PICK_HIGH = 20000, 32000


def port_free(port: int, kind: int = socket.SOCK_STREAM) -> bool:
    """Whether `port` can be bound on every interface (servers here bind ":port")."""
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port that is free now, outside the ephemeral range (TCP and UDP both, for SIP)."""
    for _ in range(200):
        port = random.randrange(PICK_LOW, PICK_HIGH)
        if port_free(port, socket.SOCK_STREAM) and port_free(port, socket.SOCK_DGRAM):
            return port
    raise RuntimeError(f"no free port in {PICK_LOW}-{PICK_HIGH}")


def udp_ports_free(start: int, end: int, host: str = "127.0.0.1") -> bool:
    """Whether every UDP port in `start..end` can be bound on `host` right now."""
    socks: list[socket.socket] = []
    try:
        for port in range(start, end + 1):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def free_udp_range(size: int, low: int = PICK_LOW, high: int = PICK_HIGH) -> tuple[int, int]:
    """A range of `size` bindable UDP ports below Linux's ephemeral range (32768+)."""
    for _ in range(50):
        start = random.randrange(low, high - size)
        if udp_ports_free(start, start + size - 1):
            return start, start + size - 1
    raise RuntimeError(f"no free range of {size} UDP ports in {low}-{high}")


def wait_until(
    probe: Callable[[], object], what: str, timeout: float, proc: subprocess.Popen[bytes] | None
) -> None:
    """Call `probe` until it returns a truthy value, the process dies, or `timeout` passes.

    `probe` may raise OSError while the service is not up yet.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {what} was ready")
        try:
            last = probe()
            if last:
                return
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise TimeoutError(f"{what} was not ready within {timeout}s: {last}")


def http_status(url: str) -> int:
    """The HTTP status `url` answers with (raises OSError when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def http_ready(url: str, statuses: tuple[int, ...] | None = None) -> Callable[[], bool]:
    """A readiness probe: `url` answers (with one of `statuses`, when given)."""

    def probe() -> bool:
        status = http_status(url)
        return statuses is None or status in statuses

    return probe


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


@dataclass
class ManagedProcess:
    """A child process with its output in a log file, started and stopped as a unit.

    `env` is laid over this process's environment (or replaces it with `inherit_env=False`);
    `ready` is a probe polled after the start until it returns a truthy value.
    """

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    inherit_env: bool = True
    cwd: Path = ROOT
    ready: Callable[[], object] | None = None
    stop_signal: int = signal.SIGTERM
    stop_grace_s: float = 10.0
    proc: subprocess.Popen[bytes] | None = None
    log_offset: int = 0
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self, timeout: float = 30.0) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.log_offset = self._log.tell()
        env = {**os.environ, **(self.env or {})} if self.inherit_env else dict(self.env or {})
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.cwd,
            start_new_session=True,
        )
        if self.ready is not None:
            try:
                wait_until(self.ready, self.name, timeout, self.proc)
            except (RuntimeError, TimeoutError):
                self.stop()
                raise RuntimeError(
                    f"{self.name} did not start; its log {self.log_path} ends with:\n"
                    + tail(self.log_path)
                ) from None
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.proc.pid

    def wait(self, timeout: float) -> int:
        """Wait for the process to end on its own (killing it after `timeout`); its exit code."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} was not started")
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop(grace_s=0)
            return self.proc.wait(5)

    def log_text(self, since_start: bool = True) -> str:
        """What the process wrote (since this start, or the whole log file)."""
        with self.log_path.open("rb") as f:
            f.seek(self.log_offset if since_start else 0)
            return f.read().decode(errors="replace")

    def stop(self, grace_s: float | None = None) -> int | None:
        """`stop_signal`, then SIGKILL to the whole group after the grace period; whatever the
        process forked (job processes, say) is killed with it. Returns the exit code."""
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(self.stop_signal)
                try:
                    proc.wait(self.stop_grace_s if grace_s is None else grace_s)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode if proc is not None else None
