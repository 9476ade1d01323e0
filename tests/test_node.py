"""Per-node translation (NodePort, LoadBalancer IPs, externalIPs) and the L4 builders."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.filters.udp.udp_proxy.v3 import route_pb2 as udp_route_pb2
from envoy.extensions.filters.udp.udp_proxy.v3 import udp_proxy_pb2
from google.protobuf import json_format
from xds.type.matcher.v3 import ip_pb2

from kxds import ir
from kxds.diagnostics import ObjectRef, Reason
from kxds.envoy import build as envoy
from kxds.envoy import l4, validate
from kxds.envoy.build import build_resources
from kxds.envoy.resource import LISTENER, ROUTE
from kxds.kube.loader import load_text
from kxds.kube.models import ClusterState
from kxds.translators.config import NodeInfo, TranslateConfig
from kxds.translators.guards import forbidden_target
from kxds.translators.node import translate_node
from kxds.translators.translation import Translation


def svc(name: str, *, type_: str = "NodePort", ports: str = "", spec: str = "",
        ts: str = "", annotations: str = "", status: str = "") -> str:
    ports = ports or "[{name: http, port: 80, targetPort: 8080, nodePort: 30080}]"
    meta_ts = f", creationTimestamp: '{ts}'" if ts else ""
    ann = f", annotations: {{{annotations}}}" if annotations else ""
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default{meta_ts}{ann}}}
spec: {{type: {type_}, ports: {ports}{", " + spec if spec else ""}}}
{"status: {loadBalancer: {ingress: " + status + "}}" if status else ""}
"""


def eps(service: str, endpoints: str, ports: str = "[{name: http, port: 8080}]") -> str:
    return f"""---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {service}-x, namespace: default,
           labels: {{kubernetes.io/service-name: {service}}}}}
addressType: IPv4
ports: {ports}
endpoints: {endpoints}
"""


TWO_NODES = "[{addresses: [10.0.0.1], nodeName: n1, zone: a}, " \
            "{addresses: [10.0.0.2], nodeName: n2, zone: b}]"


def run(text: str, node: str = "n1", zone: str | None = None, **config: Any) -> Translation:
    state = load_text(text)
    assert not state.problems, state.problems
    return translate_node(state, TranslateConfig(**config), NodeInfo(name=node, zone=zone))


def listeners(t: Translation) -> dict[str, ir.Listener]:
    return {lis.name: lis for lis in t.ir.listeners}


def endpoints(t: Translation, cluster: str) -> list[tuple[str, int]]:
    la = next(a for a in t.ir.load_assignments if a.cluster == cluster)
    return [(e.address, e.priority) for e in la.endpoints]


def reasons(t: Translation) -> list[tuple[str, Reason]]:
    return [(d.field, d.reason) for d in t.diagnostics]


# --- translation -------------------------------------------------------------


def test_cluster_ip_service_gets_nothing() -> None:
    t = run(svc("web", type_="ClusterIP", ports="[{name: http, port: 80}]") + eps("web", TWO_NODES))
    assert t.ir == ir.IR() and not t.diagnostics


def test_node_port_listener_uses_all_endpoints_and_node_bind_address() -> None:
    t = run(svc("web") + eps("web", TWO_NODES), node_bind_address="10.9.9.9")
    lis = listeners(t)["default/web/80/nodeport/tcp"]
    assert isinstance(lis, ir.TcpListener)
    assert (lis.address, lis.port, lis.cluster) == ("10.9.9.9", 30080, "default/web/80")
    assert endpoints(t, "default/web/80") == [("10.0.0.1", 0), ("10.0.0.2", 0)]


def test_node_bind_address_from_node_info_wins() -> None:
    state = load_text(svc("web") + eps("web", TWO_NODES))
    t = translate_node(state, TranslateConfig(node_bind_address="0.0.0.0"),
                       NodeInfo(name="n1", bind_address="127.0.1.1"))
    assert listeners(t)["default/web/80/nodeport/tcp"].address == "127.0.1.1"


