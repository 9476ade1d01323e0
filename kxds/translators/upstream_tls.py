"""TLS from the gateway to backends.

Asked for by an Ingress (``nginx.ingress.kubernetes.io/backend-protocol: HTTPS``
or ``GRPCS``, also spelled ``kxds.io/backend-protocol``) or by the Service port
(``appProtocol: https``). The plain ``ns/svc/port`` cluster is shared by every
Ingress and by TLS passthrough, so TLS goes to a twin cluster named
``ns/svc/port/tls[/h2][/sni=H][/ca=S]`` (:func:`kxds.names.upstream_tls_cluster`)
with the same endpoints, and the routes of the asking Ingress are pointed at it.

SNI is ``kxds.io/backend-sni`` when given, else the Service's cluster DNS name
``<svc>.<ns>.svc`` (the ExternalName for ExternalName Services): it is the name
a certificate issued inside a cluster most commonly carries. Verification only
happens with ``kxds.io/backend-ca-secret: NAME`` (a Secret in the Ingress's
namespace with a ``ca.crt`` key): the backend's chain must lead to that CA and
its certificate must name the SNI. A CA Secret that is missing or unusable
makes the routes answer 503 instead of connecting unverified (fail closed).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from kxds import ir, names
from kxds.certs.check import CertError, check_ca_bundle
from kxds.diagnostics import Diagnostic, ObjectRef, Reason, show
from kxds.kube.models import ClusterState, Ingress, Service
from kxds.translators import backend_tls_policy

BACKEND_PROTOCOL = ("kxds.io/backend-protocol", "nginx.ingress.kubernetes.io/backend-protocol")
BACKEND_SNI = "kxds.io/backend-sni"
BACKEND_CA = "kxds.io/backend-ca-secret"
_T = TypeVar("_T", ir.Cluster, ir.Secret)
_TLS_PROTOCOLS = {"HTTPS": False, "GRPCS": True}
"""backend-protocol values meaning TLS, and whether they also mean HTTP/2."""
_H2C_PROTOCOLS = ("GRPC", "H2C")
"""backend-protocol values meaning HTTP/2 in plain text (a ``/h2`` twin cluster)."""
_PLAIN_PROTOCOLS = ("HTTP", "AUTO_HTTP")
"""HTTP/1.1, or what the Service port's ``appProtocol`` says (the cluster's own)."""
_UNSUPPORTED_PROTOCOLS = ("FCGI", "AJP")
"""The other values ingress-nginx accepts (case-insensitive), which kxds does not
implement."""


@dataclass(frozen=True, slots=True)
class _Want:
    """What one Ingress asks of its backends' TLS."""

    http2: bool
    sni: str | None
    ca: str | None
    """The CA Secret's name in the Ingress's namespace."""
    tls: bool = True
    """False: plain HTTP/2 (gRPC, h2c)."""
    sans: tuple[str, ...] = ()
    """Names checked instead of the SNI (``DNS:name``, ``URI:uri``): a BackendTLSPolicy's
    ``subjectAltNames``."""


def _ingress_want(ing: Ingress) -> _Want | None:
    ann = ing.meta.annotations
    proto = next((ann[k].strip().upper() for k in BACKEND_PROTOCOL if k in ann), "")
    if proto in _H2C_PROTOCOLS:
        return _Want(http2=True, sni=None, ca=None, tls=False)
    if proto not in _TLS_PROTOCOLS:
        return None
    return _Want(http2=_TLS_PROTOCOLS[proto], sni=ann.get(BACKEND_SNI) or None,
                 ca=ann.get(BACKEND_CA) or None)


def names_protocol(ing: Ingress) -> bool:
    """Whether ``ing`` has a backend-protocol annotation (:func:`protocol_diagnostics`
    reads no other Ingress)."""
    return any(k in ing.meta.annotations for k in BACKEND_PROTOCOL)


