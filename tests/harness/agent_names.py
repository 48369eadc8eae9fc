"""Make livekit-server refresh its cache of the agent names its workers serve, at a known time.

livekit-server (v1.13.5, `pkg/agent/client.go`) learns which agent names have workers through a
cache that it refreshes lazily: at the first job launch a minute after the last refresh, or after
a worker registers a new name. A refresh takes 5 s (a multicast that waits out its timeout), and
meanwhile every job launch holds one of the 50 goroutines of its pool; a call launches up to three
(its room's, its caller's participant and publisher jobs), so a burst of more than about fifteen
calls in that window waits up to 5 s for its jobs. A benchmark that wants the steady state forces
a refresh and lets it finish before a burst: the cache then stays fresh for a minute.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from urllib.parse import urlparse

import aiohttp
from livekit import api
from livekit.protocol import agent

REFRESH_S = 5.0  # CheckEnabledTimeout


async def register_once(ws_url: str, api_key: str, api_secret: str, agent_name: str) -> None:
    """Register a worker under `agent_name` and leave: a new name invalidates the cache."""
    token = api.AccessToken(api_key, api_secret).with_grants(api.VideoGrants(agent=True)).to_jwt()
    parsed = urlparse(ws_url)
    scheme = parsed.scheme.replace("http", "ws")
    url = f"{scheme}://{parsed.netloc}/agent"
    message = agent.WorkerMessage()
    message.register.type = agent.JobType.JT_ROOM
    message.register.agent_name = agent_name
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, headers={"Authorization": f"Bearer {token}"}) as ws,
    ):
        await ws.send_bytes(message.SerializeToString())
        reply = agent.ServerMessage()
        async with asyncio.timeout(10):
            reply.ParseFromString(await ws.receive_bytes())
        if not reply.HasField("register"):
            raise RuntimeError(f"livekit-server did not register the worker: {reply}")


async def refresh_agent_names(
    lk: api.LiveKitAPI, ws_url: str, api_key: str, api_secret: str
) -> None:
    """Invalidate the cache, start its refresh with a throwaway room (whose automatic dispatch
    launches a job) and wait the refresh out."""
    await register_once(ws_url, api_key, api_secret, f"bench-refresh-{uuid.uuid4().hex[:8]}")
    await asyncio.sleep(0.2)  # the invalidation travels through Redis
    started = time.monotonic()
    # Nobody joins it: it closes itself after its empty timeout.
    name = f"bench_refresh_{uuid.uuid4().hex[:8]}"
    await lk.room.create_room(api.CreateRoomRequest(name=name, empty_timeout=1))
    await asyncio.sleep(max(REFRESH_S + 1.0 - (time.monotonic() - started), 0))
