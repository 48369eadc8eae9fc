"""LiveKit's distributed mode on one machine, with the dispatcher scaled out in front of it:

- Redis for LiveKit (room placement, routing, agent jobs) and another for the dispatchers' shared
  persona cache (so that a test can stop the cache without stopping LiveKit);
- two livekit-server nodes on that Redis, each on its own loopback ports; rooms land on either;
- HAProxy (Debian's) as LiveKit's one webhook URL, balancing over the dispatcher replicas;
- the replicas, each talking to a different node, sharing the persona cache;
- the fake CRM API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livekit import api
from redis import Redis

from devstack.processes import ManagedProcess, free_port
from devstack.services import (
    LiveKitServer,
    LoadBalancer,
    RedisServer,
    dispatcher_process,
    start_livekit_server,
    start_load_balancer,
    start_redis,
)
from provisioning.load_balancer import Backend
from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET
from tests.harness.fake_persona_api import start_fake_persona_api
from tests.harness.stack import (
    copy_user_mapping,
    dispatcher_test_env,
    persona_control,
    persona_stats,
)


@dataclass
class Cluster:
    livekit_redis: RedisServer
    cache_redis: RedisServer
    nodes: list[LiveKitServer]
    balancer: LoadBalancer
    dispatchers: list[ManagedProcess]
    persona_api: ManagedProcess
    persona_api_url: str
    user_mapping: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def livekit(self) -> LiveKitServer:
        """The first node (any node serves the API and routes to the room's node)."""
        return self.nodes[0]

    def api(self, node: int = 0) -> api.LiveKitAPI:
        return api.LiveKitAPI(self.nodes[node].http_url, DEV_API_KEY, DEV_API_SECRET)

    def persona_control(self, **settings: Any) -> dict[str, Any]:
        return persona_control(self.persona_api_url, **settings)

    def persona_stats(self) -> dict[str, Any]:
        return persona_stats(self.persona_api_url)

    def room_nodes(self) -> dict[str, str]:
        """Which node hosts each room, as LiveKit's router records it in its Redis."""
        client = Redis(host="127.0.0.1", port=self.livekit_redis.port)
        try:
            mapping: dict[bytes, bytes] = client.hgetall("room_node_map")  # type: ignore[assignment]
        finally:
            client.close()
        return {k.decode(): v.decode() for k, v in mapping.items()}

    def stop(self) -> None:
        for d in self.dispatchers:
            d.stop()
        self.balancer.stop()
        for n in self.nodes:
            n.stop()
        self.persona_api.stop()
        self.cache_redis.stop()
        self.livekit_redis.stop()


def start_cluster(
    log_dir: Path,
    work: Path,
    *,
    replicas: int = 2,
    nodes: int = 2,
    dispatcher_env: dict[str, str] | None = None,
) -> Cluster:
    """Start everything (the caller stops it); dispatcher logs are `dispatcher-<i>.log`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    mapping = copy_user_mapping(work)
    started: list[Any] = []
    try:
        lk_redis = start_redis(log_path=log_dir / "redis-livekit.log")
        started.append(lk_redis)
        cache_redis = start_redis(log_path=log_dir / "redis-cache.log")
        started.append(cache_redis)
        persona_port = free_port()
        persona = start_fake_persona_api(persona_port, log_dir / "fake-persona-api.log")
        started.append(persona)
        ports = [free_port() for _ in range(replicas)]
        balancer = start_load_balancer(
            [Backend(f"d{i}", "127.0.0.1", p) for i, p in enumerate(ports)],
            log_path=log_dir / "haproxy.log",
        )
        started.append(balancer)
        livekit_nodes = []
        for i in range(nodes):
            node = start_livekit_server(
                webhook_urls=(balancer.url + "/webhooks/livekit",),
                redis_address=lk_redis.address,
                log_path=log_dir / f"livekit-server-{i}.log",
            )
            started.append(node)
            livekit_nodes.append(node)
        env = dispatcher_test_env(
            persona_port,
            mapping,
            PERSONA_CACHE_URL=f"redis://{cache_redis.address}/0",
            # Above a loaded test machine's Redis round trip (the default, 0.2 s, is a
            # production host's bound): these tests count CRM requests across replicas, which a
            # command timing out would turn into one request per replica.
            PERSONA_CACHE_TIMEOUT_S="1",
            **(dispatcher_env or {}),
        )
        dispatchers = []
        for i, port in enumerate(ports):
            node = livekit_nodes[i % nodes]
            d = dispatcher_process(
                port, {**env, "LIVEKIT_URL": node.ws_url}, log_dir / f"dispatcher-{i}.log"
            ).start()
            started.append(d)
            dispatchers.append(d)
    except BaseException:
        for s in reversed(started):
            s.stop()
        raise
    return Cluster(
        lk_redis,
        cache_redis,
        livekit_nodes,
        balancer,
        dispatchers,
        persona,
        f"http://127.0.0.1:{persona_port}",
        mapping,
        env,
    )