def protocol_diagnostics(ingresses: Iterable[Ingress]) -> list[Diagnostic]:
    """A diagnostic for each Ingress whose backend-protocol kxds does not serve as asked.

    Such backends are reached over plain HTTP/1.1, as ingress-nginx falls back
    to HTTP for an invalid value
    (https://kubernetes.github.io/ingress-nginx/user-guide/nginx-configuration/annotations/#backend-protocol).
    """
    out: list[Diagnostic] = []
    for ing in ingresses:
        key = next((k for k in BACKEND_PROTOCOL if k in ing.meta.annotations), None)
        if key is None:
            continue
        raw = ing.meta.annotations[key]
        value = raw.strip().upper()
        if value in _PLAIN_PROTOCOLS or value in _TLS_PROTOCOLS or value in _H2C_PROTOCOLS:
            continue
        reason = Reason.UNSUPPORTED if value in _UNSUPPORTED_PROTOCOLS else Reason.INVALID_VALUE
        what = "is not supported" if reason is Reason.UNSUPPORTED else (
            "is not one of HTTP, HTTPS, GRPC, GRPCS, H2C, AUTO_HTTP")
        out.append(Diagnostic(ing.meta.ref, f"metadata.annotations[{key}]", reason,
                              f"backend protocol {raw!r} {what}; its backends are reached "
                              "over plain HTTP/1.1"))
    return out


def _ports_by_cluster(state: ClusterState, clusters: Mapping[str, ir.Cluster]
                      ) -> dict[str, tuple[Service, str | None]]:
    """Every Service-port cluster of ``clusters`` -> (its Service, the port's appProtocol).

    Only the Service that the cluster was built for (its ref) is recorded, so a
    name two Services produce can never lend one's TLS settings to the other.
    """
    out: dict[str, tuple[Service, str | None]] = {}
    for svc in state.services.values():
        for p in svc.ports:
            name = names.service_cluster(svc.meta.namespace, svc.meta.name, p.port)
            cluster = clusters.get(name)
            if cluster is not None and cluster.ref == svc.meta.ref:
                out[name] = (svc, p.app_protocol)
    return out


_COLLISION = "\x00collision"
"""What :meth:`_Builder.twin` gives when the twin's name is held by other settings."""
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _is_dns_name(value: str) -> bool:
    """Whether ``value`` is a DNS name (RFC 1123 labels; what an SNI may carry)."""
    labels = value.lower().rstrip(".").split(".")
    return len(value) <= 253 and all(_DNS_LABEL.fullmatch(lbl) for lbl in labels)


def _default_sni(svc: Service) -> str:
    if svc.type == "ExternalName" and svc.external_name:
        return svc.external_name.rstrip(".")
    return f"{svc.meta.name}.{svc.meta.namespace}.svc"


