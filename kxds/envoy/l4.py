"""Layer-4 listeners of the per-node proxy: TCP, UDP and the health-check port.

One builder per IR listener kind; each returns an Envoy ``Listener`` message.
TCP goes through ``tcp_proxy`` (behind the network RBAC filter when the
listener has an access policy), UDP through the ``udp_proxy`` listener filter,
and the ``healthCheckNodePort`` answers a fixed HTTP response from the
listener itself (``direct_response``), so it needs neither RDS nor a cluster.

``upstream_source: client`` (transparent source addresses) maps to Envoy's
original-source listener filter on TCP and to ``use_original_src_ip`` in
``udp_proxy``; both open their upstream sockets with ``IP_TRANSPARENT`` (Envoy
needs ``CAP_NET_ADMIN``), and the node's policy routing brings the replies back
(:mod:`kxds.noderouting`).
"""

from __future__ import annotations

import ipaddress
import json

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import (
    listener_components_pb2,
    listener_pb2,
    udp_listener_config_pb2,
)
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.original_src.v3 import original_src_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.filters.udp.udp_proxy.v3 import route_pb2 as udp_route_pb2
from envoy.extensions.filters.udp.udp_proxy.v3 import udp_proxy_pb2
from envoy.extensions.matching.common_inputs.network.v3 import network_inputs_pb2
from envoy.type.v3 import hash_policy_pb2
from google.protobuf import wrappers_pb2
from xds.core.v3 import cidr_pb2, extension_pb2
from xds.type.matcher.v3 import ip_pb2, matcher_pb2

from kxds import ir
from kxds.envoy import rbac
from kxds.envoy.common import ads_config_source, pack, stat_name
from kxds.envoy.filter_names import HCM, ORIGINAL_SRC, ROUTER, TCP_PROXY, UDP_PROXY


def _address(host: str, port: int, protocol: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(
        address=host, port_value=port, protocol=protocol))


def _listener(name: str, host: str, port: int, protocol: int) -> listener_pb2.Listener:
    """A listener shell; a specific address binds even when it is not (yet) on the node.

    LoadBalancer IPs and externalIPs are routed to the node (by the network, or
    announced by an L2/BGP speaker) without being assigned to an interface, so
    the socket needs ``IP_FREEBIND`` (Envoy's ``freebind``), as kube-proxy's
    kernel rules need no local address at all.
    """
    msg = listener_pb2.Listener(name=name, address=_address(host, port, protocol),
                                traffic_direction=base_pb2.INBOUND)
    if not ipaddress.ip_address(host).is_unspecified:
        msg.freebind.value = True
    return msg



def _original_src() -> listener_components_pb2.ListenerFilter:
    """Upstream connections from the client's address (its IP; the port is Envoy's).

    No ``mark``: the node set-up recognises the replies by their transparent
    socket (:mod:`kxds.noderouting`), which works for UDP too, where udp_proxy
    sets no mark; and a mark matched by that routing rule would also send
    Envoy's own packets to the backend into the local table (measured: the
    connection never reaches the pod). ``bind_port`` stays off: one client
    connection to a nodePort and one to a LoadBalancer IP of the same Service,
    from the same client port, would need the same upstream 4-tuple.
    """
    return listener_components_pb2.ListenerFilter(
        name=ORIGINAL_SRC, typed_config=pack(original_src_pb2.OriginalSrc()))


def _rbac_filter(access: ir.AccessPolicy) -> listener_components_pb2.Filter:
    filter_: listener_components_pb2.Filter = rbac.build_network_rbac(access)
    return filter_


def build_tcp_proxy(stat_prefix: str, cluster: str, hash_source_ip: bool,
                    weighted: tuple[ir.ClusterWeight, ...] = ()
                    ) -> listener_components_pb2.Filter:
    """The ``tcp_proxy`` filter; ClientIP affinity hashes the source IP.

    ``hash_policy`` only takes effect with a hash-based load balancer (the
    cluster is RING_HASH or MAGLEV for such Services). With no endpoint in
    the cluster, tcp_proxy closes each accepted connection at once
    (``upstream_cx_none_healthy``): that is how a ``Local`` node without
    local endpoints refuses clients.
    """
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_name(stat_prefix), cluster=cluster)
    if weighted:  # a split by weight (Gateway API backendRefs) instead of one cluster
        proxy.ClearField("cluster")
        proxy.weighted_clusters.clusters.extend(
            tcp_proxy_pb2.TcpProxy.WeightedCluster.ClusterWeight(name=w.cluster, weight=w.weight)
            for w in weighted)
    if hash_source_ip:
        proxy.hash_policy.append(hash_policy_pb2.HashPolicy(
            source_ip=hash_policy_pb2.HashPolicy.SourceIp()))
    return listener_components_pb2.Filter(name=TCP_PROXY, typed_config=pack(proxy))


