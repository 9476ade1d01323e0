"""Per-node proxies end to end: one kxds, two real Envoys in node role, echo backends.

Two simulated nodes, ``n1`` and ``n2``, each with its own loopback address
(127.0.1.1 and 127.0.2.1, passed as the bootstrap's ``bind_address``) so
their nodePort listeners never collide. Backends run on 127.0.0.1; each
EndpointSlice says which node a backend "runs on".
"""

from __future__ import annotations

import contextlib
import json
import socket
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e.harness import (
    EchoBackend,
    Envoy,
    Kxds,
    Process,
    free_port,
    http_get,
    stop_all,
    wait_for,
    write_manifests,
)

pytestmark = pytest.mark.e2e

N1, N2 = "127.0.1.1", "127.0.2.1"
N3 = "127.0.3.1"
ALLOWED_EXTERNAL, REFUSED_EXTERNAL = "127.0.5.1", "127.0.6.1"
IN_CLUSTER = "127.0.0.130"
"""A client address inside ``--cluster-cidrs`` (127.0.0.128/26): an in-cluster client."""


def free_both(*hosts: str) -> int:
    """A port free for TCP and UDP on every one of ``hosts``."""
    while True:
        port = free_port(hosts[0])
        try:
            for host in hosts:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind((host, port))
        except OSError:
            continue
        return port


@dataclass
class Cluster:
    kxds: Kxds
    n1: Envoy
    n2: Envoy
    ports: dict[str, int]
    backends: dict[str, EchoBackend]


def service(name: str, ports: str, *, type_: str = "NodePort", extra: str = "",
            annotations: str = "") -> str:
    lines = ["---", "apiVersion: v1", "kind: Service", "metadata:", f"  name: {name}",
             "  namespace: default"]
    if annotations:
        lines.append(f"  annotations: {{{annotations}}}")
    lines += ["spec:", f"  type: {type_}", f"  ports: {ports}"]
    lines += [f"  {line}" for line in extra.splitlines()]
    return "\n".join(lines) + "\n"


def endpoint_slice(svc: str, backend: EchoBackend, node: str, port_name: str,
                   protocol: str = "TCP") -> str:
    return textwrap.dedent(f"""\
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: {svc}-{backend.name.split()[-1]}-{port_name}
          namespace: default
          labels: {{kubernetes.io/service-name: {svc}}}
        addressType: IPv4
        ports: [{{name: {port_name}, port: {backend.port}, protocol: {protocol}}}]
        endpoints: [{{addresses: [127.0.0.1], nodeName: {node}}}]
        """)


