"""Typed keys of what the app holds."""

from __future__ import annotations

from aiohttp import web
from livekit import api

from config.settings import Settings
from dispatcher.persona_store import PersonaStore
from dispatcher.setup_guard import SetupGuard
from telemetry.metrics import Metrics
from webhooks.log_sampler import LogSampler
from webhooks.readiness import Readiness

SETTINGS = web.AppKey("settings", Settings)
CALL_SETUP = web.AppKey("call_setup", SetupGuard)
RECEIVER = web.AppKey("receiver", api.WebhookReceiver)
# The same key and secret: a request's token is checked before its body is read.
TOKEN_VERIFIER = web.AppKey("token_verifier", api.TokenVerifier)
# The 401s' log lines, sampled: anyone who reaches the port can cause them.
UNAUTHORIZED_LOG = web.AppKey("unauthorized_log", LogSampler)
READINESS = web.AppKey("readiness", Readiness)
METRICS = web.AppKey("metrics", Metrics)
PERSONA_STORE = web.AppKey("persona_store", PersonaStore)
# What one request's answer was, for the webhooks counter (set by the handler or the middleware).
EVENT_TYPE = web.RequestKey("event_type", str)
ANSWER = web.RequestKey("answer", str)
