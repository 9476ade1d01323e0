"""``mirror-target`` (+ ``mirror-host``, ``mirror-request-body``) -> the IR's route mirrors.

ingress-nginx sends a copy of every request of the Ingress to the URL in
``mirror-target`` and drops the copy's answer
(https://kubernetes.github.io/ingress-nginx/user-guide/nginx-configuration/annotations/#mirror).
In Envoy that is a route's ``request_mirror_policies``: the copy goes to a
cluster, with the request's own path. The target's host is resolved like a
backend:

* ``<svc>.<ns>.svc`` (or ``.svc.cluster.local``) over ``http``: that Service's
  cluster for the URL's port (80 when none), so the copy reaches the Service's
  endpoints as a route to it would; a Service that admits only some client
  addresses (NetworkPolicy ipBlocks, source ranges) gets no copies (reported),
  since they would come from every client of the route;
* any other host (and an in-cluster name over ``https``): a STRICT_DNS cluster
  ``mirror/<scheme>/<host>/<port>`` that Envoy resolves, with TLS (SNI the host)
  for ``https``; loopback, link-local and metadata addresses are refused as
  for ExternalName Services (:mod:`kxds.translators.guards`).

The copy's Host header is ``mirror-host``, else the target's host (as
ingress-nginx). What Envoy cannot do is reported: a target path other than
``$request_uri`` (Envoy mirrors the request's own path) and
``mirror-request-body: off`` (Envoy mirrors the body too). A target that cannot
be used is reported and nothing is mirrored; the routes serve as usual.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from kxds import ir, names
from kxds.diagnostics import Diagnostic, Reason, show
from kxds.kube.models import ClusterState, Key
from kxds.translators import annotations as ann
from kxds.translators.access import route_access
from kxds.translators.annotations import registry as r
from kxds.translators.guards import forbidden_target, parse_ip
from kxds.translators.network_policy import PolicyIndex

_IN_CLUSTER = re.compile(r"^([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?\.?$")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SAME_PATH = ("", "/", "$request_uri", "/$request_uri")
"""Target paths meaning the request's own path (ingress-nginx's documented form is
``https://host/$request_uri``)."""


HasCluster = Callable[[Key, str], bool]
"""Whether the Service ``key`` has the cluster named so (as the ingress translator's)."""


@dataclass(frozen=True, slots=True)
class MirrorPlan:
    """What ``mirror-target`` asks: the mirror, and the cluster it needs built."""

    mirror: ir.Mirror
    target: tuple[Key, str] | None = None
    """A Service's cluster (built because something forwards to it)."""
    cluster: ir.Cluster | None = None
    """A DNS cluster of its own."""


def mirror_plan(state: ClusterState, parsed: ann.Parsed, has_cluster: HasCluster,
                diags: list[Diagnostic], policies: PolicyIndex | None = None
                ) -> MirrorPlan | None:
    """The mirror ``parsed`` asks for, or None (reported when the target is unusable)."""
    raw = parsed.get(r.MIRROR_TARGET)
    if raw is None:
        diags.extend(parsed.problem(a, "no effect without mirror-target", Reason.UNSUPPORTED)
                     for a in (r.MIRROR_HOST, r.MIRROR_REQUEST_BODY) if parsed.has(a))
        return None
    if parsed.get(r.MIRROR_REQUEST_BODY) is False:
        diags.append(parsed.problem(r.MIRROR_REQUEST_BODY, "'off' is not supported: Envoy "
                                    "mirrors the request body too", Reason.UNSUPPORTED))
    u = urllib.parse.urlsplit(raw.strip())
    try:
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        port = 0
    host = (u.hostname or "").lower()
    ip = parse_ip(host) is not None
    if u.scheme not in ("http", "https") or not port or not (ip or _is_dns_name(host)):
        diags.append(parsed.problem(r.MIRROR_TARGET, f"{show(raw)} is not an http(s) URL "
                                    "with a host name or address; requests are not mirrored"))
        return None
    why = forbidden_target(host)
    if why is not None:
        diags.append(parsed.problem(r.MIRROR_TARGET, f"target refused: {why}; requests are "
                                    "not mirrored", Reason.NOT_ALLOWED))
        return None
    path = u.path + (f"?{u.query}" if u.query else "")
    if path not in _SAME_PATH:
        diags.append(parsed.problem(
            r.MIRROR_TARGET, f"path {show(path)} is not applied: Envoy mirrors the request "
            "with its own path (as $request_uri)", Reason.UNSUPPORTED))
    mirror_host = parsed.get(r.MIRROR_HOST) or host
    found = _IN_CLUSTER.match(host)
    if found is not None and u.scheme == "http":
        return _service_plan(state, parsed, found.group(2), found.group(1), port, mirror_host,
                             has_cluster, diags, policies)
    name = names.cap(f"mirror/{u.scheme}/{host}/{port}")
    tls = None
    if u.scheme == "https":
        tls = ir.UpstreamTLS() if ip else ir.UpstreamTLS(sni=host)
    cluster = ir.Cluster(name=name, ref=parsed.ref, kind=ir.ClusterKind.STRICT_DNS,
                         dns_host=host, dns_port=port, upstream_tls=tls)
    return MirrorPlan(ir.Mirror(cluster=name, host=mirror_host), cluster=cluster)


def _service_plan(state: ClusterState, parsed: ann.Parsed, ns: str, svc: str, port: int,
                  host: str, has_cluster: HasCluster, diags: list[Diagnostic],
                  policies: PolicyIndex | None) -> MirrorPlan | None:
    service = state.services.get((ns, svc))
    sp = service.port_by_number(port) if service is not None else None
    if service is None or sp is None:
        what = (f"Service {ns}/{svc} not found" if service is None
                else f"port {port} not found on Service {ns}/{svc}")
        diags.append(parsed.problem(r.MIRROR_TARGET, f"{what}; requests are not mirrored",
                                    Reason.BACKEND_NOT_FOUND))
        return None
    access, _ = route_access(state, None, service, sp, policies)
    if access is not None:
        # The copies would reach the Service from every client of the route, past the
        # client-IP rules the gateway enforces for it (fail closed: no copy at all).
        diags.append(parsed.problem(r.MIRROR_TARGET, f"Service {ns}/{svc} admits only some "
                                    "client addresses (NetworkPolicy or source ranges); "
                                    "requests are not mirrored to it", Reason.NOT_ALLOWED))
        return None
    cluster = names.service_cluster(ns, svc, port)
    if not has_cluster((ns, svc), cluster):
        diags.append(parsed.problem(r.MIRROR_TARGET, f"Service {ns}/{svc} cannot be a "
                                    "backend (see its own diagnostics); requests are not "
                                    "mirrored", Reason.BACKEND_NOT_FOUND))
        return None
    return MirrorPlan(ir.Mirror(cluster=cluster, host=host), target=((ns, svc), cluster))


def _is_dns_name(host: str) -> bool:
    labels = host.rstrip(".").split(".")
    return 0 < len(host) <= 253 and all(_DNS_LABEL.fullmatch(x) for x in labels)
