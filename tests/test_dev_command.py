"""The dev command's own decisions, without starting anything (the running command is tested in
tests/e2e/test_dev_command.py)."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest

from devstack.processes import free_port
from scripts.dev import Ports, in_networks, parse_args, ports_taken, rtp_range, shown

pytestmark = pytest.mark.unit


def test_defaults_serve_a_softphone_on_5060_with_its_own_redis_on_6380() -> None:
    args = parse_args([])
    assert (args.port, args.livekit_port, args.sip_port) == (8080, 7880, 5060)
    assert (args.sip, args.redis_port, args.rtp_ports) == (True, 6380, (10000, 10100))
    assert parse_args(["--no-sip"]).sip is False


@pytest.mark.parametrize("text", ["10000", "a-b", "200-100", "0-10", "10-70000"])
def test_bad_rtp_ranges_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        rtp_range(text)


def test_announced_address_outside_the_trunks_ranges_is_noticed() -> None:
    allowed = ["127.0.0.0/8", "192.168.0.0/16"]
    assert in_networks("192.168.1.20", allowed)
    assert not in_networks("192.0.2.2", allowed)


def test_a_port_held_by_another_process_is_named() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        ports = Ports(dispatcher=port, livekit=free_port(), sip=None, rtp=None, redis=None)
        assert f"dispatcher {port}" in ports_taken(ports)


def test_a_metrics_port_held_by_another_process_is_named() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        ports = Ports(free_port(), free_port(), None, None, None, metrics=(free_port(), port))
        assert f"metrics {port}" in ports_taken(ports)


def test_defaults_serve_livekits_metrics_on_6789_and_6790() -> None:
    args = parse_args([])
    assert (args.livekit_metrics_port, args.sip_metrics_port) == (6789, 6790)


def test_paths_are_shown_as_typed_in_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the command prints is the same for every checkout (the README shows it)."""
    monkeypatch.chdir(tmp_path)
    assert shown(tmp_path / "var" / "log" / "dev") == "var/log/dev"
    assert shown(Path("var/dev.env")) == "var/dev.env"
    assert shown(Path("/elsewhere/dev.env")) == "/elsewhere/dev.env"
