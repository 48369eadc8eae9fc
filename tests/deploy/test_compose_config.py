"""What the compose files promise, read from `docker compose config` (interpolated and merged as
the engine gets them) and from a real image build: `.env` wins over the files' values, the stack
starts without keys or a CRM, grace periods cover the drains, no two services share a port (and
none takes the system Redis' 6379), services wait for what they need to be healthy, and a code
edit rebuilds no dependency."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import orjson
import pytest

from config.agent_settings import AgentSettings
from config.settings import LiveKitSettings, Settings
from provisioning.examples import CONFIG_DIR
from tests.deploy.compose import ComposeProject

pytestmark = pytest.mark.deploy

SCALE = ("docker-compose.yml", "docker-compose.scale.yml")
ONE_SHOT = {"sip-setup"}
# Dependencies for the order of start only: HAProxy checks the replicas' health itself, and the
# agent needs no dispatcher to register.
ORDER_ONLY = {
    ("load-balancer", "persona-dispatcher"),
    ("load-balancer", "persona-dispatcher-2"),
    ("persona-agent", "persona-dispatcher"),
}
# The system Redis of a Debian host (scripts/install_deps.sh installs redis-server).
SYSTEM_REDIS_PORT = 6379


def default(cls: type[Any], name: str) -> Any:
    return next(f.default for f in fields(cls) if f.name == name)


def seconds(duration: str) -> float:
    """A Go duration as compose writes it (`10m30s`, `30s`, `1h`) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"([\d.]+)(ms|h|m|s)", duration)
    assert parts, duration
    return sum(float(n) * units[u] for n, u in parts)


@pytest.fixture(scope="module")
def project() -> Iterator[ComposeProject]:
    p = ComposeProject("persona-deploy-config", files=SCALE)
    try:
        yield p
    finally:
        p.remove_copy()


def rendered(project: ComposeProject, **env: str) -> dict[str, Any]:
    """The merged model of both files with `env` as the project's `.env`."""
    project.write_env(**env)
    services: dict[str, Any] = project.config()["services"]
    return services


def test_without_env_the_agent_needs_no_key_and_the_crm_is_off(project: ComposeProject) -> None:
    """A first run: the agent's stack needs no API key, and no set-up waits on a CRM."""
    services = rendered(project)
    assert services["persona-agent"]["environment"]["AGENT_STACK"] == "fake"
    for replica in ("persona-dispatcher", "persona-dispatcher-2"):
        assert services[replica]["environment"]["PERSONA_API_BASE"] == "off"


def test_values_in_env_win_over_the_compose_files(project: ComposeProject) -> None:
    chosen = {
        "LIVEKIT_URL": "wss://livekit.example.test",
        "LIVEKIT_API_KEY": "prodkey",
        "PERSONA_API_BASE": "https://crm.example.test/mobile",
        "AGENT_STACK": "pipeline",
    }
    services = rendered(project, **chosen)
    agent = services["persona-agent"]["environment"]
    assert {k: agent[k] for k in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "AGENT_STACK")} == {
        k: chosen[k] for k in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "AGENT_STACK")
    }
    for replica in ("persona-dispatcher", "persona-dispatcher-2", "sip-setup"):
        env = services[replica]["environment"]
        assert env["LIVEKIT_URL"] == chosen["LIVEKIT_URL"], replica
        assert env["LIVEKIT_API_KEY"] == chosen["LIVEKIT_API_KEY"], replica
    assert (
        services["persona-dispatcher"]["environment"]["PERSONA_API_BASE"]
        == chosen["PERSONA_API_BASE"]
    )


def test_grace_periods_cover_each_services_drain(project: ComposeProject) -> None:
    """Docker waits for the agent's and livekit-sip's drain of running calls (AGENT_DRAIN_TIMEOUT_S)
    and for the dispatcher's of set-ups in flight, instead of killing them after 10 s."""
    services = rendered(project)
    calls_drain = default(AgentSettings, "drain_timeout_s")
    setup_drain = default(Settings, "persona_deadline_s") + 3 * default(
        LiveKitSettings, "api_timeout_s"
    )
    for name in ("persona-agent", "livekit-sip"):
        assert seconds(services[name].get("stop_grace_period", "10s")) > calls_drain, name
    for name in ("persona-dispatcher", "persona-dispatcher-2"):
        assert seconds(services[name].get("stop_grace_period", "10s")) > setup_drain, name


