"""A fake OpenAI Realtime API: a local WebSocket that acknowledges what the realtime session of
livekit-agents' OpenAI plugin sends and never speaks, so that the `openai-realtime` model stack
runs offline (point OPENAI_BASE_URL at `base_url`). It keeps every event it received."""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiohttp import WSMsgType, web

RECEIVED = web.AppKey("received", list[dict[str, Any]])


async def realtime(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    received = request.app[RECEIVED]
    known: set[str] = set()
    async for msg in ws:
        if msg.type != WSMsgType.TEXT:
            continue
        event = orjson.loads(msg.data)
        received.append(event)
        # The session waits for the server to acknowledge items it adds to the conversation
        # (the welcome line, once spoken, is one).
        if event.get("type") == "conversation.item.create":
            previous = event.get("previous_item_id")
            known.add(event["item"]["id"])
            await ws.send_str(
                json.dumps(
                    {
                        "type": "conversation.item.added",
                        "event_id": f"ev_{len(received)}",
                        "previous_item_id": previous if previous in known else None,
                        "item": event["item"],
                    }
                )
            )
        elif event.get("type") == "conversation.item.delete":
            await ws.send_str(
                json.dumps(
                    {
                        "type": "conversation.item.deleted",
                        "event_id": f"ev_{len(received)}",
                        "item_id": event["item_id"],
                    }
                )
            )
    return ws


def make_app() -> web.Application:
    app = web.Application()
    app[RECEIVED] = []
    app.router.add_get("/v1/realtime", realtime)
    return app