class _Builder:
    """Collects the twin clusters, CA secrets and diagnostics while routes are rewritten."""

    def __init__(self, state: ClusterState, base: ir.IR) -> None:
        self.state = state
        self.clusters = {c.name: c for c in base.clusters}
        self.ports = _ports_by_cluster(state, self.clusters)
        self.assignments = {a.cluster: a for a in base.load_assignments}
        self.new_clusters: dict[str, ir.Cluster] = {}
        self.new_assignments: dict[str, ir.LoadAssignment] = {}
        self.secrets: dict[str, ir.Secret] = {}
        self.bad_ca: set[tuple[tuple[str, str], str]] = set()
        self.reported: set[tuple[ObjectRef, str]] = set()
        self.diagnostics: list[Diagnostic] = []
        self.policies = backend_tls_policy.plan(state)
        self.diagnostics.extend(self.policies.diagnostics)

    def ca_ok(self, ing: Ingress, name: str) -> bool:
        """Load the CA Secret ``name`` for ``ing``; report once per Ingress when unusable."""
        key = (ing.meta.namespace, name)
        if (ing.meta.key, name) in self.bad_ca:
            return False
        secret = self.state.secrets.get(key)
        ref = ObjectRef("Secret", *key)
        problem: tuple[Reason, str] | None = None
        if secret is None:
            problem = (Reason.SECRET_NOT_FOUND, f"{ref} not found")
        elif "ca.crt" not in secret.data:
            problem = (Reason.INVALID_SECRET, f"{ref} has no ca.crt key")
        else:
            try:
                check_ca_bundle(secret.data["ca.crt"])
                pem = secret.data["ca.crt"].decode("ascii")
            except (CertError, UnicodeDecodeError) as e:
                problem = (Reason.INVALID_SECRET, f"{ref}: ca.crt: {e}")
        if problem is not None:
            self.bad_ca.add((ing.meta.key, name))
            self.diagnostics.append(Diagnostic(
                ing.meta.ref, f"metadata.annotations[{BACKEND_CA}]", problem[0],
                f"{problem[1]}; its routes answer 503 rather than connect unverified"))
            return False
        sds = names.ca_secret(*key)
        self.secrets[sds] = ir.ValidationContext(name=sds, ref=ref, trusted_ca=pem)
        return True

    def twin(self, base_name: str, want: _Want, svc: Service) -> str | None:
        """The TLS twin of ``base_name`` for ``want``; None when the cluster is unknown."""
        base = self.clusters.get(base_name)
        if base is None:
            return None
        if not want.tls:
            return self._h2c_twin(base)
        name = names.upstream_tls_cluster(base_name, http2=want.http2, sni=want.sni,
                                          ca_secret=want.ca, sans=want.sans)
        validation = names.ca_secret(svc.meta.namespace, want.ca) if want.ca else None
        protocol = ir.UpstreamProtocol.HTTP2 if want.http2 else base.protocol
        kinds = [san.split(":", 1) for san in want.sans]
        cluster = dataclasses.replace(
            base, name=name, protocol=protocol, upstream_tls=ir.UpstreamTLS(
                sni=want.sni or _default_sni(svc), validation_secret=validation,
                alpn=("h2",) if want.http2 else (),
                dns_names=tuple(v for k, v in kinds if k == "DNS"),
                uris=tuple(v for k, v in kinds if k == "URI")))
        held = self.new_clusters.get(name)
        if held is not None:
            # The same name for other TLS settings would connect this route as
            # another asked (unverified, say): the first keeps it, this one fails closed.
            return name if held == cluster else _COLLISION
        self.new_clusters[name] = cluster
        if base_name in self.assignments:
            self.new_assignments[name] = dataclasses.replace(
                self.assignments[base_name], cluster=name)
        return name

    def report_once(self, ref: ObjectRef, field: str, reason: Reason, message: str) -> None:
        """Report a problem of ``ref``'s routes once, however many routes it has."""
        if (ref, field) not in self.reported:
            self.reported.add((ref, field))
            self.diagnostics.append(Diagnostic(ref, field, reason, message))

    def _h2c_twin(self, base: ir.Cluster) -> str:
        """The plain HTTP/2 twin ``<cluster>/h2`` (gRPC and h2c backends)."""
        if base.protocol is ir.UpstreamProtocol.HTTP2:
            return base.name  # the Service port says so already (appProtocol)
        name = f"{base.name}/h2"
        if name not in self.new_clusters:
            self.new_clusters[name] = dataclasses.replace(
                base, name=name, protocol=ir.UpstreamProtocol.HTTP2)
            if base.name in self.assignments:
                self.new_assignments[name] = dataclasses.replace(
                    self.assignments[base.name], cluster=name)
        return name

    def route(self, route: ir.Route, want: _Want | None) -> ir.Route:
        """``route`` with its backends moved to TLS twins where TLS is wanted."""
        if not isinstance(route.action, ir.Forward):
            return route
        backends: list[ir.WeightedBackend] = []
        for b in route.action.backends:
            svc, app_protocol = self.ports.get(b.cluster, (None, None))
            policy = (self.policies.by_cluster.get(b.cluster)
                      if route.ref.kind in _POLICY_KINDS and svc is not None else None)
            if policy is not None:  # a BackendTLSPolicy targets the port
                if policy.problem is not None:
                    return dataclasses.replace(route, action=ir.DirectResponse(status=503))
                assert svc is not None
                twin = self.twin(b.cluster, _Want(http2=want is _GRPC, sni=policy.sni,
                                                  ca=policy.ca, sans=policy.sans), svc)
                if twin == _COLLISION:
                    return dataclasses.replace(route, action=ir.DirectResponse(status=503))
                if policy.ca is not None:
                    sds = names.ca_secret(svc.meta.namespace, policy.ca)
                    self.secrets[sds] = self.policies.secrets[sds]
                backends.append(dataclasses.replace(b, cluster=twin) if twin else b)
                continue
            w = want
            if w is None and app_protocol is not None and app_protocol.lower() == "https":
                w = _Want(http2=False, sni=None, ca=None)
            if svc is None or w is None:
                backends.append(b)
                continue
            ing = self.state.ingresses.get((route.ref.namespace, route.ref.name))
            if w.ca is not None and (ing is None or not self.ca_ok(ing, w.ca)):
                return dataclasses.replace(route, action=ir.DirectResponse(status=503))
            if w.sni is not None and not _is_dns_name(w.sni):
                self.report_once(route.ref, f"metadata.annotations[{BACKEND_SNI}]",
                                 Reason.INVALID_VALUE, f"{show(w.sni)} is not a DNS name; "
                                 "its routes answer 503 rather than connect as not asked")
                return dataclasses.replace(route, action=ir.DirectResponse(status=503))
            twin = self.twin(b.cluster, w, svc)
            if twin == _COLLISION:
                self.report_once(route.ref, f"metadata.annotations[{BACKEND_SNI}]",
                                 Reason.CONFLICT, f"the TLS cluster of backend {b.cluster} for "
                                 "these settings has the name of another's; its routes answer "
                                 "503")
                return dataclasses.replace(route, action=ir.DirectResponse(status=503))
            backends.append(dataclasses.replace(b, cluster=twin) if twin else b)
        mirrors = route.action.mirrors
        if want is _GRPC:  # the copies of gRPC calls are gRPC calls too
            mirrors = tuple(dataclasses.replace(m, cluster=self._h2c_twin(base))
                            if (base := self.clusters.get(m.cluster)) is not None else m
                            for m in mirrors)
        return dataclasses.replace(route, action=dataclasses.replace(
            route.action, backends=tuple(backends), mirrors=mirrors))


