"""The files an operator loads: deploy/prometheus/alerts.yml (with its promtool tests) and
deploy/grafana/persona-dispatcher.json. Whether their expressions find real series is proven
against a real Prometheus in tests/e2e/test_prometheus_alerts.py."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.processes import ROOT, require_binary
from provisioning.server_config import PROMETHEUS_VERSION
from telemetry import agent_metrics
from telemetry.metrics import Metrics

pytestmark = pytest.mark.unit

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "persona-dispatcher.json"
SEVERITIES = {"warning", "critical"}


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_binary("promtool", PROMETHEUS_VERSION)
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_every_alert_has_a_for_a_severity_a_summary_and_a_runbook() -> None:
    """What an operator and Alertmanager need from each rule: how long before it fires, how
    urgent it is, what callers experience, what to check first."""
    rules = alert_rules()
    assert len(rules) >= 11
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["runbook"].strip().startswith("Check first"), name


def test_the_alerts_the_issue_and_readme_name_are_there() -> None:
    """Callers who rang out watch livekit-sip's own counter; the clock alert the gauge that
    the dispatcher exports; the stalled reconciler its lease."""
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    assert (
        'livekit_sip_calls_terminated{reason="cannot-subscribe"}'
        in exprs["LiveKitSipCallersRangOut"]
    )
    assert (
        "persona_dispatcher_livekit_clock_offset_seconds"
        in exprs["PersonaDispatcherLiveKitClockOffset"]
    )
    assert "persona_dispatcher_reconcile_leader" in exprs["PersonaDispatcherReconcilerStalled"]
    assert 'cause="lost_webhook"' in exprs["PersonaDispatcherLostWebhooks"]
    assert "persona_dispatcher_persona_cache_shared_up" in exprs["PersonaDispatcherSharedCacheDown"]
    assert 'status="default"' in exprs["PersonaDispatcherDefaultPersonas"]


def test_the_agent_alert_watches_the_workers_own_counters() -> None:
    """The agent's alert names counters its job processes count (telemetry/agent_metrics.py),
    which the worker's endpoint serves (tests/integration/test_call_document.py)."""
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    named = set(re.findall(r"persona_agent_[a-z_]+", exprs["PersonaAgentCallRecordsIncomplete"]))
    declared = {f"{m.name}_total" for c in agent_metrics.COUNTERS for m in c.describe()}
    assert named == {"persona_agent_call_store_dropped_turns_total"}
    assert named <= declared


def test_every_alert_has_a_firing_and_a_quiet_promtool_case() -> None:
    """alerts.test.yml checks each alert both ways: at least one eval where it fires and one
    where it must not."""
    doc = yaml.safe_load(ALERT_TESTS.read_text())
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set()
    assert names - quiet == set()
    assert (firing | quiet) - names == set()  # no case for an alert that does not exist


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    """The same two commands `.ci/run` runs, with Prometheus 2.42's own parser and evaluator."""
    checked = promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(ALERT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def panel_targets() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t for p in dashboard["panels"] for t in p.get("targets", [])]


def uids(node: Any) -> list[str]:
    """Every `uid` value anywhere in a JSON document."""
    if isinstance(node, dict):
        own = [str(node["uid"])] if "uid" in node else []
        return own + [u for v in node.values() for u in uids(v)]
    if isinstance(node, list):
        return [u for v in node for u in uids(v)]
    return []


def test_dashboard_chooses_its_datasource_by_variable_and_hard_codes_no_uid() -> None:
    """Importable into any Grafana: a `datasource` variable of Prometheus data sources, which
    every panel and query uses; no uid of someone's data source or dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert (variable["name"], variable["query"]) == ("datasource", "prometheus")
    assert "uid" not in dashboard
    assert set(uids(dashboard)) == {"${datasource}"}
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    assert all(t["datasource"]["uid"] == "${datasource}" for t in panel_targets())


def test_dashboard_expressions_parse_as_promql(tmp_path: Path) -> None:
    """Every panel's query, Grafana's `$__rate_interval` filled in, goes through promtool's
    PromQL parser (as recording rules of a throw-away file)."""
    targets = panel_targets()
    assert len(targets) >= 15
    rules = [
        {"record": f"dashboard:query_{i}", "expr": t["expr"].replace("$__rate_interval", "1m")}
        for i, t in enumerate(targets)
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def declared_metric_names() -> set[str]:
    """Every sample name the dispatcher and the agent workers can expose."""
    families = [*Metrics(shared_redis=True).registry.collect()]
    families += [m for c in agent_metrics.COUNTERS for m in c.describe()]
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {f"{f.name}{s}" for f in families for s in suffixes[f.type]}


def test_dashboard_names_only_metrics_the_code_declares() -> None:
    """A metric of ours misspelt in a panel would show nothing, and the real-Prometheus test
    cannot tell it from a counter not yet born (tests/e2e/test_prometheus_alerts.py)."""
    exprs = " ".join(t["expr"] for t in panel_targets())
    named = set(re.findall(r"persona_(?:dispatcher|agent)_[a-z_]+", exprs))
    assert named
    assert named - declared_metric_names() == set()


def test_dashboard_shows_what_the_issue_lists() -> None:
    """Set-ups by status/source, set-up p50/p95, persona API latency and outcomes, fallbacks,
    repairs and missing agents, webhook answers, the shared cache, and from livekit-sip ring
    time and rung-out calls."""
    exprs = " ".join(t["expr"] for t in panel_targets())
    for needle in (
        "sum by (status, source) (rate(persona_dispatcher_setups_total",
        "histogram_quantile(0.5, sum by (le) (rate(persona_dispatcher_setup_duration_seconds",
        "histogram_quantile(0.95, sum by (le) (rate(persona_dispatcher_setup_duration_seconds",
        "persona_dispatcher_persona_api_request_duration_seconds_bucket",
        "persona_dispatcher_persona_api_requests_total",
        "persona_dispatcher_persona_fallbacks_total",
        "persona_dispatcher_repairs_total",
        "persona_dispatcher_agents_missing_total",
        "persona_dispatcher_webhooks_total",
        "persona_dispatcher_persona_cache_shared_up",
        'livekit_sip_stage_dur_sec_bucket{stage="wait-subscribe"}',
        'livekit_sip_calls_terminated{reason="cannot-subscribe"}',
        # Who answers: the dispatcher's choices, the agent workers' counts.
        "persona_dispatcher_agent_fallbacks_total",
        "persona_dispatcher_unknown_callers_total",
        "persona_agent_transfers_total",
        "persona_agent_announcements_total",
        "persona_agent_call_store_failed_writes_total",
        "persona_agent_call_store_dropped_turns_total",
    ):
        assert needle in exprs, needle
