"""Which agent answers: the CRM's voice agent picks one of AGENT_NAMES, anything else gets
AGENT_NAME, and a dispatch with no job within AGENT_JOB_TIMEOUT_S falls back to AGENT_NAME."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from livekit import api

from config.settings import Settings
from contract.metadata import PersonaMetadata, decode_persona_metadata, default_persona_metadata
from dispatcher.agent_choice import AgentRoster
from dispatcher.persona_payload import parse_persona_payload
from dispatcher.service import open_clients
from tests.conftest import Client, LogCapture, post
from tests.harness.fake_livekit import FakeLiveKit
from tests.harness.fake_persona_api import FakeState
from tests.harness.signing import participant_joined
from webhooks.app import create_app

pytestmark = pytest.mark.service

ROSTER = AgentRoster("friday", ("meera", "Sales-Bot"))


def payload(agent: str | None, **agent_fields: Any) -> dict[str, Any]:
    """A CRM payload whose one active campaign's voice agent is called `agent`."""
    voice_agent: dict[str, Any] = {
        "status": "active",
        "persona": {"id": "prs_x", "personality": "You are X."},
        **agent_fields,
    }
    if agent is not None:
        voice_agent["name"] = agent
    return {"campaigns": [{"status": "active", "voiceAgents": [voice_agent]}]}


def test_the_crm_voice_agent_name_is_read_from_the_payload() -> None:
    assert parse_persona_payload(payload("Meera")).voice_agent == "Meera"
    assert parse_persona_payload(payload(None)).voice_agent is None


def test_an_explicit_agent_name_field_wins_over_the_voice_agents_name() -> None:
    assert parse_persona_payload(payload("Meera", agentName="sales-bot")).voice_agent == (
        "sales-bot"
    )


@pytest.mark.parametrize(
    ("voice_agent", "chosen"),
    [
        ("MEERA", ("meera", "crm")),
        ("  sales-bot ", ("Sales-Bot", "crm")),
        ("Friday", ("friday", "crm")),
        ("Zed", ("friday", "unknown")),
        (None, ("friday", "default")),
        ("", ("friday", "default")),
    ],
)
def test_the_voice_agent_picks_a_deployed_agent_case_insensitively(
    voice_agent: str | None, chosen: tuple[str, str]
) -> None:
    assert ROSTER.choose(voice_agent) == chosen


@given(st.text(max_size=40))
def test_whatever_the_crm_names_a_deployed_agent_is_chosen(voice_agent: str) -> None:
    name, reason = ROSTER.choose(voice_agent)
    assert name in ROSTER.all
    assert (reason == "crm") == (name.casefold() == voice_agent.strip().casefold())


def test_metadata_names_the_agent_and_why_and_round_trips() -> None:
    meta = ROSTER.assign(default_persona_metadata())
    assert (meta.agent, meta.agent_reason) == ("friday", "default")
    assert ROSTER.agent_of(meta) == "friday"
    decoded = decode_persona_metadata(room_metadata(meta))
    assert (decoded.agent, decoded.agent_reason) == ("friday", "default")


# --- the dispatch ----------------------------------------------------------------------------


