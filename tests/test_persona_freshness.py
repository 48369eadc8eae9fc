"""When an edit in the CRM is heard: the fresh window serves without asking, the revalidate
window serves at once and refreshes in the background (a 304 costing one bodiless request and
restarting the window), a CRM down during revalidation leaves the copy served until its
stale-if-error window ends, the CRM's Cache-Control overrides the settings, and an invalidation
makes every replica's next call ask the CRM. With this process's cache and with the shared one
(a real Redis, two replicas), on a fake clock."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from contract.metadata import Persona
from devstack.processes import ROOT
from dispatcher.invalidation import invalidate
from dispatcher.payload_parser import PayloadParser
from dispatcher.persona_payload import PersonaLimits
from dispatcher.shared_persona_store import CLAIM_SCRIPT
from tests import test_shared_persona_store as shared_store
from tests.conftest import LogCapture
from tests.harness.fake_persona_api import FakeState
from tests.harness.stack import eventually
from tests.test_shared_persona_store import NUMBER, Replica, await_claims_lost

# How long a test waits for what it expects to happen: a bound on a loaded machine, not a speed
# claim (bench/persona_freshness.py measures the speed).
EVENT_WAIT_S = 10

pytestmark = pytest.mark.service
# The replicas on a real Redis, as the shared store's own tests make them.
redis_server = shared_store.redis_server
redis_url = shared_store.redis_url
replicas = shared_store.replicas

FRESH, REVALIDATE, STALE = 10.0, 20.0, 30.0
WINDOWS = {"ttl_s": FRESH, "revalidate_s": REVALIDATE, "stale_s": STALE}


class Clock:
    """Wall time that moves only when told to."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingParser(PayloadParser):
    """The real parser, counting the bodies it is given."""

    def __init__(self) -> None:
        super().__init__(PersonaLimits())
        self.parsed = 0

    async def parse(self, body: bytes) -> Persona:
        self.parsed += 1
        return await super().parse(body)


def pair(make: Callable[..., Replica], shared: bool, **kw: Any) -> tuple[Replica, Replica]:
    """Two replicas on one Redis, or (not shared) one replica twice: this process's cache."""
    first = make(shared=shared, **kw)
    return (first, make(shared=True, **kw) if shared else first)


def revalidations(r: Replica, outcome: str) -> float:
    value: float = r.metrics.persona_revalidations.labels(outcome)._value.get()
    return value


@pytest.mark.parametrize("shared", [False, True], ids=["local", "shared"])
async def test_after_the_fresh_window_the_copy_is_served_at_once_and_the_next_call_has_the_edit(
    replicas: Callable[..., Replica], persona_state: FakeState, shared: bool
) -> None:
    """The call after the fresh window gets the cached persona while the CRM has not answered
    yet (its request is held); the call after that gets the edited persona, on either replica."""
    clock = Clock()
    a, b = pair(replicas, shared, clock=clock, **WINDOWS)
    assert (await a.resolve()).persona.name == "Priya"
    persona_state.edit_persona(NUMBER, name="Asha")
    clock.advance(FRESH + 1)
    persona_state.hold = asyncio.Event()
    served = await b.resolve()
    assert (served.status, served.persona.name) == ("cached", "Priya")
    await eventually(
        lambda: persona_state.held == 1, EVENT_WAIT_S, "the background request under way"
    )
    persona_state.hold.set()
    await eventually(lambda: persona_state.ok == 2, EVENT_WAIT_S, "the background refresh")
    await eventually(lambda: revalidations(b, "changed") == 1, EVENT_WAIT_S, "the refresh stored")
    after = await a.resolve()
    assert (after.status, after.persona.name) == ("cached", "Asha")
    assert persona_state.requests == 2


@pytest.mark.parametrize("shared", [False, True], ids=["local", "shared"])
async def test_a_304_costs_one_bodiless_request_and_restarts_the_fresh_window(
    replicas: Callable[..., Replica], persona_state: FakeState, logs: LogCapture, shared: bool
) -> None:
    clock = Clock()
    parser = CountingParser()
    a, b = pair(replicas, shared, clock=clock, parser=parser, **WINDOWS)
    assert (await a.resolve()).status == "loaded"
    clock.advance(FRESH + 5)
    assert (await b.resolve()).status == "cached"
    # The age of the persona served: 0 when fetched (on `a`), 15 s now.
    age = b.metrics.registry.get_sample_value("persona_dispatcher_persona_age_seconds_sum")
    assert age == FRESH + 5
    await eventually(
        lambda: revalidations(b, "not_modified") == 1, EVENT_WAIT_S, "the revalidation"
    )
    assert (persona_state.requests, persona_state.ok, persona_state.not_modified) == (2, 1, 1)
    assert parser.parsed == 1  # the 304's persona was kept as it was, not parsed again
    held = await a.store.lookup(NUMBER)
    assert held is not None
    assert (held.phase, held.age_s) == ("fresh", 0.0)
    clock.advance(FRESH - 1)  # 24 s after the first answer: fresh again only by the restart
    assert (await a.resolve()).status == "cached"
    assert persona_state.requests == 2
    revalidated = logs.named("persona.revalidated")
    assert [(e["outcome"], e["http_status"]) for e in revalidated] == [("not_modified", 304)]