def test_local_policy_keeps_own_node_endpoints_and_health_check() -> None:
    text = svc("web", type_="LoadBalancer",
               spec="externalTrafficPolicy: Local, healthCheckNodePort: 32001",
               status="[{ip: 192.0.2.10}]") + eps("web", TWO_NODES)
    on_n1, on_n3 = run(text, node="n1"), run(text, node="n3")
    assert endpoints(on_n1, "default/web/80/local") == [("10.0.0.1", 0)]
    assert endpoints(on_n3, "default/web/80/local") == []
    assert {c.name for c in on_n1.ir.clusters} == {"default/web/80/local"}
    for name in ("default/web/80/nodeport/tcp", "default/web/80/lb/192.0.2.10/tcp"):
        assert listeners(on_n1)[name].cluster == "default/web/80/local"  # type: ignore[union-attr]
    hc1 = listeners(on_n1)["default/web/healthcheck"]
    hc3 = listeners(on_n3)["default/web/healthcheck"]
    assert isinstance(hc1, ir.HealthCheckListener) and isinstance(hc3, ir.HealthCheckListener)
    assert (hc1.port, hc1.local_endpoints, hc3.local_endpoints) == (32001, 1, 0)


def test_local_policy_falls_back_to_local_terminating_endpoints_only() -> None:
    text = svc("web", spec="externalTrafficPolicy: Local") + eps(
        "web", "[{addresses: [10.0.0.1], nodeName: n1, conditions: "
               "{ready: false, serving: true, terminating: true}}, "
               "{addresses: [10.0.0.2], nodeName: n2}]")
    t = run(text, node="n1")
    la = t.ir.load_assignments[0]
    assert [(e.address, e.draining) for e in la.endpoints] == [("10.0.0.1", True)]


def test_load_balancer_ip_and_allowed_external_ips() -> None:
    text = svc("web", type_="LoadBalancer", status="[{ip: 192.0.2.10}]",
               spec="externalIPs: [198.51.100.7, 10.1.2.3, not-an-ip]") + eps("web", TWO_NODES)
    t = run(text, external_ip_cidrs=("198.51.100.0/24",))
    assert sorted(listeners(t)) == [
        "default/web/80/external/198.51.100.7/tcp",
        "default/web/80/lb/192.0.2.10/tcp",
        "default/web/80/nodeport/tcp",
    ]
    assert listeners(t)["default/web/80/lb/192.0.2.10/tcp"].port == 80
    assert reasons(t) == [("spec.externalIPs", Reason.NOT_ALLOWED),
                          ("spec.externalIPs[2]", Reason.INVALID_VALUE)]


def test_external_ips_refused_by_default() -> None:
    t = run(svc("web", type_="ClusterIP", ports="[{name: http, port: 80}]",
                spec="externalIPs: [198.51.100.7]") + eps("web", TWO_NODES))
    assert t.ir.listeners == ()
    assert reasons(t) == [("spec.externalIPs", Reason.NOT_ALLOWED)]


def test_lb_ingress_ignored_for_node_port_type() -> None:
    t = run(svc("web", status="[{ip: 192.0.2.10}]") + eps("web", TWO_NODES))
    assert list(listeners(t)) == ["default/web/80/nodeport/tcp"]


def test_mixed_protocols_share_a_port_number() -> None:
    ports = ("[{name: dns, port: 53, protocol: UDP, nodePort: 30053}, "
             "{name: dnstcp, port: 53, protocol: TCP, nodePort: 30053}]")
    slice_ports = "[{name: dns, port: 5353, protocol: UDP}, {name: dnstcp, port: 5353}]"
    t = run(svc("dns", ports=ports) + eps("dns", TWO_NODES, slice_ports))
    lis = listeners(t)
    assert isinstance(lis["default/dns/53/nodeport/udp"], ir.UdpListener)
    assert isinstance(lis["default/dns/53/nodeport/tcp"], ir.TcpListener)
    assert lis["default/dns/53/nodeport/udp"].cluster == "default/dns/53/udp"
    assert {c.name: c.protocol for c in t.ir.clusters} == {
        "default/dns/53": ir.UpstreamProtocol.TCP, "default/dns/53/udp": ir.UpstreamProtocol.UDP}
    assert not t.diagnostics