def _cidr(cidr: str) -> tuple[str, int]:
    net = ipaddress.ip_network(cidr, strict=False)
    return str(net.network_address), net.prefixlen


def build_tcp_listener(listener: ir.TcpListener) -> listener_pb2.Listener:
    """A TCP listener proxying every connection to ``listener.cluster``.

    Access rules run first, as the network RBAC filter on the connection's
    peer address: the per-node proxy is the client's first hop, so the peer
    is the real client (no X-Forwarded-For to trust). With an internal route,
    connections from in-cluster sources take a filter chain of their own
    (``source_prefix_ranges``; the chain without a match is the default).
    """
    rbac = [] if listener.access is None else [_rbac_filter(listener.access)]
    msg = _listener(listener.name, listener.address, listener.port,
                    address_pb2.SocketAddress.TCP)
    if listener.upstream_source is ir.UpstreamSource.CLIENT:
        msg.listener_filters.append(_original_src())
    internal = listener.internal
    if internal is not None:
        match = listener_components_pb2.FilterChainMatch(source_prefix_ranges=[
            address_pb2.CidrRange(address_prefix=a, prefix_len=wrappers_pb2.UInt32Value(value=n))
            for a, n in map(_cidr, internal.sources)])
        msg.filter_chains.append(listener_components_pb2.FilterChain(
            name="internal", filter_chain_match=match, filters=[*rbac, build_tcp_proxy(
                listener.name + "/internal", internal.cluster, listener.hash_source_ip)]))
    msg.filter_chains.append(listener_components_pb2.FilterChain(filters=[
        *rbac, build_tcp_proxy(listener.name, listener.cluster, listener.hash_source_ip,
                               listener.weighted)]))
    return msg


def _udp_route(cluster: str) -> matcher_pb2.Matcher.OnMatch:
    return matcher_pb2.Matcher.OnMatch(action=extension_pb2.TypedExtensionConfig(
        name="route", typed_config=pack(udp_route_pb2.Route(cluster=cluster))))


def _source_ranges(nets: list[rbac.Network]) -> list[cidr_pb2.CidrRange]:
    return [cidr_pb2.CidrRange(address_prefix=str(n.network_address),
                               prefix_len=wrappers_pb2.UInt32Value(value=n.prefixlen))
            for n in nets]


def _udp_matcher(listener: ir.UdpListener) -> matcher_pb2.Matcher:
    """Every datagram to ``listener.cluster``; in-cluster sources to the internal one.

    With client-IP rules, only admitted sources are routed at all: the ranges
    are the policy's admitted CIDRs (split into in-cluster and other sources
    when there is an internal route), and with no ``on_no_match`` udp_proxy
    drops every other datagram (counted as ``downstream_sess_no_route``).
    """
    internal = listener.internal
    inside = [ipaddress.ip_network(c, strict=False) for c in internal.sources] \
        if internal is not None else []
    routes: list[tuple[list[rbac.Network], str]] = []
    if listener.access is None:
        matcher = matcher_pb2.Matcher(on_no_match=_udp_route(listener.cluster))
        if internal is not None:
            routes.append((inside, internal.cluster))
    else:
        matcher = matcher_pb2.Matcher()
        admitted = rbac.admitted_networks(listener.access)
        if internal is not None:
            routes.append((rbac.intersect(admitted, inside), internal.cluster))
            admitted = rbac.subtract(admitted, inside)
        routes.append((admitted, listener.cluster))
    range_matchers = [ip_pb2.IPMatcher.IPRangeMatcher(ranges=_source_ranges(nets),
                                                      on_match=_udp_route(cluster))
                      for nets, cluster in routes if nets]
    if range_matchers:
        matcher.matcher_tree.input.CopyFrom(extension_pb2.TypedExtensionConfig(
            name="source_ip", typed_config=pack(network_inputs_pb2.SourceIPInput())))
        matcher.matcher_tree.custom_match.CopyFrom(extension_pb2.TypedExtensionConfig(
            name="ip_range_matcher",
            typed_config=pack(ip_pb2.IPMatcher(range_matchers=range_matchers))))
    return matcher


