"""Ages are measured on LiveKit's clock: a LiveKit server whose clock is not this host's (the
fake's `server_clock`, read where the dispatcher reads it: its answers' `Date`) neither makes a
young dispatch look dead nor goes unnoticed."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from config.settings import Settings
from dispatcher.call_setup import CallJoin
from dispatcher.caller import CallParty
from dispatcher.service import open_clients
from tests.conftest import LogCapture
from tests.harness.fake_livekit import FakeLiveKit

pytestmark = pytest.mark.service

CALLER = CallParty(attributes={"sip.phoneNumber": "8655701159"})
OFFSET = "persona_dispatcher_livekit_clock_offset_seconds"


@pytest.mark.parametrize("skew_s", [-30.0, 30.0])
async def test_a_dispatch_just_created_by_a_server_off_our_clock_is_not_replaced(
    make_settings: Callable[..., Settings], fake_lk: FakeLiveKit, skew_s: float
) -> None:
    """LiveKit 30 s behind this host (over AGENT_JOIN_TIMEOUT_S, 10 s): a dispatch created a
    moment ago looked 30 s old and jobless, and the repair replaced it while LiveKit was still
    assigning its job."""
    fake_lk.server_clock = lambda: time.time() + skew_s
    fake_lk.add_room("call_1")
    async with open_clients(make_settings()) as clients:
        first = await clients.setup.handle_join(CallJoin("EV_1", "call_1", "", CALLER))
        again = await clients.call_setup.redispatch("call_1", first.metadata)
        offset = clients.metrics.registry.get_sample_value(OFFSET)
    assert (again.created, again.replaced) == (False, ())
    assert again.dispatch_id == first.dispatch_id
    assert fake_lk.deleted == []
    assert offset is not None
    assert abs(offset - skew_s) <= 1.5  # the Date header has one-second resolution


async def test_a_skew_that_breaks_webhook_verification_is_logged_with_the_fix(
    make_settings: Callable[..., Settings], fake_lk: FakeLiveKit, logs: LogCapture
) -> None:
    fake_lk.server_clock = lambda: time.time() - 120
    fake_lk.add_room("call_1")
    async with open_clients(make_settings()) as clients:
        await clients.setup.handle_join(CallJoin("EV_1", "call_1", "", CALLER))
    [skew] = logs.named("livekit.clock_skew")
    assert skew["level"] == "error"
    assert -121.5 <= skew["offset_s"] <= -118.5
    assert "fails verification" in skew["effect"]
    assert "NTP" in skew["fix"]


async def test_in_sync_no_skew_is_reported(
    make_settings: Callable[..., Settings], fake_lk: FakeLiveKit, logs: LogCapture
) -> None:
    fake_lk.add_room("call_1")
    async with open_clients(make_settings()) as clients:
        await clients.setup.handle_join(CallJoin("EV_1", "call_1", "", CALLER))
        offset = clients.metrics.registry.get_sample_value(OFFSET)
    assert offset is not None
    assert abs(offset) <= 1.0
    assert logs.named("livekit.clock_skew") == []
