"""The gateway model: what the proxies should do, in Envoy's vocabulary.

Translators build it from a :class:`~kxds.kube.models.ClusterState`; the
:mod:`kxds.envoy` builders turn it into Envoy resources. It imports neither
Kubernetes nor protobuf types. One module per part (clusters, access rules, route
policies, routes, listeners, secrets, the whole model); every name is here too.
Every node is a frozen, keyword-only, slotted dataclass (so IRs compare by
value and hash), and every node that stems from
an object carries its :class:`ObjectRef` so that Envoy resources and
diagnostics can be traced back to Kubernetes.

Collections are tuples sorted by name (or, for routes, in Envoy match order),
so the same input gives the same IR. Names are the names of the Envoy
resources (and filter chains, virtual hosts, routes) built from the nodes, and
the references between nodes are by those names: a route names its clusters, a
listener its route table. :func:`consistency_problems` checks that every name
referred to exists. :mod:`kxds.ir_yaml` writes an IR as YAML and reads it back.
"""

from __future__ import annotations

from kxds.ir.access import (
    AccessPolicy,
    ClientSet,
    IPRange,
)
from kxds.ir.clusters import (
    Cluster,
    ClusterKind,
    Endpoint,
    EndpointGroup,
    HealthCheck,
    LbPolicy,
    LoadAssignment,
    OutlierDetection,
    UpstreamProtocol,
    UpstreamSource,
    UpstreamTLS,
)
from kxds.ir.listeners import (
    ClientIPConfig,
    ClusterWeight,
    HealthCheckListener,
    HttpListener,
    HttpOptions,
    InternalRoute,
    Listener,
    PassthroughChain,
    TcpListener,
    TerminatedChain,
    TlsListener,
    Tracing,
    UdpListener,
)
from kxds.ir.model import (
    IR,
    consistency_problems,
)
from kxds.ir.policies import (
    BasicAuth,
    CorsPolicy,
    ErrorPages,
    ExternalAuth,
    Header,
    HeaderChanges,
    HeaderTemplate,
    RateLimit,
    RequestValue,
    RouteAuth,
    RoutePolicy,
    RouteTracing,
    ValuePart,
)
from kxds.ir.routes import (
    ClientCertificate,
    ClusterOptions,
    DirectResponse,
    Forward,
    HashKind,
    HashOn,
    HeaderMatch,
    HeaderMatchKind,
    MatchKind,
    Mirror,
    PathMatch,
    PathRewrite,
    QueryMatch,
    Redirect,
    RetryPolicy,
    Route,
    RouteAction,
    RouteTable,
    SessionCookie,
    VirtualHost,
    WeightedBackend,
)
from kxds.ir.secrets import (
    Secret,
    TLSCertificate,
    ValidationContext,
)

__all__ = [
    "IR",
    "AccessPolicy",
    "BasicAuth",
    "ClientCertificate",
    "ClientIPConfig",
    "ClientSet",
    "Cluster",
    "ClusterKind",
    "ClusterOptions",
    "ClusterWeight",
    "CorsPolicy",
    "DirectResponse",
    "Endpoint",
    "EndpointGroup",
    "ErrorPages",
    "ExternalAuth",
    "Forward",
    "HashKind",
    "HashOn",
    "Header",
    "HeaderChanges",
    "HeaderMatch",
    "HeaderMatchKind",
    "HeaderTemplate",
    "HealthCheck",
    "HealthCheckListener",
    "HttpListener",
    "HttpOptions",
    "IPRange",
    "InternalRoute",
    "LbPolicy",
    "Listener",
    "LoadAssignment",
    "MatchKind",
    "Mirror",
    "OutlierDetection",
    "PassthroughChain",
    "PathMatch",
    "PathRewrite",
    "QueryMatch",
    "RateLimit",
    "Redirect",
    "RequestValue",
    "RetryPolicy",
    "Route",
    "RouteAction",
    "RouteAuth",
    "RoutePolicy",
    "RouteTable",
    "RouteTracing",
    "Secret",
    "SessionCookie",
    "TLSCertificate",
    "TcpListener",
    "TerminatedChain",
    "TlsListener",
    "Tracing",
    "UdpListener",
    "UpstreamProtocol",
    "UpstreamSource",
    "UpstreamTLS",
    "ValidationContext",
    "ValuePart",
    "VirtualHost",
    "WeightedBackend",
    "consistency_problems",
]
