"""One real SIP stack for the livekit-sip tests: Redis, livekit-server (with Redis and a webhook
recorder), livekit-sip, and the trunk and dispatch rule applied by provisioning/sip_setup.py; no
dispatcher.

A missing binary or package fails these tests (scripts/install_deps.sh installs them); nothing is
skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from livekit import api

from devstack.logs import clear_logs
from devstack.processes import ROOT
from tests.harness.sip_stack import SipStack, start_sip_stack
from tests.harness.stack import WebhookRecorder

LOG_DIR = ROOT / "var" / "log" / "livekit-sip"


@pytest.fixture(scope="session")
def webhooks() -> Iterator[WebhookRecorder]:
    """Every webhook the stack's livekit-server sends, as delivered."""
    recorder = WebhookRecorder()
    yield recorder
    recorder.stop()


@pytest.fixture(scope="session")
def sip_stack(webhooks: WebhookRecorder) -> Iterator[SipStack]:
    clear_logs(LOG_DIR, "*.log", "timings.jsonl")
    stack = start_sip_stack(LOG_DIR, webhook_urls=(webhooks.url,))
    yield stack
    stack.stop()


@pytest.fixture
async def lk(sip_stack: SipStack) -> AsyncIterator[api.LiveKitAPI]:
    client = sip_stack.api()
    yield client
    await client.aclose()
