"""Start and stop the real services (livekit-server, ...) for dev runs, tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from config.server_config import LIVEKIT_SERVER_VERSION, ServerConfig, render_server_config

ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    return Path(os.environ.get("PERSONA_CACHE_DIR", Path.home() / ".cache" / "persona-dispatcher"))


def binary_path(name: str, version: str) -> Path:
    """Where scripts/install_deps.sh caches a `go install`ed binary."""
    return cache_dir() / "bin" / f"{name}-{version}"


def require_binary(name: str, version: str) -> Path:
    path = binary_path(name, version)
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} is missing: run scripts/install_deps.sh first")
    return path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `url` until it answers (any HTTP status), the process dies, or `timeout` passes."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


@dataclass
class ManagedProcess:
    """A child process with its output in a log file, started and stopped as a unit."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    ready_url: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self, timeout: float = 30.0) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(self.env or {})},
            cwd=ROOT,
            start_new_session=True,
        )
        if self.ready_url:
            try:
                wait_http(self.ready_url, timeout, self.proc)
            except Exception:
                self.stop()
                raise RuntimeError(
                    f"{self.name} did not start; its log {self.log_path} ends with:\n"
                    + tail(self.log_path)
                ) from None
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def start_fake_persona_api(port: int, log_path: Path) -> ManagedProcess:
    """The fake CRM API (tests/fakes/persona_api.py) as a process; base URL is `/mobile`."""
    return ManagedProcess(
        "fake-persona-api",
        python_module("tests.fakes.persona_api", "--port", str(port)),
        log_path,
        ready_url=f"http://127.0.0.1:{port}/_control",
    ).start()


def start_dispatcher(port: int, env: dict[str, str], log_path: Path) -> ManagedProcess:
    """The webhook receiver (`python -m webhooks`) as a process, JSON logs into `log_path`."""
    return ManagedProcess(
        "dispatcher",
        python_module("webhooks"),
        log_path,
        env={"HOST": "127.0.0.1", "PORT": str(port), **env},
        ready_url=f"http://127.0.0.1:{port}/healthz",
    ).start()


@dataclass
class LiveKitServer:
    """A real livekit-server on loopback, in dev mode, with a generated config."""

    config: ServerConfig
    log_path: Path
    process: ManagedProcess | None = None
    _config_file: Path | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.config.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.config.port}"

    def start(self, timeout: float = 30.0) -> LiveKitServer:
        binary = require_binary("livekit-server", LIVEKIT_SERVER_VERSION)
        fd, name = tempfile.mkstemp(prefix="livekit-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            f.write(render_server_config(self.config))
        self._config_file = Path(name)
        argv = [str(binary), "--dev", "--config", name, "--bind", "127.0.0.1"]
        self.process = ManagedProcess(
            "livekit-server",
            [*argv, "--node-ip", "127.0.0.1"],
            self.log_path,
            ready_url=self.http_url,
        )
        self.process.start(timeout)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        if self._config_file is not None:
            self._config_file.unlink(missing_ok=True)


def start_livekit_server(
    *,
    webhook_urls: tuple[str, ...] = (),
    redis_address: str | None = None,
    log_path: Path | None = None,
    fixed_ports: bool = False,
    attempts: int = 3,
) -> LiveKitServer:
    """Start livekit-server on free loopback ports (or 7880-7882 when `fixed_ports`).

    A port found free can be taken by another process before the server binds it; the server
    then exits, and is started again on other ports.
    """
    log = log_path or ROOT / "var" / "log" / "livekit-server.log"
    for attempt in range(1, attempts + 1):
        if fixed_ports:
            cfg = ServerConfig(webhook_urls=webhook_urls, redis_address=redis_address)
        else:
            cfg = ServerConfig(
                port=free_port(),
                rtc_tcp_port=free_port(),
                rtc_udp_port=free_port(socket.SOCK_DGRAM),
                webhook_urls=webhook_urls,
                redis_address=redis_address,
            )
        server = LiveKitServer(cfg, log)
        try:
            return server.start()
        except (RuntimeError, TimeoutError):
            server.stop()
            if fixed_ports or attempt == attempts:
                raise RuntimeError(
                    f"livekit-server did not start; {log} ends with:\n{tail(log, 5)}"
                ) from None
    raise AssertionError("unreachable")
