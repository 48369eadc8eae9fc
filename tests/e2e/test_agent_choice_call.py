"""Real calls (sipp → livekit-sip → livekit-server → dispatcher → agent workers) into a deployment
running two agents, `friday` (AGENT_NAME) and `meera`: the CRM's voice agent picks which answers,
and a name no worker serves (or a worker stopped) falls back to `friday` after
AGENT_JOB_TIMEOUT_S of extra ringing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from devstack.agent_worker import AgentWorker, start_agent_worker
from devstack.processes import ROOT
from tests.e2e.one_call import call_and_room, sip_chain
from tests.e2e.service_logs import records
from tests.harness.fixture_personas import one_number_persona
from tests.harness.sip_stack import SipStack
from tests.harness.sipp import SippResult
from tests.harness.stack import Stack, unique_number

LOG_DIR = ROOT / "var" / "log" / "e2e-agents"


@dataclass
class Deployment:
    stack: Stack
    sip: SipStack
    friday: AgentWorker
    meera: AgentWorker

    async def call(self, caller: str, voice_agent: str) -> tuple[SippResult, str]:
        """One call from `caller`, whose CRM voice agent is `voice_agent`; its result and room."""
        self.stack.persona_control(extra={caller: one_number_persona(caller, voice_agent)})
        return await call_and_room(self.stack, self.sip, caller, rtp_seconds=1.0, timeout=120)

    def answered_by(self, room: str) -> list[str]:
        """The agents whose worker applied a persona in `room`."""
        return [
            name
            for name, worker in (("friday", self.friday), ("meera", self.meera))
            if any(e["room"] == room for e in records(worker.log_path, "persona.applied"))
        ]

    def setup_done(self, room: str) -> dict[str, object]:
        [done] = [
            e for e in records(self.stack.dispatcher_log, "call.setup_done") if e["room"] == room
        ]
        return done


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    env = {"LOG_UNMASKED": "true", "AGENT_NAMES": "meera,ghost", "AGENT_JOB_TIMEOUT_S": "6"}
    with sip_chain(LOG_DIR, tmp_path_factory.mktemp("agents"), env) as (stack, sip):
        friday = start_agent_worker(stack.livekit, LOG_DIR / "friday", LOG_UNMASKED="true")
        meera = start_agent_worker(
            stack.livekit, LOG_DIR / "meera", LOG_UNMASKED="true", AGENT_NAME="meera"
        )
        yield Deployment(stack, sip, friday, meera)
        meera.stop()
        friday.stop()


async def test_the_crm_voice_agent_answers_and_only_it(deployment: Deployment) -> None:
    result, room = await deployment.call(unique_number(), "MEERA")
    assert result.successful == 1, result.summary()
    assert deployment.answered_by(room) == ["meera"]
    done = deployment.setup_done(room)
    assert (done["agent_name"], done["agent_reason"]) == ("meera", "crm")
    dispatched = [e for e in records(deployment.stack.dispatcher_log, "agent.dispatched")]
    assert [e["agent_name"] for e in dispatched if e["room"] == room] == ["meera"]


async def test_a_name_no_worker_serves_falls_back_to_agent_name_and_is_answered(
    deployment: Deployment,
) -> None:
    """`ghost` is in AGENT_NAMES but no worker runs it: its dispatch gets no job, and after
    AGENT_JOB_TIMEOUT_S `friday` is dispatched and answers (the caller rings that much longer)."""
    result, room = await deployment.call(unique_number(), "Ghost")
    assert result.successful == 1, result.summary()
    assert deployment.answered_by(room) == ["friday"]
    [fallback] = [
        e
        for e in records(deployment.stack.dispatcher_log, "call.agent_fallback")
        if e["room"] == room
    ]
    assert (fallback["agent_name"], fallback["fallback"]) == ("ghost", "friday")
    assert deployment.setup_done(room)["agent_reason"] == "no_job"


async def test_a_name_the_deployment_does_not_run_is_answered_by_agent_name(
    deployment: Deployment,
) -> None:
    result, room = await deployment.call(unique_number(), "Invented Agent")
    assert result.successful == 1, result.summary()
    assert deployment.answered_by(room) == ["friday"]
    assert deployment.setup_done(room)["agent_reason"] == "unknown"


async def test_a_stopped_worker_falls_back_to_agent_name(deployment: Deployment) -> None:
    """Last in the module: `meera`'s worker stops mid-test; her next caller is answered by
    `friday` after AGENT_JOB_TIMEOUT_S."""
    deployment.meera.stop()
    result, room = await deployment.call(unique_number(), "Meera")
    assert result.successful == 1, result.summary()
    assert deployment.answered_by(room) == ["friday"]
    done = deployment.setup_done(room)
    assert (done["agent_name"], done["agent_reason"]) == ("friday", "no_job")
