"""scripts/setup_sip.py against real livekit-servers: idempotent, and clear when it cannot work."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from livekit import api

from devstack.processes import ROOT, free_port
from devstack.services import LiveKitServer, RedisServer, start_livekit_server, start_redis
from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET
from provisioning.sip_setup import TRUNK_FILE

LOG_DIR = ROOT / "var" / "log" / "setup-sip"


@dataclass
class Run:
    code: int
    out: list[str]
    err: str


def setup_sip(url: str, *args: str) -> Run:
    """The real command, as a user runs it (credentials on the command line, no .env)."""
    credentials = ["--api-key", DEV_API_KEY, "--api-secret", DEV_API_SECRET]
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/setup_sip.py",
            "--url",
            url,
            *credentials,
            "--timeout",
            "5",
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Run(proc.returncode, proc.stdout.splitlines(), proc.stderr)


async def listed(url: str) -> tuple[list[api.SIPInboundTrunkInfo], list[api.SIPDispatchRuleInfo]]:
    async with api.LiveKitAPI(url, DEV_API_KEY, DEV_API_SECRET) as lk:
        trunks = await lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
        rules = await lk.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())
    return list(trunks.items), list(rules.items)


@pytest.fixture
def fresh_server() -> Iterator[LiveKitServer]:
    """A livekit-server with its own empty Redis: nothing configured yet."""
    redis: RedisServer = start_redis(log_path=LOG_DIR / "redis-fresh.log")
    try:
        server = start_livekit_server(
            redis_address=redis.address, log_path=LOG_DIR / "livekit-server-fresh.log"
        )
        yield server
        server.stop()
    finally:
        redis.stop()


async def test_running_setup_again_changes_nothing_and_leaves_one_trunk_and_one_rule(
    fresh_server: LiveKitServer,
) -> None:
    """The first run creates both objects; two more runs keep them as they are."""
    url = fresh_server.http_url
    first = setup_sip(url)
    assert first.code == 0, first.err
    assert first.out[0].startswith("create trunk 'persona-dispatcher-inbound'")
    trunks, rules = await listed(url)
    trunk_id, rule_id = trunks[0].sip_trunk_id, rules[0].sip_dispatch_rule_id
    for _ in range(2):
        run = setup_sip(url)
        assert run.code == 0, run.err
        assert run.out[0].startswith("keep trunk 'persona-dispatcher-inbound'")
        assert run.out[1].startswith("keep rule 'persona-dispatcher-individual'")
    trunks, rules = await listed(url)
    assert [t.sip_trunk_id for t in trunks] == [trunk_id]
    assert [r.sip_dispatch_rule_id for r in rules] == [rule_id]
    assert list(rules[0].trunk_ids) == [trunk_id]
    assert rules[0].rule.dispatch_rule_individual.room_prefix == "call"
    assert not rules[0].room_config.agents


async def test_dry_run_prints_the_plan_and_changes_nothing(fresh_server: LiveKitServer) -> None:
    run = setup_sip(fresh_server.http_url, "--dry-run")
    assert run.code == 0, run.err
    assert "would create trunk 'persona-dispatcher-inbound'" in run.out
    assert "would create rule 'persona-dispatcher-individual'" in run.out
    assert await listed(fresh_server.http_url) == ([], [])


async def test_setup_updates_a_changed_trunk_and_removes_duplicates(
    fresh_server: LiveKitServer, tmp_path: Path
) -> None:
    """A new number in the data file is an update, not a second trunk; a duplicate of the same
    name (as two racing runs leave) is deleted."""
    url = fresh_server.http_url
    assert setup_sip(url).code == 0
    [trunk], [rule] = await listed(url)

    doc = orjson.loads(TRUNK_FILE.read_bytes())
    doc["numbers"].append("+918000000002")
    changed = tmp_path / "trunk.json"
    changed.write_bytes(orjson.dumps(doc))
    run = setup_sip(url, "--trunk-file", str(changed))
    assert run.code == 0, run.err
    assert (
        run.out[0] == f"update trunk 'persona-dispatcher-inbound' ({trunk.sip_trunk_id}): numbers"
    )
    assert run.out[1].startswith("keep rule")

    async with api.LiveKitAPI(url, DEV_API_KEY, DEV_API_SECRET) as lk:
        dup = api.SIPInboundTrunkInfo(name=trunk.name, numbers=["+918000000099"])
        await lk.sip.create_inbound_trunk(api.CreateSIPInboundTrunkRequest(trunk=dup))
    run = setup_sip(url)
    assert run.code == 0, run.err
    assert any(line.startswith("delete trunk 'persona-dispatcher-inbound'") for line in run.out)
    trunks, rules = await listed(url)
    assert [t.sip_trunk_id for t in trunks] == [trunk.sip_trunk_id]
    assert "+918000000002" not in trunks[0].numbers
    assert [r.sip_dispatch_rule_id for r in rules] == [rule.sip_dispatch_rule_id]


def test_server_without_redis_is_reported_as_sip_not_connected() -> None:
    server = start_livekit_server(log_path=LOG_DIR / "livekit-server-no-redis.log")
    try:
        run = setup_sip(server.http_url)
    finally:
        server.stop()
    assert run.code == 4
    assert "sip not connected" in run.err
    assert len(run.err.strip().splitlines()) == 1
    assert "Traceback" not in run.err


def test_unreachable_server_is_one_line_and_exit_code_3() -> None:
    run = setup_sip(f"http://127.0.0.1:{free_port()}")
    assert run.code == 3
    assert "cannot reach livekit-server" in run.err
    assert len(run.err.strip().splitlines()) == 1


def test_bad_data_file_is_exit_code_2_before_any_request(tmp_path: Path) -> None:
    rule = tmp_path / "rule.json"
    rule.write_text('{"name": "r", "rule": {"dispatch_rule_direct": {"room_name": "x"}}}')
    run = setup_sip(f"http://127.0.0.1:{free_port()}", "--rule-file", str(rule))
    assert run.code == 2
    assert "dispatch_rule_individual" in run.err
