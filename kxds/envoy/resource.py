"""Serialized Envoy resources: what the envoy builders hand to the xDS cache.

A :class:`Resource` carries the serialized protobuf bytes (serialized once and
reused for every stream and every group that shares it), a version that is the
hash of those bytes (so a restarted kxds computes the same versions), and the
Kubernetes objects it came from (so a NACK can be traced to them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from kxds.diagnostics import ObjectRef

_PREFIX = "type.googleapis.com/"
CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
SECRET = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"

TYPE_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)
"""The order in which additions are pushed (make-before-break); removals go in reverse.

Secrets are listed last for removal safety but a listener's secret is pushed
before the listener in practice because Envoy asks for it on its own SDS stream.
"""

SHORT_NAMES = {CLUSTER: "clusters", ENDPOINT: "endpoints", LISTENER: "listeners",
               ROUTE: "routes", SECRET: "secrets"}


def version_of(body: bytes) -> str:
    """A resource version: the first 16 hex digits of the SHA-256 of its bytes."""
    return hashlib.sha256(body).hexdigest()[:16]


@dataclass(frozen=True, slots=True, kw_only=True)
class Resource:
    type_url: str
    name: str
    body: bytes
    """The serialized Envoy message (not wrapped in Any)."""
    version: str
    refs: tuple[ObjectRef, ...] = ()

    @classmethod
    def of(cls, type_url: str, name: str, body: bytes,
           refs: tuple[ObjectRef, ...] = ()) -> Resource:
        return cls(type_url=type_url, name=name, body=body, version=version_of(body), refs=refs)


Resources = Mapping[str, Mapping[str, Resource]]
"""type URL -> resource name -> resource: one complete view for a group of proxies."""


def copied(by_name: Mapping[str, Resource]) -> dict[str, Resource]:
    """``dict(by_name)``, at C speed for the read-only views builds hand out: ``dict()`` of
    a ``MappingProxyType`` goes key by key (39 against 3 microseconds at 1,000 names)."""
    if isinstance(by_name, (dict, MappingProxyType)):
        return by_name.copy()
    return dict(by_name)
