"""Start and stop the real services (Redis, livekit-server, livekit-sip) for dev runs and tests."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from config.server_config import (
    LIVEKIT_SERVER_VERSION,
    LIVEKIT_SIP_VERSION,
    ServerConfig,
    render_server_config,
)
from config.sip_config import SipConfig, render_sip_config

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


def wait_http(
    url: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    ready: tuple[int, ...] | None = None,
) -> None:
    """Poll `url` until it answers with a `ready` status (any status when None)."""

    def answered() -> bool:
        status = http_status(url)
        return ready is None or status in ready

    wait_until(answered, url, timeout, proc)


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
        stop_process(self.proc)
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
    port: int | None = None,
    attempts: int = 3,
) -> LiveKitServer:
    """Start livekit-server on free loopback ports, or on `port` with its RTC ports next to it
    (TCP `port + 1`, UDP `port + 2`, as 7880-7882).

    A port found free can be taken by another process before the server binds it; the server
    then exits, and is started again on other ports (given ports are not changed).
    """
    log = log_path or ROOT / "var" / "log" / "livekit-server.log"
    for attempt in range(1, attempts + 1):
        if port is not None:
            cfg = ServerConfig(
                port=port,
                rtc_tcp_port=port + 1,
                rtc_udp_port=port + 2,
                webhook_urls=webhook_urls,
                redis_address=redis_address,
            )
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
            if port is not None or attempt == attempts:
                raise RuntimeError(
                    f"livekit-server did not start; {log} ends with:\n{tail(log, 5)}"
                ) from None
    raise AssertionError("unreachable")


def stop_process(
    proc: subprocess.Popen[bytes] | None, grace: float = 10.0, sig: int = signal.SIGTERM
) -> None:
    """`sig`, then SIGKILL after `grace` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


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


def redis_pong(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


@dataclass
class RedisServer:
    """A throw-away redis-server on loopback: no persistence, its files in a temp dir."""

    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _dir: Path | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is missing: run scripts/install_deps.sh first")
        self._dir = Path(tempfile.mkdtemp(prefix="redis-"))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Arguments instead of a config file; `--save ""` and no AOF: nothing reaches the disk.
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._dir),
                "--logfile",
                str(self.log_path),
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_until(lambda: redis_pong("127.0.0.1", self.port), self.address, timeout, self.proc)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


def start_redis(*, port: int | None = None, log_path: Path | None = None) -> RedisServer:
    """Start redis-server on a free loopback port (or `port`)."""
    log = log_path or ROOT / "var" / "log" / "redis.log"
    return RedisServer(port or free_port(), log).start()


@dataclass
class LiveKitSip:
    """A real livekit-sip talking to a livekit-server through Redis (on loopback for tests)."""

    config: SipConfig
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)
    _config_file: Path | None = None
    _log_offset: int = 0

    @property
    def sip_host(self) -> str:
        return self.config.listen_ip or "127.0.0.1"

    @property
    def sip_port(self) -> int:
        return self.config.sip_port

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.config.health_port}"

    def start(self, timeout: float = 30.0) -> LiveKitSip:
        if self.config.health_port is None:
            raise ValueError("LiveKitSip needs a health_port to know when it is ready")
        binary = require_binary("livekit-sip", LIVEKIT_SIP_VERSION)
        fd, name = tempfile.mkstemp(prefix="livekit-sip-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            f.write(render_sip_config(self.config))
        self._config_file = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log_offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [str(binary), "--config", name],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # 503 until started; 429 means started but the CPU is busy (a 2-core CI machine is), which
        # only stops outbound calls, so it counts as ready too.
        try:
            wait_http(self.health_url, timeout, self.proc, ready=(200, 429))
        except BaseException:
            self.stop()
            raise
        return self

    def announced_address(self) -> str | None:
        """The address livekit-sip puts in its SIP headers and SDP, as its start-up log line
        `server starting` names it (`external`): where a phone must be able to reach it."""
        with self.log_path.open("rb") as f:
            f.seek(self._log_offset)
            lines = f.read().decode(errors="replace").splitlines()
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("msg") == "server starting":
                external = record.get("external")
                return str(external) if external else None
        return None

    def stop(self) -> None:
        # SIGTERM would wait for every active call to end; SIGINT hangs them up and exits.
        stop_process(self.proc, grace=5.0, sig=signal.SIGINT)
        if self._log is not None:
            self._log.close()
        if self._config_file is not None:
            self._config_file.unlink(missing_ok=True)


def start_livekit_sip(
    server: LiveKitServer,
    redis_address: str,
    *,
    sip_port: int | None = None,
    rtp_ports: int = 200,
    rtp_range: tuple[int, int] | None = None,
    listen_ip: str | None = "127.0.0.1",
    log_path: Path | None = None,
) -> LiveKitSip:
    """Start livekit-sip for `server`: a free (or given) SIP port, a free (or given) RTP range.

    On loopback by default. `listen_ip=None` listens on every interface and announces the
    host's first non-loopback address, for a softphone on the LAN.
    livekit-sip keeps a closed call's RTP port draining for up to 30 s, so a free range covers
    every call a test session places, not only the concurrent ones.
    """
    log = log_path or ROOT / "var" / "log" / "livekit-sip.log"
    for attempt in range(3):
        # Free ports are only free when looked at: another process may take one before
        # livekit-sip binds it, and then it exits at once. Try again with new ports.
        try:
            rtp = rtp_range or free_udp_range(rtp_ports)
            return _start_livekit_sip(server, redis_address, sip_port, rtp, listen_ip, log)
        except RuntimeError:
            if attempt == 2 or "address already in use" not in tail(log, 3):
                raise
    raise AssertionError("unreachable")


def _start_livekit_sip(
    server: LiveKitServer,
    redis_address: str,
    sip_port: int | None,
    rtp_range: tuple[int, int],
    listen_ip: str | None,
    log: Path,
) -> LiveKitSip:
    rtp_start, rtp_end = rtp_range
    cfg = SipConfig(
        ws_url=server.ws_url,
        redis_address=redis_address,
        api_key=server.config.api_key,
        api_secret=server.config.api_secret,
        sip_port=sip_port or free_port(socket.SOCK_DGRAM),
        rtp_port_start=rtp_start,
        rtp_port_end=rtp_end,
        health_port=free_port(),
        listen_ip=listen_ip,
        nat_1_to_1_ip=listen_ip,
    )
    return LiveKitSip(cfg, log).start()
