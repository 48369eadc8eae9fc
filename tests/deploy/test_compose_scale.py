"""docker-compose.scale.yml over docker-compose.yml: two dispatcher replicas behind HAProxy and
the agent all start (one replica once sat on the agent's port), a call is set up once, and with
one replica killed the next call is still set up once, by the other."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deploy.calls import dispatched_rooms, finish, new_room, place_call
from tests.deploy.compose import ComposeProject
from tests.harness.fixture_personas import PRIYA

pytestmark = pytest.mark.deploy

REPLICAS = ("persona-dispatcher", "persona-dispatcher-2")


@pytest.fixture(scope="module")
def scaled() -> Iterator[ComposeProject]:
    project = ComposeProject(
        "persona-deploy-scale", files=("docker-compose.yml", "docker-compose.scale.yml")
    )
    project.start_clean()
    project.write_env(AGENT_MAX_JOBS="50")
    try:
        project.up()
        yield project
    finally:
        for service in (*REPLICAS, "persona-agent", "load-balancer"):
            project.save_logs(service)
        project.down()
        project.remove_copy()


def set_up_once(project: ComposeProject) -> str:
    """Place a call; it is answered and dispatched exactly once over both replicas, and the
    agent greets in the caller's persona. The call's room."""
    before = dispatched_rooms(project, *REPLICAS)
    result = finish(place_call(2.0))
    assert result.successful == 1, result.summary()
    room = new_room(project, before, *REPLICAS)
    # Each webhook of the call (room_started, participant_joined) resolves; one dispatches.
    persona = {
        e["persona_id"]
        for replica in REPLICAS
        for e in project.events(replica, "persona.resolved", room=room)
    }
    assert persona == {PRIYA.persona_id}
    applied = project.wait_for(
        "the persona in the agent",
        lambda: project.events("persona-agent", "persona.applied", room=room),
        timeout=30,
    )
    assert [e["persona_id"] for e in applied] == [PRIYA.persona_id]
    return room


def test_both_replicas_the_balancer_and_the_agent_start(scaled: ComposeProject) -> None:
    states = scaled.states()
    running = {name: s["Health"] for name, s in states.items() if s["State"] == "running"}
    assert running == {
        "redis": "healthy",
        "livekit-server": "healthy",
        "livekit-sip": "healthy",
        "persona-dispatcher": "healthy",
        "persona-dispatcher-2": "healthy",
        "persona-agent": "healthy",
        "load-balancer": "",
    }, scaled.status_text()
    restarts = {s: scaled.inspect(s)["RestartCount"] for s in (*REPLICAS, "persona-agent")}
    assert restarts == dict.fromkeys((*REPLICAS, "persona-agent"), 0)


def test_a_call_through_the_balancer_is_set_up_once(scaled: ComposeProject) -> None:
    set_up_once(scaled)


def test_with_one_replica_killed_the_next_call_is_set_up_once(scaled: ComposeProject) -> None:
    scaled.compose("kill", "persona-dispatcher")
    scaled.wait_for(
        "replica 1 down",
        lambda: scaled.states()["persona-dispatcher"]["State"] == "exited",
        timeout=30,
    )
    room = set_up_once(scaled)
    assert scaled.events("persona-dispatcher-2", "agent.dispatched", room=room)
