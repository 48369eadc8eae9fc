"""The livekit-sip configuration this project runs, generated from a few values.

Written as JSON, like `server_config`: livekit-sip reads it with yaml.v3. Keys are those of
livekit-sip v1.11.0 `pkg/config.Config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET

DEFAULT_SIP_PORT = 5060
# A small range is enough for a developer machine and keeps firewall rules short; livekit-sip's
# own default is 10000-20000.
DEFAULT_RTP_PORT_START = 10000
DEFAULT_RTP_PORT_END = 10100


@dataclass(frozen=True)
class SipConfig:
    """The values that differ between a developer's run, a test run and docker compose."""

    ws_url: str = "ws://127.0.0.1:7880"
    redis_address: str = "127.0.0.1:6379"
    api_key: str = DEV_API_KEY
    api_secret: str = field(default=DEV_API_SECRET, repr=False)
    sip_port: int = DEFAULT_SIP_PORT
    rtp_port_start: int = DEFAULT_RTP_PORT_START
    rtp_port_end: int = DEFAULT_RTP_PORT_END
    health_port: int | None = None
    # Where SIP and RTP listen, and the address written into SDP and Contact. Unset, livekit-sip
    # listens on every interface and announces the first non-loopback address: right for a
    # softphone on the LAN. Tests pin both to 127.0.0.1.
    listen_ip: str | None = None
    nat_1_to_1_ip: str | None = None
    log_level: str = "info"
    # Where livekit-sip serves its Prometheus metrics (`:port`, every interface); unset, nowhere.
    prometheus_port: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.rtp_port_start < self.rtp_port_end < 65536:
            raise ValueError(f"bad RTP port range {self.rtp_port_start}-{self.rtp_port_end}")


def render_sip_config(cfg: SipConfig) -> str:
    """The YAML (as JSON) text for `livekit-sip --config`."""
    doc: dict[str, Any] = {
        "api_key": cfg.api_key,
        "api_secret": cfg.api_secret,
        "ws_url": cfg.ws_url,
        "redis": {"address": cfg.redis_address},
        "sip_port": cfg.sip_port,
        "rtp_port": f"{cfg.rtp_port_start}-{cfg.rtp_port_end}",
        "logging": {"level": cfg.log_level, "json": True},
    }
    if cfg.health_port is not None:
        doc["health_port"] = cfg.health_port
    if cfg.prometheus_port is not None:
        doc["prometheus_port"] = cfg.prometheus_port
    if cfg.listen_ip is not None:
        doc["listen_ip"] = cfg.listen_ip
    if cfg.nat_1_to_1_ip is not None:
        doc["nat_1_to_1_ip"] = cfg.nat_1_to_1_ip
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"
