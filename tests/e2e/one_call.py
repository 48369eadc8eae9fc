"""The SIP chain the e2e suites start (Redis, the stack, livekit-sip), and one sipp call through
it with the room the dispatcher set it up in."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devstack.logs import clear_logs
from devstack.services import start_redis
from tests.e2e.service_logs import records
from tests.harness.sip_stack import SipStack, start_sip_stack
from tests.harness.sipp import Call, SippResult
from tests.harness.stack import Stack, start_stack


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


@contextmanager
def sip_chain(
    log_dir: Path, workdir: Path, dispatcher_env: dict[str, str]
) -> Iterator[tuple[Stack, SipStack]]:
    """Redis, the stack (livekit-server, dispatcher, fake CRM) on it and livekit-sip, logs in a
    fresh `log_dir`; stopped in reverse order. The suite starts its own agent workers."""
    clear_logs(log_dir)
    redis = start_redis(log_path=log_dir / "redis.log")
    try:
        stack = start_stack(
            log_dir, workdir, redis_address=redis.address, dispatcher_env=dispatcher_env
        )
        try:
            sip = start_sip_stack(log_dir, redis=redis, livekit=stack.livekit)
            try:
                yield stack, sip
            finally:
                sip.stop()
        finally:
            stack.stop()
    finally:
        redis.stop()