def manifests(p: dict[str, int], b: dict[str, EchoBackend]) -> str:
    def tcp(name: str, port: str = "tcp") -> str:
        return f"{{name: {port}, port: {p[name]}, nodePort: {p[name]}}}"

    docs = [
        # All endpoints, from either node.
        service("spread", f"[{tcp('spread')}]"),
        endpoint_slice("spread", b["a"], "n1", "tcp"),
        endpoint_slice("spread", b["b"], "n2", "tcp"),
        # TCP and UDP on one nodePort.
        service("mixed", f"[{tcp('mixed')}, {{name: udp, port: {p['mixed']}, protocol: UDP, "
                         f"nodePort: {p['mixed']}}}]"),
        endpoint_slice("mixed", b["a"], "n1", "tcp"),
        endpoint_slice("mixed", b["ua"], "n1", "udp", "UDP"),
        # externalTrafficPolicy Local: the only endpoint is on n1.
        service("local", f"[{tcp('local')}]", type_="LoadBalancer",
                extra=f"externalTrafficPolicy: Local\nhealthCheckNodePort: {p['health']}\n"),
        endpoint_slice("local", b["a"], "n1", "tcp"),
        # ClientIP affinity over two endpoints, TCP and UDP.
        service("sticky", f"[{tcp('sticky')}, {{name: udp, port: {p['sticky_udp']}, "
                          f"protocol: UDP, nodePort: {p['sticky_udp']}}}]",
                extra="sessionAffinity: ClientIP\n"),
        endpoint_slice("sticky", b["a"], "n1", "tcp"),
        endpoint_slice("sticky", b["b"], "n2", "tcp"),
        endpoint_slice("sticky", b["ua"], "n1", "udp", "UDP"),
        endpoint_slice("sticky", b["ub"], "n2", "udp", "UDP"),
        # externalIPs: one inside --external-ip-cidrs, one outside.
        service("ext", f"[{{name: tcp, port: {p['ext']}}}]", type_="ClusterIP",
                extra=f"externalIPs: [{ALLOWED_EXTERNAL}, {REFUSED_EXTERNAL}]\n"),
        endpoint_slice("ext", b["a"], "n1", "tcp"),
        # PROXY protocol to a backend that reads it.
        service("pp2", f"[{tcp('pp2')}]", annotations="kxds.io/upstream-proxy-protocol: v2"),
        endpoint_slice("pp2", b["pp"], "n1", "tcp"),
        service("pp1", f"[{tcp('pp1')}]", annotations="kxds.io/upstream-proxy-protocol: v1"),
        endpoint_slice("pp1", b["pp"], "n1", "tcp"),
        # loadBalancerSourceRanges, enforced on the nodePort listener by network RBAC
        # (TCP) and by the udp_proxy source matcher (UDP).
        service("guarded", f"[{tcp('guarded')}, {{name: udp, port: {p['guarded']}, "
                           f"protocol: UDP, nodePort: {p['guarded']}}}]", type_="LoadBalancer",
                extra="loadBalancerSourceRanges: [127.0.0.50/32]\n"),
        endpoint_slice("guarded", b["a"], "n1", "tcp"),
        endpoint_slice("guarded", b["ua"], "n1", "udp", "UDP"),
        # internalTrafficPolicy Local for in-cluster clients (--cluster-cidrs), endpoints on n1.
        service("inner", f"[{tcp('inner')}, {{name: udp, port: {p['inner']}, protocol: UDP, "
                         f"nodePort: {p['inner']}}}]", extra="internalTrafficPolicy: Local\n"),
        endpoint_slice("inner", b["a"], "n1", "tcp"),
        endpoint_slice("inner", b["ua"], "n1", "udp", "UDP"),
    ]
    return "".join(docs)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("node")
    mine: list[Process] = []
    try:
        backends = {
            "a": EchoBackend("a", tmp, kind="tcp"), "b": EchoBackend("b", tmp, kind="tcp"),
            "ua": EchoBackend("ua", tmp, kind="udp"), "ub": EchoBackend("ub", tmp, kind="udp"),
            "pp": EchoBackend("pp", tmp, kind="tcp", extra_args=["--proxy-protocol"]),
        }
        mine += backends.values()
        hosts = (N1, N2, ALLOWED_EXTERNAL, REFUSED_EXTERNAL)
        ports = {k: free_both(*hosts) for k in (
            "spread", "mixed", "local", "health", "sticky", "sticky_udp", "ext", "pp1", "pp2",
            "inner", "guarded")}
        directory = tmp / "manifests"
        write_manifests(directory, "node.yaml", manifests(ports, backends))
        kxds = Kxds(tmp, ["--node-port-range", "1024-65535", "--cluster-cidrs", "127.0.0.128/26",
                          "--external-ip-cidrs", "127.0.5.0/24"], manifests=directory)
        mine.append(kxds)
        kxds.wait_ready()
        n1 = Envoy(tmp, kxds.xds_address, role="node", node_name="n1", bind_address=N1)
        mine.append(n1)
        n2 = Envoy(tmp, kxds.xds_address, role="node", node_name="n2", bind_address=N2)
        mine.append(n2)
        for envoy, host in ((n1, N1), (n2, N2)):
            for name in ("spread", "mixed", "local", "health", "sticky", "pp1", "pp2", "inner",
                         "guarded"):
                envoy.wait_listening(ports[name], host)
    except BaseException:
        for proc in mine:
            print(proc.diagnostics())
        stop_all(mine)
        raise
    try:
        yield Cluster(kxds, n1, n2, ports, backends)
    finally:
        stop_all(mine)


