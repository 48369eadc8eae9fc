"""Run the service on its embedded default, ready for a softphone on the LAN: Redis, a local dev
livekit-server on 127.0.0.1:7880 whose webhooks go to the dispatcher on 127.0.0.1:8080, livekit-sip
on every interface (SIP 5060) with the trunk and dispatch rule of config/sip/ applied, and the agent
worker; personas from `user-mapping/`, in-memory cache. Prometheus may scrape the dispatcher's
`/metrics`, livekit-server's on 6789 and livekit-sip's on 6790 (as config/*.yaml set them).

Redis is the command's own (port 6380, nothing written to disk), never a system one: a Debian
redis-server already runs on 6379, and the dev stack applies its SIP set-up afresh at each start,
so nothing needs to outlive it.

Usage: scripts/dev.sh [options]  (installs what is missing, then runs this until Ctrl-C)
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import signal
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from config.env import read_environment
from config.settings import load_settings
from devstack.agent_worker import AgentWorker, agent_worker_env
from devstack.processes import ROOT, free_port, port_free, tail, udp_ports_free
from devstack.services import (
    LiveKitServer,
    LiveKitSip,
    RedisServer,
    start_dispatcher,
    start_livekit_server,
    start_livekit_sip,
    start_redis,
)
from dispatcher.agent_choice import AgentRoster
from operator_tools.manual_dispatch import TEST_NUMBER
from provisioning.examples import LIVEKIT_PROMETHEUS_PORT, SIP_PROMETHEUS_PORT
from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET
from provisioning.sip_config import DEFAULT_RTP_PORT_END, DEFAULT_RTP_PORT_START, DEFAULT_SIP_PORT
from provisioning.sip_setup import SetupError, SetupResult, load_trunk, setup_sip

DEFAULT_REDIS_PORT = 6380


class Service(Protocol):
    def stop(self) -> object: ...


S = TypeVar("S", bound=Service)


class Watched(Protocol):
    name: str
    log_path: Path

    def alive(self) -> bool: ...


@dataclass(frozen=True)
class Ports:
    dispatcher: int
    livekit: int
    sip: int | None
    rtp: tuple[int, int] | None
    redis: int | None
    metrics: tuple[int, ...] = ()  # livekit-server's and livekit-sip's Prometheus ports


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def rtp_range(text: str) -> tuple[int, int]:
    """`10000-10100` -> (10000, 10100)."""
    try:
        start, end = (int(x) for x in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port range START-END: {text!r}") from None
    if not 0 < start < end < 65536:
        raise argparse.ArgumentTypeError(f"bad port range {text!r}")
    return start, end


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8080, help="dispatcher port (8080)")
    parser.add_argument(
        "--livekit-port",
        type=int,
        default=7880,
        help="livekit-server port (7880); its RTC ports are the next two (TCP, UDP)",
    )
    parser.add_argument(
        "--no-sip",
        dest="sip",
        action="store_false",
        help="no Redis, no livekit-sip, no SIP set-up: livekit-server and the dispatcher only",
    )
    parser.add_argument(
        "--sip-port", type=int, default=DEFAULT_SIP_PORT, help="SIP port, UDP and TCP (5060)"
    )
    parser.add_argument(
        "--rtp-ports",
        type=rtp_range,
        default=(DEFAULT_RTP_PORT_START, DEFAULT_RTP_PORT_END),
        help=f"livekit-sip's RTP port range ({DEFAULT_RTP_PORT_START}-{DEFAULT_RTP_PORT_END})",
    )
    parser.add_argument(
        "--redis-port",
        type=int,
        default=DEFAULT_REDIS_PORT,
        help=f"port of the command's own Redis ({DEFAULT_REDIS_PORT})",
    )
    parser.add_argument(
        "--livekit-metrics-port",
        type=int,
        default=LIVEKIT_PROMETHEUS_PORT,
        help=f"livekit-server's Prometheus metrics port ({LIVEKIT_PROMETHEUS_PORT})",
    )
    parser.add_argument(
        "--sip-metrics-port",
        type=int,
        default=SIP_PROMETHEUS_PORT,
        help=f"livekit-sip's Prometheus metrics port ({SIP_PROMETHEUS_PORT})",
    )
    parser.add_argument(
        "--log-dir", type=Path, default=ROOT / "var" / "log" / "dev", help="(var/log/dev)"
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=ROOT / "var" / "dev.env",
        help="where to write the settings the operator tools read (var/dev.env)",
    )
    parser.add_argument(
        "--persona-api",
        default=os.environ.get("PERSONA_API_BASE", "off"),
        help="persona API base URL, or 'off' for file personas only (default)",
    )
    parser.add_argument(
        "--agent-stack",
        default=os.environ.get("AGENT_STACK", "fake"),
        choices=("fake", "openai-realtime", "pipeline", "none"),
        help="the agent worker's model stack; 'fake' (default) speaks the persona's lines as a "
        "tone and needs no API key, 'none' starts no agent",
    )
    return parser.parse_args(argv)


def ports_taken(p: Ports) -> list[str]:
    """The fixed ports another process holds already, named for the error message."""
    wanted = [("dispatcher", p.dispatcher, socket.SOCK_STREAM)]
    wanted += [("livekit-server", p.livekit + i, socket.SOCK_STREAM) for i in (0, 1)]
    wanted.append(("livekit-server RTC", p.livekit + 2, socket.SOCK_DGRAM))
    if p.redis is not None:
        wanted.append(("redis", p.redis, socket.SOCK_STREAM))
    wanted += [("metrics", port, socket.SOCK_STREAM) for port in p.metrics]
    if p.sip is not None:
        wanted += [("SIP", p.sip, socket.SOCK_DGRAM), ("SIP", p.sip, socket.SOCK_STREAM)]
    taken = [f"{name} {port}" for name, port, kind in wanted if not port_free(port, kind)]
    if p.rtp is not None and not udp_ports_free(*p.rtp, host="0.0.0.0"):
        taken.append(f"RTP {p.rtp[0]}-{p.rtp[1]}")
    return taken


def shown(path: Path) -> str:
    """`path` as a developer types it: relative to the working directory when under it (what the
    command prints is the same for every checkout), else whole."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def dial_instructions(sip: LiveKitSip, setup: SetupResult) -> str:
    """What to put in a softphone (Zoiper) to call this stack."""
    trunk = load_trunk()
    host = sip.announced_address() or "<this host's LAN address>"
    personas = sorted(p.stem.removeprefix("num_") for p in (ROOT / "user-mapping").glob("num_*"))
    text = (
        f"SIP (Zoiper)    dial {trunk.numbers[0]} at {host}:{sip.sip_port} "
        "(UDP or TCP; registration off)\n"
        f"                caller id / username {TEST_NUMBER} "
        f"(personas in user-mapping/: {', '.join(personas)}; other numbers get the default)\n"
        f"                calls accepted from {', '.join(trunk.allowed_addresses)}; "
        f"trunk {setup.trunk_id}, rule {setup.rule_id}\n"
    )
    if not in_networks(host, trunk.allowed_addresses):
        text += (
            f"                note: {host} is outside those ranges; add the phone's network to "
            "allowed_addresses in config/sip/inbound_trunk.json\n"
        )
    return text


