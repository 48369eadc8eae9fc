"""LiveKit's clock, as seen from here: the ages the dispatcher acts on (a dispatch still being
assigned a job, a caller waiting, a room within its grace period) are differences between
LiveKit's timestamps and *its* now, never ours, so a host clock that drifts cannot make a young
dispatch look dead, nor a dead one young.

The offset is estimated from the `Date` header of every LiveKit API answer (one-second
resolution: the server's time lies in [Date, Date + 1 s)), against the middle of our request, as
the median of the latest samples. It is exported as
`persona_dispatcher_livekit_clock_offset_seconds` (LiveKit minus this host), and a skew is
logged once when it crosses a threshold: webhooks are signed tokens that fail verification
beyond the verifier's one-minute leeway.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from types import SimpleNamespace
from typing import Literal

import aiohttp

from telemetry.logs import get_logger
from telemetry.metrics import Metrics

log = get_logger(__name__)

# livekit-api's TokenVerifier accepts tokens up to this far outside their validity
# (access_token.DEFAULT_LEEWAY): beyond it every webhook is refused (401, never retried).
VERIFY_LEEWAY_S = 60.0
# Past this the skew is worth an operator's look: ages were measured wrongly before this fix.
NOTICEABLE_S = 2.0
SAMPLES = 15
FIX = "synchronise the clocks of this host and of the LiveKit server (NTP: chrony, timesyncd)"

Skew = Literal["in_sync", "skewed", "breaks_webhooks"]


class LiveKitClock:
    """One per process, fed by the LiveKit API client's session (`trace_config`)."""

    def __init__(self, metrics: Metrics, local: Callable[[], float] = time.time) -> None:
        self._local = local
        self._metrics = metrics
        self._samples: deque[float] = deque(maxlen=SAMPLES)
        self.offset_s = 0.0
        self._skew: Skew = "in_sync"

    def now(self) -> float:
        """LiveKit's time now (epoch seconds), as far as its answers tell."""
        return self._local() + self.offset_s

    def observe(self, date_header: str | None, sent_at: float, received_at: float) -> None:
        """One answer's `Date`, for a request sent and answered at these local times."""
        if not date_header:
            return
        try:
            server_s = parsedate_to_datetime(date_header).timestamp()
        except (TypeError, ValueError, IndexError):
            return  # not an HTTP date: no sample
        self._samples.append(server_s + 0.5 - (sent_at + received_at) / 2)
        self.offset_s = statistics.median(self._samples)
        self._metrics.livekit_clock_offset.set(self.offset_s)
        self._report()

    def trace_config(self) -> aiohttp.TraceConfig:
        """Hooks for the session every LiveKit API call goes through."""
        config = aiohttp.TraceConfig()

        async def on_start(
            _: aiohttp.ClientSession, ctx: SimpleNamespace, __: aiohttp.TraceRequestStartParams
        ) -> None:
            ctx.sent_at = self._local()

        async def on_end(
            _: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestEndParams
        ) -> None:
            self.observe(params.response.headers.get("Date"), ctx.sent_at, self._local())

        config.on_request_start.append(on_start)
        config.on_request_end.append(on_end)
        return config

    def _report(self) -> None:
        off = abs(self.offset_s)
        skew: Skew = (
            "breaks_webhooks"
            if off >= VERIFY_LEEWAY_S
            else "skewed"
            if off >= NOTICEABLE_S
            else "in_sync"
        )
        if skew == self._skew:
            return
        self._skew = skew
        offset_s = round(self.offset_s, 1)
        if skew == "breaks_webhooks":
            log.error(
                "livekit.clock_skew",
                offset_s=offset_s,
                effect="every webhook fails verification (401, which LiveKit never retries)",
                fix=FIX,
            )
        elif skew == "skewed":
            log.warning(
                "livekit.clock_skew",
                offset_s=offset_s,
                effect="none yet: ages are measured on LiveKit's clock",
                fix=FIX,
            )
        else:
            log.info("livekit.clock_in_sync", offset_s=offset_s)
