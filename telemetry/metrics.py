"""The dispatcher's Prometheus metrics, one registry per service instance (`GET /metrics`).

Names follow Prometheus' conventions: a `persona_dispatcher_` prefix, `_total` on counters,
`_seconds` for durations in base units, bounded label values (never a number or a room name).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

PREFIX = "persona_dispatcher"
# Set-up and persona API latencies: from a cache hit (~1 ms) to the persona deadline (3 s) and
# LiveKit's own slowness under load (seconds).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The age of a persona served: just fetched (0), inside the fresh window (seconds), revalidated
# in the background (minutes to a day), a stale copy while the CRM fails (days).
AGE_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 6 * 3600.0, 86400.0, 7 * 86400.0)


class Metrics:
    """Every metric of one dispatcher; tests and replicas in one process each get their own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, *, shared_redis: bool = False) -> None:
        """`shared_redis`: the replicas share a Redis (persona cache, reconciler lease), and its
        gauges exist; without it they are absent rather than a misleading 0."""
        self.registry = CollectorRegistry(auto_describe=True)
        self._calls()
        self._personas()
        self._repairs()
        self._shared(shared_redis)

    def _calls(self) -> None:
        """Webhooks and call set-ups: how many, how they ended, how long they took."""
        r = self.registry
        self.webhooks = Counter(
            f"{PREFIX}_webhooks_total",
            "Webhooks answered, by event type (persona_invalidate: the CRM's) and answer (a "
            "status such as dispatched or invalidated, or the error: unauthorized, bad_request, "
            "too_large, draining, cache_unavailable, livekit_unavailable, internal_error).",
            ["event", "answer"],
            registry=r,
        )
        self.setups = Counter(
            f"{PREFIX}_setups_total",
            "Call set-ups done, by persona status (loaded, cached, stale, file, default) and "
            "source kind (api, cache, file, default), and by path (webhook or repair).",
            ["status", "source", "path"],
            registry=r,
        )
        self.setup_duration = Histogram(
            f"{PREFIX}_setup_duration_seconds",
            "Wall time of a call set-up: caller, persona, room metadata, dispatch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.setup_failures = Counter(
            f"{PREFIX}_setup_failures_total",
            "Call set-ups that failed on a LiveKit API call, by step.",
            ["step"],
            registry=r,
        )
        self.agent_choices = Counter(
            f"{PREFIX}_agent_choices_total",
            "Agents dispatched, by why that agent (crm: the CRM's voice agent is one of "
            "AGENT_NAMES; default: the CRM named none; unknown: it named one not deployed).",
            ["reason"],
            registry=r,
        )
        self.unknown_callers = Counter(
            f"{PREFIX}_unknown_callers_total",
            "Callers the CRM does not know, by UNKNOWN_CALLER_POLICY and outcome (answered, "
            "rejected, announced).",
            ["policy", "outcome"],
            registry=r,
        )
        self.agent_fallbacks = Counter(
            f"{PREFIX}_agent_fallbacks_total",
            "Dispatches of a CRM-named agent replaced by AGENT_NAME, by cause (no_job: no job "
            "within AGENT_JOB_TIMEOUT_S).",
            ["cause"],
            registry=r,
        )

    def _personas(self) -> None:
        """The persona lookups: the CRM's answers, the cache, fallbacks and freshness."""
        r = self.registry
        self.persona_api_duration = Histogram(
            f"{PREFIX}_persona_api_request_duration_seconds",
            "Persona API requests (all attempts of one lookup), by outcome.",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.persona_api_requests = Counter(
            f"{PREFIX}_persona_api_requests_total",
            "Persona API lookups by outcome: ok, not_found, error (HTTP error, unreachable, "
            "timeout or a payload that is not a persona).",
            ["outcome"],
            registry=r,
        )
        self.persona_cache = Counter(
            f"{PREFIX}_persona_cache_lookups_total",
            "Persona cache lookups: hit (a fresh persona), negative_hit (a fresh 404), miss.",
            ["result"],
            registry=r,
        )
        self.persona_fallbacks = Counter(
            f"{PREFIX}_persona_fallbacks_total",
            "Personas that did not come from the API or a fresh cache entry, by reason "
            "(timeout, upstream_error, invalid_payload, not_found, no_number, api_off; too_large: "
            "the persona did not fit the metadata budget) and status used.",
            ["reason", "status"],
            registry=r,
        )
        self.persona_revalidations = Counter(
            f"{PREFIX}_persona_revalidations_total",
            "Requests to the CRM about a persona already held, by outcome: not_modified (304), "
            "changed (a full answer or a 404; always, from a CRM without validators), failed.",
            ["outcome"],
            registry=r,
        )
        self.persona_invalidations = Counter(
            f"{PREFIX}_persona_invalidations_total",
            "Numbers invalidated, by source: http (POST /personas/invalidate), cli "
            "(persona-dispatch-call --refresh), replica (heard from another replica).",
            ["source"],
            registry=r,
        )
        self.persona_age = Histogram(
            f"{PREFIX}_persona_age_seconds",
            "Age of each persona served from the CRM or the cache (0: fetched for this call): "
            "since the CRM last vouched for it, by an answer or a 304.",
            buckets=AGE_BUCKETS,
            registry=r,
        )

    def _repairs(self) -> None:
        """What keeps a call from being lost: races, repairs, the reconciler and LiveKit's clock."""
        r = self.registry
        self.dispatch_races = Counter(
            f"{PREFIX}_dispatch_races_total",
            "Dispatches settled after a race between replicas: kept (ours was the earliest) or "
            "deleted (another replica's was, ours was removed).",
            ["outcome"],
            registry=r,
        )
        self.repairs = Counter(
            f"{PREFIX}_repairs_total",
            "Calls the reconciler repaired, by cause: lost_webhook (no persona in the room), "
            "no_dispatch (persona but no dispatch), agent_missing (dispatch without a job).",
            ["cause"],
            registry=r,
        )
        self.agents_missing = Counter(
            f"{PREFIX}_agents_missing_total",
            "Dispatched calls whose agent had not joined within AGENT_JOIN_TIMEOUT_S.",
            registry=r,
        )
        self.reconcile_ticks = Counter(
            f"{PREFIX}_reconcile_ticks_total",
            "Reconciler passes over the rooms, by result (ok, failed).",
            ["result"],
            registry=r,
        )
        self.reconcile_room_failures = Counter(
            f"{PREFIX}_reconcile_room_failures_total",
            "Rooms whose check or repair failed within a pass, by kind (livekit: an API call "
            "failed; unexpected: a bug or an unforeseen room, logged with its traceback). A room "
            "that keeps failing is backed off, and the pass goes on with the others.",
            ["kind"],
            registry=r,
        )
        self.reconcile_restarts = Counter(
            f"{PREFIX}_reconcile_restarts_total",
            "Times the reconciler's task ended other than by shutdown and was restarted.",
            registry=r,
        )
        self.reconcile_api_calls = Counter(
            f"{PREFIX}_reconcile_livekit_calls_total",
            "LiveKit API calls the reconciler made, by call.",
            ["call"],
            registry=r,
        )
        self.reconcile_duration = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Wall time of one reconciler pass.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.livekit_clock_offset = Gauge(
            f"{PREFIX}_livekit_clock_offset_seconds",
            "LiveKit's clock minus this host's, estimated from the Date of its API answers "
            "(one-second resolution). Ages are measured on LiveKit's clock; beyond 60 s either "
            "way every webhook fails verification.",
            registry=r,
        )
        self.rooms_held = Gauge(
            f"{PREFIX}_rooms_held",
            "Rooms this process keeps set-up state for (until the call ends).",
            registry=r,
        )

    def _shared(self, shared_redis: bool) -> None:
        r = self.registry
        self.persona_cache_shared_up = Gauge(
            f"{PREFIX}_persona_cache_shared_up",
            "1 while the shared persona cache (Redis, PERSONA_CACHE_URL) answers; 0 during an "
            "outage, when this process's own cache serves. Absent without a shared cache.",
            registry=r if shared_redis else None,
        )
        self.persona_cache_shared_errors = Counter(
            f"{PREFIX}_persona_cache_shared_errors_total",
            "Commands to the shared persona cache that failed or timed out, by command.",
            ["command"],
            registry=r if shared_redis else None,
        )
        self.reconcile_leader = Gauge(
            f"{PREFIX}_reconcile_leader",
            "1 while this replica holds the reconciler's lease (it alone passes over the rooms), "
            "0 while another does. Absent without a shared Redis (every replica reconciles).",
            registry=r if shared_redis else None,
        )

    def render(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)


def source_kind(source: str) -> str:
    """A persona `source` as a bounded label: a file path (it carries a number) becomes `file`."""
    return source if source in ("api", "cache", "default") else "file"
