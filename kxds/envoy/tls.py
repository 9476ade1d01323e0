"""TLS listeners (SNI-selected filter chains, terminated or passed through) and upstream TLS.

One listener serves every TLS host of the edge. The ``tls_inspector`` listener
filter reads the ClientHello so that ``filter_chain_match.server_names`` can
pick a chain by SNI; Envoy prefers an exact name over a ``*.`` wildcard and a
wildcard over a chain without names (the default certificate). With no chain
matching — no SNI, an unknown SNI, or not TLS at all — Envoy closes the
connection (https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/listener/v3/listener_components.proto#config-listener-v3-filterchainmatch).

Certificates are only named here (SDS); :mod:`kxds.envoy.secrets` builds them.
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from kxds import ir
from kxds.envoy import rbac
from kxds.envoy.common import pack, stat_name
from kxds.envoy.filter_names import TCP_PROXY, TLS_INSPECTOR, TLS_SOCKET
from kxds.envoy.listeners import (
    DEFAULT_OPTIONS,
    build_http_connection_manager,
    listener_filters,
)
from kxds.envoy.secrets import sds_config

_TLS_VERSIONS = {
    "1.0": common_pb2.TlsParameters.TLSv1_0,
    "1.1": common_pb2.TlsParameters.TLSv1_1,
    "1.2": common_pb2.TlsParameters.TLSv1_2,
    "1.3": common_pb2.TlsParameters.TLSv1_3,
}




def _downstream_tls(chain: ir.TerminatedChain) -> base_pb2.TransportSocket:
    context = tls_pb2.DownstreamTlsContext(common_tls_context=tls_pb2.CommonTlsContext(
        tls_params=common_pb2.TlsParameters(
            tls_minimum_protocol_version=_TLS_VERSIONS[chain.min_tls_version]),
        tls_certificate_sds_secret_configs=[sds_config(chain.secret)],
        alpn_protocols=list(chain.alpn)))
    if chain.client_certificate is not None:
        _ask_client_certificate(context, chain.client_certificate)
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))


def _ask_client_certificate(context: tls_pb2.DownstreamTlsContext,
                            client: ir.ClientCertificate) -> None:
    """Mutual TLS: request (or require) a client certificate validated against the CA.

    Envoy validates a presented certificate against the CA and refuses the
    handshake when it does not chain to it, unless ``ACCEPT_UNTRUSTED``
    (https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/transport_sockets/tls/v3/common.proto#extensions-transport-sockets-tls-v3-certificatevalidationcontext);
    ``max_verify_depth`` does not count the client's own certificate, as
    nginx's ``ssl_verify_depth``.
    """
    # With an error page, a failed check is answered per request (a redirect on the
    # routes, see kxds.envoy.client_cert), so the handshake must let the client in.
    redirects = client.error_redirect is not None
    context.require_client_certificate.value = client.required and not redirects
    default = common_pb2.CertificateValidationContext()
    default.max_verify_depth.value = client.max_verify_depth
    if client.accept_untrusted or redirects:
        default.trust_chain_verification = (
            common_pb2.CertificateValidationContext.ACCEPT_UNTRUSTED)
    context.common_tls_context.combined_validation_context.CopyFrom(
        tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=default,
            validation_context_sds_secret_config=sds_config(client.validation_secret)))


def _match(server_names: tuple[str, ...]) -> listener_components_pb2.FilterChainMatch:
    # transport_protocol "tls" keeps plain-text clients off every chain.
    return listener_components_pb2.FilterChainMatch(
        server_names=list(server_names), transport_protocol="tls")


def build_terminated_chain(chain: ir.TerminatedChain, client_ip: ir.ClientIPConfig,
                           options: ir.HttpOptions = DEFAULT_OPTIONS
                           ) -> listener_components_pb2.FilterChain:
    """A chain terminating TLS with ``chain.secret`` and routing HTTP over RDS.

    The connection manager is the plain-HTTP listener's (same client-IP
    handling and access filters), so HTTPS routes enforce what HTTP ones do.
    """
    hcm = build_http_connection_manager(chain.name, chain.route_table, client_ip, options)
    return listener_components_pb2.FilterChain(
        name=chain.name, filter_chain_match=_match(chain.server_names),
        filters=[hcm], transport_socket=_downstream_tls(chain))


def build_passthrough_chain(chain: ir.PassthroughChain) -> listener_components_pb2.FilterChain:
    """A chain proxying the still-encrypted TCP stream to ``chain.cluster``."""
    filters: list[listener_components_pb2.Filter] = []
    if chain.access is not None:
        filters.append(rbac.build_network_rbac(chain.access))
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_name(chain.name), cluster=chain.cluster)
    if chain.weighted:  # a split by weight (TLSRoute backendRefs) instead of one cluster
        proxy.ClearField("cluster")
        proxy.weighted_clusters.clusters.extend(
            tcp_proxy_pb2.TcpProxy.WeightedCluster.ClusterWeight(name=w.cluster, weight=w.weight)
            for w in chain.weighted)
    filters.append(listener_components_pb2.Filter(name=TCP_PROXY, typed_config=pack(proxy)))
    out = listener_components_pb2.FilterChain(
        name=chain.name, filter_chain_match=_match(chain.server_names), filters=filters)
    if chain.secret is not None:  # terminated here: the backend gets the plain stream
        context = tls_pb2.DownstreamTlsContext(common_tls_context=tls_pb2.CommonTlsContext(
            tls_params=common_pb2.TlsParameters(tls_minimum_protocol_version=_TLS_VERSIONS["1.2"]),
            tls_certificate_sds_secret_configs=[sds_config(chain.secret)]))
        out.transport_socket.CopyFrom(
            base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context)))
    return out


def build_tls_listener(listener: ir.TlsListener) -> listener_pb2.Listener:
    """The Envoy ``Listener`` for ``listener``: one filter chain per IR chain, in IR order."""
    chains = [build_terminated_chain(c, listener.client_ip, listener.http)
              if isinstance(c, ir.TerminatedChain) else build_passthrough_chain(c)
              for c in listener.chains]
    inspector = listener_components_pb2.ListenerFilter(
        name=TLS_INSPECTOR, typed_config=pack(tls_inspector_pb2.TlsInspector()))
    return listener_pb2.Listener(
        name=listener.name,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address=listener.address, port_value=listener.port)),
        # PROXY protocol (when clients come through an L4 balancer) goes first:
        # the TLS inspector must see the ClientHello, not the PROXY header.
        listener_filters=[*listener_filters(listener.client_ip), inspector],
        filter_chains=chains)


def build_upstream_tls(tls: ir.UpstreamTLS) -> base_pb2.TransportSocket:
    """A cluster's ``transport_socket`` speaking TLS to the backend.

    With a validation secret, the backend's chain must lead to that CA and its
    certificate must name the SNI, or carry one of the subject alternative names
    given instead (Envoy checks no host name by itself:
    ``match_typed_subject_alt_names`` does it, and any one matcher that matches
    accepts the certificate).
    """
    common = tls_pb2.CommonTlsContext(alpn_protocols=list(tls.alpn))
    if tls.validation_secret is not None:
        default = common_pb2.CertificateValidationContext()
        dns = tls.dns_names or (() if tls.uris or not tls.sni else (tls.sni,))
        matchers = [*((common_pb2.SubjectAltNameMatcher.DNS, n) for n in dns),
                    *((common_pb2.SubjectAltNameMatcher.URI, u) for u in tls.uris)]
        for san_type, value in matchers:
            default.match_typed_subject_alt_names.append(common_pb2.SubjectAltNameMatcher(
                san_type=san_type, matcher=string_pb2.StringMatcher(exact=value)))
        common.combined_validation_context.CopyFrom(
            tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
                default_validation_context=default,
                validation_context_sds_secret_config=sds_config(tls.validation_secret)))
    context = tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=tls.sni or "")
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))