@pytest.mark.parametrize("shared", [False, True], ids=["local", "shared"])
async def test_a_crm_down_during_revalidation_leaves_the_copy_until_stale_if_error_ends(
    replicas: Callable[..., Replica], persona_state: FakeState, tmp_path: Path, shared: bool
) -> None:
    """Served while revalidating (the refresh fails), then as `stale` while the CRM fails, then,
    past the stale-if-error window, the user-mapping file."""
    clock = Clock()
    a, b = pair(replicas, shared, clock=clock, **WINDOWS)
    assert (await a.resolve()).status == "loaded"
    persona_state.fail_status = 503
    clock.advance(FRESH + 1)
    assert (await b.resolve()).status == "cached"
    await eventually(
        lambda: revalidations(b, "failed") == 1, EVENT_WAIT_S, "the failed revalidation"
    )
    clock.advance(REVALIDATE)  # past the revalidate window: a call waits for the CRM
    late = await a.resolve()
    assert (late.status, late.fallback_reason, late.persona.persona_id) == (
        "stale",
        "upstream_error",
        "prs_3001",
    )
    clock.advance(STALE - 2)
    assert (await b.resolve()).status == "stale"
    (tmp_path / f"num_{NUMBER}.json").write_bytes(
        (Path(__file__).parent / "fixtures" / "personas" / f"num_{NUMBER}.json").read_bytes()
    )
    clock.advance(2)  # the stale-if-error window is over
    gone = await a.resolve()
    assert (gone.status, gone.fallback_reason) == ("file", "upstream_error")


async def test_the_crms_cache_control_overrides_the_settings(
    replicas: Callable[..., Replica], persona_state: FakeState
) -> None:
    clock = Clock()
    r = replicas(clock=clock, **WINDOWS)
    persona_state.cache_control = "max-age=600"
    assert (await r.resolve()).status == "loaded"
    clock.advance(500)  # past the settings' fresh window, inside the CRM's
    assert (await r.resolve()).status == "cached"
    assert persona_state.requests == 1
    persona_state.cache_control = "no-store"
    clock.advance(110)  # 610 s: in the revalidate window that follows the CRM's fresh one
    assert (await r.resolve()).status == "cached"  # revalidate window: served, refreshed
    await eventually(lambda: persona_state.requests == 2, EVENT_WAIT_S, "the refresh")
    await eventually(
        lambda: revalidations(r, "not_modified") == 1, EVENT_WAIT_S, "the refresh stored"
    )
    assert await r.store.lookup(NUMBER) is None  # no-store: nothing kept, here or in Redis
    assert (await r.resolve()).status == "loaded"
    assert persona_state.requests == 3