def metrics_lines(
    dispatcher_url: str,
    livekit: LiveKitServer,
    sip: LiveKitSip | None,
    workers: Iterable[AgentWorker] = (),
) -> str:
    """Where Prometheus scrapes each service (deploy/prometheus/, README "Operating it")."""
    urls = [dispatcher_url + "/metrics", livekit.metrics_url, sip.metrics_url if sip else None]
    urls += [w.metrics_url for w in workers]
    return "  ".join(u for u in urls if u)


def in_networks(address: str, networks: Iterable[str]) -> bool:
    """Whether `address` lies in one of `networks` (CIDR ranges or single addresses)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return True  # not an address we can judge: say nothing
    return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)


def other_agents() -> tuple[str, ...]:
    """The agents of AGENT_NAMES besides AGENT_NAME, as the dispatcher reads them."""
    settings = load_settings(livekit=False)
    return AgentRoster(settings.agent_name, settings.agent_names).all[1:]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    taken = ports_taken(ports_of(args))
    if taken:
        print(
            f"dev: error: ports in use: {', '.join(taken)} (another dev stack? choose others "
            "with --port, --livekit-port, --sip-port, --rtp-ports, --redis-port, "
            "--livekit-metrics-port, --sip-metrics-port)",
            flush=True,
        )
        return 1
    services: list[Service] = []  # stopped in reverse order
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run_stack(args, services)
    except KeyboardInterrupt:
        return 0
    except SetupError as e:
        print(f"dev: error: SIP set-up: {e}", flush=True)
        return 1
    except (RuntimeError, TimeoutError) as e:
        print(f"dev: error: {e}", flush=True)
        return 1
    finally:
        for service in reversed(services):
            service.stop()


def ports_of(args: argparse.Namespace) -> Ports:
    return Ports(
        dispatcher=args.port,
        livekit=args.livekit_port,
        sip=args.sip_port if args.sip else None,
        rtp=args.rtp_ports if args.sip else None,
        redis=args.redis_port if args.sip else None,
        metrics=(args.livekit_metrics_port, *((args.sip_metrics_port,) if args.sip else ())),
    )


def run_stack(args: argparse.Namespace, services: list[Service]) -> int:
    """Start every service in order (each added to `services` as it starts), say how to call
    in, and run until one of them exits."""
    logs: Path = args.log_dir
    dispatcher_url = f"http://127.0.0.1:{args.port}"
    redis = None
    if args.sip:
        redis = started(services, start_redis(port=args.redis_port, log_path=logs / "redis.log"))
    livekit = started(
        services,
        start_livekit_server(
            webhook_urls=(dispatcher_url + "/webhooks/livekit",),
            redis_address=redis.address if redis else None,
            log_path=logs / "livekit-server.log",
            port=args.livekit_port,
            prometheus_port=args.livekit_metrics_port,
        ),
    )
    sip = None if redis is None else started(services, start_sip(args, livekit, redis))
    sip_lines = "SIP             off (--no-sip)\n" if sip is None else set_up_sip(sip, livekit)
    dispatcher = started(
        services,
        start_dispatcher(args.port, dispatcher_env(args, livekit), logs / "dispatcher.log"),
    )
    workers = agent_workers(args, livekit) if args.agent_stack != "none" else []
    for worker in workers:
        started(services, worker).start()
    print(banner(args, dispatcher_url, livekit, sip, sip_lines, workers), flush=True)
    return watch([dispatcher, *([livekit.process] if livekit.process is not None else [])])


def started(services: list[Service], service: S) -> S:
    services.append(service)
    return service


def start_sip(args: argparse.Namespace, livekit: LiveKitServer, redis: RedisServer) -> LiveKitSip:
    return start_livekit_sip(
        livekit,
        redis.address,
        sip_port=args.sip_port,
        rtp_range=args.rtp_ports,
        listen_ip=None,  # every interface: the phone is on the LAN
        prometheus_port=args.sip_metrics_port,
        log_path=args.log_dir / "livekit-sip.log",
    )


def set_up_sip(sip: LiveKitSip, livekit: LiveKitServer) -> str:
    """The trunk and dispatch rule applied afresh; what a softphone dials."""
    env = read_environment()
    setup = asyncio.run(
        setup_sip(
            livekit.http_url,
            DEV_API_KEY,
            DEV_API_SECRET,
            auth_username=env.get("SIP_AUTH_USERNAME") or None,
            auth_password=env.get("SIP_AUTH_PASSWORD") or None,
        )
    )
    return dial_instructions(sip, setup)


def dispatcher_env(args: argparse.Namespace, livekit: LiveKitServer) -> dict[str, str]:
    """The dispatcher's settings, also written to `--env-file` for the operator tools."""
    env = {
        "LIVEKIT_URL": livekit.ws_url,
        "LIVEKIT_API_KEY": os.environ.get("LIVEKIT_API_KEY", DEV_API_KEY),
        "LIVEKIT_API_SECRET": os.environ.get("LIVEKIT_API_SECRET", DEV_API_SECRET),
        "PERSONA_API_BASE": args.persona_api,
        # persona-dispatch-call's set-up log, beside the dispatcher's, for persona-logs.
        "MANUAL_DISPATCH_LOG": str(args.log_dir / "manual-dispatch.log"),
    }
    args.env_file.parent.mkdir(parents=True, exist_ok=True)
    args.env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return env


