"""A Prometheus text exposition (a `/metrics` answer) as its samples, parsed by Prometheus' own
parser."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

# (sample name, its labels sorted by name) → value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample of `text`, keyed by its name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(url: str | None) -> Samples:
    """The samples a `/metrics` endpoint (its full URL) serves now."""
    if url is None:
        raise RuntimeError("no metrics endpoint (an agent worker with AGENT_METRICS_PORT=0?)")
    with urllib.request.urlopen(url, timeout=10) as resp:
        return parse_metrics(resp.read().decode())


def sample(url: str | None, name: str, **labels: str) -> float:
    """One sample of the endpoint at `url` now; 0 for a series not yet born (a labelled counter
    has none before its first count)."""
    return scrape(url).get((name, tuple(sorted(labels.items()))), 0.0)
