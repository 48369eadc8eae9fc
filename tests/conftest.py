"""Fixtures shared by the service tests: the fake persona API, a fake LiveKit Twirp API, settings,
captured log events, and a test client of the webhook service with `post` to sign and send it a
webhook."""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from prometheus_client import REGISTRY

from config.settings import Settings, load_settings
from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET
from telemetry.logs import configure_logging
from tests.harness import fake_livekit as livekit_twirp
from tests.harness import fake_persona_api as persona_api
from tests.harness.signing import sign
from webhooks.app import create_app

# Property-based tests: "ci" (the default) is derandomised and bounded so that `.ci/run` stays short
# and repeatable; `HYPOTHESIS_PROFILE=deep` explores far more examples by hand.
hypothesis_settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
hypothesis_settings.register_profile(
    "deep",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parent.parent
PATH = "/webhooks/livekit"
Client = TestClient[Any, Any]


class LogCapture:
    """Log events the service wrote, parsed from its JSON lines."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.stream.getvalue().splitlines() if line]

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name]

    @property
    def text(self) -> str:
        return self.stream.getvalue()


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    configure_logging("debug", "json", stream=capture.stream, cache=False)
    yield capture
    configure_logging("info", "json", cache=False)


class CountsSince:
    """What this process's default Prometheus registry (the agent's counters,
    telemetry/agent_metrics.py) counted since the fixture began."""

    def __init__(self) -> None:
        self._before = self._now()

    @staticmethod
    def _now() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in REGISTRY.collect()
            for s in family.samples
        }

    def __call__(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return self._now().get(key, 0.0) - self._before.get(key, 0.0)


@pytest.fixture
def counted() -> CountsSince:
    return CountsSince()


@pytest.fixture
def persona_state() -> persona_api.FakeState:
    return persona_api.FakeState()


@pytest.fixture
async def persona_server(aiohttp_server: Any, persona_state: persona_api.FakeState) -> TestServer:
    server: TestServer = await aiohttp_server(persona_api.make_app(persona_state))
    return server


@pytest.fixture
def fake_lk() -> livekit_twirp.FakeLiveKit:
    return livekit_twirp.FakeLiveKit()


@pytest.fixture
async def lk_server(aiohttp_server: Any, fake_lk: livekit_twirp.FakeLiveKit) -> TestServer:
    server: TestServer = await aiohttp_server(livekit_twirp.make_app(fake_lk))
    return server


@pytest.fixture
def make_settings(
    persona_server: TestServer, lk_server: TestServer, tmp_path: Path
) -> Callable[..., Settings]:
    mapping = tmp_path / "user-mapping"
    mapping.mkdir()

    def build(**env: str) -> Settings:
        base = {
            "LIVEKIT_URL": str(lk_server.make_url("")).rstrip("/"),
            "LIVEKIT_API_KEY": DEV_API_KEY,
            "LIVEKIT_API_SECRET": DEV_API_SECRET,
            "PERSONA_API_BASE": str(persona_server.make_url("/mobile")),
            "USER_MAPPING_DIR": str(mapping),
            "PERSONA_DEADLINE_S": "2",
            "PERSONA_ATTEMPT_TIMEOUT_S": "0.5",
            # The reconciler lists rooms at start-up: on only where a test asks for it.
            "RECONCILE_INTERVAL_S": "0",
        }
        base.update(env)
        return load_settings(base)

    return build


@pytest.fixture
async def client(
    aiohttp_client: Any, make_settings: Callable[..., Settings], logs: LogCapture
) -> Client:
    """The webhook service on the fake persona and LiveKit APIs, its log events in `logs`."""
    c: Client = await aiohttp_client(create_app(make_settings()))
    return c


async def post(client: Client, body: bytes, token: str | None = None) -> tuple[int, Any]:
    """`body` posted as LiveKit posts a webhook, signed unless `token` is given: the answer's
    status and JSON."""
    headers = {"Content-Type": "application/webhook+json"}
    headers["Authorization"] = sign(body) if token is None else token
    resp = await client.post(PATH, data=body, headers=headers)
    return resp.status, await resp.json()


MARKED_DIRECTORIES = {
    "integration": pytest.mark.integration,
    "e2e": pytest.mark.e2e,
    "livekit_sip": pytest.mark.livekit_sip,
    "distributed": pytest.mark.distributed,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/integration, tests/e2e and tests/livekit_sip carry their directory's
    marker."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts and parts[0] in MARKED_DIRECTORIES:
            item.add_marker(MARKED_DIRECTORIES[parts[0]])


SUMMARY_MARKERS = ("unit", "service", "integration", "distributed", "livekit_sip", "e2e", "deploy")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The outcomes per kind of test, so that a run's summary shows how many real SIP calls
    (livekit_sip, e2e) it placed, not only a total."""
    counts: dict[str, Counter[str]] = {m: Counter() for m in (*SUMMARY_MARKERS, "other")}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            keywords = getattr(report, "keywords", {})
            kind = next((m for m in SUMMARY_MARKERS if m in keywords), "other")
            counts[kind][outcome] += 1
    parts = [
        f"{kind} " + ", ".join(f"{n} {outcome}" for outcome, n in c.items())
        for kind, c in counts.items()
        if c
    ]
    if parts:
        terminalreporter.write_line("tests by kind: " + "; ".join(parts))
