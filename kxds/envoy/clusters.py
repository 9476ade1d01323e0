"""IR clusters -> Envoy ``Cluster`` messages.

EDS clusters take their endpoints from the ADS stream (``eds_config: {ads: {}}``)
so an endpoint change touches only its ``ClusterLoadAssignment``. STRICT_DNS
clusters carry their (few, named) hosts inline and let Envoy resolve them.
HTTP/2 to the backend is chosen through ``HttpProtocolOptions`` (the
``http2_protocol_options`` field on the cluster itself is deprecated).
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, protocol_pb2, proxy_protocol_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.transport_sockets.proxy_protocol.v3 import upstream_proxy_protocol_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2
from google.protobuf import any_pb2

from kxds import ir
from kxds.envoy.cluster_health import fill_health
from kxds.envoy.common import fill_ads_config_source, pack
from kxds.envoy.endpoints import fill_localities
from kxds.envoy.filter_names import HTTP_PROTOCOL_OPTIONS, PROXY_PROTOCOL_SOCKET, RAW_BUFFER_SOCKET
from kxds.envoy.tls import build_upstream_tls

_LB_POLICIES = {
    ir.LbPolicy.ROUND_ROBIN: cluster_pb2.Cluster.ROUND_ROBIN,
    ir.LbPolicy.RING_HASH: cluster_pb2.Cluster.RING_HASH,
    ir.LbPolicy.MAGLEV: cluster_pb2.Cluster.MAGLEV,
    ir.LbPolicy.LEAST_REQUEST: cluster_pb2.Cluster.LEAST_REQUEST,
}




def _http2_options() -> any_pb2.Any:
    explicit = hpo_pb2.HttpProtocolOptions.ExplicitHttpConfig(
        http2_protocol_options=protocol_pb2.Http2ProtocolOptions())
    return pack(hpo_pb2.HttpProtocolOptions(explicit_http_config=explicit))


def _transport_socket(cluster: ir.Cluster) -> base_pb2.TransportSocket | None:
    inner: base_pb2.TransportSocket | None = None
    if cluster.upstream_tls is not None:
        inner = build_upstream_tls(cluster.upstream_tls)
    if cluster.proxy_protocol is None:
        return inner
    version = (proxy_protocol_pb2.ProxyProtocolConfig.V1 if cluster.proxy_protocol == "v1"
               else proxy_protocol_pb2.ProxyProtocolConfig.V2)
    wrapped = inner or base_pb2.TransportSocket(name=RAW_BUFFER_SOCKET,
                                                typed_config=pack(raw_buffer_pb2.RawBuffer()))
    proxy = upstream_proxy_protocol_pb2.ProxyProtocolUpstreamTransport(
        config=proxy_protocol_pb2.ProxyProtocolConfig(version=version), transport_socket=wrapped)
    return base_pb2.TransportSocket(name=PROXY_PROTOCOL_SOCKET, typed_config=pack(proxy))


def build_cluster(
    cluster: ir.Cluster, assignment: ir.LoadAssignment | None = None
) -> cluster_pb2.Cluster:
    """The Envoy ``Cluster`` for ``cluster``.

    For STRICT_DNS, the hosts are ``assignment``'s endpoints when given (FQDN
    EndpointSlices), else ``dns_host:dns_port`` (ExternalName Services).
    """
    msg = cluster_pb2.Cluster(name=cluster.name, lb_policy=_LB_POLICIES[cluster.lb_policy])
    # Filled in place (faster with upb than building sub-messages and copying them).
    timeout = msg.connect_timeout
    timeout.seconds = cluster.connect_timeout_ms // 1000
    timeout.nanos = (cluster.connect_timeout_ms % 1000) * 1_000_000
    if cluster.kind is ir.ClusterKind.EDS:
        msg.type = cluster_pb2.Cluster.EDS
        fill_ads_config_source(msg.eds_cluster_config.eds_config)
    else:
        msg.type = cluster_pb2.Cluster.STRICT_DNS
        msg.dns_lookup_family = cluster_pb2.Cluster.V4_PREFERRED
        msg.load_assignment.CopyFrom(_dns_assignment(cluster, assignment))
    if cluster.protocol is ir.UpstreamProtocol.HTTP2:
        msg.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(_http2_options())
    socket = _transport_socket(cluster)
    if socket is not None:
        msg.transport_socket.CopyFrom(socket)
    if cluster.outlier_detection is not None or cluster.health_check is not None:
        fill_health(msg, cluster)
    if cluster.locality_weighted:
        # Envoy picks a locality by its load_balancing_weight (scaled by its share of
        # healthy hosts), then a host in it: the split of a locality per backend.
        msg.common_lb_config.locality_weighted_lb_config.SetInParent()
    return msg


def _dns_assignment(
    cluster: ir.Cluster, assignment: ir.LoadAssignment | None
) -> endpoint_pb2.ClusterLoadAssignment:
    if assignment is not None:
        endpoints = assignment.endpoints
    elif cluster.dns_host is not None and cluster.dns_port is not None:
        endpoints = (ir.Endpoint(address=cluster.dns_host, port=cluster.dns_port),)
    else:
        endpoints = ()
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster.name)
    fill_localities(cla, endpoints)
    return cla
