"""deploy/prometheus/alerts.yml and deploy/grafana/persona-dispatcher.json against a real Prometheus
(Debian's 2.42) scraping the real chain every second: the dispatchers, livekit-server and
livekit-sip, with sipp placing the calls.

The tests run in file order, each on what the previous left: a caller who rings out (no agent
worker yet), normal calls, a call whose webhook was lost, then every dashboard expression.
The rules are loaded as they are: their `for:` is not shortened, so an alert with one is
"pending" here, which is what the lost-webhook test accepts; the rung-out alert has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from livekit import api

from devstack.agent_worker import AgentWorker, start_agent_worker
from devstack.logs import clear_logs, read_log_events
from devstack.processes import ROOT, ManagedProcess
from devstack.services import RedisServer, start_redis
from provisioning.sip_setup import load_trunk
from tests.harness.metrics import scrape
from tests.harness.prometheus import PrometheusServer, start_prometheus
from tests.harness.sip_stack import SipStack, start_sip_stack
from tests.harness.sipp import TEST_CALLER, Call, SippResult
from tests.harness.stack import Stack, eventually, start_stack, unique_number

LOG_DIR = ROOT / "var" / "log" / "e2e" / "prometheus"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "persona-dispatcher.json"
# Grafana's own variable, as a panel's query would get it with a scrape interval of 1 s.
GRAFANA_VARIABLES = {"$__rate_interval": "1m"}
DISPATCHER_JOB = "persona-dispatcher"
# A lost webhook is repaired within a second or two.
RECONCILE = {"RECONCILE_INTERVAL_S": "0.5", "RECONCILE_GRACE_S": "1"}
# What the tests wait for at most: a few scrapes and evaluations, or a call.
WITHIN_S = 60


@dataclass
class Observed:
    redis: RedisServer
    stack: Stack
    sip: SipStack
    prometheus: PrometheusServer
    # A second dispatcher, on a port livekit-server sends no webhook to: started after a call
    # whose webhook was lost, it sets that call up from its reconciler's start-up pass.
    late: ManagedProcess
    worker: AgentWorker | None = None

    def agents(self) -> None:
        """An agent worker from now on (the first test runs without one)."""
        if self.worker is None:
            self.worker = start_agent_worker(self.stack.livekit, LOG_DIR)


def instance(process: ManagedProcess) -> str:
    """A dispatcher's `instance` label, as Prometheus scrapes it."""
    assert process.env is not None
    return f"127.0.0.1:{process.env['PORT']}"


def host_port(url: str | None) -> str:
    """A metrics URL as a scrape target (and `instance` label)."""
    assert url is not None
    return url.removeprefix("http://").removesuffix("/metrics")


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    clear_logs(LOG_DIR)
    redis = start_redis(log_path=LOG_DIR / "redis.log")
    stack = start_stack(
        LOG_DIR,
        tmp_path_factory.mktemp("observed"),
        redis_address=redis.address,
        # The shared cache and the reconciler's lease: their gauges exist only with it.
        dispatcher_env={"PERSONA_CACHE_URL": f"redis://{redis.address}/1", **RECONCILE},
    )
    sip = start_sip_stack(LOG_DIR, redis=redis, livekit=stack.livekit)
    late = stack.unhooked_dispatcher(LOG_DIR / "dispatcher-late.log")
    jobs = {
        DISPATCHER_JOB: [instance(stack.dispatcher), instance(late)],
        "livekit-server": [host_port(stack.livekit.metrics_url)],
        "livekit-sip": [host_port(sip.sip.metrics_url)],
    }
    prometheus = start_prometheus(jobs, [ALERTS], LOG_DIR / "prometheus.log")
    observed = Observed(redis, stack, sip, prometheus, late)
    yield observed
    prometheus.stop()
    if observed.worker is not None:
        observed.worker.stop()
    sip.stop()
    stack.stop()
    redis.stop()


async def place_calls(sip: SipStack, calls: Sequence[Call]) -> SippResult:
    run = sip.sipp(calls, concurrent=len(calls), rtp_seconds=1.0, timeout=120)
    run.start()
    try:
        return await asyncio.to_thread(run.wait)
    finally:
        run.stop()


