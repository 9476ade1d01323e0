"""IR HTTP listeners -> Envoy ``Listener`` messages with an HTTP connection manager.

Routes come over RDS on the ADS stream, so a route change never touches the
listener (and never drains its connections). The connection manager
normalizes the path (RFC 3986) and merges slashes before routing, so
``/a/../b`` or ``//b`` cannot slip past a path rule; it takes the client
address from the socket peer, from X-Forwarded-For with a configured number of
trusted hops, or from a PROXY protocol header (``ClientIPConfig``).
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.proxy_protocol.v3 import proxy_protocol_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import wrappers_pb2

from kxds import ir
from kxds.envoy import basic_auth, client_cert, http_policy, rbac, satisfy_any
from kxds.envoy.access_log import build_access_logs
from kxds.envoy.common import ads_config_source, pack, stat_name
from kxds.envoy.ext_authz import ext_authz_filter
from kxds.envoy.filter_names import HCM, PROXY_PROTOCOL, ROUTER
from kxds.envoy.hidden_headers import hide_response_headers
from kxds.envoy.tracing import fill_tracing

DEFAULT_OPTIONS = ir.HttpOptions()


def access_filters() -> list[hcm_pb2.HttpFilter]:
    """HTTP filters enforcing client-IP access rules, placed before the router.

    Routes carry their policy as per-route config of these filters; with
    none, the filter allows everything (see :mod:`kxds.envoy.rbac`).
    """
    return [rbac.http_filter()]


def auth_filters() -> list[hcm_pb2.HttpFilter]:
    """Authentication, each off until a route enables it: after access rules and CORS
    (a preflight is answered without credentials, as ingress-nginx does), the
    ``satisfy: any`` marker first (:mod:`kxds.envoy.satisfy_any`); refused clients and
    preflights never reach an external authentication service."""
    return [satisfy_any.marker_filter(), basic_auth.http_filter(), ext_authz_filter()]


def build_http_filters() -> list[hcm_pb2.HttpFilter]:
    """The HTTP filter chain: access control first, the router last (Envoy requires it)."""
    router = hcm_pb2.HttpFilter(name=ROUTER, typed_config=pack(router_pb2.Router()))
    return [*access_filters(), *http_policy.policy_filters(), *auth_filters(), router]


def build_http_connection_manager(
    name: str, route_table: str, client_ip: ir.ClientIPConfig,
    options: ir.HttpOptions = DEFAULT_OPTIONS,
) -> listener_components_pb2.Filter:
    """An HTTP connection manager routing with ``route_table`` (fetched over RDS/ADS).

    WebSocket upgrades are allowed on every route (ingress-nginx proxies them
    by default); every request is logged unless ``options`` says not to.
    """
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_name(name),
        rds=hcm_pb2.Rds(config_source=ads_config_source(), route_config_name=route_table),
        http_filters=build_http_filters(),
        # The address the connection comes from (or PROXY protocol's) is the client,
        # and X-Forwarded-For is trusted for exactly ``xff_num_trusted_hops`` proxies.
        use_remote_address=wrappers_pb2.BoolValue(value=True),
        xff_num_trusted_hops=client_ip.xff_trusted_hops if client_ip.source == "xff" else 0,
        normalize_path=wrappers_pb2.BoolValue(value=True),
        merge_slashes=True,
        upgrade_configs=[hcm_pb2.HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")],
        access_log=build_access_logs(options),
    )
    # A refused client gets a short 403 body that names nothing internal.
    hcm.local_reply_config.CopyFrom(rbac.local_reply_config())
    hide_response_headers(hcm, options.hide_response_headers)
    # Client certificate headers come from Envoy only (kxds.envoy.client_cert).
    hcm.early_header_mutation_extensions.append(client_cert.early_sanitizer())
    if options.tracing is not None:
        fill_tracing(hcm, options.tracing)
    return listener_components_pb2.Filter(name=HCM, typed_config=pack(hcm))


def listener_filters(client_ip: ir.ClientIPConfig) -> list[listener_components_pb2.ListenerFilter]:
    """Filters run on a new connection: PROXY protocol parsing when clients come through one."""
    if client_ip.source != "proxy-protocol":
        return []
    return [listener_components_pb2.ListenerFilter(
        name=PROXY_PROTOCOL, typed_config=pack(proxy_protocol_pb2.ProxyProtocol()))]


def build_http_listener(listener: ir.HttpListener) -> listener_pb2.Listener:
    """The Envoy ``Listener`` for a plain-HTTP IR listener."""
    chain = listener_components_pb2.FilterChain(filters=[
        build_http_connection_manager(listener.name, listener.route_table, listener.client_ip,
                                      listener.http)])
    return listener_pb2.Listener(
        name=listener.name,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address=listener.address, port_value=listener.port)),
        listener_filters=listener_filters(listener.client_ip),
        filter_chains=[chain],
    )
