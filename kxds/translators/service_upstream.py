"""``service-upstream: "true"``: an Ingress's routes reach the Service's cluster IP
instead of its endpoints, as ingress-nginx then proxies to ``clusterIP:port`` and lets
kube-proxy pick the endpoint
(https://kubernetes.github.io/ingress-nginx/user-guide/nginx-configuration/annotations/#service-upstream).

The Service port's cluster is shared with other routes, so each backend of such a
route moves to a twin, ``<cluster>/service-upstream``, whose one endpoint is the
cluster IP and the Service port: its own load assignment, which endpoint churn never
touches. It runs last, on the clusters the routes name by then (the TLS, HTTP/2 and
balancing twins keep their settings). The twin has no outlier detection or health
check: with one host, ejecting it would refuse every request (nginx does not count
failures of a single server either).

A headless Service (``clusterIP: None``), one whose manifest has no cluster IP yet,
and an ExternalName Service are reported on the Ingress and keep their endpoints.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable

from kxds import ir, names
from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.kube.models import ClusterState, Ingress, Service
from kxds.translators import annotations as ann
from kxds.translators.annotations import registry as r
from kxds.translators.services import port_cluster

SUFFIX = "/service-upstream"


_NO_EFFECT = (r.AFFINITY, r.UPSTREAM_HASH_BY, r.LOAD_BALANCE)
"""What picks among endpoints: kube-proxy does, behind the cluster IP (as with nginx)."""


_ANNOTATION = "/" + r.SERVICE_UPSTREAM.name


def asks(ing: Ingress) -> bool:
    """Whether ``ing`` may ask for ``service-upstream`` (:func:`apply_service_upstream`
    reads no other Ingress)."""
    return any(k.endswith(_ANNOTATION) for k in ing.meta.annotations)


def _asking(ingresses: Iterable[Ingress], diags: list[Diagnostic]
            ) -> dict[ObjectRef, ann.Parsed]:
    out: dict[ObjectRef, ann.Parsed] = {}
    for ing in ingresses:
        if not asks(ing):
            continue  # parsing every Ingress again costs; few carry it
        parsed = ann.parse(ing)  # its problems are reported with the route's policies
        if parsed.get(r.SERVICE_UPSTREAM):
            out[ing.meta.ref] = parsed
            diags += [parsed.problem(a, "no effect on backends reached through their "
                                     "cluster IP (service-upstream): kube-proxy picks the "
                                     "endpoint", Reason.UNSUPPORTED)
                      for a in _NO_EFFECT if parsed.has(a)]
    return out


class _Twins:
    def __init__(self, base: ir.IR, state: ClusterState) -> None:
        self.clusters = {c.name: c for c in base.clusters}
        # Service port cluster -> (Service, port number).
        self.ports: dict[str, tuple[Service, int]] = {}
        for svc in state.services.values():
            for sp in svc.ports:
                name = port_cluster(svc, sp)
                if name is not None and name in self.clusters:
                    self.ports[name] = (svc, sp.port)
        self.new_clusters: dict[str, ir.Cluster] = {}
        self.new_assignments: dict[str, ir.LoadAssignment] = {}
        self.diagnostics: dict[tuple[ObjectRef, str], Diagnostic] = {}
        self.moved: set[str] = set()
        """Clusters some route left for a twin."""

    def _port_of(self, cluster: ir.Cluster) -> tuple[Service, int] | None:
        # A twin (TLS, HTTP/2, balancing) is named after its Service cluster: "<base>/...".
        parts = cluster.name.split("/")
        for base in ("/".join(parts[:i]) for i in range(len(parts), 0, -1)):
            found = self.ports.get(base)
            if found is not None and found[0].meta.ref == cluster.ref:
                return found
        return None

    def twin(self, name: str, parsed: ann.Parsed) -> str:
        cluster = self.clusters.get(name)
        port = self._port_of(cluster) if cluster is not None else None
        if cluster is None or port is None:
            return name  # not a Service port's (a DNS mirror target, say)
        svc, number = port
        ip = _cluster_ip(svc)
        if isinstance(ip, _Why):
            self._report(parsed, svc, ip.why)
            return name
        twin = names.cap(name + SUFFIX)
        self.moved.add(name)
        if twin not in self.new_clusters:
            self.new_clusters[twin] = dataclasses.replace(
                cluster, name=twin, kind=ir.ClusterKind.EDS, dns_host=None, dns_port=None,
                outlier_detection=None, health_check=None)
            self.new_assignments[twin] = ir.LoadAssignment(
                cluster=twin, ref=cluster.ref,
                endpoints=(ir.Endpoint(address=ip, port=number),))
        return twin

    def _report(self, parsed: ann.Parsed, svc: Service, why: str) -> None:
        key = (parsed.ref, str(svc.meta.ref))
        if key not in self.diagnostics:
            self.diagnostics[key] = parsed.problem(
                r.SERVICE_UPSTREAM, f"{svc.meta.ref} {why}", Reason.UNSUPPORTED)

    def route(self, route: ir.Route, parsed: ann.Parsed) -> ir.Route:
        action = route.action
        if not isinstance(action, ir.Forward):
            return route
        backends = tuple(dataclasses.replace(b, cluster=self.twin(b.cluster, parsed))
                         for b in action.backends)
        return dataclasses.replace(route, action=dataclasses.replace(action, backends=backends))


@dataclasses.dataclass(frozen=True, slots=True)
class _Why:
    why: str


def _cluster_ip(svc: Service) -> str | _Why:
    """The Service's cluster IP, or why it has none kxds can use."""
    ip = svc.cluster_ip
    if svc.type == "ExternalName":
        return _Why("is an ExternalName Service: Envoy resolves its name")
    if not ip:
        return _Why("has no clusterIP in its manifest: its endpoints are used")
    if ip.lower() == "none":
        return _Why("is headless (clusterIP: None): its endpoints are used")
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return _Why(f"has clusterIP {ip!r}, not an IP address: its endpoints are used")