def host_ports(services: dict[str, Any]) -> dict[str, set[int]]:
    """The TCP ports each service of the merged stack listens on, from its settings."""
    livekit = orjson.loads((CONFIG_DIR / "livekit.yaml").read_text().split("\n", 1)[1])
    sip = orjson.loads((CONFIG_DIR / "sip.yaml").read_text().split("\n", 1)[1])
    haproxy = (CONFIG_DIR / "haproxy.cfg").read_text()
    redis_cmd: list[str] = services["redis"]["command"]
    agent_env = services["persona-agent"]["environment"]
    ports = {
        "redis": {int(redis_cmd[redis_cmd.index("--port") + 1])},
        "livekit-server": {livekit["port"], livekit["rtc"]["tcp_port"]},
        "livekit-sip": {sip["sip_port"], sip["health_port"]},
        "persona-agent": {
            int(agent_env.get("AGENT_HTTP_PORT", default(AgentSettings, "http_port"))),
            int(agent_env.get("AGENT_METRICS_PORT", default(AgentSettings, "metrics_port"))),
        },
        "load-balancer": {int(p) for p in re.findall(r"^\s*bind [\d.]+:(\d+)", haproxy, re.M)},
    }
    for name in ("persona-dispatcher", "persona-dispatcher-2"):
        ports[name] = {int(services[name]["environment"]["PORT"])}
    return ports


def test_no_two_services_of_the_scaled_stack_share_a_port(project: ComposeProject) -> None:
    """Every service is on the host's network: a port two of them (or the system Redis) want
    makes one crash-loop. The balancer's backends are the replicas' ports."""
    services = rendered(project)
    ports = host_ports(services)
    owners: dict[int, list[str]] = {}
    for name, taken in ports.items():
        for port in taken:
            owners.setdefault(port, []).append(name)
    assert {p: o for p, o in owners.items() if len(o) > 1} == {}
    assert SYSTEM_REDIS_PORT not in owners
    haproxy = (CONFIG_DIR / "haproxy.cfg").read_text()
    backends = {int(p) for p in re.findall(r"^\s*server \S+ [\d.]+:(\d+)", haproxy, re.M)}
    assert backends == ports["persona-dispatcher"] | ports["persona-dispatcher-2"]


def test_the_stack_redis_is_the_one_every_service_uses(project: ComposeProject) -> None:
    services = rendered(project)
    [port] = host_ports(services)["redis"]
    for name in ("livekit.yaml", "sip.yaml"):
        doc = orjson.loads((CONFIG_DIR / name).read_text().split("\n", 1)[1])
        assert doc["redis"]["address"] == f"127.0.0.1:{port}", name
    for replica in ("persona-dispatcher", "persona-dispatcher-2"):
        url = services[replica]["environment"]["PERSONA_CACHE_URL"]
        assert url.startswith(f"redis://127.0.0.1:{port}/"), url


def test_services_wait_for_what_they_need_to_be_healthy(project: ComposeProject) -> None:
    """Each long-running service but the balancer says when it is healthy, and each waits for its
    dependencies' health, not only their start (sip-setup once raced livekit-server)."""
    services = rendered(project)
    unchecked = {
        name for name, s in services.items() if name not in ONE_SHOT and "healthcheck" not in s
    }
    assert unchecked == {"load-balancer"}
    for name, service in services.items():
        for dependency, how in service.get("depends_on", {}).items():
            if "healthcheck" in services[dependency] and (name, dependency) not in ORDER_ONLY:
                assert how["condition"] == "service_healthy", (name, dependency)


def test_a_code_edit_reinstalls_no_dependency(project: ComposeProject) -> None:
    """The locked dependencies are a layer of their own, above the sources: after an edit of a
    source file the rebuild takes it from the cache."""
    project.write_env()
    project.compose("build", "persona-dispatcher", timeout=900)
    source = project.workdir / "webhooks" / "app.py"
    source.write_text(source.read_text() + "\n# an edit\n")
    out = project.compose("build", "--progress", "plain", "persona-dispatcher", timeout=900)
    log = out.stdout + out.stderr
    install = re.search(r"#(\d+) \[[^\]]*\] RUN pip install[^\n]*-r requirements/image.lock", log)
    assert install is not None, log[-3000:]
    assert f"#{install.group(1)} CACHED" in log, log[-3000:]
    assert re.search(r"RUN pip install --no-cache-dir --no-deps \.", log), log[-3000:]


def test_livekit_sip_gets_its_config_where_its_image_reads_it(project: ComposeProject) -> None:
    """The image's entrypoint names its config file (`--config=...`); the compose file must mount
    config/sip.yaml there (an environment variable is overridden by the flag)."""
    services = rendered(project)
    image = services["livekit-sip"]["image"]
    entrypoint = orjson.loads(
        subprocess.run(
            ["docker", "image", "inspect", "--format", "{{json .Config.Entrypoint}}", image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    [flag] = [arg for arg in entrypoint if arg.startswith("--config=")]
    mounts = {v["target"]: v["source"] for v in services["livekit-sip"]["volumes"]}
    assert flag.removeprefix("--config=") in mounts, (entrypoint, mounts)
    assert mounts[flag.removeprefix("--config=")] == str(project.workdir / "config" / "sip.yaml")
