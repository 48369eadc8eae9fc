"""Real calls from callers the CRM does not know (sipp → livekit-sip → livekit-server →
dispatcher → agent): `reject` answers busy (486) with no dispatch, a CRM that is down never
rejects anyone, and `announce` speaks the message and hangs up from our side."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack.agent_worker import AgentWorker, start_agent_worker
from devstack.processes import ROOT, ManagedProcess
from devstack.services import dispatcher_process
from tests.e2e.one_call import sip_chain
from tests.e2e.service_logs import records, spoken
from tests.harness.metrics import sample
from tests.harness.sip_stack import SipStack
from tests.harness.sipp import SCENARIOS, Call, SippResult
from tests.harness.stack import Stack, eventually, unique_number

LOG_DIR = ROOT / "var" / "log" / "e2e-unknown"
MESSAGE = "This line does not know you yet. Please call the branch office. Goodbye."
ANNOUNCEMENTS = "persona_agent_announcements_total"


@dataclass
class Chain:
    stack: Stack
    sip: SipStack
    worker: AgentWorker

    async def call(self, caller: str, scenario: str) -> SippResult:
        run = self.sip.sipp(
            [Call(caller, self.sip.trunk_number)],
            rtp_seconds=1.0,
            timeout=90,
            scenario=SCENARIOS / scenario,
        )
        run.start()
        try:
            return await asyncio.to_thread(run.wait)
        finally:
            run.stop()

    def dispatcher_events(self, event: str, caller: str) -> list[dict[str, object]]:
        return [
            e
            for e in records(self.stack.dispatcher_log, event)
            if str(e["room"]).startswith(f"call_{caller}_")
        ]

    def with_policy(self, policy: str) -> None:
        """Restart the dispatcher (same port: livekit-server's webhooks reach it) with `policy`."""
        self.stack.dispatcher.stop()
        port = int(self.stack.dispatcher_url.rsplit(":", 1)[1])
        env = {**self.stack.dispatcher_env, "UNKNOWN_CALLER_POLICY": policy}
        replacement: ManagedProcess = dispatcher_process(port, env, self.stack.dispatcher_log)
        self.stack.dispatcher = replacement.start()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    env = {
        "LOG_UNMASKED": "true",
        "UNKNOWN_CALLER_POLICY": "reject",
        "UNKNOWN_CALLER_MESSAGE": MESSAGE,
        "PERSONA_DEADLINE_S": "1",
    }
    with sip_chain(LOG_DIR, tmp_path_factory.mktemp("unknown"), env) as (stack, sip):
        worker = start_agent_worker(stack.livekit, LOG_DIR, LOG_UNMASKED="true")
        yield Chain(stack, sip, worker)
        worker.stop()


async def test_reject_answers_an_unknown_caller_busy_and_dispatches_nothing(chain: Chain) -> None:
    chain.stack.persona_control()
    caller = unique_number()
    result = await chain.call(caller, "uac_busy.xml")
    assert result.successful == 1, result.summary()  # the scenario fails on any answer but 486
    [unknown] = chain.dispatcher_events("call.unknown_caller", caller)
    assert (unknown["policy"], unknown["outcome"], unknown["reason"]) == (
        "reject",
        "rejected",
        "not_found",
    )
    assert chain.dispatcher_events("agent.dispatched", caller) == []
    assert chain.dispatcher_events("room.deleted", caller)


async def test_an_unknown_caller_is_answered_while_the_crm_is_down(chain: Chain) -> None:
    chain.stack.persona_control(fail_status=503)
    caller = unique_number()
    try:
        result = await chain.call(caller, "uac_call.xml")
    finally:
        chain.stack.persona_control()
    assert result.successful == 1, result.summary()
    assert chain.dispatcher_events("call.unknown_caller", caller) == []
    assert len(chain.dispatcher_events("agent.dispatched", caller)) == 1


async def test_announce_speaks_the_message_then_hangs_up_from_our_side(chain: Chain) -> None:
    """Last in the module (it changes the policy): answered, the message spoken word for word
    (the fake TTS's record), then a BYE from our side that sipp answers."""
    chain.with_policy("announce")
    chain.stack.persona_control()
    caller = unique_number()
    announced = sample(chain.worker.metrics_url, ANNOUNCEMENTS, outcome="spoken")
    result = await chain.call(caller, "uac_hears_bye.xml")
    assert result.successful == 1, result.summary()  # a BYE from us, or the scenario times out
    [setup] = chain.dispatcher_events("call.setup_done", caller)
    room = str(setup["room"])
    said = await eventually(
        lambda: spoken(Path(chain.worker.env["AGENT_FAKE_LLM_LOG"]), room), 30, "the announcement"
    )
    assert " ".join(said) == MESSAGE
    ending = [e for e in chain.worker.log_records(event="call.ending") if e.get("room") == room]
    assert [e["reason"] for e in ending] == ["announce"]
    # Counted in the call's job process, served by the worker.
    assert sample(chain.worker.metrics_url, ANNOUNCEMENTS, outcome="spoken") == announced + 1