_GRPC = _Want(http2=True, sni=None, ca=None, tls=False)
"""A GRPCRoute's backends speak plain HTTP/2 (gRPC)."""
_POLICY_KINDS = ("HTTPRoute", "GRPCRoute")
"""The Routes whose backends a BackendTLSPolicy applies to."""


def _want_of(state: ClusterState, ref: ObjectRef) -> _Want | None:
    if ref.kind == "GRPCRoute":
        return _GRPC
    if ref.kind != "Ingress":
        return None
    ing = state.ingresses.get((ref.namespace, ref.name))
    return _ingress_want(ing) if ing is not None else None


def has_https_port(svc: Service) -> bool:
    """Whether a port of ``svc`` says its backends speak TLS (``appProtocol: https``)."""
    return any(p.app_protocol is not None and p.app_protocol.lower() == "https"
               for p in svc.ports)


def apply_upstream_tls(base: ir.IR, state: ClusterState, tables: Iterable[str],
                       ingresses: Iterable[Ingress], https_ports: bool
                       ) -> tuple[ir.IR, list[Diagnostic]]:
    """Point the routes of ``tables`` that want backend TLS at TLS twin clusters.

    Returns the new IR (twin clusters, their endpoints and CA secrets added)
    and the diagnostics for unusable CA Secrets. ``ingresses``: those whose routes
    are in ``tables`` and have a backend-protocol annotation (:func:`names_protocol`;
    others may be among them); ``https_ports``: whether a Service has
    :func:`has_https_port`.
    """
    wanted = set(tables)
    asking = {ing.meta.key for ing in ingresses if _ingress_want(ing) is not None}
    if (not asking and not state.grpc_routes and not state.backend_tls_policies
            and not https_ports):
        # The common case, told before indexing every cluster (a route change
        # would otherwise pay for that at every rebuild): no backend speaks TLS.
        return base, []
    b = _Builder(state, base)
    tls_ports = {name for name, (_, proto) in b.ports.items()
                 if proto is not None and proto.lower() == "https"}
    if (not asking and not tls_ports and not state.grpc_routes
            and not state.backend_tls_policies):
        return base, []  # no https port that something routes to
    tls_ports |= set(b.policies.by_cluster)

    def concerned(r: ir.Route) -> bool:
        return r.ref.kind == "GRPCRoute" or (r.ref.namespace, r.ref.name) in asking or (
            isinstance(r.action, ir.Forward)
            and any(w.cluster in tls_ports for w in r.action.backends))

    new_tables: list[ir.RouteTable] = []
    for table in base.route_tables:
        if table.name not in wanted:
            new_tables.append(table)
            continue
        vhosts = tuple(
            dataclasses.replace(vh, routes=tuple(
                b.route(r, _want_of(state, r.ref)) if concerned(r) else r for r in vh.routes))
            if any(concerned(r) for r in vh.routes) else vh
            for vh in table.virtual_hosts)
        new_tables.append(dataclasses.replace(table, virtual_hosts=vhosts))
    return dataclasses.replace(
        base,
        clusters=_sorted_by_name(base.clusters, b.new_clusters),
        load_assignments=tuple(sorted(
            (*base.load_assignments, *b.new_assignments.values()), key=lambda a: a.cluster)),
        route_tables=tuple(new_tables),
        secrets=_sorted_by_name(base.secrets, b.secrets),
    ), b.diagnostics


def _sorted_by_name(old: tuple[_T, ...], new: Mapping[str, _T]) -> tuple[_T, ...]:
    merged = {x.name: x for x in old} | dict(new)
    return tuple(merged[k] for k in sorted(merged))
