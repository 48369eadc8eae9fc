"""The agent-side fetch of the first-word benchmark (bench only, never the product): the design a
team would write without the dispatcher. The SIP rule dispatches this worker natively, and its
entrypoint looks the caller up in the CRM, blocking, before the agent's first word.

Everything after the lookup is our agent's own code (`agent.worker.run_call`, the same model
stack and `PersonaAgent`), so the two routes differ only in where the persona comes from. The
persona is parsed by the dispatcher's own parser and handed to `run_call` as the job's copy of
the room metadata, where the dispatcher would have put it.

    FIRST_WORD_CRM_BASE=http://127.0.0.1:P/mobile AGENT_NAME=agent-fetch python -m bench.agent_fetch
"""

from __future__ import annotations

import os
import sys

import aiohttp
from livekit.agents import AgentServer, JobContext

from agent.__main__ import main
from agent.models import stack_factory
from agent.worker import new_agent_server, run_call
from config.agent_settings import AgentSettings
from contract.metadata import PersonaMetadata, encode_room_metadata, utc_now_iso
from dispatcher.persona_payload import parse_persona_body

CRM_BASE_VAR = "FIRST_WORD_CRM_BASE"
METADATA_BUDGET = 60_000


def caller_of_room(room: str) -> str:
    """The caller's number in a room the individual dispatch rule named `<prefix>_<caller>_<id>`."""
    return room.split("_")[1]


class FetchingEntrypoint:
    """Fetch the caller's persona from the CRM, then run our agent's call with it."""

    def __init__(self, settings: AgentSettings, crm_base: str) -> None:
        self.settings = settings
        self.crm_base = crm_base

    async def __call__(self, ctx: JobContext) -> None:
        caller = caller_of_room(ctx.job.room.name)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.crm_base}/{caller}", raise_for_status=True) as resp,
        ):
            persona = parse_persona_body(await resp.read())
        meta = PersonaMetadata(
            persona, status="loaded", source="api", caller=caller, resolved_at=utc_now_iso()
        )
        ctx.job.room.metadata = encode_room_metadata(ctx.job.room.metadata, meta, METADATA_BUDGET)
        factory = stack_factory(self.settings, ctx.proc.userdata.get("models", {}))
        await run_call(ctx, self.settings, factory)


def fetching_server(settings: AgentSettings) -> AgentServer:
    """Our worker's options, the fetching entrypoint, `AGENT_NAME`."""
    return new_agent_server(settings, FetchingEntrypoint(settings, os.environ[CRM_BASE_VAR]))


if __name__ == "__main__":
    sys.exit(main(fetching_server))
