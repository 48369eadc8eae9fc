"""A Prometheus text exposition (a `/metrics` answer) as its samples, parsed by Prometheus' own
parser."""

from __future__ import annotations

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