@contextlib.asynccontextmanager
async def ringing_timeout(sip: SipStack, seconds: int) -> AsyncIterator[None]:
    """The stack's trunk rings for at most `seconds` before livekit-sip gives up (its default is
    3 minutes); the trunk of config/sip/ again afterwards."""
    lk = sip.api()
    short = load_trunk()
    short.ringing_timeout.FromSeconds(seconds)
    assert sip.setup.trunk_id is not None
    try:
        async with asyncio.timeout(10):
            await lk.sip.update_inbound_trunk(sip.setup.trunk_id, short)
        yield
    finally:
        async with asyncio.timeout(10):
            await lk.sip.update_inbound_trunk(sip.setup.trunk_id, load_trunk())
        await lk.aclose()


def alerts(
    prometheus: PrometheusServer, name: str, states: tuple[str, ...], **labels: str
) -> list[dict[str, Any]]:
    """The alerts called `name` in one of `states` (pending, firing) now, with `labels`."""
    return [
        a
        for a in prometheus.alerts()
        if a["labels"]["alertname"] == name
        and a["state"] in states
        and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def setups_on(url: str) -> float:
    """Every set-up a dispatcher counted, read from its own `/metrics`."""
    samples = scrape(url + "/metrics")
    return sum(v for (name, _), v in samples.items() if name == "persona_dispatcher_setups_total")


async def rules_saw(prometheus: PrometheusServer, instance: str, setups: float) -> None:
    """Return once Prometheus has scraped `setups` set-ups from `instance` and evaluated every
    rule after that scrape."""
    expr = f'sum(persona_dispatcher_setups_total{{instance="{instance}"}})'

    def scraped() -> bool:
        return any(float(s["value"][1]) == setups for s in prometheus.query(expr))

    await eventually(scraped, WITHIN_S, f"{setups} set-ups scraped from {instance}", 0.2)
    seen = time.time()
    await eventually(
        lambda: prometheus.last_evaluation() > seen, WITHIN_S, "a rule evaluation", 0.2
    )


async def test_a_caller_who_rings_out_fires_the_rung_out_alert(observed: Observed) -> None:
    """No agent worker yet and a 2 s ringing timeout on the trunk: livekit-sip gives up on the
    call (`cannot-subscribe`), and LiveKitSipCallersRangOut fires for that livekit-sip."""
    async with ringing_timeout(observed.sip, 2):
        result = await place_calls(observed.sip, [Call(unique_number(), observed.sip.trunk_number)])
    assert (result.successful, result.failed) == (0, 1), result.summary()

    [alert] = await eventually(
        lambda: alerts(observed.prometheus, "LiveKitSipCallersRangOut", ("firing",)),
        WITHIN_S,
        "LiveKitSipCallersRangOut firing",
    )
    assert alert["labels"]["instance"] == host_port(observed.sip.sip.metrics_url)
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["summary"].startswith("1 caller(s) in 10 min rang until")


async def test_after_normal_calls_no_alert_says_callers_waited(observed: Observed) -> None:
    """With an agent worker, two calls from a known number are answered; once Prometheus has
    scraped their set-ups and evaluated the rules after that, no alert about lost webhooks,
    missing agents, LiveKit or refused webhooks is pending or firing."""
    observed.agents()
    before = setups_on(observed.stack.dispatcher_url)
    result = await place_calls(observed.sip, [Call(TEST_CALLER, observed.sip.trunk_number)] * 2)
    assert result.successful == 2, result.summary()

    after = setups_on(observed.stack.dispatcher_url)
    assert after == before + 2
    await rules_saw(observed.prometheus, instance(observed.stack.dispatcher), after)
    active = {a["labels"]["alertname"] for a in observed.prometheus.alerts()}
    assert "PersonaDispatcherLostWebhooks" not in active
    assert not active & {
        "PersonaDispatcherAgentsMissing",
        "PersonaDispatcherLiveKitUnavailable",
        "PersonaDispatcherUnauthorizedWebhooks",
    }, active
    # The rules were evaluated over the calls' own metrics, not over nothing: livekit-sip's count
    # of the ended calls reaches Prometheus at its own scrape, which may come after the
    # dispatcher's.
    ended = 'livekit_sip_calls_terminated{reason!="cannot-subscribe"}'
    assert await eventually(
        lambda: observed.prometheus.query(ended), WITHIN_S, "the calls' end scraped", 0.2
    )


async def test_a_call_whose_webhook_was_lost_makes_the_lost_webhook_alert_pending(
    observed: Observed,
) -> None:
    """The dispatcher livekit-server sends webhooks to is down while a caller rings; a dispatcher
    started after the call sets it up from its start-up pass (the caller is answered), and the
    lost-webhook alert is pending or firing for that dispatcher."""
    stack, late = observed.stack, observed.late
    observed.agents()
    stack.dispatcher.stop()
    number = unique_number()  # unknown to the CRM: the default persona, a fallback
    run = observed.sip.sipp([Call(number, observed.sip.trunk_number)], rtp_seconds=1.0, timeout=120)
    run.start()
    try:
        lk = stack.api()
        try:
            [room] = await eventually(
                rooms_named(lk, f"call_{number}_"), WITHIN_S, "the ringing caller's room"
            )
        finally:
            await lk.aclose()
        late.start()
        [repair] = await eventually(
            lambda: read_log_events(late.log_path, event="call.repaired", room=room),
            WITHIN_S,
            "the late dispatcher's repair",
        )
        assert repair["cause"] == "lost_webhook"
        result = await asyncio.to_thread(run.wait)
    finally:
        run.stop()
    assert result.successful == 1, result.summary()

    [alert] = await eventually(
        lambda: alerts(
            observed.prometheus,
            "PersonaDispatcherLostWebhooks",
            ("pending", "firing"),
            instance=instance(late),
        ),
        WITHIN_S,
        "PersonaDispatcherLostWebhooks pending or firing",
    )
    assert alert["annotations"]["summary"].startswith("1 caller(s) in 10 min rang without")
    # The dispatcher livekit-server sends to is needed again by the dashboard's test.
    stack.dispatcher.start()


def rooms_named(lk: api.LiveKitAPI, prefix: str) -> Callable[[], Awaitable[list[str]]]:
    """A probe: the names of the rooms that start with `prefix`."""

    async def probe() -> list[str]:
        async with asyncio.timeout(10):
            listed = await lk.room.list_rooms(api.ListRoomsRequest())
        return [r.name for r in listed.rooms if r.name.startswith(prefix)]

    return probe


# Counters born with an event this chain does not cause: a CRM-named agent with no worker, and
# the agent workers' own (transfers, announcements, call-database failures). That the dashboard
# names them as their code declares them is tests/test_monitoring_files.py's check.
NOT_CAUSED_HERE = ("persona_dispatcher_agent_fallbacks_total", "persona_agent_")


def caused_here(expr: str) -> bool:
    return not any(name in expr for name in NOT_CAUSED_HERE)


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, Grafana's variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((panel["title"], expr))
    return found


async def test_every_dashboard_expression_returns_a_series(observed: Observed) -> None:
    """After two more answered calls (one from a caller the CRM does not know), each expression
    of each panel of the dashboard returns at least one series from this Prometheus (the metric
    names and labels it uses are real), but those of counters born with an event this chain
    does not cause."""
    observed.agents()
    calls = [Call(n, observed.sip.trunk_number) for n in (TEST_CALLER, unique_number())]
    result = await place_calls(observed.sip, calls)
    assert result.successful == 2, result.summary()
    expressions = [(t, e) for t, e in dashboard_expressions() if caused_here(e)]
    assert len(expressions) >= 15
    empty: list[tuple[str, str]] = []
    for title, expr in expressions:
        try:
            await eventually(functools.partial(observed.prometheus.query, expr), 20, expr, 0.5)
        except AssertionError:
            empty.append((title, expr))
    assert empty == []
