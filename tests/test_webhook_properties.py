"""Whatever a correctly signed body holds, the webhook is answered without a 5xx (a 5xx makes
LiveKit deliver it again and again): arbitrary bytes, arbitrary JSON, and webhook events whose
every field is arbitrary (hypothesis, through the real app on the fake APIs)."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from hypothesis import example, given
from hypothesis import strategies as st
from livekit import api

from tests.conftest import Client, post
from tests.harness.fake_livekit import FakeLiveKit
from tests.harness.signing import participant_joined

pytestmark = pytest.mark.service

text = st.text(max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)
number_like = st.from_regex(r"[+0-9 ()\-<>\"@:a-z;]{0,30}", fullmatch=True)


@st.composite
def webhook_events(draw: st.DrawFn) -> tuple[bytes, str | None, str]:
    """A WebhookEvent as livekit-server would encode it, each field drawn at random; and the
    room it names, with its metadata."""
    attributes = draw(
        st.dictionaries(
            st.sampled_from(
                ["sip.phoneNumber", "sip.trunkPhoneNumber", "sip.callID", "sip.callStatus", "x"]
            ),
            number_like | text,
            max_size=5,
        )
    )
    room_metadata = draw(
        text
        | st.integers(200, 1000).map(lambda n: '{"a":' * n + "1" + "}" * n)
        | json_values.map(lambda v: json.dumps(v))
        | st.sampled_from(['{"call_setup": "on_room_started"}', '{"call_setup": "off"}'])
    )
    event = api.WebhookEvent(
        event=draw(
            st.sampled_from(
                ["participant_joined", "participant_left", "room_started", "room_finished"]
            )
            | text
        ),
        id=draw(text),
        room=api.Room(
            name=draw(text | number_like.map(lambda n: f"call_{n}_ab12")),
            sid=draw(text),
            metadata=room_metadata,
        ),
        participant=api.ParticipantInfo(
            sid=draw(text),
            identity=draw(text | number_like.map(lambda n: f"sip_{n}")),
            kind=draw(st.sampled_from(list(api.ParticipantInfo.Kind.values()))),  # type: ignore[arg-type]
            attributes=attributes,
            metadata=draw(text | json_values.map(lambda v: json.dumps(v))),
        ),
    )
    return json_format.MessageToJson(event).encode(), event.room.name, room_metadata


def no_room(body: bytes) -> tuple[bytes, str | None, str]:
    return body, None, ""


bodies = (
    st.binary(max_size=200).map(no_room)
    | json_values.map(lambda v: no_room(json.dumps(v).encode()))
    | webhook_events()
)


# Deeper than orjson writes (it reads ~1,000 levels, writes ~250): was a 500.
DEEP = '{"a":' * 300 + "1" + "}" * 300


@given(case=bodies, room_exists=st.booleans())
@example(
    case=(participant_joined("call_deep", room_metadata=DEEP), "call_deep", DEEP), room_exists=True
)
async def test_any_signed_body_is_answered_without_a_5xx(
    client: Client, fake_lk: FakeLiveKit, case: tuple[bytes, str | None, str], room_exists: bool
) -> None:
    body, room, room_metadata = case
    if room is not None and room_exists:
        fake_lk.add_room(room, room_metadata)
    status, answer = await post(client, body)
    assert status < 500, answer
    assert isinstance(answer, dict)
