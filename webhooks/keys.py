"""Typed keys of what the app holds."""

from __future__ import annotations

from aiohttp import web
from livekit import api

from config.settings import Settings
from dispatcher.persona_store import PersonaStore
from dispatcher.setup_guard import SetupGuard
from telemetry.metrics import Metrics
from webhooks.readiness import Readiness

SETTINGS = web.AppKey("settings", Settings)
CALL_SETUP = web.AppKey("call_setup", SetupGuard)
RECEIVER = web.AppKey("receiver", api.WebhookReceiver)
READINESS = web.AppKey("readiness", Readiness)
METRICS = web.AppKey("metrics", Metrics)
PERSONA_STORE = web.AppKey("persona_store", PersonaStore)
# What one request's answer was, for the webhooks counter (set by the handler or the middleware).
EVENT_TYPE = web.RequestKey("event_type", str)
ANSWER = web.RequestKey("answer", str)
