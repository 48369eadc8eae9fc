"""The real services on loopback, each a `ManagedProcess`: Redis, livekit-server, livekit-sip and
the dispatcher. The dev command, the tests and the benchmarks start them the same way."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from devstack.logs import read_json_lines
from devstack.processes import (
    ROOT,
    ManagedProcess,
    free_port,
    free_udp_range,
    http_ready,
    python_module,
    require_binary,
    require_system_binary,
    tail,
)
from provisioning.load_balancer import Backend, render_haproxy_config
from provisioning.server_config import (
    LIVEKIT_SERVER_VERSION,
    LIVEKIT_SIP_VERSION,
    ServerConfig,
    render_server_config,
)
from provisioning.sip_config import SipConfig, render_sip_config


def _config_file(prefix: str, text: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return Path(name)


def dispatcher_process(port: int, env: dict[str, str], log_path: Path) -> ManagedProcess:
    """The webhook receiver (`python -m webhooks`) as a process (not started yet), JSON logs
    into `log_path`."""
    return ManagedProcess(
        "dispatcher",
        python_module("webhooks"),
        log_path,
        # HAProxy (config/haproxy.cfg) takes a replica out within 1 s of /readyz turning 503.
        env={"HOST": "127.0.0.1", "PORT": str(port), "DRAIN_GRACE_S": "1", **env},
        ready=http_ready(f"http://127.0.0.1:{port}/healthz"),
    )


def start_dispatcher(port: int, env: dict[str, str], log_path: Path) -> ManagedProcess:
    """`dispatcher_process`, started: returns once it answers `/healthz`."""
    return dispatcher_process(port, env, log_path).start()


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

    @property
    def metrics_url(self) -> str | None:
        """Its Prometheus metrics, where its config enables them."""
        port = self.config.prometheus_port
        return None if port is None else f"http://127.0.0.1:{port}/metrics"

    def start(self, timeout: float = 30.0) -> LiveKitServer:
        binary = require_binary("livekit-server", LIVEKIT_SERVER_VERSION)
        self._config_file = _config_file("livekit-", render_server_config(self.config))
        argv = [str(binary), "--dev", "--config", str(self._config_file), "--bind", "127.0.0.1"]
        self.process = ManagedProcess(
            "livekit-server",
            [*argv, "--node-ip", "127.0.0.1"],
            self.log_path,
            ready=http_ready(self.http_url),
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
    prometheus_port: int | None = None,
    attempts: int = 3,
) -> LiveKitServer:
    """Start livekit-server on free loopback ports, or on `port` with its RTC ports next to it
    (TCP `port + 1`, UDP `port + 2`, as 7880-7882); its Prometheus metrics on `prometheus_port`
    or a free port.

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
                prometheus_port=prometheus_port or free_port(),
            )
        else:
            cfg = ServerConfig(
                port=free_port(),
                rtc_tcp_port=free_port(),
                rtc_udp_port=free_port(socket.SOCK_DGRAM),
                webhook_urls=webhook_urls,
                redis_address=redis_address,
                prometheus_port=prometheus_port or free_port(),
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


def redis_pong(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


@dataclass
class RedisServer:
    """A throw-away redis-server on loopback: no persistence, its files in a temp dir."""

    port: int
    log_path: Path
    process: ManagedProcess | None = None
    _dir: Path | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = require_system_binary("redis-server")
        self._dir = Path(tempfile.mkdtemp(prefix="redis-"))
        # Arguments instead of a config file; `--save ""` and no AOF: nothing reaches the disk.
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self._dir), "--daemonize", "no"]
        self.process = ManagedProcess(
            "redis-server",
            argv,
            self.log_path,
            ready=lambda: redis_pong("127.0.0.1", self.port),
        )
        try:
            self.process.start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
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
    process: ManagedProcess | None = None
    _config_file: Path | None = None

    @property
    def sip_host(self) -> str:
        return self.config.listen_ip or "127.0.0.1"

    @property
    def sip_port(self) -> int:
        return self.config.sip_port

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.config.health_port}"

    @property
    def metrics_url(self) -> str | None:
        """Its Prometheus metrics, where its config enables them."""
        port = self.config.prometheus_port
        return None if port is None else f"http://127.0.0.1:{port}/metrics"

    def start(self, timeout: float = 30.0) -> LiveKitSip:
        if self.config.health_port is None:
            raise ValueError("LiveKitSip needs a health_port to know when it is ready")
        binary = require_binary("livekit-sip", LIVEKIT_SIP_VERSION)
        self._config_file = _config_file("livekit-sip-", render_sip_config(self.config))
        self.process = ManagedProcess(
            "livekit-sip",
            [str(binary), "--config", str(self._config_file)],
            self.log_path,
            # 503 until started; 429 means started but the CPU is busy (a 2-core CI machine is),
            # which only stops outbound calls, so it counts as ready too.
            ready=http_ready(self.health_url, (200, 429)),
            # SIGTERM would wait for every active call to end; SIGINT hangs them up and exits.
            stop_signal=signal.SIGINT,
            stop_grace_s=5.0,
        )
        try:
            self.process.start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def announced_address(self) -> str | None:
        """The address livekit-sip puts in its SIP headers and SDP, as its start-up log line
        `server starting` names it (`external`): where a phone must be able to reach it."""
        offset = self.process.log_offset if self.process is not None else 0
        for record in read_json_lines(self.log_path, offset, msg="server starting"):
            external = record.get("external")
            return str(external) if external else None
        return None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
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
    prometheus_port: int | None = None,
    log_path: Path | None = None,
) -> LiveKitSip:
    """Start livekit-sip for `server`: a free (or given) SIP port, a free (or given) RTP range,
    its Prometheus metrics on a free (or given) port.

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
            return _start_livekit_sip(
                server, redis_address, sip_port, rtp, listen_ip, log, prometheus_port
            )
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
    prometheus_port: int | None,
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
        prometheus_port=prometheus_port or free_port(),
        listen_ip=listen_ip,
        nat_1_to_1_ip=listen_ip,
    )
    return LiveKitSip(cfg, log).start()


@dataclass
class LoadBalancer:
    """HAProxy on loopback in front of dispatcher replicas (Debian's haproxy)."""

    port: int
    backends: list[Backend]
    log_path: Path
    process: ManagedProcess | None = None
    _config_file: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> LoadBalancer:
        binary = require_system_binary("haproxy")
        text = render_haproxy_config(f"127.0.0.1:{self.port}", self.backends)
        self._config_file = _config_file("haproxy-", text)
        self.process = ManagedProcess(
            "haproxy",
            [binary, "-db", "-f", str(self._config_file)],  # -db: foreground, no daemon
            self.log_path,
            ready=lambda: _accepts(self.port),
        )
        try:
            self.process.start(timeout)
        except BaseException:
            self.stop()  # and its config file
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        if self._config_file is not None:
            self._config_file.unlink(missing_ok=True)


def _accepts(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def start_load_balancer(
    backends: list[Backend], *, port: int | None = None, log_path: Path | None = None
) -> LoadBalancer:
    """HAProxy on a free (or given) loopback port, balancing over `backends`."""
    log = log_path or ROOT / "var" / "log" / "haproxy.log"
    return LoadBalancer(port or free_port(), backends, log).start()
