"""What the worker asks of livekit-agents through the environment, and what it builds once in
the forkserver so that no job process pays it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from livekit.agents.telemetry.loop_monitor import LoopMonitorThresholds

from agent.__main__ import apply_framework_defaults
from devstack.processes import ROOT

pytestmark = pytest.mark.unit


def test_loop_block_monitor_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    environ: dict[str, str] = {}
    apply_framework_defaults(environ)
    monkeypatch.setenv(
        "LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS", environ["LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS"]
    )
    assert LoopMonitorThresholds.from_env() is None


def test_an_operators_loop_block_threshold_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {"LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS": "100"}
    apply_framework_defaults(environ)
    monkeypatch.setenv(
        "LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS", environ["LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS"]
    )
    thresholds = LoopMonitorThresholds.from_env()
    assert thresholds is not None
    assert thresholds.warn == pytest.approx(0.1)
    assert environ["LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE"] == "0"


def test_warmup_builds_the_job_sessions_tls_context() -> None:
    """A process that imported agent.warmup (the forkserver) holds the TLS context every job's
    http session takes, so its forks do not parse the CA bundle again."""
    probe = (
        "from livekit.agents.utils import http_context as h\n"
        "before = h._ssl_context_for.cache_info().currsize\n"
        "import agent.warmup\n"
        "print(before, h._ssl_context_for.cache_info().currsize)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["0", "1"]


def test_the_private_tls_builder_the_warmup_calls_is_still_there() -> None:
    """agent.warmup calls livekit-agents' private TLS builder (there is no public one) and skips
    it when it has moved, so that the worker still starts: this test is what fails then."""
    from livekit.agents.utils import http_context

    from agent.warmup import SSL_CONTEXT_BUILDER

    build = getattr(http_context, SSL_CONTEXT_BUILDER, None)
    assert build is not None, (
        f"livekit.agents.utils.http_context.{SSL_CONTEXT_BUILDER} is gone: find how this "
        "livekit-agents release builds its http session's TLS context and warm that up instead"
    )
    assert build() is build(), "no longer cached per process: warming it up shares nothing"
