"""One replica at a time: a lease in the shared Redis, renewed by its holder.

The reconciler uses it so that, of several replicas, one passes over the rooms while the others
wait; if the holder dies, its lease expires and another takes over. Without Redis every replica
would pass over every room, which is still correct (race settling keeps one dispatch per call),
only costlier; so when Redis does not answer, `held` says yes and logs it once.
"""

from __future__ import annotations

import asyncio
import uuid

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from telemetry.logs import get_logger
from telemetry.metrics import Metrics

log = get_logger(__name__)

# What a Redis command that did not answer in time, or was refused, raises.
REDIS_FAILURES = (RedisError, OSError, TimeoutError)

# Renew our own lease, or take a free one; 1 when we hold it afterwards.
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
# Delete a key only while it holds our token (an expired claim may be someone else's now).
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLease:
    def __init__(
        self,
        redis: aioredis.Redis,
        name: str,
        ttl_s: float,
        command_timeout_s: float,
        metrics: Metrics,
    ) -> None:
        self._redis = redis
        self._key = name
        self._ttl_ms = int(ttl_s * 1000)
        self._timeout = command_timeout_s
        self._metrics = metrics
        self._me = uuid.uuid4().hex
        self._held: bool | None = None
        self._unreachable = False

    async def held(self) -> bool:
        """Take or renew the lease; whether this replica holds it now (yes when Redis is down)."""
        try:
            async with asyncio.timeout(self._timeout):
                held = bool(await self._redis.eval(_HOLD, 1, self._key, self._me, self._ttl_ms))
        except REDIS_FAILURES as e:
            if not self._unreachable:
                self._unreachable = True
                log.warning("lease.unreachable", lease=self._key, error=type(e).__name__)
            return True
        if self._unreachable:
            self._unreachable = False
            log.info("lease.reachable", lease=self._key)
        if held != self._held:
            self._held = held
            self._metrics.reconcile_leader.set(int(held))
            log.info("lease.held" if held else "lease.lost", lease=self._key)
        return held

    async def release(self) -> None:
        """Give the lease up (on shutdown), so that another replica need not wait it out."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.eval(RELEASE_SCRIPT, 1, self._key, self._me)
        except REDIS_FAILURES:
            pass  # it expires on its own
