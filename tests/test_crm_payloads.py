"""Whatever the CRM sends, the caller gets an agent: payloads shaped as real CRMs shape them,
through the whole service (fake persona API, fake LiveKit), each answered 200 with one dispatch
and room metadata that is valid and within its budget."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from contract.metadata import PersonaMetadata, decode_persona_metadata
from dispatcher.payload_parser import PayloadParser
from dispatcher.persona_payload import PersonaLimits
from tests.conftest import Client, LogCapture, post
from tests.harness.fake_livekit import FakeLiveKit
from tests.harness.fake_persona_api import FakeState
from tests.harness.loop_lag import LoopLag
from tests.harness.signing import participant_joined

pytestmark = pytest.mark.service

NUMBER = "8655701159"
BUDGET = 60_000  # METADATA_BUDGET_BYTES' default, as the client fixture runs


def payload(full_config: dict[str, Any], **persona: Any) -> dict[str, Any]:
    """A CRM reply: one active campaign, one voice agent, its persona with `full_config`."""
    body = {
        "_id": "prs_crm",
        "name": "Priya",
        "personality": "You are Priya, a home-loan advisor.",
        "fullConfig": full_config,
        "messages": {"welcome": "Hello from Priya."},
    }
    body.update(persona)
    return {"campaigns": [{"status": "active", "voiceAgents": [{"persona": body}]}]}


def nested(levels: int) -> Any:
    """A string `levels` lists deep (orjson reads ~1,000 levels but writes only ~250)."""
    return orjson.loads(nested_json(levels))


def nested_json(levels: int) -> bytes:
    return b"[" * levels + b'"deep"' + b"]" * levels


def with_hole(value: dict[str, Any], hole: bytes) -> bytes:
    """`value` as JSON with its "HOLE" string replaced by `hole`."""
    return orjson.dumps(value).replace(b'"HOLE"', hole)


async def set_up(
    client: Client, fake_lk: FakeLiveKit, room: str, existing: str = ""
) -> PersonaMetadata:
    """One call's set-up: 200, exactly one dispatch, metadata within the budget; its persona."""
    fake_lk.add_room(room, existing)
    status, body = await post(client, participant_joined(room, number="+91" + NUMBER))
    assert status == 200, body
    assert len(fake_lk.agent_dispatches(room, "friday")) == 1
    raw = fake_lk.rooms[room]
    assert len(raw.encode()) <= BUDGET
    meta = decode_persona_metadata(raw)
    assert meta.persona.welcome
    return meta


# --- 1. a persona that cannot be encoded ------------------------------------------------------


async def test_full_config_nested_300_deep_still_gets_the_persona(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState
) -> None:
    """orjson reads it but cannot write it: the persona is rendered (depth elided), not lost."""
    persona_state.extra[NUMBER] = with_hole(
        payload({"rules": nested(240), "crm": "HOLE"}), nested_json(300)
    )
    meta = await set_up(client, fake_lk, "call_deep")
    assert (meta.status, meta.persona.persona_id) == ("loaded", "prs_crm")
    assert "…" in meta.persona.instructions
    # Redelivered or not, the next call is served from the cache the same way.
    assert (await set_up(client, fake_lk, "call_deep_2")).status == "cached"


async def test_behaviour_key_nested_1000_deep_is_rendered_without_recursion(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState
) -> None:
    persona_state.extra[NUMBER] = with_hole(payload({"rules": "HOLE"}), nested_json(1000))
    meta = await set_up(client, fake_lk, "call_1000")
    assert (meta.status, meta.persona.persona_id) == ("loaded", "prs_crm")


async def test_room_keys_that_leave_no_room_give_the_persona_key_alone(
    client: Client, fake_lk: FakeLiveKit, logs: LogCapture
) -> None:
    existing = orjson.dumps({"crm": "x" * 70_000}).decode()
    meta = await set_up(client, fake_lk, "call_full", existing)
    assert meta.status == "default"
    assert list(orjson.loads(fake_lk.rooms["call_full"])) == ["persona"]
    assert [e["shape"] for e in logs.named("room.metadata_reduced")] == ["persona_only"]


