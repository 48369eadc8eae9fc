"""The HAProxy configuration in front of dispatcher replicas: valid for Debian's haproxy, and
retrying a webhook on another replica when one could not answer (webhooks are idempotent)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from provisioning.examples import example_files
from provisioning.load_balancer import Backend, render_haproxy_config

pytestmark = pytest.mark.unit


def test_rendered_config_is_valid_for_haproxy(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy")
    assert haproxy is not None, "haproxy is missing: run scripts/install_deps.sh"
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        render_haproxy_config(
            "127.0.0.1:18080", [Backend("a", "127.0.0.1", 18081), Backend("b", "127.0.0.1", 18082)]
        )
    )
    done = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_replicas_are_health_checked_on_readiness_and_failed_webhooks_retried_elsewhere() -> None:
    text = render_haproxy_config("127.0.0.1:8080", [Backend("a", "127.0.0.1", 8081)])
    assert "option httpchk GET /readyz" in text
    retry = next(line.split() for line in text.splitlines() if "retry-on" in line)
    assert {"conn-failure", "empty-response", "503"} <= set(retry)
    assert "option redispatch 1" in text
    assert "server a 127.0.0.1:8081 check" in text


def test_the_compose_balancer_config_is_committed_as_rendered() -> None:
    files = {p.name: (p, t) for p, t in example_files().items()}
    path, text = files["haproxy.cfg"]
    assert path.read_text() == text, "config/haproxy.cfg is stale: python -m provisioning.examples"
