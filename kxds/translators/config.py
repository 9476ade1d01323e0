"""Settings that shape translation (from command-line flags), as one value."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from kxds.ir import ClientIPConfig, HttpOptions


@dataclass(frozen=True, slots=True, kw_only=True)
class TracingConfig:
    """The OpenTelemetry collector spans go to, and which requests are traced
    (``--otel-*`` flags; ingress-nginx's ``otlp-collector-host``/``-port``,
    ``otel-service-name``, ``otel-sampler-ratio`` ConfigMap keys)."""

    collector_host: str
    collector_port: int
    service_name: str = "kxds"
    sampler_ratio: float = 1.0
    """Of the requests of traced routes, those traced (0-1)."""
    all_routes: bool = False
    """Trace every route but those whose Ingress says ``enable-opentelemetry: false``;
    by default only the routes of Ingresses saying ``true`` (ingress-nginx's default)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TranslateConfig:
    ingress_class: str = "kxds"
    http_port: int = 8080
    https_port: int = 8443
    listen_address: str = "0.0.0.0"
    client_ip: ClientIPConfig = field(default_factory=ClientIPConfig)
    http: HttpOptions = field(default_factory=HttpOptions)
    """Access logging of the HTTP connection managers."""
    limit_status: int = 429
    """The status of a request refused by a rate limit (``--limit-status-code``)."""
    ignore_snippets: bool = False
    """Serve Ingresses that carry nginx snippets, without the snippets (still reported);
    by default their routes answer 503: a snippet may be exactly what denied access."""
    default_certificate: tuple[str, str] | None = None
    """``(namespace, name)`` of the Secret served to clients without SNI."""
    min_tls_version: str = "1.2"
    """Oldest TLS version the HTTPS listener accepts: 1.0, 1.1, 1.2 or 1.3."""
    tls_now: datetime | None = None
    """The instant certificate validity is checked against, given by the caller
    (translation reads no clock): ``kxds serve`` passes the time of each rebuild,
    ``kxds translate``/``validate`` the time they run, tests a fixed instant. None
    checks no validity period (only tests and tools that do not care leave it out)."""
    external_ip_cidrs: tuple[str, ...] = ()
    """externalIPs are served only inside these (none by default)."""
    node_bind_address: str = "0.0.0.0"
    node_port_range: tuple[int, int] = (30000, 32767)
    cluster_cidrs: tuple[str, ...] = ()
    """Pod (and node) CIDRs: clients from these reaching a per-node listener are
    in-cluster clients, subject to ``internalTrafficPolicy`` (none by default)."""
    tracing: TracingConfig | None = None
    """Where spans go and which routes are traced; None traces nothing."""
    reserved_ports: tuple[int, ...] = (9901,)
    """TCP ports the edge Envoys hold for themselves (their admin port, a health
    port): a Gateway listener there is ``PortUnavailable`` (``--reserved-ports``;
    9901 is the admin port of ``kxds bootstrap``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInfo:
    """The per-node proxy a node-role view is built for."""

    name: str
    zone: str | None = None
    """From ``--node-zone`` or Envoy node metadata ``zone``: enables same-zone-first priorities."""
    bind_address: str | None = None
    """Where this node's proxy binds nodePorts (node metadata ``bind_address``);
    None means ``TranslateConfig.node_bind_address``."""
    transparent: bool = False
    """The node is set up for transparent source addresses (node metadata
    ``source_ip_mode: transparent``): its proxy may open upstream connections
    from the client's address, and the node routes the replies back to it."""