def test_sctp_is_unsupported() -> None:
    t = run(svc("s", ports="[{name: s, port: 9, protocol: SCTP, nodePort: 30009}]"))
    assert t.ir.listeners == ()
    assert reasons(t) == [("spec.ports[0].protocol", Reason.UNSUPPORTED)]


@pytest.mark.parametrize("node_port, reason", [
    (40000, Reason.INVALID_VALUE), (None, Reason.MISSING_FIELD)], ids=["outside", "missing"])
def test_bad_node_ports(node_port: int | None, reason: Reason) -> None:
    np = f", nodePort: {node_port}" if node_port else ""
    t = run(svc("web", ports=f"[{{name: http, port: 80{np}}}]"))
    assert t.ir.listeners == () and reasons(t) == [("spec.ports[0].nodePort", reason)]


def test_load_balancer_without_node_ports_serves_only_its_ips() -> None:
    """``allocateLoadBalancerNodePorts: false`` leaves nodePort unset: valid, not a problem."""
    t = run(svc("lb", type_="LoadBalancer", ports="[{name: http, port: 80}]",
                spec="allocateLoadBalancerNodePorts: false", status="[{ip: 192.0.2.10}]"))
    assert [(lis.address, lis.port) for lis in t.ir.listeners] == [("192.0.2.10", 80)]
    assert t.diagnostics == ()


def test_node_port_range_flag_widens_the_range() -> None:
    t = run(svc("web", ports="[{name: http, port: 80, nodePort: 40000}]"),
            node_port_range=(1024, 65535))
    assert listeners(t)["default/web/80/nodeport/tcp"].port == 40000


def test_older_service_keeps_a_contested_port() -> None:
    text = (svc("young", ts="2024-02-01T00:00:00Z") + svc("old", ts="2024-01-01T00:00:00Z")
            + svc("nots"))
    t = run(text)
    assert [lis.ref.name for lis in t.ir.listeners] == ["old"]  # type: ignore[union-attr]
    assert {(d.ref.name, d.reason) for d in t.diagnostics} == {
        ("young", Reason.CONFLICT), ("nots", Reason.CONFLICT)}


def test_external_ip_overlapping_a_load_balancer_ip_conflicts() -> None:
    text = (svc("lb", type_="LoadBalancer", ts="2024-01-01T00:00:00Z",
                status="[{ip: 198.51.100.7}]")
            + svc("ext", type_="ClusterIP", ts="2024-02-01T00:00:00Z",
                  ports="[{name: http, port: 80}]", spec="externalIPs: [198.51.100.7]"))
    t = run(text, external_ip_cidrs=("198.51.100.0/24",))
    assert "default/lb/80/lb/198.51.100.7/tcp" in listeners(t)
    assert [(d.ref.name, d.reason) for d in t.diagnostics] == [("ext", Reason.CONFLICT)]


def test_same_port_different_protocols_do_not_conflict() -> None:
    text = (svc("a", ports="[{name: p, port: 53, nodePort: 30053}]")
            + svc("b", ports="[{name: p, port: 53, protocol: UDP, nodePort: 30053}]"))
    t = run(text)
    assert len(t.ir.listeners) == 2 and not t.diagnostics


def test_session_affinity_hashes_source_ip_for_tcp_and_udp() -> None:
    ports = ("[{name: t, port: 80, nodePort: 30080}, "
             "{name: u, port: 81, protocol: UDP, nodePort: 30081}]")
    t = run(svc("web", ports=ports,
                spec="sessionAffinity: ClientIP, "
                     "sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}"))
    assert all(lis.hash_source_ip for lis in t.ir.listeners)  # type: ignore[union-attr]
    assert {c.lb_policy for c in t.ir.clusters} == {ir.LbPolicy.MAGLEV}