def agent_workers(args: argparse.Namespace, livekit: LiveKitServer) -> list[AgentWorker]:
    """The worker of AGENT_NAME, and one more per other agent of AGENT_NAMES (one worker process
    registers one name)."""
    agent_env = {
        "AGENT_MAX_JOBS": "0",  # livekit-agents' own load measure (CPU)
        "TRANSCRIPT_PATH": str(ROOT / "conversations" / "transcripts.jsonl"),
    }
    # The worker's own settings (AGENT_*, TRANSCRIPT_PATH) may come from the environment.
    agent_env.update(
        {k: v for k, v in os.environ.items() if k.startswith("AGENT_") or k == "TRANSCRIPT_PATH"}
    )
    agent_env["AGENT_STACK"] = args.agent_stack
    logs: Path = args.log_dir
    workers = [AgentWorker(agent_worker_env(livekit, logs, **agent_env), logs / "agent-worker.log")]
    for name in other_agents():
        # Ports of its own: one worker process per name, on one host.
        ports = {"AGENT_HTTP_PORT": "0", "AGENT_METRICS_PORT": str(free_port())}
        named = {**agent_env, "AGENT_NAME": name, **ports}
        workers.append(
            AgentWorker(agent_worker_env(livekit, logs, **named), logs / f"agent-worker-{name}.log")
        )
    return workers


def banner(
    args: argparse.Namespace,
    dispatcher_url: str,
    livekit: LiveKitServer,
    sip: LiveKitSip | None,
    sip_lines: str,
    workers: Iterable[AgentWorker] = (),
) -> str:
    return (
        f"livekit-server  {livekit.ws_url}  (key {DEV_API_KEY}, secret {DEV_API_SECRET})\n"
        f"dispatcher      {dispatcher_url}/webhooks/livekit  persona API: {args.persona_api}\n"
        f"agent           {args.agent_stack} stack, "
        f"{'not started' if args.agent_stack == 'none' else 'registered'}\n"
        f"{sip_lines}"
        f"metrics         {metrics_lines(dispatcher_url, livekit, sip, workers)}\n"
        f"logs            {shown(args.log_dir)}/\n"
        f"Try: .venv/bin/python -m scripts.dispatch_call --env-file {shown(args.env_file)} "
        f"--number {TEST_NUMBER}\n"
        "Ctrl-C stops everything."
    )


def watch(watched: list[Watched]) -> int:
    """Until one of `watched` exits: then its log's end, and 1."""
    while all(p.alive() for p in watched):
        time.sleep(0.5)
    for p in watched:
        if not p.alive():
            print(f"{p.name} exited; its log ends with:\n{tail(p.log_path)}", flush=True)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
