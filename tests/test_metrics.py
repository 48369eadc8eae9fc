"""`GET /metrics`: Prometheus' text format, parsed by Prometheus' own parser, moving with calls."""

from __future__ import annotations

import pytest

from tests.conftest import Client, post
from tests.harness.fake_livekit import FakeLiveKit
from tests.harness.fake_persona_api import FakeState
from tests.harness.metrics import Samples, parse_metrics
from tests.harness.signing import participant_joined

pytestmark = pytest.mark.service


async def scrape(client: Client) -> Samples:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    return parse_metrics(await resp.text())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counters_move_with_calls(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState
) -> None:
    """One call from the API, the same number again from the cache, a redelivery and a forged
    webhook: each answer, set-up, lookup and duration is counted where an operator expects it."""
    before = await scrape(client)
    dispatched = (
        "persona_dispatcher_webhooks_total",
        (("answer", "dispatched"), ("event", "participant_joined")),
    )
    assert dispatched not in before  # value() would read a missing sample as 0
    fake_lk.add_room("call_1")
    fake_lk.add_room("call_2")
    first = participant_joined("call_1", number="8655701159")
    status, _ = await post(client, first)
    assert status == 200
    status, _ = await post(client, first)  # redelivered
    assert status == 200
    status, _ = await post(client, participant_joined("call_2", number="8655701159"))
    assert status == 200
    status, _ = await post(client, first, token="forged")
    assert status == 401

    after = await scrape(client)
    joined = "participant_joined"
    assert value(after, "persona_dispatcher_webhooks_total", event=joined, answer="dispatched") == 2
    assert (
        value(after, "persona_dispatcher_webhooks_total", event=joined, answer="duplicate_event")
        == 1
    )
    assert (
        value(after, "persona_dispatcher_webhooks_total", event="unknown", answer="unauthorized")
        == 1
    )
    setups = "persona_dispatcher_setups_total"
    assert value(after, setups, status="loaded", source="api", path="webhook") == 1
    assert value(after, setups, status="cached", source="cache", path="webhook") == 1
    assert value(after, "persona_dispatcher_setup_duration_seconds_count") == 2
    assert value(after, "persona_dispatcher_setup_duration_seconds_sum") > 0
    assert value(after, "persona_dispatcher_persona_api_requests_total", outcome="ok") == 1
    assert (
        value(after, "persona_dispatcher_persona_api_request_duration_seconds_count", outcome="ok")
        == 1
    )
    lookups = "persona_dispatcher_persona_cache_lookups_total"
    assert value(after, lookups, result="miss") == 1
    assert value(after, lookups, result="hit") == 1
    assert value(after, "persona_dispatcher_rooms_held") == 2
    assert persona_state.requests == 1


async def test_a_404_is_counted_once_and_remembered(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState
) -> None:
    fake_lk.add_room("call_1")
    fake_lk.add_room("call_2")
    status, _ = await post(client, participant_joined("call_1", number="9777777777"))
    assert status == 200
    status, _ = await post(client, participant_joined("call_2", number="9777777777"))
    assert status == 200
    after = await scrape(client)
    assert value(after, "persona_dispatcher_persona_api_requests_total", outcome="not_found") == 1
    assert (
        value(after, "persona_dispatcher_persona_cache_lookups_total", result="negative_hit") == 1
    )
    fallbacks = "persona_dispatcher_persona_fallbacks_total"
    assert value(after, fallbacks, reason="not_found", status="default") == 2
    assert (
        value(
            after,
            "persona_dispatcher_setups_total",
            status="default",
            source="default",
            path="webhook",
        )
        == 2
    )


async def test_a_livekit_failure_is_counted_by_step(client: Client, fake_lk: FakeLiveKit) -> None:
    fake_lk.add_room("call_1")
    fake_lk.fail["UpdateRoomMetadata"] = 500
    status, _ = await post(client, participant_joined("call_1"))
    assert status == 503
    after = await scrape(client)
    assert (
        value(
            after,
            "persona_dispatcher_webhooks_total",
            event="participant_joined",
            answer="livekit_unavailable",
        )
        == 1
    )
    assert value(after, "persona_dispatcher_setup_failures_total", step="update_room_metadata") == 1
