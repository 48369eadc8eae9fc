"""A real Prometheus server (Debian's 2.42, from scripts/install_deps.sh) on loopback for the tests:
a temporary config scraping the given targets every second, rules evaluated every second, its
HTTP API read back."""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from devstack.processes import ManagedProcess, free_port, http_ready, require_binary
from provisioning.server_config import PROMETHEUS_VERSION

# Fast enough for a test to see a call's metrics, and the rules' verdict on them, in seconds.
SCRAPE_INTERVAL = "1s"


def prometheus_config(jobs: Mapping[str, Sequence[str]], rule_files: Sequence[Path]) -> str:
    """prometheus.yml (as JSON, which YAML reads): one static job per entry of `jobs`
    (`host:port` targets, `/metrics`), `rule_files` loaded as they are."""
    doc = {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": SCRAPE_INTERVAL,
        },
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(targets)}]}
            for job, targets in jobs.items()
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


@dataclass
class PrometheusServer:
    port: int
    log_path: Path
    process: ManagedProcess | None = None
    _dir: Path | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(
        self, jobs: Mapping[str, Sequence[str]], rule_files: Sequence[Path], timeout: float = 30.0
    ) -> PrometheusServer:
        binary = require_binary("prometheus", PROMETHEUS_VERSION)
        self._dir = Path(tempfile.mkdtemp(prefix="prometheus-"))
        config = self._dir / "prometheus.yml"
        config.write_text(prometheus_config(jobs, rule_files))
        argv = [
            str(binary),
            f"--config.file={config}",
            f"--storage.tsdb.path={self._dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        self.process = ManagedProcess(
            "prometheus", argv, self.log_path, ready=http_ready(self.url + "/-/ready")
        )
        try:
            self.process.start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def api(self, path: str, **params: str) -> Any:
        """The `data` of one answer of the HTTP API (`/api/v1/<path>`)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as resp:
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus answered {path} with {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The series an instant query returns now."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert pending or firing now."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def last_evaluation(self) -> float:
        """Unix time by which every rule group had been evaluated (the oldest group's last
        evaluation)."""
        groups = self.api("rules")["groups"]
        return min(datetime.fromisoformat(g["lastEvaluation"]).timestamp() for g in groups)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


def start_prometheus(
    jobs: Mapping[str, Sequence[str]], rule_files: Sequence[Path], log_path: Path
) -> PrometheusServer:
    """Prometheus on a free loopback port scraping `jobs`, with `rule_files`."""
    return PrometheusServer(free_port(), log_path).start(jobs, rule_files)
