"""The names of the Envoy extensions kxds configures (filters and transport sockets).

Envoy finds an extension by the type of its ``typed_config``; the name is what
its stats, logs and per-route configs (``typed_per_filter_config``) are keyed by.
"""

from __future__ import annotations

# Listener filters.
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
PROXY_PROTOCOL = "envoy.filters.listener.proxy_protocol"
ORIGINAL_SRC = "envoy.filters.listener.original_src"

# Network filters.
HCM = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
NETWORK_RBAC = "envoy.filters.network.rbac"
UDP_PROXY = "envoy.filters.udp_listener.udp_proxy"

# HTTP filters.
HTTP_RBAC = "envoy.filters.http.rbac"
CORS = "envoy.filters.http.cors"
LOCAL_RATE_LIMIT = "envoy.filters.http.local_ratelimit"
BUFFER = "envoy.filters.http.buffer"
STATEFUL_SESSION = "envoy.filters.http.stateful_session"
CUSTOM_RESPONSE = "envoy.filters.http.custom_response"
EXT_AUTHZ = "envoy.filters.http.ext_authz"
COOKIE_SESSION_STATE = "envoy.http.stateful_session.cookie"
CEL_LOG_FILTER = "envoy.access_loggers.extension_filters.cel"
STDOUT_LOG = "envoy.access_loggers.stdout"
ROUTER = "envoy.filters.http.router"
HEADER_MUTATION = "envoy.filters.http.header_mutation"
EARLY_HEADER_MUTATION = "envoy.http.early_header_mutation.header_mutation"

# Transport sockets and upstream options.
TLS_SOCKET = "envoy.transport_sockets.tls"
PROXY_PROTOCOL_SOCKET = "envoy.transport_sockets.upstream_proxy_protocol"
RAW_BUFFER_SOCKET = "envoy.transport_sockets.raw_buffer"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

# Authentication (HTTP filters enabled per route).
BASIC_AUTH = "envoy.filters.http.basic_auth"
SATISFY_ANY = "kxds.filters.http.satisfy_any"
"""An RBAC filter instance marking clients admitted without authenticating."""

# Tracing.
OPENTELEMETRY_TRACER = "envoy.tracers.opentelemetry"
