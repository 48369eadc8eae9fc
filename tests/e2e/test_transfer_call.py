"""Real calls transferred to a human (sipp → livekit-sip → livekit-server → dispatcher → agent):
the agent (its fake LLM's first answer calls `transfer_call`) says the transfer line and REFERs
the caller to the persona's target; the caller's phone (sipp) accepts or refuses the REFER."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from contract.transfer import DEFAULT_TRANSFER_FAILED_LINE
from devstack.agent_worker import AgentWorker, start_agent_worker
from devstack.processes import ROOT
from tests.e2e.one_call import call_and_room, sip_chain
from tests.e2e.service_logs import spoken
from tests.harness.metrics import sample
from tests.harness.sip_stack import SipStack
from tests.harness.sipp import SCENARIOS, SippResult
from tests.harness.stack import Stack, eventually, unique_number

LOG_DIR = ROOT / "var" / "log" / "e2e-transfer"
TARGET = "sip:ravi@127.0.0.1:5999"
TRANSFER_LINE = "One moment, Ravi from the loans desk will take your call."
TRANSFERS = "persona_agent_transfers_total"


def transferable_persona(number: str) -> dict[str, Any]:
    """A CRM payload with a transfer target and line, and no welcome (so the agent's first words
    come from its LLM, whose first answer calls the tool)."""
    return {
        "campaigns": [
            {
                "status": "active",
                "voiceAgents": [
                    {
                        "persona": {
                            "_id": f"prs_{number}",
                            "personality": "You help callers with their home loans.",
                            "transferTo": TARGET,
                            "transferMessage": TRANSFER_LINE,
                        }
                    }
                ],
            }
        ]
    }


@dataclass
class Chain:
    stack: Stack
    sip: SipStack
    worker: AgentWorker

    async def call(self, scenario: str) -> tuple[SippResult, str]:
        caller = unique_number()
        self.stack.persona_control(extra={caller: transferable_persona(caller)})
        return await call_and_room(
            self.stack, self.sip, caller, timeout=90, scenario=SCENARIOS / scenario
        )

    def said(self, room: str) -> str:
        """What the agent said in `room`, its lines joined (the TTS gets one sentence at a time)."""
        return " ".join(spoken(Path(self.worker.env["AGENT_FAKE_LLM_LOG"]), room))


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    env = {"LOG_UNMASKED": "true"}
    with sip_chain(LOG_DIR, tmp_path_factory.mktemp("transfer"), env) as (stack, sip):
        worker = start_agent_worker(
            stack.livekit, LOG_DIR, LOG_UNMASKED="true", AGENT_FAKE_FIRST_TOOL="transfer_call"
        )
        yield Chain(stack, sip, worker)
        worker.stop()


def refer_to(result: SippResult) -> list[str]:
    """The Refer-To header of each REFER the caller's phone received (the scenario logs it)."""
    assert result.workdir is not None
    log = (result.workdir / "calls.log").read_text()
    return [line.split(";", 3)[3] for line in log.splitlines() if line.startswith("refer;")]


def transfers(chain: Chain) -> tuple[float, float]:
    """The worker's count of transfers done and failed, from its metrics endpoint."""
    return (
        sample(chain.worker.metrics_url, TRANSFERS, outcome="transferred"),
        sample(chain.worker.metrics_url, TRANSFERS, outcome="failed"),
    )


async def test_an_accepted_transfer_refers_the_caller_to_the_target(chain: Chain) -> None:
    done, failed = transfers(chain)
    result, room = await chain.call("uac_transfer_accepted.xml")
    assert result.successful == 1, result.summary()  # REFER, 202, NOTIFY 200, then our BYE
    [header] = refer_to(result)
    assert "ravi@127.0.0.1:5999" in header
    assert TRANSFER_LINE in chain.said(room)
    transferred = await eventually(
        lambda: [
            e for e in chain.worker.log_records(event="call.transferred") if e["room"] == room
        ],
        30,
        "call.transferred",
    )
    assert transferred[0]["to"] == TARGET
    assert transfers(chain) == (done + 1, failed)


async def test_a_refused_transfer_leaves_the_call_up_and_the_agent_says_so(chain: Chain) -> None:
    done, failed_before = transfers(chain)
    result, room = await chain.call("uac_transfer_refused.xml")
    # The scenario's own BYE, seconds after the 603: the call was still up.
    assert result.successful == 1, result.summary()
    assert len(refer_to(result)) == 1
    failed = [
        e for e in chain.worker.log_records(event="call.transfer_failed") if e["room"] == room
    ]
    assert len(failed) == 1
    assert transfers(chain) == (done, failed_before + 1)
    said = await eventually(
        lambda: DEFAULT_TRANSFER_FAILED_LINE in chain.said(room) and chain.said(room),
        30,
        "the line about the failed transfer",
    )
    assert said.index(TRANSFER_LINE) < said.index(DEFAULT_TRANSFER_FAILED_LINE)