def tcp_echo(host: str, port: int, *, source: str | None = None,
             payload: bytes = b"ping") -> bytes:
    """Send ``payload`` and read until the reply ends with it (or the peer closes)."""
    with socket.create_connection((host, port), timeout=3,
                                  source_address=(source, 0) if source else None) as s:
        s.sendall(payload)
        reply = b""
        with contextlib.suppress(ConnectionResetError):
            while not reply.endswith(payload):
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
        return reply


def udp_once(host: str, port: int, source: str, payload: bytes = b"ping") -> bytes | None:
    """One datagram; its reply, or None when none comes within half a second."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(0.5)
        s.sendto(payload, (host, port))
        try:
            return s.recvfrom(4096)[0]
        except TimeoutError:
            return None


def udp_echo(host: str, port: int, *, source: str = "127.0.0.1",
             payload: bytes = b"ping") -> bytes:
    """One datagram and its reply (retried: the first may race listener start-up)."""
    return wait_for(lambda: udp_once(host, port, source, payload), 10,
                    what=f"UDP reply from {host}:{port}")


def backend_of(reply: bytes) -> str:
    return reply.split(b" ", 1)[0].decode()


def test_node_port_reaches_every_endpoint_from_each_node(cluster: Cluster) -> None:
    port = cluster.ports["spread"]
    seen = {backend_of(tcp_echo(host, port, source=f"127.0.0.{i}"))
            for host in (N1, N2) for i in range(10, 30)}
    assert seen == {"a", "b"}


def test_tcp_and_udp_share_one_node_port(cluster: Cluster) -> None:
    port = cluster.ports["mixed"]
    for host in (N1, N2):
        assert backend_of(tcp_echo(host, port)) == "a"
        assert backend_of(udp_echo(host, port)) == "ua"


def test_local_policy_serves_only_where_endpoints_are(cluster: Cluster) -> None:
    port = cluster.ports["local"]
    assert backend_of(tcp_echo(N1, port)) == "a"
    # n2 has no local endpoint: it accepts, then closes without a byte of reply.
    assert tcp_echo(N2, port) == b""
    cluster.n2.wait_until(
        lambda e: e.stat("cluster.default/local/" + str(port) + "/local.upstream_cx_none_healthy"),
        what="n2 counted a connection refused for want of a local endpoint")


def test_health_check_node_port(cluster: Cluster) -> None:
    port = cluster.ports["health"]
    status, headers, body = http_get(f"http://{N1}:{port}/healthz")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body)["localEndpoints"] == 1
    status, _, body = http_get(f"http://{N2}:{port}/healthz")
    assert status == 503 and json.loads(body)["localEndpoints"] == 0


def test_client_ip_affinity_pins_each_source(cluster: Cluster) -> None:
    tcp_port, udp_port = cluster.ports["sticky"], cluster.ports["sticky_udp"]
    pinned: dict[str, str] = {}
    for i in range(20, 36):
        source = f"127.0.0.{i}"
        tcp = {backend_of(tcp_echo(N1, tcp_port, source=source)) for _ in range(4)}
        assert len(tcp) == 1, f"{source} moved between {tcp}"
        pinned[source] = tcp.pop()
        # UDP: a new socket (new source port) each time; the source IP alone decides.
        udp = {backend_of(udp_echo(N1, udp_port, source=source)) for _ in range(3)}
        assert len(udp) == 1, f"{source} moved between {udp} over UDP"
    # Sixteen sources over two endpoints: hashing spreads them, it does not pin all to one.
    assert set(pinned.values()) == {"a", "b"}


def test_external_ip_only_inside_allowed_cidrs(cluster: Cluster) -> None:
    port = cluster.ports["ext"]
    cluster.n1.wait_listening(port, ALLOWED_EXTERNAL)
    assert backend_of(tcp_echo(ALLOWED_EXTERNAL, port)) == "a"
    assert not any(REFUSED_EXTERNAL in name for name in cluster.n1.listener_names())
    with pytest.raises(ConnectionRefusedError):
        tcp_echo(REFUSED_EXTERNAL, port)


@pytest.mark.parametrize("svc", ["pp1", "pp2"])
def test_proxy_protocol_header_reaches_the_backend(cluster: Cluster, svc: str) -> None:
    # The backend reports the source address of the PROXY header it read; without
    # one it would see Envoy's own upstream address (127.0.0.1).
    reply = tcp_echo(N2, cluster.ports[svc], source="127.0.0.77")
    assert reply.startswith(b"pp 127.0.0.77 "), reply


def test_views_are_per_node(cluster: Cluster) -> None:
    dump = json.dumps(cluster.n1.config_dump("dynamic_active_clusters"))
    assert "default/local/" in dump
    assert f'"{N1}"' in json.dumps(cluster.n1.config_dump("dynamic_listeners"))
    assert f'"{N2}"' not in json.dumps(cluster.n1.config_dump("dynamic_listeners"))


def test_in_cluster_clients_follow_internal_traffic_policy(cluster: Cluster) -> None:
    port = cluster.ports["inner"]
    # Outside clients: externalTrafficPolicy Cluster, served from either node.
    assert backend_of(tcp_echo(N2, port)) == "a"
    assert backend_of(udp_echo(N2, port)) == "ua"
    # In-cluster clients: internalTrafficPolicy Local, served only where the endpoint is.
    assert backend_of(tcp_echo(N1, port, source=IN_CLUSTER)) == "a"
    assert backend_of(udp_echo(N1, port, source=IN_CLUSTER)) == "ua"
    assert tcp_echo(N2, port, source=IN_CLUSTER) == b""
    assert udp_once(N2, port, IN_CLUSTER) is None


def test_source_ranges_checked_on_the_real_client_address(cluster: Cluster) -> None:
    port = cluster.ports["guarded"]
    assert backend_of(tcp_echo(N2, port, source="127.0.0.50")) == "a"
    assert tcp_echo(N2, port, source="127.0.0.51") == b""  # disconnected by RBAC
    cluster.n2.wait_until(lambda e: any(
        k.endswith("rbac.denied") and v > 0 for k, v in e.stats().items()),
        what="n2 counted an RBAC denial")


def test_source_ranges_on_udp_route_only_admitted_sources(cluster: Cluster) -> None:
    port = cluster.ports["guarded"]
    assert backend_of(udp_echo(N2, port, source="127.0.0.50")) == "ua"
    assert udp_once(N2, port, "127.0.0.51") is None
    # The datagram was dropped by the proxy for want of a route, not lost on the way.
    cluster.n2.wait_until(lambda e: any(
        k.endswith("downstream_sess_no_route") and "guarded" in k and v > 0
        for k, v in e.stats().items()), what="n2 counted an unrouted datagram")


def test_health_check_follows_local_endpoints_without_listener_updates(
        tmp_path: Path, started: list[Process]) -> None:
    """1 -> 0 -> 2 local endpoints: the answer follows over RDS; LDS never moves."""
    backend = EchoBackend("a", tmp_path, kind="tcp")
    started.append(backend)
    health, port = free_port(N1), free_both(N1)
    directory = tmp_path / "manifests"

    def publish(nodes: list[str]) -> None:
        slices = "".join(textwrap.dedent(f"""\
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: hc-{i}
              namespace: default
              labels: {{kubernetes.io/service-name: hc}}
            addressType: IPv4
            ports: [{{name: tcp, port: {backend.port}}}]
            endpoints: [{{addresses: [127.0.0.{i + 1}], nodeName: {node}}}]
            """) for i, node in enumerate(nodes))
        write_manifests(directory, "hc.yaml", service(
            "hc", f"[{{name: tcp, port: {port}, nodePort: {port}}}]", type_="LoadBalancer",
            extra=f"externalTrafficPolicy: Local\nhealthCheckNodePort: {health}\n") + slices)

    def answer() -> tuple[int, int]:
        status, _, body = http_get(f"http://{N1}:{health}/healthz")
        return status, json.loads(body)["localEndpoints"]

    publish(["n1"])
    kxds = Kxds(tmp_path, ["--node-port-range", "1024-65535"], manifests=directory)
    started.append(kxds)
    kxds.wait_ready()
    n1 = Envoy(tmp_path, kxds.xds_address, role="node", node_name="n1", bind_address=N1)
    started.append(n1)
    n1.wait_listening(health, N1)
    assert answer() == (200, 1)
    lds = n1.stat("listener_manager.lds.update_success")
    for nodes, expected in ((["n2"], (503, 0)), (["n1", "n1"], (200, 2))):
        publish(nodes)
        wait_for(lambda e=expected: answer() == e, what=f"health check answers {expected}")
    assert n1.stat("listener_manager.lds.update_success") == lds
    assert n1.stat("http.default/hc/healthcheck.rds.default/hc/healthcheck.update_success") >= 3


def test_a_local_pod_moving_node_updates_only_the_two_nodes(
        tmp_path: Path, started: list[Process]) -> None:
    """Three nodes of one class share one translation (kxds.fleet): a Local Service's
    only pod moves from n1 to n2; traffic follows it, and n3, which never had it,
    hears nothing (no endpoint update, no listener update)."""
    backend = EchoBackend("a", tmp_path, kind="tcp")
    started.append(backend)
    port = free_both(N1, N2, N3)
    directory = tmp_path / "manifests"
    cluster = f"default/moving/{port}/local"

    def publish(node: str) -> None:
        write_manifests(directory, "moving.yaml", service(
            "moving", f"[{{name: tcp, port: {port}, nodePort: {port}}}]",
            extra="externalTrafficPolicy: Local\n") + endpoint_slice("moving", backend, node,
                                                                     "tcp"))

    publish("n1")
    kxds = Kxds(tmp_path, ["--node-port-range", "1024-65535"], manifests=directory)
    started.append(kxds)
    kxds.wait_ready()
    envoys = {}
    for name, host in (("n1", N1), ("n2", N2), ("n3", N3)):
        envoys[name] = Envoy(tmp_path, kxds.xds_address, role="node", node_name=name,
                             bind_address=host)
        started.append(envoys[name])
        envoys[name].wait_listening(port, host)
    assert backend_of(tcp_echo(N1, port)) == "a"
    assert tcp_echo(N2, port) == b""
    n3_before = envoys["n3"].stats(f"cluster.{cluster}.update_")
    assert n3_before.get(f"cluster.{cluster}.update_success"), n3_before
    n2_updates = envoys["n2"].stat(f"cluster.{cluster}.update_success")
    lds = {n: e.stat("listener_manager.lds.update_success") for n, e in envoys.items()}

    publish("n2")
    wait_for(lambda: tcp_echo(N2, port) != b"", what="n2 serving its new local endpoint")
    assert backend_of(tcp_echo(N2, port)) == "a"
    wait_for(lambda: tcp_echo(N1, port) == b"", what="n1 refusing: no local endpoint left")
    assert envoys["n2"].stat(f"cluster.{cluster}.update_success") > n2_updates
    assert envoys["n3"].stats(f"cluster.{cluster}.update_") == n3_before
    assert tcp_echo(N3, port) == b""
    assert {n: e.stat("listener_manager.lds.update_success") for n, e in envoys.items()} == lds
