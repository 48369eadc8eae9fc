"""docker-compose.yml as a new user runs it: `docker compose up -d --build` on a real engine with
no API keys, then a real SIP call from sipp to livekit-sip's port, answered by the agent in the
caller's persona; the transcript on the named volume; `persona-dispatch-call --dry-run` through
`docker compose exec`; and `docker compose stop` during a call, which lets it finish."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy.calls import LONG_CALL_S, dispatched_rooms, finish, new_room, place_call
from tests.deploy.compose import LOG_DIR, ComposeProject
from tests.harness.fixture_personas import PRIYA
from tests.harness.sipp import TEST_CALLER
from tests.harness.timings import record_timings

pytestmark = pytest.mark.deploy


@pytest.fixture(scope="module")
def stack() -> Iterator[ComposeProject]:
    project = ComposeProject("persona-deploy-test")
    project.start_clean()  # a previous run's stacks, if one was interrupted
    # No API key and no AGENT_STACK: the first run as the README describes it. Only the agent's
    # capacity by job count: CPU load says little on a busy two-core CI machine (as in e2e).
    project.write_env(AGENT_MAX_JOBS="50")
    try:
        project.up()
        yield project
    finally:
        project.save_logs("persona-agent")
        project.save_logs("persona-dispatcher")
        project.save_logs("livekit-sip")
        project.down()
        project.remove_copy()


def spoken_lines(project: ComposeProject, room: str) -> list[str]:
    return [
        r["text"]
        for r in project.transcript(room)
        if r.get("event") == "turn" and r.get("role") == "assistant"
    ]


def test_every_service_starts_and_stays_up(stack: ComposeProject) -> None:
    """`up --wait` returned: each long-running service runs and reports healthy, and the SIP
    set-up ran once and exited 0 (livekit-sip once exited at start: its config file was mounted
    where its image does not read it)."""
    states = stack.states()
    running = {name: s["Health"] for name, s in states.items() if s["State"] == "running"}
    assert running == {
        "redis": "healthy",
        "livekit-server": "healthy",
        "livekit-sip": "healthy",
        "persona-dispatcher": "healthy",
        "persona-agent": "healthy",
    }, stack.status_text()
    assert states["sip-setup"]["State"] == "exited"
    assert states["sip-setup"]["ExitCode"] == 0
    assert stack.inspect("livekit-sip")["RestartCount"] == 0


def test_first_run_agent_says_which_stack_answers(stack: ComposeProject) -> None:
    """Without a .env the agent runs (no key needed) and its log says the fake stack answers."""
    [starting] = stack.events("persona-agent", "worker.starting")
    assert starting["stack"] == "fake"
    [warning] = stack.events("persona-agent", "worker.fake_stack")
    assert "AGENT_STACK" in warning["hint"]
    # Healthy only once LiveKit registered it: a call placed from then on reaches it.
    assert stack.events("persona-agent", "worker.registered")
    assert stack.inspect("persona-agent")["RestartCount"] == 0


def test_the_image_declares_no_volume(stack: ComposeProject) -> None:
    """A VOLUME in the image gives every `docker compose run` an anonymous volume of its own;
    what the services write goes on the named volume the compose file mounts."""
    image = stack.inspect("persona-agent")["Image"]
    config = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Volumes}}", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert config == "null", config
    mounts = stack.inspect("persona-agent")["Mounts"]
    assert [(m["Type"], m["Destination"]) for m in mounts] == [
        ("volume", "/var/lib/persona-dispatcher")
    ]


def test_a_sip_call_is_answered_in_the_callers_persona(stack: ComposeProject) -> None:
    """A call from 8655701159 to the trunk number is answered; its persona comes from the
    user-mapping file at once (the CRM is off in the stack), and the agent greets with it; the
    transcript is on the named volume."""
    before = dispatched_rooms(stack)
    result = finish(place_call(3.0))
    assert result.successful == 1, result.summary() + stack.logs_text("livekit-sip", tail=30)
    room = new_room(stack, before)
    record_timings(LOG_DIR, "compose call", ring_ms=result.ring_times_ms())
    [resolved] = stack.events("persona-dispatcher", "persona.resolved", room=room)
    assert (resolved["status"], resolved["persona_id"]) == ("file", "prs_3001")
    assert not stack.events("persona-dispatcher", "persona.api_failed", room=room)
    lines = stack.wait_for("the welcome in the transcript", lambda: spoken_lines(stack, room), 30)
    assert " ".join(lines)[: len(PRIYA.welcome or "")] == PRIYA.welcome
    # The README's one command for a call's story: both services' logs into persona-logs.
    logs = stack.logs_text("persona-dispatcher", "persona-agent")
    story = stack.exec("persona-dispatcher", "persona-logs", "show", room, "-", stdin_text=logs)
    assert "agent.dispatched" in story, story
    assert "persona.applied" in story, story


def test_dispatch_call_dry_run_answers_through_compose_exec(stack: ComposeProject) -> None:
    """The README's `docker compose exec persona-dispatcher persona-dispatch-call --dry-run`."""
    out = stack.exec(
        "persona-dispatcher",
        "persona-dispatch-call", "--dry-run", "--json", "--number", TEST_CALLER,
    )  # fmt: skip
    answer: dict[str, Any] = json.loads(out)
    assert answer["persona_id"] == "prs_3001", answer
    assert answer["dry_run"] is True, answer


def test_stop_during_a_call_lets_the_call_finish(stack: ComposeProject) -> None:
    """`docker compose stop` while a call runs: the agent takes no new call and lets this one
    end (its stop_grace_period is above its drain), rather than being killed after Docker's
    default 10 s. Runs last: it stops the stack."""
    before = dispatched_rooms(stack)
    run = place_call(LONG_CALL_S)
    room = new_room(stack, before)
    stack.wait_for(
        "the agent in the call",
        lambda: stack.events("persona-agent", "persona.applied", room=room),
        timeout=60,
    )
    stopped = threading.Event()

    def stop() -> None:
        stack.compose("stop", timeout=700)
        stopped.set()

    stopping = threading.Thread(target=stop, name="compose-stop")
    stopping.start()
    result = finish(run)
    stopping.join(700)
    assert stopped.is_set()
    assert result.successful == 1, result.summary()
    agent = stack.inspect("persona-agent")["State"]
    assert agent["ExitCode"] == 0, (agent, stack.logs_text("persona-agent", tail=20))
    assert stack.events("persona-agent", "worker.draining")
    assert stack.events("persona-agent", "worker.stopped")
    # The agent's session ended with the call, not with the process.
    assert [r for r in stack.transcript(room) if r.get("event") == "call.ended"]
