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
