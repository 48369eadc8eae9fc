"""The main command serves a softphone: `python -m scripts.dev` (what scripts/dev.sh runs), started
as a developer starts it but on free ports and its own log directory, prints what to dial, and a
real SIP call placed by sipp the way Zoiper would is answered by the agent in the caller's persona.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack.logs import clear_logs
from devstack.processes import ROOT, free_port, free_udp_range, port_free, tail
from provisioning.sip_setup import load_trunk
from telemetry.logs import redact_text
from tests.e2e.service_logs import records, spoken
from tests.harness.fixture_personas import PRIYA
from tests.harness.sipp import TEST_CALLER, Call, SippRun

LOG_DIR = ROOT / "var" / "log" / "e2e" / "dev-command"
READY_LINE = "Ctrl-C stops everything."


@dataclass
class DevCommand:
    proc: subprocess.Popen[bytes]
    output_path: Path
    sip_port: int
    ports: dict[str, int]  # the TCP ports of its services, by name

    @property
    def output(self) -> str:
        return self.output_path.read_text(errors="replace")


def free_livekit_port() -> int:
    """A port P with P and P + 1 free for TCP and P + 2 for UDP: livekit-server's three."""
    for _ in range(100):
        port = free_port()
        if port_free(port + 1) and port_free(port + 2, socket.SOCK_DGRAM):
            return port
    raise RuntimeError("no three free ports in a row")


@pytest.fixture(scope="module")
def dev() -> Iterator[DevCommand]:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    clear_logs(LOG_DIR, "*.log", "*.jsonl", "*.out")
    rtp_start, rtp_end = free_udp_range(20)
    sip_port = free_port(socket.SOCK_DGRAM)
    ports = {"dispatcher": free_port(), "livekit-server": free_livekit_port(), "redis": free_port()}
    ports |= {"livekit-server metrics": free_port(), "livekit-sip metrics": free_port()}
    argv = [
        sys.executable, "-m", "scripts.dev",
        "--port", str(ports["dispatcher"]),
        "--livekit-port", str(ports["livekit-server"]),
        "--sip-port", str(sip_port),
        "--rtp-ports", f"{rtp_start}-{rtp_end}",
        "--redis-port", str(ports["redis"]),
        "--livekit-metrics-port", str(ports["livekit-server metrics"]),
        "--sip-metrics-port", str(ports["livekit-sip metrics"]),
        "--log-dir", str(LOG_DIR),
        "--env-file", str(LOG_DIR / "dev.env"),
    ]  # fmt: skip
    env = {
        **os.environ,
        "TRANSCRIPT_PATH": str(LOG_DIR / "transcripts.jsonl"),
        # Load by job count, not CPU: on a busy 2-core CI machine the worker would otherwise
        # report itself full and the server would hold the call's job back.
        "AGENT_MAX_JOBS": "50",
        # A second agent the CRM may name: the dev command runs a worker for it too.
        "AGENT_NAMES": "friday,meera",
    }
    output_path = LOG_DIR / "dev-command.out"
    with output_path.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    command = DevCommand(proc, output_path, sip_port, ports)
    try:
        deadline = time.monotonic() + 180  # a hang guard: it starts five services
        while READY_LINE not in command.output:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"the dev command did not come up (rc {proc.poll()}):\n{command.output}"
                )
            time.sleep(0.2)
        yield command
    finally:
        # Ctrl-C, as a developer stops it.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_dev_command_prints_what_a_softphone_dials(dev: DevCommand) -> None:
    trunk = load_trunk()
    out = dev.output
    assert f"dial {trunk.numbers[0]} at " in out
    assert f":{dev.sip_port} (UDP or TCP; registration off)" in out
    assert f"caller id / username {TEST_CALLER} " in out
    assert ", ".join(trunk.allowed_addresses) in out