def test_upstream_proxy_protocol_annotation() -> None:
    ports = ("[{name: t, port: 80, nodePort: 30080}, "
             "{name: u, port: 81, protocol: UDP, nodePort: 30081}]")
    t = run(svc("web", ports=ports, annotations="kxds.io/upstream-proxy-protocol: v2"))
    assert {c.name: c.proxy_protocol for c in t.ir.clusters} == {
        "default/web/80": "v2", "default/web/81/udp": None}
    assert [r for _, r in reasons(t)] == [Reason.UNSUPPORTED]
    bad = run(svc("web", annotations="kxds.io/upstream-proxy-protocol: v3"))
    assert bad.ir.clusters[0].proxy_protocol is None
    assert [r for _, r in reasons(bad)] == [Reason.INVALID_VALUE]


def test_load_balancer_source_ranges_guard_every_listener_of_the_service() -> None:
    text = svc("web", type_="LoadBalancer", status="[{ip: 192.0.2.10}]",
               spec="loadBalancerSourceRanges: [203.0.113.0/24, 198.51.100.9/32, bad]")
    t = run(text)
    for lis in t.ir.listeners:
        # kube-proxy leaves the nodePort open to everyone; here it is no way around the ranges.
        assert isinstance(lis, ir.TcpListener) and lis.access is not None
        assert [r.cidr for r in lis.access.all_of[0].ranges] == [
            "198.51.100.9/32", "203.0.113.0/24"]
    assert reasons(t) == [("spec.loadBalancerSourceRanges[2]", Reason.INVALID_VALUE)]


NETPOL = """---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: default, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.0.0.1, phase: Running}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: office-only, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{ipBlock: {cidr: 203.0.113.0/24}}]}]
"""


def test_network_policy_rules_guard_node_listeners() -> None:
    one_pod = ("[{addresses: [10.0.0.1], nodeName: n1, "
               "targetRef: {kind: Pod, namespace: default, name: web-1}}]")
    text = svc("web", spec="selector: {app: web}") + eps("web", one_pod) + NETPOL
    lis = listeners(run(text))["default/web/80/nodeport/tcp"]
    assert isinstance(lis, ir.TcpListener) and lis.access is not None
    ranges = {r.cidr for s in lis.access.all_of for r in s.ranges}
    assert ranges == {"203.0.113.0/24"}


def test_udp_port_routes_only_admitted_sources() -> None:
    """No RBAC filter exists for UDP: the matcher routes admitted sources and drops the rest."""
    text = svc("dns", type_="LoadBalancer", status="[{ip: 192.0.2.10}]",
               ports="[{name: u, port: 53, protocol: UDP, nodePort: 30053}]",
               spec="loadBalancerSourceRanges: [203.0.113.0/24]")
    t = run(text)
    udp = [lis for lis in t.ir.listeners if isinstance(lis, ir.UdpListener)]
    assert len(udp) == 2 and all(lis.access is not None for lis in udp)
    config = l4.build_udp_proxy(udp[0])
    assert not config.matcher.HasField("on_no_match")
    assert _udp_routes(config) == [(["203.0.113.0/24"], "default/dns/53/udp")]


def _udp_routes(config: udp_proxy_pb2.UdpProxyConfig) -> list[tuple[list[str], str]]:
    """(source CIDRs, cluster) of each range of a udp_proxy source-IP matcher."""
    matcher = ip_pb2.IPMatcher()
    config.matcher.matcher_tree.custom_match.typed_config.Unpack(matcher)
    out = []
    for rm in matcher.range_matchers:
        route = udp_route_pb2.Route()
        rm.on_match.action.typed_config.Unpack(route)
        out.append(([f"{r.address_prefix}/{r.prefix_len.value}" for r in rm.ranges],
                    route.cluster))
    return out


