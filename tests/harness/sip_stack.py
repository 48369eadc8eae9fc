"""The real SIP stack for the SIP tests (tests/e2e, tests/livekit_sip): Redis, livekit-server (with
Redis), livekit-sip, the trunk and dispatch rule of config/sip/ applied by the project's own set-up,
all on loopback.

`start_sip_stack` starts what it is not given, so a test session that already runs a
livekit-server (started with `redis_address`) and a dispatcher can add the SIP side to it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from livekit import api

from devstack.processes import tail
from devstack.services import (
    LiveKitServer,
    LiveKitSip,
    RedisServer,
    start_livekit_server,
    start_livekit_sip,
    start_redis,
)
from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET
from provisioning.sip_setup import SetupResult, load_trunk, setup_sip
from tests.harness.sipp import TEST_CALLER, Call, SippRun

# sipp plays the caller's phone, another device in real life; on the services' two cores a
# burst starved it past its 500 ms watchdog, so the 200 OK it timed (and the ACK it owed) came
# late. Only root may raise a priority.
SIPP_NICE = -5 if os.geteuid() == 0 else None


@dataclass
class SipStack:
    redis: RedisServer
    livekit: LiveKitServer
    sip: LiveKitSip
    setup: SetupResult
    trunk_number: str
    log_dir: Path
    owned: list[RedisServer | LiveKitServer | LiveKitSip] = field(default_factory=list)

    def api(self) -> api.LiveKitAPI:
        """A LiveKitAPI client for the stack's server; the caller closes it."""
        return api.LiveKitAPI(self.livekit.http_url, DEV_API_KEY, DEV_API_SECRET)

    def sipp(self, calls: Sequence[Call] | None = None, **options: object) -> SippRun:
        """A sipp run (not started) against this livekit-sip; one call from 8655701159 by default.

        `options` are `SippRun`'s (concurrent, rate, rtp_seconds, timeout, workdir, nice). sipp
        runs ahead of the services by default where we may raise its priority (`SIPP_NICE`).
        """
        calls = calls or [Call(TEST_CALLER, self.trunk_number)]
        options.setdefault("nice", SIPP_NICE)
        return SippRun(self.sip.sip_host, self.sip.sip_port, calls, **options)  # type: ignore[arg-type]

    def stop(self) -> None:
        for service in reversed(self.owned):
            service.stop()


def start_sip_stack(
    log_dir: Path,
    *,
    webhook_urls: tuple[str, ...] = (),
    redis: RedisServer | None = None,
    livekit: LiveKitServer | None = None,
) -> SipStack:
    """Start Redis, livekit-server and livekit-sip (those not given) and run the SIP set-up.

    Synchronous, for session fixtures. A given `livekit` must have been started with the given
    `redis`'s address; `webhook_urls` only applies to a livekit-server started here.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    owned: list[RedisServer | LiveKitServer | LiveKitSip] = []
    try:
        if redis is None:
            redis = start_redis(log_path=log_dir / "redis.log")
            owned.append(redis)
        if livekit is None:
            livekit = start_livekit_server(
                webhook_urls=webhook_urls,
                redis_address=redis.address,
                log_path=log_dir / "livekit-server.log",
            )
            owned.append(livekit)
        log = log_dir / "livekit-sip.log"
        try:
            sip = start_livekit_sip(livekit, redis.address, log_path=log)
        except (RuntimeError, TimeoutError) as e:
            msg = f"livekit-sip did not start ({e}); {log} ends with:\n{tail(log)}"
            raise RuntimeError(msg) from None
        owned.append(sip)
        setup = asyncio.run(setup_sip(livekit.http_url, DEV_API_KEY, DEV_API_SECRET))
    except BaseException:
        for service in reversed(owned):
            service.stop()
        raise
    return SipStack(redis, livekit, sip, setup, load_trunk().numbers[0], log_dir, owned)
