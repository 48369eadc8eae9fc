"""LiveKit server API clients scoped to one room, over one shared HTTP session.

`LiveKitAPI` signs a fresh JWT for every call (about 0.15 ms of CPU each, in `AccessToken`);
a call set-up makes four calls on one room, so one token per room carrying exactly the grants
those calls need (admin of that room, list rooms) is signed once and sent with each of them.
"""

from __future__ import annotations

import datetime

import aiohttp
from livekit import api

TOKEN_TTL = datetime.timedelta(minutes=5)


class LiveKitRooms:
    """Owns the HTTP session; `for_room` clients borrow it and need no closing."""

    def __init__(self, url: str, api_key: str, api_secret: str) -> None:
        self._url = url
        self._key = api_key
        self._secret = api_secret
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))
        self.server = api.LiveKitAPI(url, api_key, api_secret, session=self._session)

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
