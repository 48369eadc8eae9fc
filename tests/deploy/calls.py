"""Calls placed to the compose stack, and what its dispatchers logged of them."""

from __future__ import annotations

from provisioning.sip_setup import load_trunk
from tests.deploy.compose import ComposeProject
from tests.harness.sipp import TEST_CALLER, Call, SippResult, SippRun

SIP_PORT = 5060  # config/sip.yaml
# Longer than Docker's default stop timeout (10 s), far below the agent's drain (600 s).
LONG_CALL_S = 20.0


def place_call(seconds: float) -> SippRun:
    """One call from the test caller to the trunk's number, silent for `seconds` once answered
    (no RTP from sipp: it would go to the LAN address livekit-sip announces)."""
    call = Call(TEST_CALLER, load_trunk().numbers[0])
    return SippRun(
        "127.0.0.1", SIP_PORT, [call], rtp_seconds=seconds, timeout=120, play_audio=False
    ).start()


def finish(run: SippRun) -> SippResult:
    try:
        return run.wait()
    finally:
        run.stop()


def dispatched_rooms(project: ComposeProject, *services: str) -> list[str]:
    return [
        e["room"]
        for service in services or ("persona-dispatcher",)
        for e in project.events(service, "agent.dispatched")
    ]


def new_room(project: ComposeProject, before: list[str], *services: str) -> str:
    """The one room dispatched since `before` (a hang guard of 60 s)."""

    def probe() -> list[str]:
        return [r for r in dispatched_rooms(project, *services) if r not in before]

    rooms: list[str] = project.wait_for("a dispatch for the call", probe, timeout=60)
    assert len(rooms) == 1, rooms
    return rooms[0]