@pytest.fixture
def two_agents(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(AGENT_NAMES="friday,meera,ghost", AGENT_JOB_TIMEOUT_S="0.5")


async def test_the_crm_voice_agent_is_dispatched_when_its_worker_serves(
    aiohttp_client: Any,
    two_agents: Settings,
    fake_lk: FakeLiveKit,
    persona_state: FakeState,
    logs: LogCapture,
) -> None:
    fake_lk.serving = {"friday", "meera"}
    persona_state.extra["9111111111"] = payload("Meera")
    client: Client = await aiohttp_client(create_app(two_agents))
    fake_lk.add_room("call_1")
    status, body = await post(client, participant_joined("call_1", number="9111111111"))
    assert (status, body["status"]) == (200, "dispatched")
    assert [d.id for d in fake_lk.agent_dispatches("call_1", "meera")] == [body["dispatch_id"]]
    assert fake_lk.agent_dispatches("call_1", "friday") == []
    meta = decode_persona_metadata(fake_lk.rooms["call_1"])
    assert (meta.agent, meta.agent_reason, meta.persona.voice_agent) == ("meera", "crm", "Meera")
    assert logs.named("call.agent_fallback") == []


async def test_a_crm_agent_without_a_job_falls_back_to_agent_name(
    aiohttp_client: Any,
    two_agents: Settings,
    fake_lk: FakeLiveKit,
    persona_state: FakeState,
    logs: LogCapture,
) -> None:
    """`ghost` is deployed by name but no worker serves it: its dispatch gets no job, is deleted
    after AGENT_JOB_TIMEOUT_S, and `friday` is dispatched; the metadata and the log say so."""
    fake_lk.serving = {"friday"}
    persona_state.extra["9111111111"] = payload("ghost")
    client: Client = await aiohttp_client(create_app(two_agents))
    fake_lk.add_room("call_1")
    status, body = await post(client, participant_joined("call_1", number="9111111111"))
    assert (status, body["status"]) == (200, "dispatched")
    assert fake_lk.agent_dispatches("call_1", "ghost") == []
    assert len(fake_lk.deleted) == 1
    assert [d.id for d in fake_lk.agent_dispatches("call_1", "friday")] == [body["dispatch_id"]]
    meta = decode_persona_metadata(fake_lk.rooms["call_1"])
    assert (meta.agent, meta.agent_reason) == ("friday", "no_job")
    [fallback] = logs.named("call.agent_fallback")
    assert (fallback["agent_name"], fallback["fallback"]) == ("ghost", "friday")
    assert fallback["dispatch_id"] == fake_lk.deleted[0]
    metrics = await (await client.get("/metrics")).text()
    assert 'persona_dispatcher_agent_fallbacks_total{cause="no_job"} 1.0' in metrics


async def test_a_name_no_deployment_runs_is_answered_by_agent_name_at_once(
    aiohttp_client: Any,
    two_agents: Settings,
    fake_lk: FakeLiveKit,
    persona_state: FakeState,
) -> None:
    fake_lk.serving = {"friday"}
    persona_state.extra["9111111111"] = payload("Invented")
    client: Client = await aiohttp_client(create_app(two_agents))
    fake_lk.add_room("call_1")
    status, _ = await post(client, participant_joined("call_1", number="9111111111"))
    assert status == 200
    assert [d.agent_name for d in fake_lk.dispatches["call_1"]] == ["friday"]
    meta = decode_persona_metadata(fake_lk.rooms["call_1"])
    assert (meta.agent, meta.agent_reason) == ("friday", "unknown")
    assert fake_lk.deleted == []
    metrics = await (await client.get("/metrics")).text()
    assert 'persona_dispatcher_agent_choices_total{reason="unknown"} 1.0' in metrics


def room_metadata(meta: PersonaMetadata) -> str:
    return orjson.dumps({"persona": meta.to_dict()}).decode()


async def test_the_reconcilers_repair_follows_the_choice(
    two_agents: Settings, fake_lk: FakeLiveKit
) -> None:
    """A room whose metadata names `meera` and lost its dispatch is repaired with `meera`."""
    fake_lk.serving = {"friday", "meera"}
    meta = replace(default_persona_metadata(), agent="meera", agent_reason="crm")
    fake_lk.add_room("call_1", room_metadata(meta))
    async with open_clients(two_agents) as clients:
        repaired = await clients.call_setup.redispatch("call_1", meta)
    assert repaired.created
    assert [d.agent_name for d in fake_lk.dispatches["call_1"]] == ["meera"]


async def test_the_reconcilers_repair_of_a_jobless_crm_agent_dispatches_agent_name(
    two_agents: Settings, fake_lk: FakeLiveKit, logs: LogCapture
) -> None:
    """`ghost`'s dispatch never got a job: the repair deletes it and dispatches `friday` at
    once (the named agent had its chance), and the metadata says so."""
    fake_lk.serving = {"friday"}
    meta = replace(default_persona_metadata(), agent="ghost", agent_reason="crm")
    fake_lk.add_room("call_1", room_metadata(meta))
    fake_lk.dispatches["call_1"] = [
        api.AgentDispatch(
            id="AD_ghost", agent_name="ghost", room="call_1", state=api.AgentDispatchState()
        )
    ]
    async with open_clients(two_agents) as clients:
        repaired = await clients.call_setup.redispatch("call_1", meta)
    assert repaired.created
    assert [d.agent_name for d in fake_lk.dispatches["call_1"]] == ["friday"]
    assert fake_lk.deleted == ["AD_ghost"]
    written = decode_persona_metadata(fake_lk.rooms["call_1"])
    assert (written.agent, written.agent_reason) == ("friday", "no_job")
    assert [e["agent_name"] for e in logs.named("call.agent_fallback")] == ["ghost"]