def build_udp_proxy(listener: ir.UdpListener) -> udp_proxy_pb2.UdpProxyConfig:
    """The ``udp_proxy`` config: routes to clusters through the matcher API.

    Envoy 1.40 deprecates ``UdpProxyConfig.cluster``; ``matcher`` with only
    ``on_no_match`` sends every datagram to one cluster, and a source-IP range
    matcher picks the internal cluster for in-cluster clients. ``hash_policies``
    ``source_ip`` pins a client to one endpoint for ClientIP affinity.
    ``use_original_src_ip`` sends each datagram from the client's address (not
    its port): Envoy's upstream socket is transparent, which the node set-up's
    routing rule recognises in the replies.
    """
    config = udp_proxy_pb2.UdpProxyConfig(
        stat_prefix=stat_name(listener.name), matcher=_udp_matcher(listener),
        use_original_src_ip=listener.upstream_source is ir.UpstreamSource.CLIENT)
    if listener.hash_source_ip:
        config.hash_policies.append(udp_proxy_pb2.UdpProxyConfig.HashPolicy(source_ip=True))
    return config


def build_udp_listener(listener: ir.UdpListener) -> listener_pb2.Listener:
    """A UDP listener: ``udp_listener_config`` plus the ``udp_proxy`` listener filter.

    UDP listeners take no filter chains; the proxy is a listener filter
    (Envoy docs, "UDP proxy"). Sessions are keyed by the client's 4-tuple, so a
    client keeps its endpoint for as long as it keeps sending.
    """
    msg = _listener(listener.name, listener.address, listener.port,
                    address_pb2.SocketAddress.UDP)
    msg.udp_listener_config.CopyFrom(udp_listener_config_pb2.UdpListenerConfig())
    msg.listener_filters.append(listener_components_pb2.ListenerFilter(
        name=UDP_PROXY, typed_config=pack(build_udp_proxy(listener))))
    return msg


def health_check_body(listener: ir.HealthCheckListener) -> str:
    """The JSON body kube-proxy's health check server answers with."""
    return json.dumps({
        "service": {"namespace": listener.ref.namespace, "name": listener.ref.name},
        "localEndpoints": listener.local_endpoints,
        "serviceProxyHealthy": True,
    }, sort_keys=True)


def health_check_routes(listener: ir.HealthCheckListener) -> route_pb2.RouteConfiguration:
    """The health check's answer, as the route table its listener fetches over RDS
    (named like the listener): a local endpoint count change is an RDS update."""
    status = 200 if listener.local_endpoints > 0 else 503
    route = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix="/"),
        direct_response=route_components_pb2.DirectResponseAction(
            status=status,
            body=base_pb2.DataSource(inline_string=health_check_body(listener))),
    )
    return route_pb2.RouteConfiguration(
        name=listener.name,
        virtual_hosts=[route_components_pb2.VirtualHost(
            name="healthcheck", domains=["*"], routes=[route])],
        response_headers_to_add=[base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key="content-type", value="application/json"),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)],
    )


def build_health_check_listener(listener: ir.HealthCheckListener) -> listener_pb2.Listener:
    """kube-proxy's ``healthCheckNodePort``: 200 with local endpoints, 503 without.

    External load balancers probe it to skip nodes that have no local endpoint
    of an ``externalTrafficPolicy: Local`` Service. The answer is in a route
    table of its own (:func:`health_check_routes`), so the listener stays the
    same while endpoints come and go: no listener update, no draining.
    """
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_name(listener.name),
        rds=hcm_pb2.Rds(config_source=ads_config_source(), route_config_name=listener.name),
        http_filters=[hcm_pb2.HttpFilter(name=ROUTER, typed_config=pack(router_pb2.Router()))],
    )
    msg = _listener(listener.name, listener.address, listener.port,
                    address_pb2.SocketAddress.TCP)
    msg.filter_chains.append(listener_components_pb2.FilterChain(filters=[
        listener_components_pb2.Filter(name=HCM, typed_config=pack(manager))]))
    return msg
