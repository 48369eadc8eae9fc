"""A fake CRM persona API: a real aiohttp server serving the fixture payloads, with counters.

It can be told (through `/_control`) to be slow, to fail N times with a status, or to answer
garbage. Run it as a process with `python -m tests.harness.fake_persona_api --port P`.
"""

from __future__ import annotations

import argparse
import asyncio
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
    requests: int = 0
    per_number: dict[str, int] = field(default_factory=dict)
    last_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def configure(self, body: dict[str, Any]) -> None:
        self.delay_s = float(body.get("delay_s", 0.0))
        self.fail_status = body.get("fail_status")
        self.fail_times = int(body.get("fail_times", -1))
        self.garbage = bool(body.get("garbage", False))
        self.extra.update(body.get("extra", {}))

    def reset(self) -> None:
        self.configure({})
        self.requests = 0
        self.per_number.clear()
        self.last_path = None
        self.extra.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "per_number": self.per_number,
            "last_path": self.last_path,
        }


STATE = web.AppKey("state", FakeState)


async def persona(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    number = request.match_info["number"]
    state.requests += 1
    state.per_number[number] = state.per_number.get(number, 0) + 1
    state.last_path = request.path
    if state.delay_s:
        await asyncio.sleep(state.delay_s)
    if state.fail_status is not None and state.fail_times != 0:
        if state.fail_times > 0:
            state.fail_times -= 1
        return web.json_response({"error": "injected"}, status=state.fail_status)
    if state.garbage:
        return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
    if number in state.extra:
        answer = state.extra[number]
        if isinstance(answer, bytes):  # a body as is: large ones cost the test's loop nothing
            return web.Response(body=answer, content_type="application/json")
        return web.json_response(answer)
    path = state.fixtures / f"num_{number}.json"
    if not number.isdigit() or not path.is_file():
        return web.json_response({"success": False, "message": "mobile not found"}, status=404)
    return web.Response(body=path.read_bytes(), content_type="application/json")


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
