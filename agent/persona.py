"""Which persona a call gets: read from room metadata only (see docs/contract.md), never fetched.

Order: the job's copy of the room (before connecting), the connected room, then a bounded wait
for `room_metadata_changed`; after that the default persona. The agent never fails a call here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from livekit import rtc

from contract.metadata import (
    ContractError,
    DispatchInfo,
    PersonaMetadata,
    decode_persona_metadata,
    default_persona_metadata,
)
from telemetry.timing import ms_since

ReadFrom = Literal["job", "room", "room_update", "none"]


class MetadataRoom(Protocol):
    """The part of `rtc.Room` the persona wait needs."""

    @property
    def metadata(self) -> str: ...

    def on(self, event: Any, callback: Any = None) -> Any: ...

    def off(self, event: Any, callback: Any) -> None: ...


@dataclass(frozen=True)
class AppliedPersona:
    """The persona a call runs with, where the agent found it and what went wrong before."""

    meta: PersonaMetadata
    read_from: ReadFrom
    waited_ms: float
    problems: tuple[str, ...] = ()

    @property
    def is_default(self) -> bool:
        return self.read_from == "none"

    def log_fields(self) -> dict[str, Any]:
        """The fields of the `persona.applied` log and transcript event."""
        return {
            "status": self.meta.status,
            "source": self.meta.source,
            "read_from": self.read_from,
            "persona_id": self.meta.persona.persona_id,
            "persona_name": self.meta.persona.name,
            "call_id": self.meta.call_id,
            "waited_ms": self.waited_ms,
        }


class CallParticipant(Protocol):
    """The part of a remote participant that says which SIP call it is."""

    @property
    def kind(self) -> int: ...

    @property
    def attributes(self) -> Mapping[str, str]: ...


SIP_KIND = rtc.ParticipantKind.PARTICIPANT_KIND_SIP
SIP_CALL_ID = "sip.callID"  # the attribute livekit-sip gives the caller's participant


def sip_call_id(participants: Iterable[CallParticipant]) -> str | None:
    """The SIP call id of the caller in the room, if one is there."""
    for p in participants:
        if p.kind == SIP_KIND and (call_id := p.attributes.get(SIP_CALL_ID)):
            return call_id
    return None


def with_call_id(
    applied: AppliedPersona, participants: Iterable[CallParticipant]
) -> AppliedPersona:
    """`applied`, its `call_id` taken from the caller in the room when the persona has none: a
    set-up begun as the room started, before the caller joined, could not know the call."""
    if applied.meta.call_id is not None:
        return applied
    call_id = sip_call_id(participants)
    if call_id is None:
        return applied
    return replace(applied, meta=replace(applied.meta, call_id=call_id))


def try_decode(raw: str) -> PersonaMetadata | str:
    """The persona in `raw` room metadata, or why there is none."""
    try:
        return decode_persona_metadata(raw)
    except ContractError as e:
        return str(e)


async def wait_for_room_persona(room: MetadataRoom, wait_s: float) -> PersonaMetadata | str:
    """The connected room's persona, waiting up to `wait_s` for a metadata update carrying it."""
    loop = asyncio.get_running_loop()
    found: asyncio.Future[PersonaMetadata] = loop.create_future()
    last_problem = ""

    def on_changed(_old: str, new: str) -> None:
        nonlocal last_problem
        result = try_decode(new)
        if isinstance(result, str):
            last_problem = result
        elif not found.done():
            found.set_result(result)

    # Listen before looking, so that an update between the two is not missed.
    room.on("room_metadata_changed", on_changed)
    try:
        on_changed("", room.metadata)
        if found.done():
            return found.result()
        try:
            async with asyncio.timeout(wait_s):
                return await found
        except TimeoutError:
            return last_problem or "no persona in room metadata"
    finally:
        room.off("room_metadata_changed", on_changed)


async def resolve_persona(
    *,
    job_room_metadata: str,
    room: MetadataRoom,
    connect: Callable[[], Awaitable[None]],
    wait_s: float,
    dispatch: DispatchInfo | None = None,
) -> AppliedPersona:
    """Decide the call's persona; `connect` is awaited (once) between the two reads."""
    first = try_decode(job_room_metadata)
    if not isinstance(first, str):
        await connect()
        return AppliedPersona(first, "job", 0)

    await connect()
    connected_at = time.perf_counter()
    already = try_decode(room.metadata)
    if not isinstance(already, str):
        return AppliedPersona(already, "room", 0)
    second = await wait_for_room_persona(room, wait_s)
    waited_ms = ms_since(connected_at)
    if not isinstance(second, str):
        return AppliedPersona(second, "room_update", waited_ms)
    dispatch = dispatch or DispatchInfo()
    fallback = default_persona_metadata(caller=dispatch.caller, call_id=dispatch.call_id)
    problems = tuple(dict.fromkeys((first, already, second)))
    return AppliedPersona(fallback, "none", waited_ms, problems=problems)
