"""The livekit-sip config and the committed example configs."""

from __future__ import annotations

import orjson
import pytest

from provisioning.examples import WEBHOOK_URL, example_files
from provisioning.sip_config import SipConfig, render_sip_config

pytestmark = pytest.mark.unit


def test_sip_config_renders_the_keys_livekit_sip_reads() -> None:
    """Keys as livekit-sip v1.11.0's pkg/config.Config names them; the RTP range as "a-b"."""
    cfg = SipConfig(
        ws_url="ws://127.0.0.1:7999",
        redis_address="127.0.0.1:6390",
        api_key="k",
        api_secret="s" * 32,
        sip_port=5070,
        rtp_port_start=20000,
        rtp_port_end=20099,
        health_port=8099,
        listen_ip="127.0.0.1",
        nat_1_to_1_ip="127.0.0.1",
        prometheus_port=6799,
    )
    doc = orjson.loads(render_sip_config(cfg))
    assert doc == {
        "api_key": "k",
        "api_secret": "s" * 32,
        "ws_url": "ws://127.0.0.1:7999",
        "redis": {"address": "127.0.0.1:6390"},
        "sip_port": 5070,
        "rtp_port": "20000-20099",
        "logging": {"level": "info", "json": True},
        "health_port": 8099,
        "listen_ip": "127.0.0.1",
        "nat_1_to_1_ip": "127.0.0.1",
        "prometheus_port": 6799,
    }


def test_sip_config_defaults_listen_everywhere_on_5060() -> None:
    """Unset addresses are left out, so livekit-sip announces the host's LAN address."""
    doc = orjson.loads(render_sip_config(SipConfig()))
    assert doc["sip_port"] == 5060
    assert "listen_ip" not in doc
    assert "nat_1_to_1_ip" not in doc
    assert "health_port" not in doc
    assert "prometheus_port" not in doc


@pytest.mark.parametrize(("start", "end"), [(10000, 10000), (10100, 10000), (0, 10), (6e4, 7e4)])
def test_sip_config_rejects_an_empty_or_out_of_range_rtp_range(start: float, end: float) -> None:
    with pytest.raises(ValueError, match="RTP port range"):
        SipConfig(rtp_port_start=int(start), rtp_port_end=int(end))


def test_sip_config_secret_is_not_in_repr() -> None:
    assert "api_secret" not in repr(SipConfig())


def test_committed_example_configs_are_what_the_renderers_produce() -> None:
    """config/livekit.yaml and config/sip.yaml; `python -m provisioning.examples` rewrites them."""
    for path, text in example_files().items():
        assert path.read_text() == text, (
            f"{path.name} is stale: run python -m provisioning.examples"
        )


def test_example_server_config_has_redis_and_the_dispatcher_webhook() -> None:
    files = {p.name: t for p, t in example_files().items()}
    server = orjson.loads(files["livekit.yaml"].split("\n", 1)[1])
    assert server["redis"] == {"address": "127.0.0.1:6380"}
    assert server["webhook"]["urls"] == [WEBHOOK_URL]
    assert WEBHOOK_URL == "http://127.0.0.1:8080/webhooks/livekit"
    sip = orjson.loads(files["sip.yaml"].split("\n", 1)[1])
    assert sip["redis"] == server["redis"]
    assert sip["ws_url"] == f"ws://127.0.0.1:{server['port']}"
    assert sip["api_key"] in server["keys"]
    assert server["keys"][sip["api_key"]] == sip["api_secret"]


def test_example_configs_serve_prometheus_metrics_on_6789_and_6790() -> None:
    """What deploy/prometheus/ and the README tell an operator to scrape: livekit-server's
    `prometheus.port` (its `prometheus_port` is deprecated) and livekit-sip's `prometheus_port`."""
    files = {p.name: t for p, t in example_files().items()}
    server = orjson.loads(files["livekit.yaml"].split("\n", 1)[1])
    sip = orjson.loads(files["sip.yaml"].split("\n", 1)[1])
    assert server["prometheus"] == {"port": 6789}
    assert "prometheus_port" not in server
    assert sip["prometheus_port"] == 6790
