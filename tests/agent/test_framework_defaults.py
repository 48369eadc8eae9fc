"""What the worker asks of livekit-agents through the environment, and what it builds once in
the forkserver so that no job process pays it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from livekit.agents.telemetry.loop_monitor import LoopMonitorThresholds

from agent.__main__ import apply_framework_defaults, metrics_directory
from config.agent_settings import AgentSettings, load_agent_settings
from devstack.processes import ROOT
from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET
from telemetry.agent_metrics import exposition

pytestmark = pytest.mark.unit


def printed_by(code: str, *args: str) -> list[str]:
    """The words a fresh Python process running `code` prints (as a forkserver or a job process
    would start: this test process keeps its own modules and prometheus_client's state)."""
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.split()


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
    assert printed_by(probe) == ["0", "1"]


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


def settings_with(**env: str) -> AgentSettings:
    base = {
        "LIVEKIT_URL": "ws://127.0.0.1:7880",
        "LIVEKIT_API_KEY": DEV_API_KEY,
        "LIVEKIT_API_SECRET": DEV_API_SECRET,
        "AGENT_STACK": "fake",
    }
    return load_agent_settings({**base, **env})


def test_the_metrics_directory_is_the_workers_own_and_gone_when_it_exits() -> None:
    """Job processes count into files there (prometheus_client's multiprocess mode); two
    workers on one host must not share one, and none is left behind."""
    with metrics_directory(settings_with()) as first, metrics_directory(settings_with()) as second:
        assert first.metrics_dir is not None
        assert first.metrics_dir.is_dir()
        assert second.metrics_dir is not None
        assert second.metrics_dir != first.metrics_dir
        kept = first.metrics_dir
    assert not kept.exists()


def test_an_operators_metrics_directory_is_used_and_kept_without_old_counts(
    tmp_path: Path,
) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"a previous run's")
    with metrics_directory(settings_with(AGENT_METRICS_DIR=str(tmp_path))) as settings:
        assert settings.metrics_dir == tmp_path
        assert list(tmp_path.iterdir()) == []
    assert tmp_path.is_dir()


COUNT_IN_A_JOB_PROCESS = """
import sys
from pathlib import Path
from telemetry.agent_metrics import count_in_files, count_transfer, count_dropped_turns
count_in_files(Path(sys.argv[1]))
count_transfer("failed")
count_dropped_turns("unwritten", 3)
"""


def test_counts_of_ended_job_processes_are_summed_by_the_worker(tmp_path: Path) -> None:
    """Two job processes count and end (as after their calls); the worker's exposition of the
    directory holds the sums. Run as processes: `count_in_files` switches prometheus_client's
    value class for the whole process."""
    for _ in range(2):
        printed_by(COUNT_IN_A_JOB_PROCESS, str(tmp_path))
    text = exposition(tmp_path).decode()
    assert 'persona_agent_transfers_total{outcome="failed"} 2.0' in text
    assert 'persona_agent_call_store_dropped_turns_total{reason="unwritten"} 6.0' in text
    assert "persona_agent_announcements_total{" not in text  # never counted: no series


def test_without_a_metrics_endpoint_there_is_no_directory() -> None:
    with metrics_directory(settings_with(AGENT_METRICS_PORT="0")) as settings:
        assert settings.metrics_dir is None


def test_warmup_leaves_nothing_of_a_calls_first_time_work_to_the_job() -> None:
    """What livekit-agents does on a process's first call (its lazy imports, pydantic's look at
    the session's configuration record) is done in the forkserver that imports agent.warmup."""
    probe = (
        "import sys\n"
        "from livekit.agents import llm\n"
        "import agent.warmup as w\n"
        "attr = llm.AgentConfigUpdate.__private_attributes__['_tools']\n"
        "print(all(m in sys.modules for m in w.IMPORTED_IN_A_CALL),\n"
        "      attr._default_factory_takes_validated_data is False)\n"
    )
    assert printed_by(probe) == ["True", "True"]
