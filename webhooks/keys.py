"""Typed keys of what the app holds."""

from __future__ import annotations

from aiohttp import web
from livekit import api

from config.settings import Settings
from dispatcher.persona_resolver import PersonaResolver
from dispatcher.room_setup import CallSetup

SETTINGS = web.AppKey("settings", Settings)
RESOLVER = web.AppKey("resolver", PersonaResolver)
CALL_SETUP = web.AppKey("call_setup", CallSetup)
RECEIVER = web.AppKey("receiver", api.WebhookReceiver)