async def test_room_keys_nested_deeper_than_json_writes_do_not_stop_the_call(
    client: Client, fake_lk: FakeLiveKit
) -> None:
    existing = with_hole({"crm": "HOLE"}, nested_json(400)).decode()
    meta = await set_up(client, fake_lk, "call_deep_room", existing)
    assert meta.status == "default"


# --- 2. linear work, done once per fetch; the loop never blocked -------------------------------


def many_keys(count: int) -> bytes:
    config: dict[str, Any] = {
        f"crmField{i:05d}": {"label": f"Field {i}", "value": "lorem ipsum dolor sit amet " * 13}
        for i in range(count)
    }
    config["faq"] = [{"q": f"Question {i}?", "a": "An answer. " * 8} for i in range(500)]
    return orjson.dumps(payload(config))


def tiny_objects(size: int) -> bytes:
    """About `size` bytes of `[{},{},...]` in fullConfig: the costliest JSON to decode."""
    return with_hole(
        payload({"role": "advisor", "x": "HOLE"}), b"[" + b",".join([b"{}"] * (size // 3)) + b"]"
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(lambda: many_keys(20_000), id="20k-keys"),
        pytest.param(lambda: tiny_objects(7 * 1024 * 1024), id="7MiB-tiny-objects"),
    ],
)
async def test_a_payload_up_to_the_cap_never_blocks_the_loop_50_ms(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState, body: Any
) -> None:
    data = body()
    assert len(data) < 8 * 1024 * 1024  # PERSONA_MAX_BYTES' default
    persona_state.extra[NUMBER] = data
    async with LoopLag() as first:
        assert (await set_up(client, fake_lk, "call_big_1")).status == "loaded"
    async with LoopLag() as hit:
        assert (await set_up(client, fake_lk, "call_big_2")).status == "cached"
    assert first.ticks > 0
    assert hit.ticks > 0
    assert first.max_blocked_ms <= 50, first.max_blocked_ms
    assert hit.max_blocked_ms <= 50, hit.max_blocked_ms


# --- 3. a knowledge base under a natural key ------------------------------------------------


@pytest.mark.parametrize("key", ["faq", "knowledge", "knowledgeBase", "context", "script"])
async def test_a_big_knowledge_base_is_truncated_not_dropped(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState, logs: LogCapture, key: str
) -> None:
    qa = [{"q": f"What about case {i}?", "a": "Here is the answer. " * 6} for i in range(2000)]
    persona_state.extra[NUMBER] = payload({key: qa})
    meta = await set_up(client, fake_lk, "call_kb")
    assert (meta.status, meta.persona.persona_id) == ("loaded", "prs_crm")
    assert meta.persona.truncated is True
    assert meta.persona.instructions.endswith("[… truncated]")
    assert "What about case 0?" in meta.persona.instructions
    assert [e["truncated"] for e in logs.named("persona.resolved")] == [True]


# --- 5. the metadata carries what the agent uses, nothing of the CRM's config ----------------


async def test_room_metadata_carries_nothing_of_the_crms_config_but_its_behaviour(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState
) -> None:
    persona_state.extra[NUMBER] = payload(
        {"role": "advisor", "crmApiToken": "tok_SECRET_123", "tenant": {"id": "tenant_SECRET"}}
    )
    meta = await set_up(client, fake_lk, "call_private")
    assert "## Role\nadvisor" in meta.persona.instructions
    raw = fake_lk.rooms["call_private"]
    assert "SECRET" not in raw
    assert "config" not in orjson.loads(raw)["persona"]


async def test_without_worker_processes_a_big_body_is_still_decoded(
    monkeypatch: pytest.MonkeyPatch, logs: LogCapture
) -> None:
    """Where no process can be started, the parser decodes in place (the loop waits, the caller
    still gets the persona) and says so once."""
    parser = PayloadParser(PersonaLimits(), inline_max_bytes=0)

    def cannot_start() -> None:
        raise RuntimeError("An attempt has been made to start a new process before ...")

    monkeypatch.setattr(parser, "_workers", cannot_start)
    body = orjson.dumps(payload({"role": "advisor"}))
    assert (await parser.parse(body)).persona_id == "prs_crm"
    assert (await parser.parse(body)).persona_id == "prs_crm"
    assert len(logs.named("persona.parser_workers_unavailable")) == 1
    await parser.aclose()
