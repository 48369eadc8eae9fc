"""Webhook verification: the signed JWT in `Authorization` must carry the raw body's sha256."""

from __future__ import annotations

import jwt
from google.protobuf import json_format
from livekit import api

from contract.errors import PersonaDispatcherError


class WebhookError(PersonaDispatcherError):
    """A webhook that must be refused."""


class WebhookAuthError(WebhookError):
    """Missing, forged, tampered, expired or wrongly keyed signature: answer 401."""


class WebhookPayloadError(WebhookError):
    """Signed correctly but not a webhook event: answer 400."""


def bearer_token(header: str | None) -> str:
    """The bare JWT from `Authorization` (LiveKit sends it bare; `Bearer ` is tolerated)."""
    if not header or not header.strip():
        raise WebhookAuthError("missing Authorization header")
    token = header.strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    return token


def check_token(verifier: api.TokenVerifier, auth_header: str | None) -> str:
    """The request's token, its signature and expiry verified: done before the body is read, so
    that a request without a valid token costs no read of up to WEBHOOK_MAX_BYTES."""
    token = bearer_token(auth_header)
    try:
        verifier.verify(token)
    except jwt.PyJWTError as e:
        raise WebhookAuthError(f"invalid token: {type(e).__name__}") from None
    return token


def verify_webhook(
    receiver: api.WebhookReceiver, body: bytes, auth_header: str | None
) -> api.WebhookEvent:
    """Verify the raw `body`, then parse it; raises WebhookAuthError or WebhookPayloadError."""
    token = bearer_token(auth_header)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookPayloadError("body is not UTF-8") from None
    try:
        event = receiver.receive(text, token)
    except jwt.PyJWTError as e:
        raise WebhookAuthError(f"invalid token: {type(e).__name__}") from None
    except json_format.ParseError as e:
        raise WebhookPayloadError(f"body is not a webhook event: {e}") from None
    except Exception as e:
        # receive() raises a bare Exception for a missing sha256 claim or a hash mismatch; any
        # other exception type is a bug and must surface.
        if type(e) is Exception:
            raise WebhookAuthError(str(e)) from None
        raise
    if not event.event:
        raise WebhookPayloadError("body has no event type")
    return event
