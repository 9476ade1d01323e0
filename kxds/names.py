"""Resource names, computed in one place.

Names are readable (they come from the source object's path, so an Envoy stat
or a config dump points straight back at Kubernetes) and deterministic. Envoy
accepts long names, but stats and logs become unreadable, so a name longer than
:data:`MAX_NAME` keeps its head and gets a short hash of the whole as its tail.
"""

from __future__ import annotations

import hashlib

MAX_NAME = 120
_HASH_LEN = 10


def cap(name: str, limit: int = MAX_NAME) -> str:
    """Return ``name``, or a prefix of it plus a short hash when it exceeds ``limit``."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH_LEN]
    return f"{name[: limit - _HASH_LEN - 1]}-{digest}"


def service_cluster(namespace: str, service: str, port: int) -> str:
    """The EDS cluster (and endpoint resource) of one Service port: ``ns/svc/port``."""
    return cap(f"{namespace}/{service}/{port}")


def ingress_route(namespace: str, ingress: str, rule: int, path: int) -> str:
    """The route made from one path of one Ingress rule."""
    return cap(f"ingress/{namespace}/{ingress}/rule/{rule}/path/{path}")


def ingress_default_route(namespace: str, ingress: str) -> str:
    """The catch-all route made from an Ingress's ``defaultBackend``."""
    return cap(f"ingress/{namespace}/{ingress}/default")


def virtual_host(host: str) -> str:
    """The virtual host serving ``host`` (``*`` for rules without a host)."""
    return cap(host or "*")


def secret(namespace: str, name: str) -> str:
    """The SDS secret made from a Kubernetes TLS Secret."""
    return cap(f"{namespace}/{name}")


def node_cluster(namespace: str, service: str, port: int, protocol: str, *, local: bool) -> str:
    """A per-node proxy's cluster for one Service port.

    TCP keeps the edge's ``ns/svc/port`` name; UDP adds ``/udp`` (a Service may
    use one port number for both). ``externalTrafficPolicy: Local`` clusters,
    which hold only this node's endpoints, add ``/local``.
    """
    name = f"{namespace}/{service}/{port}"
    if protocol != "TCP":
        name += f"/{protocol.lower()}"
    return cap(name + "/local" if local else name)


def node_listener(namespace: str, service: str, port: int, protocol: str,
                  entry: str, address: str | None = None) -> str:
    """A per-node listener: ``ns/svc/port/<entry>[/address]/<protocol>``.

    ``entry`` is ``nodeport``, ``lb`` (a LoadBalancer ingress IP) or ``external``
    (an externalIP); the address is named for the latter two.
    """
    where = f"{entry}/{address}" if address else entry
    return cap(f"{namespace}/{service}/{port}/{where}/{protocol.lower()}")


def health_check_listener(namespace: str, service: str) -> str:
    """The ``healthCheckNodePort`` listener of a ``externalTrafficPolicy: Local`` Service."""
    return cap(f"{namespace}/{service}/healthcheck")


def http_listener(port: int) -> str:
    """The plain-HTTP listener on ``port``; its route table has the same name."""
    return f"http/{port}"


def https_listener(port: int) -> str:
    """The TLS listener on ``port``; its terminated chains share the route table of this name."""
    return f"https/{port}"


def tls_chain(listener: str, kind: str, key: str) -> str:
    """A filter chain of a TLS listener: ``<listener>/<kind>/<key>``.

    ``kind`` is ``cert`` (terminated, ``key`` the secret), ``default`` or
    ``passthrough`` (``key`` the SNI host).
    """
    return cap(f"{listener}/{kind}/{key}")


def upstream_tls_cluster(base: str, *, http2: bool, sni: str | None,
                         ca_secret: str | None, sans: tuple[str, ...] = ()) -> str:
    """The TLS-speaking twin of the Service cluster ``base``:
    ``<base>/tls[/h2][/sni=H][/ca=S][/san=HASH]``.

    An Ingress (not the Service) asks for TLS to the backend, so the twin is a
    cluster of its own and the plain one stays usable (TLS passthrough, other
    Ingresses); HTTP/2 (gRPC over TLS), a non-default SNI or a CA to verify
    against make it distinct again, since Ingresses sharing the Service may
    disagree on them. Subject alternative names checked instead of the SNI (each
    ``DNS:name`` or ``URI:uri``; a list, so a short hash of it) too.
    """
    name = f"{base}/tls"
    if http2:
        name += "/h2"
    if sni:
        name += f"/sni={sni}"
    if ca_secret:
        name += f"/ca={ca_secret}"
    if sans:
        name += "/san=" + hashlib.sha256("\n".join(sans).encode()).hexdigest()[:_HASH_LEN]
    return cap(name)


def udp_split_cluster(namespace: str, route: str) -> str:
    """The cluster splitting a UDPRoute's datagrams by weight: ``udproute/ns/name/split``.

    A Service port's cluster names a port number third and never ends in ``/split``,
    so the two cannot meet.
    """
    return cap(f"udproute/{namespace}/{route}/split")


def ca_secret(namespace: str, name: str) -> str:
    """The SDS validation context made from the ``ca.crt`` of a Secret: ``ns/name/ca``.

    Distinct from :func:`secret` because one Secret may hold both a serving
    certificate and a CA bundle.
    """
    return cap(f"{namespace}/{name}/ca")