def test_udp_access_with_internal_route_splits_admitted_sources() -> None:
    policy = ir.AccessPolicy(name="p", all_of=(ir.ClientSet(name="s", refs=(), ranges=(
        ir.IPRange(cidr="10.0.0.0/8", except_=("10.1.0.0/16",)),)),))
    inside = ir.InternalRoute(sources=("10.0.0.0/9",), cluster="local")
    config = l4.build_udp_proxy(ir.UdpListener(name="u", ref=REF, address="0.0.0.0", port=1,
                                               cluster="all", internal=inside, access=policy))
    routes = dict((c, nets) for nets, c in _udp_routes(config))
    assert routes["all"] == ["10.128.0.0/9"]
    assert "10.1.0.0/16" not in routes["local"] and "10.0.0.0/16" in routes["local"]
    deny = ir.AccessPolicy(name="d", all_of=(ir.ClientSet(name="none", refs=()),))
    nothing = l4.build_udp_proxy(ir.UdpListener(name="u", ref=REF, address="0.0.0.0", port=1,
                                                cluster="all", access=deny))
    assert not nothing.matcher.HasField("matcher_tree")
    assert not nothing.matcher.HasField("on_no_match")


@pytest.mark.parametrize("dist, hints, expected", [
    (None, False, [("10.0.0.1", 0), ("10.0.0.2", 0)]),
    ("PreferClose", False, [("10.0.0.2", 0), ("10.0.0.1", 1)]),
    (None, True, [("10.0.0.1", 0), ("10.0.0.2", 1)]),
], ids=["no-preference", "prefer-close", "hints"])
def test_topology_priorities(dist: str | None, hints: bool, expected: list[Any]) -> None:
    # Hints deliberately disagree with zones: n1's endpoint is hinted for zone b.
    h1 = ", hints: {forZones: [{name: b}]}" if hints else ""
    h2 = ", hints: {forZones: [{name: a}]}" if hints else ""
    body = (f"[{{addresses: [10.0.0.1], nodeName: n1, zone: a{h1}}}, "
            f"{{addresses: [10.0.0.2], nodeName: n2, zone: b{h2}}}]")
    spec = f"trafficDistribution: {dist}" if dist else ""
    t = run(svc("web", spec=spec) + eps("web", body), zone="b")
    assert endpoints(t, "default/web/80") == expected


def test_topology_needs_the_node_zone() -> None:
    t = run(svc("web", spec="trafficDistribution: PreferClose") + eps("web", TWO_NODES))
    assert endpoints(t, "default/web/80") == [("10.0.0.1", 0), ("10.0.0.2", 0)]


def test_translation_ignores_input_order() -> None:
    text = (svc("a", ts="2024-01-01T00:00:00Z") + svc("b", ts="2024-01-02T00:00:00Z")
            + svc("c", type_="LoadBalancer", ports="[{name: p, port: 81, nodePort: 30081}]",
                  status="[{ip: 192.0.2.1}, {ip: 192.0.2.2}]") + eps("a", TWO_NODES))
    docs = text.split("---\n")
    first = run(text)
    for seed in range(5):
        random.Random(seed).shuffle(docs)
        state = ClusterState.from_objects(list(load_text("---\n".join(docs)).objects()))
        assert translate_node(state, TranslateConfig(), NodeInfo(name="n1")) == first


@pytest.mark.parametrize("host, refused", [
    ("127.0.0.1", True), ("localhost", True), ("169.254.169.254", True), ("::1", True),
    ("::ffff:127.0.0.1", True), ("fe80::1", True), ("fd00:ec2::254", True),
    ("0.0.0.0", True), ("api.localhost", True), ("example.com", False), ("10.0.0.1", False),
    ("2001:db8::1", False),
])
def test_forbidden_external_name_targets(host: str, refused: bool) -> None:
    assert (forbidden_target(host) is not None) is refused


# --- Envoy L4 builders -------------------------------------------------------

REF = ObjectRef("Service", "default", "web")


def test_tcp_listener_hashes_source_ip() -> None:
    msg = l4.build_tcp_listener(ir.TcpListener(
        name="default/web/80/lb/192.0.2.10/tcp", ref=REF, address="192.0.2.10", port=80,
        cluster="default/web/80", hash_source_ip=True))
    proxy = tcp_proxy_pb2.TcpProxy()
    msg.filter_chains[0].filters[-1].typed_config.Unpack(proxy)
    assert proxy.cluster == "default/web/80" and proxy.hash_policy[0].HasField("source_ip")
    # A LoadBalancer IP is routed to the node but not on its interfaces.
    assert msg.freebind.value
    assert "." not in proxy.stat_prefix


