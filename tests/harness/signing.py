"""Helpers shared by tests and benchmarks: webhook bodies signed the way LiveKit signs them."""

from __future__ import annotations

import base64
import datetime
import hashlib
import uuid

from google.protobuf import json_format
from livekit import api

from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET


def sign(
    body: bytes, key: str = DEV_API_KEY, secret: str = DEV_API_SECRET, ttl_s: int = 300
) -> str:
    """A bare JWT carrying base64(sha256(body)), as livekit-server puts in `Authorization`."""
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return (
        api.AccessToken(key, secret)
        .with_sha256(digest)
        .with_ttl(datetime.timedelta(seconds=ttl_s))
        .to_jwt()
    )


def participant_joined(
    room: str,
    *,
    number: str | None = "8655701159",
    kind: int = api.ParticipantInfo.Kind.SIP,
    dialed: str | None = "+15550100",
    call_id: str | None = None,
    identity: str | None = None,
    room_metadata: str = "",
    participant_metadata: str = "",
    event: str = "participant_joined",
    event_id: str | None = None,
    room_sid: str | None = None,
) -> bytes:
    """A webhook body as livekit-server sends it for a (SIP) participant."""
    attrs: dict[str, str] = {}
    if kind == api.ParticipantInfo.Kind.SIP:
        if number is not None:
            attrs["sip.phoneNumber"] = number
        if dialed is not None:
            attrs["sip.trunkPhoneNumber"] = dialed
        attrs["sip.callID"] = call_id or f"SCL_{uuid.uuid4().hex[:12]}"
        attrs["sip.callStatus"] = "ringing"
    ev = api.WebhookEvent(
        event=event,
        id=event_id or f"EV_{uuid.uuid4().hex[:12]}",
        created_at=int(datetime.datetime.now(datetime.UTC).timestamp()),
        room=api.Room(name=room, sid=room_sid or f"RM_{room}", metadata=room_metadata),
        participant=api.ParticipantInfo(
            sid=f"PA_{uuid.uuid4().hex[:8]}",
            identity=identity or (f"sip_{number}" if number else f"user_{uuid.uuid4().hex[:6]}"),
            kind=kind,  # type: ignore[arg-type]
            attributes=attrs,
            metadata=participant_metadata,
        ),
    )
    return json_format.MessageToJson(ev).encode()


def room_event(
    room: str, event: str = "room_finished", *, room_metadata: str = "", room_sid: str | None = None
) -> bytes:
    """A room's own webhook (`room_started`, `room_finished`), as livekit-server sends it."""
    ev = api.WebhookEvent(
        event=event,
        id=f"EV_{uuid.uuid4().hex[:12]}",
        room=api.Room(name=room, sid=room_sid or f"RM_{room}", metadata=room_metadata),
    )
    return json_format.MessageToJson(ev).encode()
