"""The lost-webhook alert over any history of its counter, evaluated by promtool: a repair in the
last minutes fires it, whether the counter rose or was born with it (a dispatcher repairing calls
in its start-up pass, before its first scrape); none for twelve minutes leaves it quiet."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from devstack.processes import ROOT, require_binary
from provisioning.server_config import PROMETHEUS_VERSION

pytestmark = pytest.mark.unit

ALERT = "PersonaDispatcherLostWebhooks"
LABELS = 'job="dispatcher",instance="d1",cause="lost_webhook"'
LAST_MINUTE = 40


@dataclass(frozen=True)
class History:
    """One scrape a minute. The series first appears at minute `birth` holding `born_with`
    repairs made half a minute earlier (its `_created`); `steps[i]` repairs happen half a minute
    before minute `birth + 1 + i`."""

    birth: int
    born_with: int
    steps: tuple[int, ...]

    def values(self) -> list[str]:
        total = self.born_with
        samples = ["_"] * self.birth + [str(total)]
        for step in self.steps:
            total += step
            samples.append(str(total))
        return samples

    @property
    def created(self) -> float:
        return max(self.birth * 60 - 30, 0)

    def repairs_at(self) -> list[tuple[float, int]]:
        """(seconds, the minute of the first scrape that counts it) of every repair."""
        found = [(self.created, self.birth)] if self.born_with else []
        for i, step in enumerate(self.steps):
            minute = self.birth + 1 + i
            if step:
                found.append((minute * 60 - 30, minute))
        return found


histories = st.builds(
    History,
    birth=st.integers(0, 20),
    born_with=st.integers(0, 3),
    steps=st.lists(st.integers(0, 2), max_size=LAST_MINUTE - 20).map(tuple),
)


def lost_webhook_rule(directory: Path) -> Path:
    """The alert as deploy/prometheus/alerts.yml has it, without its annotations (promtool
    compares those to the letter, and they print the count)."""
    doc = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    [rule] = [r for g in doc["groups"] for r in g["rules"] if r.get("alert") == ALERT]
    del rule["annotations"]
    path = directory / "rule.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "one", "rules": [rule]}]}))
    return path


def fires(history: History, minute: int) -> bool:
    """Whether promtool finds the alert firing at `minute` (it fails the one case we expect)."""
    with tempfile.TemporaryDirectory() as d:
        rules = lost_webhook_rule(Path(d))
        case = {
            "rule_files": [str(rules)],
            "evaluation_interval": "1m",
            "tests": [
                {
                    "interval": "1m",
                    "input_series": [
                        {
                            "series": f"persona_dispatcher_repairs_total{{{LABELS}}}",
                            "values": " ".join(history.values()),
                        },
                        {
                            "series": f"persona_dispatcher_repairs_created{{{LABELS}}}",
                            "values": " ".join(
                                "_" if v == "_" else str(history.created) for v in history.values()
                            ),
                        },
                    ],
                    "alert_rule_test": [
                        {"eval_time": f"{minute}m", "alertname": ALERT, "exp_alerts": []}
                    ],
                }
            ],
        }
        test_file = Path(d) / "case.yml"
        test_file.write_text(yaml.safe_dump(case))
        binary = require_binary("promtool", PROMETHEUS_VERSION)
        run = subprocess.run(
            [str(binary), "test", "rules", str(test_file)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    output = run.stdout + run.stderr
    # A failed expectation, not a file promtool could not read.
    assert run.returncode == 0 or "FAILED:" in output, output
    return run.returncode != 0


@given(history=histories, data=st.data())
def test_a_recent_repair_fires_the_alert_and_none_in_twelve_minutes_leaves_it_quiet(
    history: History, data: st.DataObject
) -> None:
    last = history.birth + len(history.steps)
    minute = data.draw(st.integers(history.birth, last), label="eval minute")
    now = minute * 60
    # Firing needs the condition at this evaluation and the one before (`for: 1m`): a repair
    # scraped by then and at most eight minutes old then is well inside the 10-minute window.
    recent = [t for t, seen in history.repairs_at() if seen <= minute - 1 and now - 8 * 60 <= t]
    old_only = all(t < now - 12 * 60 for t, _ in history.repairs_at())
    assume(recent or old_only)
    assert fires(history, minute) == bool(recent), (history.values(), minute)
