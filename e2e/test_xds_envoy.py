"""The xDS server against the real Envoy, on both GRPC (SotW) and DELTA_GRPC bootstraps.

kxds's cache and server run in this process (on a thread of their own) and
the views are built by hand, so each test controls exactly which resources
change: endpoint churn under traffic, a resource Envoy rejects, a restart.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2

from e2e.harness import EchoBackend, Envoy, Process, Traffic, free_port, http_json, wait_for
from kxds.envoy.resource import CLUSTER, Resource
from kxds.xds.admin import AdminServer
from kxds.xds.cache import SnapshotCache
from kxds.xds.metrics import XdsMetrics
from kxds.xds.server import XdsServer

# The hand-driven xDS client and resource builders live with the unit tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import xds_support as t

pytestmark = pytest.mark.e2e

GROUP = "edge/default"
CLUSTER_NAME = "default/web/80"
OTHER = "default/other/80"
PROTOCOLS = [pytest.param(False, id="sotw"), pytest.param(True, id="delta")]
STATIC = 2
"""Clusters of the edge bootstrap: the xds cluster and the external authentication relay."""


class ServerThread:
    """A SnapshotCache + XdsServer + AdminServer on an event loop in a thread."""

    def __init__(self, port: int = 0) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.cache = SnapshotCache()
        self.metrics = XdsMetrics()
        self.metrics.attach(self.cache)
        self.server = XdsServer(self.cache, self.metrics)
        self.admin = AdminServer(self.cache, self.metrics)
        self.port = self.call(self.server.start(f"127.0.0.1:{port}"))
        self.admin_port = self.call(self.admin.start("127.0.0.1:0"))

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def run(self, fn: Callable[[], Any]) -> Any:
        async def wrapped() -> Any:
            return fn()
        return self.call(wrapped())

    def set_view(self, *items: Resource) -> None:
        def publish() -> None:
            self.cache.set_view(GROUP, t.resources(*items))
            self.cache.mark_synced()
        self.run(publish)

    def counter(self, metric: Any, *labels: str) -> float:
        return float(self.run(lambda: metric.labels(*labels)._value.get()))

    def stop(self) -> None:
        if self.loop.is_running():
            self.call(self.admin.stop())
            self.call(self.server.stop(0))
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def xds() -> Iterator[list[ServerThread]]:
    servers: list[ServerThread] = []
    yield servers
    for server in servers:
        server.stop()


def _gateway(port: int, backends: list[EchoBackend],
             timeout_ms: int = 1000, **cluster_fields: Any) -> list[Resource]:
    return [t.cluster(CLUSTER_NAME, timeout_ms, **cluster_fields),
            t.endpoints(CLUSTER_NAME, [b.port for b in backends]),
            t.listener("http", port, "http"), t.route("http", CLUSTER_NAME)]


def _start(tmp_path: Path, started: list[Any], server: ServerThread, delta: bool,
           port: int) -> Envoy:
    envoy = Envoy(tmp_path, server.address, node_id="edge-1", delta=delta)
    started.append(envoy)
    envoy.wait_until(lambda e: e.ready(), what="envoy LIVE")
    envoy.wait_listening(port)
    return envoy


def _status(port: int) -> tuple[int, None]:
    return http_json(f"http://127.0.0.1:{port}/", timeout=3)[0], None


def _backend_is(port: int, name: str) -> bool:
    return _backend_of(port) == name


def _backend_of(port: int) -> str | None:
    status, doc = http_json(f"http://127.0.0.1:{port}/")
    return str(doc["backend"]) if status == 200 else None


def _update_stats(envoy: Envoy) -> dict[str, int]:
    stats = envoy.stats()
    return {k: stats.get(k, 0) for k in ("cluster_manager.cds.update_success",
                                         "listener_manager.lds.update_success",
                                         "cluster_manager.cds.update_rejected",
                                         "cluster_manager.warming_clusters")}


@pytest.mark.parametrize("delta", PROTOCOLS)
def test_endpoint_churn_under_traffic_moves_no_cds_or_lds(
        delta: bool, tmp_path: Path, started: list[Process],
        echo: Callable[..., EchoBackend], xds: list[ServerThread]) -> None:
    server = ServerThread()
    xds.append(server)
    one, two = echo("one"), echo("two")
    port = free_port()
    base = _gateway(port, [one])
    server.set_view(*base)
    envoy = _start(tmp_path, started, server, delta, port)
    wait_for(lambda: _backend_of(port) == "one", what="traffic to one")
    before = _update_stats(envoy)
    with Traffic(functools.partial(_status, port)) as traffic:
        for backends, expect in (([one, two], None), ([two], "two"), ([one], "one")) * 3:
            server.set_view(base[0], t.endpoints(CLUSTER_NAME, [b.port for b in backends]),
                            *base[2:])
            if expect is not None:
                wait_for(functools.partial(_backend_is, port, expect), what=expect)
            traffic.wait_more(5)
    assert traffic.failures() == [], traffic.failures()[:5]
    assert len(traffic.results) > 20
    assert _update_stats(envoy) == before
    protocol = "delta" if delta else "sotw"
    assert server.counter(server.metrics.responses, "clusters", protocol) == 1
    assert server.counter(server.metrics.responses, "listeners", protocol) == 1


@pytest.mark.parametrize("delta", PROTOCOLS)
def test_route_moves_to_a_new_cluster_make_before_break(
        delta: bool, tmp_path: Path, started: list[Process],
        echo: Callable[..., EchoBackend], xds: list[ServerThread]) -> None:
    server = ServerThread()
    xds.append(server)
    one, two = echo("one"), echo("two")
    port = free_port()
    listener = t.listener("http", port, "http")
    server.set_view(t.cluster("c0"), t.endpoints("c0", [one.port]), listener,
                    t.route("http", "c0"))
    envoy = _start(tmp_path, started, server, delta, port)
    wait_for(functools.partial(_backend_is, port, "one"), what="traffic")
    with Traffic(functools.partial(_status, port)) as traffic:
        for step in range(1, 7):
            # Each step adds a cluster, points the route at it and drops the old
            # one, in a single view: Envoy must never see a route to a cold cluster.
            name, backend = (("one", one), ("two", two))[step % 2]
            server.set_view(t.cluster(f"c{step}"), t.endpoints(f"c{step}", [backend.port]),
                            listener, t.route("http", f"c{step}"))
            wait_for(functools.partial(_backend_is, port, name), what=f"step {step}")
            envoy.wait_until(lambda e: e.stat("cluster_manager.active_clusters") == 1 + STATIC,
                             what="old cluster removed")  # c{step} + the static ones
            traffic.wait_more(5)
    assert traffic.failures() == [], traffic.failures()[:5]


@pytest.mark.parametrize("delta", PROTOCOLS)
def test_forced_nack_rolls_back_one_cluster_keeps_traffic_and_is_dumped(
        delta: bool, tmp_path: Path, started: list[Process],
        echo: Callable[..., EchoBackend], xds: list[ServerThread]) -> None:
    server = ServerThread()
    xds.append(server)
    web = echo("web")
    port = free_port()
    base = _gateway(port, [web])
    other = [t.cluster(OTHER, 1000), t.endpoints(OTHER, [web.port])]
    server.set_view(*base, *other)
    envoy = _start(tmp_path, started, server, delta, port)
    wait_for(lambda: _backend_of(port) == "web", what="traffic")
    # Envoy accepts the bytes but refuses to build this cluster (an EDS cluster
    # cannot use the CLUSTER_PROVIDED policy); the other cluster's change is fine.
    rejected = t.cluster(CLUSTER_NAME, lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED)
    other_v2 = [t.cluster(OTHER, 2500), other[1]]
    server.set_view(rejected, *base[1:], *other_v2)
    envoy.wait_until(lambda e: e.stat("cluster_manager.cds.update_rejected") >= 1,
                     what="CDS NACK")
    assert _backend_of(port) == "web"
    envoy.wait_until(lambda e: _connect_timeout(e, OTHER) == "2.500s",
                     what="the good cluster applied")
    status, dump = http_json(f"http://127.0.0.1:{server.admin_port}/debug/config_dump"
                             "?node=edge-1")
    assert status == 200
    clusters = dump["types"]["clusters"]["resources"]
    entry = clusters[CLUSTER_NAME]
    assert entry["nacked"]["version"] == rejected.version
    assert "cluster provided LB specified" in entry["nacked"]["error"]
    assert entry["nacked"]["refs"] == ["Service default/web"]
    assert "nacked" not in clusters[OTHER]
    assert server.counter(server.metrics.nacks, "clusters") == 1
    wait_for(lambda: not _in_flight(server), what="rolled-back state ACKed")
    assert _connect_timeout(envoy, CLUSTER_NAME) == "1s"  # the last ACKed version serves
    # The rejected version is never sent again; a fixed one is accepted.
    server.set_view(rejected, *base[1:], *other_v2)
    server.set_view(t.cluster(CLUSTER_NAME, 2000), *base[1:], *other_v2)
    envoy.wait_until(lambda e: _connect_timeout(e, CLUSTER_NAME) == "2s",
                     what="fixed cluster accepted")
    assert envoy.stat("cluster_manager.cds.update_rejected") == 1
    wait_for(lambda: _backend_of(port) == "web", what="traffic after fix")


def _connect_timeout(envoy: Envoy, name: str) -> str | None:
    for item in envoy.config_dump("dynamic_active_clusters").get("configs", []):
        cluster = item.get("cluster", {})
        if cluster.get("name") == name:
            return str(cluster.get("connect_timeout"))
    return None


@pytest.mark.parametrize("delta", PROTOCOLS)
def test_restart_keeps_envoy_serving_and_causes_no_repush(
        delta: bool, tmp_path: Path, started: list[Process],
        echo: Callable[..., EchoBackend], xds: list[ServerThread]) -> None:
    first = ServerThread()
    xds.append(first)
    web = echo("web")
    port = free_port()
    base = _gateway(port, [web])
    first.set_view(*base)
    envoy = _start(tmp_path, started, first, delta, port)
    wait_for(lambda: _backend_of(port) == "web", what="traffic")
    before = _update_stats(envoy)
    first.stop()
    envoy.wait_until(lambda e: e.stat("control_plane.connected_state") == 0,
                     what="envoy sees kxds gone")
    assert _backend_of(port) == "web"  # Envoy keeps serving without its control plane
    second = ServerThread(first.port)
    xds.append(second)
    second.set_view(*base)
    envoy.wait_until(lambda e: e.stat("control_plane.connected_state") == 1,
                     timeout=30, what="envoy reconnected")
    wait_for(lambda: second.cache.nodes.get("edge-1") is not None, what="stream")
    assert _backend_of(port) == "web"
    assert _update_stats(envoy) == before
    protocol = "delta" if delta else "sotw"
    assert second.counter(second.metrics.responses, "clusters", protocol) == 0
    assert second.counter(second.metrics.responses, "listeners", protocol) == 0


@pytest.mark.parametrize("delta", PROTOCOLS)
def test_one_endpoint_change_with_1000_clusters(
        delta: bool, tmp_path: Path, started: list[Process],
        echo: Callable[..., EchoBackend], xds: list[ServerThread],
        capsys: pytest.CaptureFixture[str]) -> None:
    server = ServerThread()
    xds.append(server)
    web = echo("web")
    port = free_port()
    base = _gateway(port, [web])
    many = [r for i in range(1000) for r in (t.cluster(f"default/svc{i}/80"),
                                              t.endpoints(f"default/svc{i}/80", [10000 + i]))]
    server.set_view(*base, *many)
    envoy = _start(tmp_path, started, server, delta, port)
    envoy.wait_until(lambda e: e.stat("cluster_manager.active_clusters") >= 1000 + STATIC,
                     timeout=60, what="1001 clusters")
    wait_for(lambda: server.cache.nodes.get("edge-1") is not None
             and not _in_flight(server), what="all ACKed")
    protocol = "delta" if delta else "sotw"
    counters = (server.metrics.responses, server.metrics.response_bytes,
                server.metrics.resources_sent)
    before = {(c, ty): server.counter(c, ty, protocol) for c in counters
              for ty in ("clusters", "endpoints", "listeners", "routes")}
    changed = list(many)
    changed[1] = t.endpoints("default/svc0/80", [20000])
    server.set_view(*base, *changed)
    envoy.wait_until(lambda e: _endpoint_port(e, "default/svc0/80") == 20000,
                     what="endpoint change applied")
    wait_for(lambda: not _in_flight(server), what="ACK")
    after = {key: server.counter(key[0], key[1], protocol) for key in before}
    diff = {f"{key[0]._name}/{key[1]}": after[key] - before[key] for key in before
            if after[key] != before[key]}
    with capsys.disabled():
        print(f"\n[{protocol}] one endpoint change, 1000 clusters loaded: {diff}")
    assert diff["kxds_xds_responses/endpoints"] == 1
    assert diff["kxds_xds_resources_sent/endpoints"] == 1
    assert not any(k.endswith(("/clusters", "/listeners", "/routes")) for k in diff)


def _in_flight(server: ServerThread) -> bool:
    rec = server.cache.nodes.get("edge-1")
    if rec is None:
        return True
    return any(v.get("sent_version") != v.get("acked_version")
               for v in rec.versions.values() if "sent_version" in v) or any(
        r.sent_version != r.acked_version for table in rec.types.values()
        for r in table.values())


def _endpoint_port(envoy: Envoy, cluster: str) -> int | None:
    dump = envoy.config_dump("dynamic_endpoint_configs")
    for config in dump.get("configs", []):
        cla = config.get("endpoint_config", {})
        if cla.get("cluster_name") == cluster:
            for group in cla.get("endpoints", []):
                for lb in group.get("lb_endpoints", []):
                    return int(lb["endpoint"]["address"]["socket_address"]["port_value"])
    return None



def test_delta_tells_envoy_a_subscribed_resource_does_not_exist(
        tmp_path: Path, started: list[Process], echo: Callable[..., EchoBackend],
        xds: list[ServerThread]) -> None:
    # A cluster whose endpoints kxds does not have: over delta, kxds answers the EDS
    # subscription with removed_resources, so Envoy finishes warming the cluster
    # (bootstraps set initial_fetch_timeout: 0s, so it would otherwise wait forever).
    server = ServerThread()
    xds.append(server)
    web = echo("web")
    port = free_port()
    base = _gateway(port, [web])
    server.set_view(*base)
    envoy = _start(tmp_path, started, server, True, port)
    wait_for(lambda: _backend_of(port) == "web", what="traffic")
    patient = cluster_pb2.Cluster()
    patient.ParseFromString(t.cluster(OTHER).body)
    patient.eds_cluster_config.eds_config.initial_fetch_timeout.SetInParent()  # 0s: no timeout
    server.set_view(*base, Resource.of(CLUSTER, OTHER, patient.SerializeToString()))
    envoy.wait_until(lambda e: e.stat("cluster_manager.active_clusters") == 2 + STATIC,
                     timeout=30,
                     what="the cluster without endpoints warmed")
    assert envoy.stat("cluster_manager.warming_clusters") == 0
    assert _backend_of(port) == "web"


@pytest.mark.parametrize("delta", PROTOCOLS)
def test_a_listener_rejected_for_a_held_port_binds_once_the_port_is_free(
        delta: bool, tmp_path: Path, started: list[Process], echo: Callable[..., EchoBackend],
        xds: list[ServerThread]) -> None:
    # Another process still holds the port (a restart, a hot upgrade): Envoy NACKs the
    # listener. Once the port is free, kxds's retry binds it with no change to the view.
    server = ServerThread()
    xds.append(server)
    web = echo("web")
    held = socket.socket()
    try:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        ready = free_port()
        server.set_view(*_gateway(port, [web]), t.listener("ready", ready, "http"))
        envoy = _start(tmp_path, started, server, delta, ready)
        envoy.wait_until(lambda e: e.stat("listener_manager.lds.update_rejected") >= 1,
                         what="LDS NACK for the held port")
        entry = wait_for(lambda: _retry(server, "http"), what="retry state in the dump")
        assert "Address already in use" in entry["last_error"], entry
        assert entry["attempts"] >= 1 and entry["next_retry_in_seconds"] <= 60
        assert _backend_of(ready) == "web"  # the other listener serves meanwhile
    finally:
        held.close()
    envoy.wait_listening(port, timeout=20)
    wait_for(lambda: _backend_of(port) == "web", what="traffic through the healed listener")
    wait_for(lambda: _retry(server, "http") is None, what="retry state cleared")
    assert server.counter(server.metrics.nack_retries, "listeners") >= 1


def _retry(server: ServerThread, name: str) -> dict[str, Any] | None:
    status, dump = http_json(f"http://127.0.0.1:{server.admin_port}/debug/config_dump"
                             "?node=edge-1")
    if status != 200:
        return None
    entry = dump["types"].get("listeners", {}).get("resources", {}).get(name, {})
    return entry.get("retry")  # type: ignore[no-any-return]