def test_udp_listener_routes_through_the_matcher() -> None:
    msg = l4.build_udp_listener(ir.UdpListener(
        name="u", ref=REF, address="0.0.0.0", port=30053, cluster="default/dns/53/udp",
        hash_source_ip=True))
    assert msg.HasField("udp_listener_config") and not msg.filter_chains
    assert not msg.HasField("freebind")  # the wildcard address needs none
    config = udp_proxy_pb2.UdpProxyConfig()
    msg.listener_filters[0].typed_config.Unpack(config)
    route = udp_route_pb2.Route()
    config.matcher.on_no_match.action.typed_config.Unpack(route)
    assert route.cluster == "default/dns/53/udp" and config.hash_policies[0].source_ip


@pytest.mark.parametrize("count, status", [(2, 200), (0, 503)])
def test_health_check_answers_from_its_own_route_table(count: int, status: int) -> None:
    listener = ir.HealthCheckListener(name="default/web/healthcheck", ref=REF,
                                      address="0.0.0.0", port=32000, local_endpoints=count)
    msg = l4.build_health_check_listener(listener)
    manager = hcm_pb2.HttpConnectionManager()
    msg.filter_chains[0].filters[0].typed_config.Unpack(manager)
    assert manager.rds.route_config_name == "default/web/healthcheck"
    assert not manager.HasField("route_config")
    table = route_pb2.RouteConfiguration.FromString(
        envoy.health_check_route_resource(listener).body)
    assert table.name == "default/web/healthcheck"
    action = table.virtual_hosts[0].routes[0].direct_response
    assert action.status == status
    assert json.loads(action.body.inline_string)["localEndpoints"] == count


def test_a_local_endpoint_count_change_moves_the_route_table_only() -> None:
    """Endpoints coming and going on a node never update its listeners (no draining)."""
    text = svc("web", type_="LoadBalancer",
               spec="externalTrafficPolicy: Local, healthCheckNodePort: 32001",
               status="[{ip: 192.0.2.10}]")
    one = build_resources(run(text + eps("web", TWO_NODES), node="n1").ir)
    none = build_resources(run(text + eps("web", TWO_NODES), node="n3").ir)
    assert {n: r.version for n, r in one[LISTENER].items()} == {
        n: r.version for n, r in none[LISTENER].items()}
    assert one[ROUTE]["default/web/healthcheck"].version != none[
        ROUTE]["default/web/healthcheck"].version


def _envoy() -> str | None:
    return shutil.which("envoy") or next(
        (str(p) for p in [Path(sys.executable).parent / "envoy"] if p.exists()), None)