def _named(tables: Iterable[ir.RouteTable]) -> set[str]:
    """Every cluster the routes of ``tables`` name."""
    out: set[str] = set()
    for t in tables:
        for vh in t.virtual_hosts:
            for rt in vh.routes:
                if isinstance(rt.action, ir.Forward):
                    out.update(b.cluster for b in rt.action.backends)
                    out.update(m.cluster for m in rt.action.mirrors)
                auth = rt.policy.auth if rt.policy is not None else None
                if auth is not None and auth.external is not None:
                    out.add(auth.external.cluster)
    return out


def apply_service_upstream(base: ir.IR, state: ClusterState, ingresses: Iterable[Ingress]
                           ) -> tuple[ir.IR, list[Diagnostic]]:
    """Point the routes of Ingresses asking ``service-upstream`` at cluster-IP twins."""
    diags: list[Diagnostic] = []
    asking = _asking(ingresses, diags)
    if not asking:
        return base, diags  # the common case
    twins = _Twins(base, state)
    tables = tuple(dataclasses.replace(t, virtual_hosts=tuple(
        dataclasses.replace(vh, routes=tuple(
            twins.route(rt, asking[rt.ref]) if rt.ref in asking else rt for rt in vh.routes))
        if any(rt.ref in asking for rt in vh.routes) else vh
        for vh in t.virtual_hosts)) for t in base.route_tables)
    # A balancing or TLS twin only routes name may now be named by none: left out.
    # (The Service port clusters themselves stay, as they do when nothing routes there.)
    unused = twins.moved - twins.ports.keys() - _named(tables)
    clusters = {c.name: c for c in base.clusters if c.name not in unused} | twins.new_clusters
    assignments = ({a.cluster: a for a in base.load_assignments if a.cluster not in unused}
                   | twins.new_assignments)
    return dataclasses.replace(
        base, clusters=tuple(clusters[k] for k in sorted(clusters)),
        load_assignments=tuple(assignments[k] for k in sorted(assignments)),
        route_tables=tables), [*diags, *twins.diagnostics.values()]
