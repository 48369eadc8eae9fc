"""Typed keys of what the app holds."""

from __future__ import annotations

from aiohttp import web
from livekit import api

from config.settings import Settings
from dispatcher.setup_guard import SetupGuard
from webhooks.readiness import Readiness

SETTINGS = web.AppKey("settings", Settings)
CALL_SETUP = web.AppKey("call_setup", SetupGuard)
RECEIVER = web.AppKey("receiver", api.WebhookReceiver)
READINESS = web.AppKey("readiness", Readiness)
