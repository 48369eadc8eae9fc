"""A fake CRM persona API: a real aiohttp server serving the fixture payloads, with counters.

It can be told (through `/_control`) to be slow, to fail N times with a status, or to answer
garbage. Like a CRM behind a caching-aware web server it gives each answer an `ETag` (the body's
hash) and answers `304 Not Modified` to a matching `If-None-Match`, unless `conditional` is off (a
plain CRM); it sends `cache_control` as `Cache-Control` when set; it counts its 200s and 304s; and
a test can edit a persona mid-test (`edit_persona`). Run it as a process with
`python -m tests.harness.fake_persona_api --port P`.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from devstack.processes import ManagedProcess, http_ready, python_module

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "personas"


@dataclass
class FakeState:
    fixtures: Path = FIXTURES
    delay_s: float = 0.0
    fail_status: int | None = None
    fail_times: int = -1  # -1: always, while fail_status is set
    garbage: bool = False
    conditional: bool = True  # ETag and 304s; False: a plain CRM, always the whole body
    cache_control: str | None = None
    requests: int = 0
    ok: int = 0  # 200s with a body
    not_modified: int = 0  # 304s
    per_number: dict[str, int] = field(default_factory=dict)
    last_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # In-process only: while set and clear, each answer is decided (its body read) and then held
    # until the event is set; a test sees a request under way, or an edit land mid-request.
    hold: asyncio.Event | None = None
    held: int = 0  # answers waiting at `hold` now

    def configure(self, body: dict[str, Any]) -> None:
        self.delay_s = float(body.get("delay_s", 0.0))
        self.fail_status = body.get("fail_status")
        self.fail_times = int(body.get("fail_times", -1))
        self.garbage = bool(body.get("garbage", False))
        self.conditional = bool(body.get("conditional", True))
        self.cache_control = body.get("cache_control")
        self.extra.update(body.get("extra", {}))

    def reset(self) -> None:
        self.configure({})
        self.requests = 0
        self.ok = 0
        self.not_modified = 0
        self.per_number.clear()
        self.last_path = None
        self.extra.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "not_modified": self.not_modified,
            "per_number": self.per_number,
            "last_path": self.last_path,
        }

    def payload(self, number: str) -> Any:
        """What the CRM holds for `number` now: an edit, else the fixture file (None: unknown)."""
        if number in self.extra:
            answer = self.extra[number]
            return orjson.loads(answer) if isinstance(answer, bytes) else answer
        path = self.fixtures / f"num_{number}.json"
        if not number.isdigit() or not path.is_file():
            return None
        return orjson.loads(path.read_bytes())

    def edit_persona(self, number: str, **changes: Any) -> None:
        """Edit the persona of `number`'s first voice agent, as someone does in the CRM: e.g.
        `edit_persona(n, name="Asha")` or `personality=...`."""
        payload = copy.deepcopy(self.payload(number))
        payload["campaigns"][0]["voiceAgents"][0]["persona"].update(changes)
        self.extra[number] = payload


STATE = web.AppKey("state", FakeState)


def _answer(state: FakeState, request: web.Request, body: bytes) -> web.Response:
    """`body` as a 200 with its ETag, or a bodiless 304 when the client holds that version."""
    headers = {}
    if state.cache_control is not None:
        headers["Cache-Control"] = state.cache_control
    if state.conditional:
        etag = headers["ETag"] = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        if etag in request.headers.get("If-None-Match", "").split(", "):
            state.not_modified += 1
            return web.Response(status=304, headers=headers)
    state.ok += 1
    return web.Response(body=body, content_type="application/json", headers=headers)


async def persona(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    number = request.match_info["number"]
    state.requests += 1
    state.per_number[number] = state.per_number.get(number, 0) + 1
    state.last_path = request.path
    if state.delay_s:
        await asyncio.sleep(state.delay_s)
    answer = _decide(state, request, number)
    if state.hold is not None:
        state.held += 1
        try:
            await state.hold.wait()
        finally:
            state.held -= 1
    return answer


def _decide(state: FakeState, request: web.Request, number: str) -> web.Response:
    if state.fail_status is not None and state.fail_times != 0:
        if state.fail_times > 0:
            state.fail_times -= 1
        return web.json_response({"error": "injected"}, status=state.fail_status)
    if state.garbage:
        return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
    if number in state.extra:
        answer = state.extra[number]
        # Bytes are a body as is: large ones cost the test's loop nothing.
        return _answer(
            state, request, answer if isinstance(answer, bytes) else orjson.dumps(answer)
        )
    path = state.fixtures / f"num_{number}.json"
    if not number.isdigit() or not path.is_file():
        return web.json_response({"success": False, "message": "mobile not found"}, status=404)
    return _answer(state, request, path.read_bytes())


async def control(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.method == "POST":
        body = orjson.loads(await request.read() or b"{}")
        if body.get("reset"):
            state.reset()
        state.configure(body)
    return web.json_response(state.stats())


def make_app(state: FakeState | None = None) -> web.Application:
    app = web.Application()
    app[STATE] = state or FakeState()
    app.router.add_route("*", "/_control", control)
    app.router.add_get("/mobile/{number}", persona)
    return app


def start_fake_persona_api(port: int, log_path: Path) -> ManagedProcess:
    """This fake CRM API as a process on `port`; its base URL is `http://127.0.0.1:<port>/mobile`."""
    return ManagedProcess(
        "fake-persona-api",
        python_module("tests.harness.fake_persona_api", "--port", str(port)),
        log_path,
        ready=http_ready(f"http://127.0.0.1:{port}/_control"),
    ).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
