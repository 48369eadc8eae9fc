"""One sipp call through the chain, and the room the dispatcher set it up in."""

from __future__ import annotations

import asyncio

from tests.e2e.service_logs import records
from tests.harness.sip_stack import SipStack
from tests.harness.sipp import Call, SippResult
from tests.harness.stack import Stack


async def call_and_room(
    stack: Stack, sip: SipStack, caller: str, **sipp_options: object
) -> tuple[SippResult, str]:
    """A call from `caller` to the trunk (`sipp_options` are `SipStack.sipp`'s), run to its end;
    its result and the room its set-up named."""
    run = sip.sipp([Call(caller, sip.trunk_number)], **sipp_options)
    run.start()
    try:
        result = await asyncio.to_thread(run.wait)
    finally:
        run.stop()
    [room] = {
        e["room"]
        for e in records(stack.dispatcher_log, "call.setup_done")
        if e["room"].startswith(f"call_{caller}_")
    }
    return result, room
