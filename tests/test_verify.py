"""Webhook signature verification (pure): LiveKit's JWT carrying the raw body's sha256."""

from __future__ import annotations

import base64
import datetime
import hashlib

import pytest
from livekit import api

from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET
from tests.harness.signing import participant_joined, sign
from webhooks.verify import WebhookAuthError, WebhookPayloadError, bearer_token, verify_webhook

pytestmark = pytest.mark.unit
RECEIVER = api.WebhookReceiver(api.TokenVerifier(DEV_API_KEY, DEV_API_SECRET))
BODY = participant_joined("call_8655701159_x")


def test_valid_signature_gives_the_event() -> None:
    event = verify_webhook(RECEIVER, BODY, sign(BODY))
    assert event.event == "participant_joined"
    assert event.participant.attributes["sip.phoneNumber"] == "8655701159"


def test_bearer_prefix_is_tolerated() -> None:
    assert verify_webhook(RECEIVER, BODY, "Bearer " + sign(BODY)).room.name == "call_8655701159_x"
    assert bearer_token("bearer abc") == "abc"


def test_tampered_body_is_rejected() -> None:
    token = sign(BODY)
    tampered = BODY.replace(b"8655701159", b"8655701158")
    with pytest.raises(WebhookAuthError, match="hash mismatch"):
        verify_webhook(RECEIVER, tampered, token)


def test_reserialised_body_is_rejected() -> None:
    """The hash covers the exact bytes: the same JSON with other spacing does not verify."""
    with pytest.raises(WebhookAuthError):
        verify_webhook(RECEIVER, BODY.replace(b": ", b":"), sign(BODY))


def test_wrong_secret_is_rejected() -> None:
    with pytest.raises(WebhookAuthError, match="InvalidSignature"):
        verify_webhook(RECEIVER, BODY, sign(BODY, secret="another-secret-of-at-least-32-chars!!"))


def test_wrong_key_is_rejected() -> None:
    with pytest.raises(WebhookAuthError, match="InvalidIssuer"):
        verify_webhook(RECEIVER, BODY, sign(BODY, key="otherkey"))


def test_expired_token_is_rejected() -> None:
    with pytest.raises(WebhookAuthError, match="ExpiredSignature"):
        verify_webhook(RECEIVER, BODY, sign(BODY, ttl_s=-120))


def test_token_without_sha256_is_rejected() -> None:
    token = api.AccessToken(DEV_API_KEY, DEV_API_SECRET).to_jwt()
    with pytest.raises(WebhookAuthError, match="sha256"):
        verify_webhook(RECEIVER, BODY, token)


@pytest.mark.parametrize("header", [None, "", "   ", "Bearer", "not-a-jwt"])
def test_missing_or_malformed_header_is_rejected(header: str | None) -> None:
    with pytest.raises(WebhookAuthError):
        verify_webhook(RECEIVER, BODY, header)


def test_unsigned_token_is_rejected() -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    digest = base64.b64encode(hashlib.sha256(BODY).digest()).decode()
    exp = int((datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)).timestamp())
    claims = f'{{"iss":"{DEV_API_KEY}","sha256":"{digest}","exp":{exp}}}'.encode()
    payload = base64.urlsafe_b64encode(claims).rstrip(b"=").decode()
    with pytest.raises(WebhookAuthError):
        verify_webhook(RECEIVER, BODY, f"{header}.{payload}.")


@pytest.mark.parametrize("body", [b"not json", b"[1,2]", b'{"event": 5}', b"{}"])
def test_signed_non_webhook_is_a_payload_error(body: bytes) -> None:
    with pytest.raises(WebhookPayloadError):
        verify_webhook(RECEIVER, body, sign(body))


def test_non_utf8_body_is_a_payload_error() -> None:
    body = b"\xff\xfe{}"
    with pytest.raises(WebhookPayloadError):
        verify_webhook(RECEIVER, body, sign(body))