async def test_always_fresh_asks_on_every_call_yet_a_burst_over_replicas_asks_once(
    replicas: Callable[..., Replica], persona_state: FakeState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no fresh and no revalidate window every call asks the CRM, and has an edit at once;
    a burst over three replicas still makes one request (the waiters take the answer written
    while they waited, though it is fresh for no time). The CRM answers once two replicas wait
    on the third's claim: a burst, however slowly this machine starts its calls."""
    fleet = [replicas(ttl_s=0, revalidate_s=0) for _ in range(3)]
    waiting = [await_claims_lost(r, monkeypatch) for r in fleet]
    persona_state.hold = asyncio.Event()
    burst = asyncio.gather(*(r.resolve() for r in fleet))
    await eventually(lambda: sum(w() for w in waiting) == 2, EVENT_WAIT_S, "two waiters")
    persona_state.hold.set()
    first = await burst
    assert {r.status for r in first} == {"loaded"}
    assert persona_state.requests == 1
    persona_state.edit_persona(NUMBER, name="Asha")
    after = await fleet[1].resolve()
    assert (after.status, after.persona.name) == ("loaded", "Asha")
    assert persona_state.requests == 2


async def test_a_waiter_held_up_after_its_claim_takes_the_answer_stored_meanwhile(
    replicas: Callable[..., Replica], persona_state: FakeState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Always fresh, two replicas: b finds a's claim on the number, then its loop is busy until
    a's answer is stored and a's claim released (b has not looked yet). That answer came after
    b's call asked, so b takes it: one CRM request."""
    a, b = replicas(ttl_s=0, revalidate_s=0), replicas(ttl_s=0, revalidate_s=0)
    persona_state.hold = asyncio.Event()
    first = asyncio.create_task(a.resolve())
    await eventually(lambda: persona_state.held == 1, EVENT_WAIT_S, "a's request under way")
    run_script = b.redis.eval

    async def claim_then_busy(script: str, *args: Any) -> Any:
        answer = await run_script(script, *args)
        if script == CLAIM_SCRIPT:
            assert persona_state.hold is not None
            persona_state.hold.set()
            await first  # a's answer stored, its claim released
        return answer

    monkeypatch.setattr(b.redis, "eval", claim_then_busy)
    resolved = await b.resolve()
    assert (resolved.status, resolved.persona.name) == ("loaded", "Priya")
    assert persona_state.requests == 1


async def test_an_edit_is_served_on_both_replicas_right_after_an_invalidation(
    replicas: Callable[..., Replica], persona_state: FakeState, logs: LogCapture
) -> None:
    """Both replicas hold the persona (in Redis and in their own caches); one is told of the
    edit; the other soon drops its own copy (bench/persona_freshness.py measures how soon), and
    the next call on each has the edit, from one CRM request."""
    a, b = replicas(ttl_s=300), replicas(ttl_s=300)
    persona_state.delay_s = 0.1  # both look it up at once: b waits for a's fetch and keeps it
    first = await asyncio.gather(a.resolve(), b.resolve())
    assert [r.persona.name for r in first] == ["Priya", "Priya"]
    assert b.local.lookup(NUMBER) is not None
    persona_state.edit_persona(NUMBER, name="Asha")
    await invalidate(a.store, a.metrics, [NUMBER], "http")
    await eventually(lambda: b.local.lookup(NUMBER) is None, EVENT_WAIT_S, "b's own copy dropped")
    after = await asyncio.gather(a.resolve(), b.resolve())
    assert [r.persona.name for r in after] == ["Asha", "Asha"]
    assert persona_state.requests == 2
    assert b.metrics.persona_invalidations.labels("replica")._value.get() == 1
    assert {e["source"] for e in logs.named("persona.invalidated")} == {"http", "replica"}


@pytest.mark.parametrize(
    "where", ["local", "shared", "shared, not yet heard"], ids=lambda w: w.replace(" ", "_")
)
async def test_a_fetch_begun_before_an_invalidation_does_not_put_the_old_persona_back(
    replicas: Callable[..., Replica], persona_state: FakeState, where: str
) -> None:
    """A background refresh has read the persona from before the edit when the invalidation
    comes (to this replica, or to another one, heard or not yet heard here): its answer is not
    kept, it asks again, and every later call has the edit."""
    clock = Clock()
    shared = where != "local"
    a = replicas(clock=clock, shared=shared, listen=where != "shared, not yet heard", **WINDOWS)
    b = replicas(clock=clock, **WINDOWS) if shared else a
    assert (await a.resolve()).persona.name == "Priya"
    clock.advance(FRESH + 1)
    persona_state.hold = asyncio.Event()
    assert (await a.resolve()).persona.name == "Priya"  # the refresh starts, and is held
    await eventually(lambda: persona_state.held == 1, EVENT_WAIT_S, "the refresh under way")
    persona_state.edit_persona(NUMBER, name="Asha")
    await invalidate(b.store, b.metrics, [NUMBER], "http")
    persona_state.hold.set()
    await eventually(lambda: persona_state.requests == 3, EVENT_WAIT_S, "the refresh asked again")
    await eventually(lambda: persona_state.held == 0, EVENT_WAIT_S, "the second answer")
    for r in (a, b, a):
        assert (await r.resolve()).persona.name == "Asha"


async def test_the_command_line_refresh_drops_the_number_for_every_replica(
    replicas: Callable[..., Replica], persona_state: FakeState, redis_url: str, tmp_path: Path
) -> None:
    """`persona-dispatch-call --refresh NUMBER` (another process): the next call on a replica
    that held the persona asks the CRM."""
    r = replicas(ttl_s=300)
    assert (await r.resolve()).status == "loaded"
    assert (await r.resolve()).status == "cached"
    env = {"PERSONA_CACHE_URL": redis_url, "PERSONA_API_BASE": "off", "PATH": os.environ["PATH"]}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "operator_tools.manual_dispatch", "--refresh", "+91" + NUMBER],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"refreshed     {NUMBER}" in done.stdout
    await eventually(
        lambda: r.local.lookup(NUMBER) is None, EVENT_WAIT_S, "the replica's copy dropped"
    )
    assert (await r.resolve()).status == "loaded"
    assert persona_state.requests == 2


def test_the_command_line_refresh_without_a_shared_cache_says_why(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "operator_tools.manual_dispatch", "--refresh", NUMBER],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PERSONA_API_BASE": "off"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 4
    assert "PERSONA_CACHE_URL" in done.stderr