def test_dev_command_answers_a_sip_call_with_the_callers_persona(dev: DevCommand) -> None:
    """One call from 8655701159 to the trunk number: answered, one agent dispatched, and the
    agent greets with that caller's persona (the user-mapping file: the persona API is off)."""
    call = Call(TEST_CALLER, load_trunk().numbers[0])
    run = SippRun("127.0.0.1", dev.sip_port, [call], rtp_seconds=2.0, timeout=180)
    try:
        result = run.start().wait()
    finally:
        run.stop()
    assert result.successful == 1, result.summary() + "\n" + tail(LOG_DIR / "livekit-sip.log")
    [timing] = result.calls
    assert timing.ring_ms is not None, result.summary()

    dispatched = [
        e
        for e in records(LOG_DIR / "dispatcher.log", "agent.dispatched")
        if e["room"].startswith(f"call_{redact_text(TEST_CALLER)}_")  # as the dev logs mask it
    ]
    assert len(dispatched) == 1, dispatched
    room = dispatched[0]["room"]
    resolved = [
        e for e in records(LOG_DIR / "dispatcher.log", "persona.resolved") if e["room"] == room
    ]
    assert [(e["status"], e["persona_id"]) for e in resolved] == [("file", "prs_3001")]
    applied = [
        e for e in records(LOG_DIR / "agent-worker.log", "persona.applied") if e["room"] == room
    ]
    assert [(e["status"], e["persona_id"]) for e in applied] == [("file", "prs_3001")]
    assert " ".join(spoken(LOG_DIR / "fake-llm.jsonl", room)[:2]) == PRIYA.welcome


def test_dev_command_serves_each_services_prometheus_metrics(dev: DevCommand) -> None:
    """The dispatcher's, livekit-server's and livekit-sip's metrics, where it says, each in
    Prometheus' text format with its own service's metrics (what deploy/prometheus/ scrapes);
    then each agent worker's, on the port its log names."""
    workers = [
        record
        for log in ("agent-worker.log", "agent-worker-meera.log")
        for record in records(LOG_DIR / log, "worker.starting")
    ]
    agents = [f"http://127.0.0.1:{w['metrics_port']}/metrics" for w in workers]
    expected = {
        f"http://127.0.0.1:{dev.ports['dispatcher']}/metrics": "persona_dispatcher_rooms_held",
        f"http://127.0.0.1:{dev.ports['livekit-server metrics']}/metrics": "livekit_room_total",
        f"http://127.0.0.1:{dev.ports['livekit-sip metrics']}/metrics": (
            "livekit_sip_invite_requests_raw"
        ),
    }
    [line] = [x for x in dev.output.splitlines() if x.startswith("metrics ")]
    assert len(agents) == 2
    assert line.split()[1:] == [*expected, *agents]
    for url in agents:
        # Its series are born with the calls' first counts; before them, an empty exposition.
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain")
    for url, name in expected.items():
        with urllib.request.urlopen(url, timeout=5) as resp:
            # Sample names as Prometheus stores them (prometheus-client's parser would add
            # `_total` to Go's counters).
            lines = resp.read().decode().splitlines()
        assert any(x.startswith(name) for x in lines), (url, lines[:20])


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_dev_command_runs_one_worker_per_agent_name(dev: DevCommand) -> None:
    """AGENT_NAMES=friday,meera: `meera` has a worker of its own, registered under its name."""
    registered = records(LOG_DIR / "agent-worker-meera.log", "registered worker")
    assert [e.get("agent_name") for e in registered] == ["meera"]
    main = records(LOG_DIR / "agent-worker.log", "registered worker")
    assert [e.get("agent_name") for e in main] == ["friday"]


def test_ctrl_c_stops_the_dev_command_and_its_services(dev: DevCommand) -> None:
    """Runs last: Ctrl-C ends the command with status 0, and nothing it started still listens."""
    assert all(answers(port) for port in dev.ports.values())
    dev.proc.send_signal(signal.SIGINT)
    assert dev.proc.wait(60) == 0
    assert [name for name, port in dev.ports.items() if answers(port)] == []
