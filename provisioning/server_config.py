"""The livekit-server configuration this project runs against, generated from a few values.

YAML is a superset of JSON, so the config is written as JSON: no YAML library is needed and
livekit-server (yaml.v3) reads it as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

LIVEKIT_SERVER_VERSION = "v1.13.5"
LIVEKIT_SIP_VERSION = "v1.11.0"
# promtool and prometheus from Debian's package (bookworm's); the rule tests use its syntax.
PROMETHEUS_VERSION = "2.42.0"
# The MongoDB wire-protocol server the call-store tests write to (scripts/build_ferretdb.sh).
FERRETDB_VERSION = "v1.24.2"

# Development credentials: the secret must be 32+ characters for livekit-server to accept it.
DEV_API_KEY = "devkey"
DEV_API_SECRET = "persona-dispatcher-dev-secret-0123456789"


@dataclass(frozen=True)
class ServerConfig:
    """The values that differ between a developer's run, a test run and a benchmark."""

    port: int = 7880
    rtc_tcp_port: int = 7881
    rtc_udp_port: int = 7882
    api_key: str = DEV_API_KEY
    api_secret: str = field(default=DEV_API_SECRET, repr=False)
    webhook_urls: tuple[str, ...] = ()
    redis_address: str | None = None
    log_level: str = "info"
    max_metadata_size: int | None = None
    # Where livekit-server serves its Prometheus metrics (on its bind addresses); unset, nowhere.
    prometheus_port: int | None = None


def render_server_config(cfg: ServerConfig) -> str:
    """The YAML (as JSON) text for `livekit-server --config`."""
    doc: dict[str, Any] = {
        "port": cfg.port,
        "rtc": {
            "tcp_port": cfg.rtc_tcp_port,
            "udp_port": cfg.rtc_udp_port,
            "use_external_ip": False,
            "enable_loopback_candidate": True,
        },
        "keys": {cfg.api_key: cfg.api_secret},
        "logging": {"level": cfg.log_level, "json": True},
        "room": {"empty_timeout": 60, "departure_timeout": 5},
    }
    if cfg.webhook_urls:
        doc["webhook"] = {"api_key": cfg.api_key, "urls": list(cfg.webhook_urls)}
    if cfg.redis_address:
        doc["redis"] = {"address": cfg.redis_address}
    if cfg.prometheus_port is not None:
        doc["prometheus"] = {"port": cfg.prometheus_port}
    if cfg.max_metadata_size is not None:
        doc["limit"] = {"max_metadata_size": cfg.max_metadata_size}
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"
