"""The real stack for integration tests: livekit-server (real), the dispatcher (as a process), the
fake persona API (as a process) and a webhook recorder, all on loopback."""

from __future__ import annotations

import asyncio
import http.server
import inspect
import json
import shutil
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from livekit import api, rtc

from contract.metadata import PersonaMetadata, decode_persona_metadata
from devstack.logs import read_log_events
from devstack.processes import ROOT, ManagedProcess, free_port
from devstack.services import LiveKitServer, dispatcher_process, start_livekit_server
from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET
from tests.harness.calls import SipCaller, sip_token
from tests.harness.fake_persona_api import start_fake_persona_api

T = TypeVar("T")


@dataclass
class Recorded:
    body: bytes
    authorization: str

    @property
    def event(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


class WebhookRecorder:
    """A second webhook URL for livekit-server: keeps each delivery's exact bytes for replays."""

    def __init__(self) -> None:
        self.deliveries: list[Recorded] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                recorder.deliveries.append(Recorded(body, self.headers.get("Authorization", "")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/recorded"

    def find(self, event: str, room: str) -> list[Recorded]:
        return [
            r
            for r in self.deliveries
            if r.event.get("event") == event and r.event.get("room", {}).get("name") == room
        ]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Stack:
    livekit: LiveKitServer
    dispatcher: ManagedProcess
    persona_api: ManagedProcess
    recorder: WebhookRecorder
    dispatcher_url: str
    persona_api_url: str
    user_mapping: Path
    extra: list[ManagedProcess] = field(default_factory=list)
    dispatcher_env: dict[str, str] = field(default_factory=dict)

    @property
    def dispatcher_log(self) -> Path:
        return self.dispatcher.log_path

    def persona_control(self, **settings: Any) -> dict[str, Any]:
        """Tell the fake persona API how to behave (delay_s, fail_status, garbage, reset...)."""
        return persona_control(self.persona_api_url, **settings)

    def persona_stats(self) -> dict[str, Any]:
        return persona_stats(self.persona_api_url)

    def api(self) -> api.LiveKitAPI:
        return api.LiveKitAPI(self.livekit.http_url, DEV_API_KEY, DEV_API_SECRET)

    def dispatcher_events(self, **match: Any) -> list[dict[str, Any]]:
        """The dispatcher's JSON log events whose fields equal `match` (as logged: phone numbers
        masked, so `room=` takes the room's real name)."""
        return read_log_events(self.dispatcher_log, **match)

    def unhooked_dispatcher(self, log_path: Path, **env: str) -> ManagedProcess:
        """One more dispatcher (not started) on a port livekit-server sends no webhook to:
        whatever it sets up, its reconciler found."""
        process = dispatcher_process(free_port(), {**self.dispatcher_env, **env}, log_path)
        self.extra.append(process)
        return process

    def stop(self) -> None:
        for p in [*self.extra, self.dispatcher, self.persona_api]:
            p.stop()
        self.livekit.stop()
        self.recorder.stop()


def copy_user_mapping(work: Path) -> Path:
    """The project's file personas, copied where a test may add its own."""
    mapping = work / "user-mapping"
    shutil.copytree(ROOT / "user-mapping", mapping, dirs_exist_ok=True)
    return mapping


def dispatcher_test_env(persona_port: int, mapping: Path, **overrides: str) -> dict[str, str]:
    """A dispatcher's settings in the tests: our keys, the fake persona API on `persona_port`,
    the file personas in `mapping`, short persona deadlines; `overrides` win."""
    return {
        "LIVEKIT_API_KEY": DEV_API_KEY,
        "LIVEKIT_API_SECRET": DEV_API_SECRET,
        "PERSONA_API_BASE": f"http://127.0.0.1:{persona_port}/mobile",
        "USER_MAPPING_DIR": str(mapping),
        "PERSONA_DEADLINE_S": "3",
        "PERSONA_ATTEMPT_TIMEOUT_S": "2",
        # The tests' rooms get no agent unless a test starts a worker: the reconciler leaves
        # their dispatches alone unless a test asks for a shorter wait.
        "AGENT_JOIN_TIMEOUT_S": "60",
        "LOG_LEVEL": "info",
        **overrides,
    }


def start_stack(
    log_dir: Path,
    work: Path,
    dispatcher_env: dict[str, str] | None = None,
    replicas: int = 1,
    redis_address: str | None = None,
    *,
    lose_webhooks: bool = False,
    start_dispatchers: bool = True,
    record_webhooks: bool = True,
) -> Stack:
    """Start everything; the caller stops it. `replicas` dispatchers all receive each webhook;
    with `lose_webhooks` livekit-server sends them to a port where nothing listens instead (the
    recorder still gets them). Without `start_dispatchers` they are built but not started. The
    recorder gets a copy of each webhook unless `record_webhooks` is off (a benchmark's server
    should send what a deployment's sends)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    mapping = copy_user_mapping(work)
    persona_port = free_port()
    ports = [free_port() for _ in range(replicas)]
    recorder = WebhookRecorder()
    persona = start_fake_persona_api(persona_port, log_dir / "fake-persona-api.log")
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    hooked = [f"http://127.0.0.1:{free_port()}"] if lose_webhooks else urls
    livekit = start_livekit_server(
        webhook_urls=(
            *(u + "/webhooks/livekit" for u in hooked),
            *((recorder.url,) if record_webhooks else ()),
        ),
        redis_address=redis_address,
        log_path=log_dir / "livekit-server.log",
    )
    env = dispatcher_test_env(
        persona_port,
        mapping,
        **{
            "LIVEKIT_URL": livekit.ws_url,
            "PERSONA_CACHE_TTL_S": "0.5",
            "PERSONA_REVALIDATE_S": "0",
            **(dispatcher_env or {}),
        },
    )
    dispatchers = [
        dispatcher_process(
            port, env, log_dir / ("dispatcher.log" if i == 0 else f"dispatcher-{i}.log")
        )
        for i, port in enumerate(ports)
    ]
    if start_dispatchers:
        for d in dispatchers:
            d.start()
    return Stack(
        livekit,
        dispatchers[0],
        persona,
        recorder,
        urls[0],
        f"http://127.0.0.1:{persona_port}",
        mapping,
        extra=dispatchers[1:],
        dispatcher_env=env,
    )


def unique_number() -> str:
    """A caller number no other test uses, so that no cache or file carries state into the test
    (10 digits starting with 7: a valid Indian mobile number, home for the default COUNTRY_CODE, in
    no fixture)."""
    return "7" + str(uuid.uuid4().int % 10**9).zfill(9)


def unique_room(number: str, suffix: str | None = None) -> str:
    """A room named as the individual dispatch rule names them: `call_<number>_<random>`
    (`suffix` instead of the random part: all digits, say, which the every-run masking rule
    would take for a number and the numbering plan does not)."""
    return f"call_{number}_{suffix or uuid.uuid4().hex[:8]}"


def participant_token(
    room: str,
    identity: str,
    *,
    kind: str = "sip",
    attributes: dict[str, str] | None = None,
) -> str:
    return (
        api.AccessToken(DEV_API_KEY, DEV_API_SECRET)
        .with_identity(identity)
        .with_kind(kind)  # type: ignore[arg-type]
        .with_attributes(attributes or {})
        .with_grants(api.VideoGrants(room_join=True, room=room, agent=kind == "agent"))
        .to_jwt()
    )


def persona_control(base_url: str, **settings: Any) -> dict[str, Any]:
    """Tell the fake persona API at `base_url` how to behave (delay_s, fail_status, extra...);
    it is reset first."""
    req = urllib.request.Request(
        base_url + "/_control",
        data=json.dumps({"reset": True, **settings}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        value: dict[str, Any] = json.loads(resp.read())
        return value


def persona_stats(base_url: str) -> dict[str, Any]:
    """What the fake persona API at `base_url` was asked: requests, per number, last path."""
    with urllib.request.urlopen(base_url + "/_control", timeout=5) as resp:
        value: dict[str, Any] = json.loads(resp.read())
        return value


class OnLiveKit(Protocol):
    """A stack with a livekit-server to join (the integration stack, the two-node cluster)."""

    @property
    def livekit(self) -> LiveKitServer: ...


async def join_sip(
    stack: OnLiveKit, room: str, number: str, *, dialed: str = "+15550100", via: str | None = None
) -> rtc.Room:
    """A SIP-kind participant as livekit-sip creates it for an inbound call from `number`
    (through the livekit-server at the websocket URL `via`, by default the stack's)."""
    attrs = {
        "sip.phoneNumber": number,
        "sip.trunkPhoneNumber": dialed,
        "sip.callID": f"SCL_{uuid.uuid4().hex[:12]}",
        "sip.callStatus": "ringing",
    }
    return await join(stack, room, f"sip_{number}", kind="sip", attributes=attrs, via=via)


async def join(
    stack: OnLiveKit,
    room: str,
    identity: str,
    *,
    kind: str = "standard",
    attributes: dict[str, str] | None = None,
    via: str | None = None,
) -> rtc.Room:
    r = rtc.Room()
    token = participant_token(room, identity, kind=kind, attributes=attributes)
    await r.connect(via or stack.livekit.ws_url, token)
    return r


async def eventually(
    probe: Callable[[], Any],
    within: float,
    what: str,
    interval: float = 0.05,
) -> Any:
    """Poll `probe` until it returns a truthy value or fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


async def room_persona(lk: api.LiveKitAPI, room: str) -> PersonaMetadata | None:
    listed = await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
    if not listed.rooms or not listed.rooms[0].metadata:
        return None
    return decode_persona_metadata(listed.rooms[0].metadata)


async def agent_dispatches(
    lk: api.LiveKitAPI, room: str, agent_name: str
) -> list[api.AgentDispatch]:
    return [d for d in await lk.agent_dispatch.list_dispatch(room) if d.agent_name == agent_name]


async def place_sip_call(stack: Stack, joined: list[SipCaller], number: str) -> SipCaller:
    """A SIP caller from `number` joins a room of its own, as livekit-sip would bring it."""
    room = unique_room(number)
    token = sip_token(stack.livekit, room, caller=number, call_id=f"SCL_{room[-8:]}")
    caller = await SipCaller(stack.livekit.ws_url, token).join()
    joined.append(caller)
    return caller