def test_l4_listeners_pass_envoy_validation(tmp_path: Path) -> None:
    envoy = _envoy()
    if envoy is None:
        pytest.skip("envoy binary not installed")
    inside = ir.InternalRoute(sources=("10.244.0.0/16", "fd00::/64"), cluster="c2")
    health = ir.HealthCheckListener(name="h", ref=REF, address="127.0.0.1", port=10081,
                                    local_endpoints=1)
    built = [
        l4.build_tcp_listener(ir.TcpListener(name="t", ref=REF, address="127.0.0.1", port=10080,
                                             cluster="c", hash_source_ip=True)),
        l4.build_udp_listener(ir.UdpListener(name="u", ref=REF, address="127.0.0.1", port=10080,
                                             cluster="c", hash_source_ip=True)),
        l4.build_tcp_listener(ir.TcpListener(name="ti", ref=REF, address="127.0.0.1", port=10082,
                                             cluster="c", internal=inside)),
        l4.build_udp_listener(ir.UdpListener(name="ui", ref=REF, address="127.0.0.1", port=10082,
                                             cluster="c", internal=inside)),
        l4.build_health_check_listener(health),
        # UDP client-IP rules: admitted ranges only; and a policy admitting nobody.
        l4.build_udp_listener(ir.UdpListener(name="ua", ref=REF, address="127.0.0.1", port=10083,
                                             cluster="c", internal=inside, access=ir.AccessPolicy(
                                                 name="p", all_of=(ir.ClientSet(
                                                     name="s", refs=(), ranges=(ir.IPRange(
                                                         cidr="10.0.0.0/8",
                                                         except_=("10.1.0.0/16",)),)),)))),
        l4.build_udp_listener(ir.UdpListener(name="ud", ref=REF, address="127.0.0.1", port=10084,
                                             cluster="c", access=ir.AccessPolicy(
                                                 name="d", all_of=(ir.ClientSet(
                                                     name="none", refs=()),)))),
    ]
    clusters = [{"name": n, "type": "STATIC", "lb_policy": "MAGLEV",
                 "load_assignment": {"cluster_name": n}} for n in ("c", "c2")]
    # The health check's route table comes over RDS: inlined, as kxds validate does.
    routes = {"h": json_format.MessageToDict(l4.health_check_routes(health),
                                              preserving_proto_field_name=True)}
    listeners = [json_format.MessageToDict(m, preserving_proto_field_name=True) for m in built]
    bootstrap = {"static_resources": {"clusters": clusters, "listeners": [
        validate.inline_references(lis, routes) for lis in listeners]}}
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(bootstrap))
    done = subprocess.run([envoy, "--mode", "validate", "--use-dynamic-base-id", "-c", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_protocol_mismatch_between_service_and_slice_is_reported() -> None:
    text = svc("dns", ports="[{name: dns, port: 53, protocol: UDP, nodePort: 30053}]") + eps(
        "dns", TWO_NODES, "[{name: dns, port: 5353, protocol: TCP}]")
    t = run(text)
    assert t.ir.load_assignments[0].endpoints == ()
    assert [(d.ref.kind, d.field, d.reason) for d in t.diagnostics] == [
        ("EndpointSlice", "ports[0].protocol", Reason.INVALID_VALUE)]


@pytest.mark.parametrize("etp, itp, external, internal", [
    ("Cluster", "Local", "default/web/80", "default/web/80/local"),
    ("Local", "Cluster", "default/web/80/local", "default/web/80"),
    ("Local", "Local", "default/web/80/local", None),
    ("Cluster", "Cluster", "default/web/80", None),
])
def test_internal_traffic_policy_for_in_cluster_clients(
        etp: str, itp: str, external: str, internal: str | None) -> None:
    text = svc("web", spec=f"externalTrafficPolicy: {etp}, internalTrafficPolicy: {itp}") + eps(
        "web", TWO_NODES)
    lis = listeners(run(text, cluster_cidrs=("10.244.0.0/16",)))["default/web/80/nodeport/tcp"]
    assert isinstance(lis, ir.TcpListener) and lis.cluster == external
    assert (lis.internal.cluster if lis.internal else None) == internal
    # Without --cluster-cidrs nobody is known to be in the cluster.
    plain = listeners(run(text))["default/web/80/nodeport/tcp"]
    assert isinstance(plain, ir.TcpListener) and plain.internal is None


def test_internal_route_builds_a_source_matched_chain_and_udp_matcher() -> None:
    inside = ir.InternalRoute(sources=("10.244.0.0/16",), cluster="local")
    tcp = l4.build_tcp_listener(ir.TcpListener(name="t", ref=REF, address="0.0.0.0", port=1,
                                               cluster="all", internal=inside))
    first, default = tcp.filter_chains
    assert first.filter_chain_match.source_prefix_ranges[0].address_prefix == "10.244.0.0"
    assert not default.HasField("filter_chain_match")
    udp = l4.build_udp_proxy(ir.UdpListener(name="u", ref=REF, address="0.0.0.0", port=1,
                                            cluster="all", internal=inside))
    route = udp_route_pb2.Route()
    udp.matcher.on_no_match.action.typed_config.Unpack(route)
    assert route.cluster == "all" and udp.matcher.HasField("matcher_tree")
