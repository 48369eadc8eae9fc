"""The one adapter to LiveKit's server API: every call bounded by a deadline, every failure turned
into the project's errors (`LiveKitUnreachable`, `LiveKitRejected`, `LiveKitNotFound`) for the call
set-up, the SIP provisioning and the manual dispatch alike.

`LiveKitAPI` ignores its own timeout and retries nothing against a self-hosted server, hence
`asyncio.timeout` around each call; the retry, where there is one, is the caller's (the webhook
path answers 503 so that LiveKit redelivers).

`LiveKitAPI` also signs a fresh JWT for every call (about 0.15 ms of CPU each, in `AccessToken`);
a call set-up makes four calls on one room, so `LiveKitRooms.for_room` signs one token per room
carrying exactly the grants those calls need (admin of that room, list rooms).
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable
from typing import TypeVar

import aiohttp
from livekit import api

from contract.errors import PersonaDispatcherError
from dispatcher.livekit_clock import LiveKitClock

T = TypeVar("T")
TOKEN_TTL = datetime.timedelta(minutes=5)


class LiveKitError(PersonaDispatcherError):
    """A LiveKit server API call failed; `step` names the call."""

    def __init__(self, step: str, detail: str, status: int | None = None) -> None:
        super().__init__(f"{step}: {detail}")
        self.step = step
        self.detail = detail
        self.status = status


class LiveKitUnreachable(LiveKitError):
    """No answer: connection refused or reset, or nothing within the deadline (`timeout_s`)."""

    def __init__(self, step: str, detail: str, timeout_s: float | None = None) -> None:
        super().__init__(step, detail)
        self.timeout_s = timeout_s


class LiveKitRejected(LiveKitError):
    """The server answered with an error (bad credentials, invalid request, its own failure)."""

    def __init__(self, step: str, code: str, message: str, status: int | None) -> None:
        super().__init__(step, f"{code}: {message} (HTTP {status})", status)
        self.code = code
        self.message = message


class LiveKitNotFound(LiveKitRejected):
    """What the call names does not exist (for a call set-up: the room closed first)."""


async def livekit_call(step: str, request: Awaitable[T], timeout_s: float) -> T:
    """Await one LiveKit API `request` within `timeout_s`; raises `LiveKitError` subclasses."""
    try:
        async with asyncio.timeout(timeout_s):
            return await request
    except api.TwirpError as e:
        kind = (
            LiveKitNotFound
            if e.status == 404 or e.code == api.TwirpErrorCode.NOT_FOUND
            else LiveKitRejected
        )
        raise kind(step, str(e.code), e.message, e.status) from e
    except TimeoutError:
        raise LiveKitUnreachable(step, "TimeoutError", timeout_s) from None
    except aiohttp.ClientError as e:
        raise LiveKitUnreachable(step, type(e).__name__) from e


# A room name no call uses: the readiness check asks for it and expects to find nothing.
NO_SUCH_ROOM = "persona-dispatcher-readiness-check"


async def check_access(server: api.LiveKitAPI, timeout_s: float) -> None:
    """Raises `LiveKitError` unless the server answers an authenticated call: a ListRooms for a
    name no room has, which costs the server a lookup and is refused for a wrong key or secret."""
    await livekit_call(
        "list_rooms", server.room.list_rooms(api.ListRoomsRequest(names=[NO_SUCH_ROOM])), timeout_s
    )


class LiveKitRooms:
    """Owns the HTTP session; `for_room` clients borrow it and need no closing."""

    def __init__(
        self, url: str, api_key: str, api_secret: str, clock: LiveKitClock | None = None
    ) -> None:
        """`clock`, when given, learns LiveKit's time from every answer."""
        self._url = url
        self._key = api_key
        self._secret = api_secret
        self.clock = clock
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200),
            trace_configs=[clock.trace_config()] if clock is not None else None,
        )
        self.server = api.LiveKitAPI(url, api_key, api_secret, session=self._session)

    def now(self) -> float:
        """LiveKit's time (epoch seconds) as its answers tell, or ours without a clock."""
        return self.clock.now() if self.clock is not None else time.time()

    def for_room(self, room: str) -> api.LiveKitAPI:
        """A client whose single token lets it read rooms and administer `room` only."""
        token = (
            api.AccessToken(self._key, self._secret)
            .with_grants(api.VideoGrants(room_admin=True, room=room, room_list=True))
            .with_ttl(TOKEN_TTL)
            .to_jwt()
        )
        return api.LiveKitAPI(self._url, token=token, session=self._session)

    async def aclose(self) -> None:
        await self._session.close()
