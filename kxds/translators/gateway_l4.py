"""Gateway API beyond HTTP: TLS passthrough, TCP and UDP listeners and their Routes (pure).

* A ``TLS`` listener (``tls.mode: Passthrough``) on 443 or the edge HTTPS port
  shares the edge TLS listener with HTTPS listeners and Ingress TLS; on any
  other port, the TLS listener of that port with the HTTPS and TLS listeners
  there (Ingresses have none there; names are taken per port). Each
  TLSRoute (v1alpha2) attached to it gives a passthrough chain per SNI host
  (the intersection of the Route's and the listener's hostnames): the still
  encrypted stream goes to its backends, split by weight (``tcp_proxy``
  ``weighted_clusters``). A host an Ingress serves over TLS, an HTTPS
  listener's, or one an older TLSRoute took, is not taken (``Conflict``
  diagnostic): the older claim keeps it, the Ingress first. In ``Terminate``
  mode the chain carries the listener's certificate: Envoy terminates TLS and
  the backends get the decrypted stream.
* A ``TCP`` listener (any port but the edge's HTTP and HTTPS ones) becomes an
  edge :class:`~kxds.ir.TcpListener` on that port, bound by every edge Envoy;
  its TCPRoute's backends get the connections, split by weight.
* A ``UDP`` listener becomes an edge :class:`~kxds.ir.UdpListener`. Envoy's
  ``udp_proxy`` routes a listener's datagrams to one cluster (it has no
  weighted clusters), so a UDPRoute with several backends that have a share
  gets a cluster of its own (:func:`add_l4`): every backend's endpoints, one
  locality per backend weighted by the backend's weight, balanced by
  ``locality_weighted_lb_config``. udp_proxy picks a host per session (a
  client address and port), so sessions, not datagrams, are split by weight.

One rule per Route (these Routes have no matches to choose between rules:
more is ``UnsupportedValue``); one Route per TCP or UDP listener (the oldest;
the others get a ``Conflict`` diagnostic). A backend must be a Service port of
the listener's protocol (``BackendNotFound``, ``RefNotPermitted``,
``InvalidKind`` otherwise, as for HTTPRoute). When a backend with a share does
not resolve, or no backend has a share, the rule is not served: its
connections are refused (no chain, no listener), as an HTTPRoute rule answers
500. Client-IP rules (NetworkPolicy, ``loadBalancerSourceRanges``) of every
backend apply to the connection (a split may reach any of them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kxds import ir, names
from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.kube.gateway_models import GROUP, BackendRef, L4Route, TCPRoute, TLSRoute
from kxds.kube.models import ClusterState, Key
from kxds.translators.access import all_admit, route_access
from kxds.translators.config import TranslateConfig
from kxds.translators.gateway import ListenerPlan, granted
from kxds.translators.gateway_routes import HasCluster, Target, attach, route_hosts
from kxds.translators.gateway_status import (
    CONTROLLER_NAME,
    Condition,
    ParentStatus,
    RouteStatus,
)
from kxds.translators.gateway_tls import with_tls_chains
from kxds.translators.network_policy import PolicyIndex
from kxds.translators.services import port_cluster


@dataclass(frozen=True, slots=True, eq=False)
class L4Result:
    """The TLS, TCP and UDP Routes' share of the edge IR, and their status."""

    passthrough: Mapping[int, tuple[ir.PassthroughChain, ...]] = field(default_factory=dict)
    """The TLSRoutes' chains by the port of the TLS listener serving them."""
    tcp: tuple[ir.TcpListener, ...] = ()
    udp: tuple[ir.UdpListener, ...] = ()
    backends: frozenset[Target] = frozenset()
    diagnostics: tuple[Diagnostic, ...] = ()
    attached: Mapping[tuple[Key, str], int] = field(default_factory=dict)
    statuses: tuple[RouteStatus, ...] = ()
    secrets: tuple[ir.TLSCertificate, ...] = ()
    """The certificates of the TLS listeners in Terminate mode that serve a chain."""
    splits: tuple[UdpSplit, ...] = ()
    """The clusters that split a UDPRoute's sessions between its backends."""


@dataclass(frozen=True, slots=True)
class UdpSplit:
    """A UDPRoute's backends by weight, as one cluster (udp_proxy routes to one)."""

    cluster: str
    ref: ObjectRef
    weighted: tuple[ir.ClusterWeight, ...]


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a rule's connections go: clusters by weight, and the clients admitted."""

    weighted: tuple[ir.ClusterWeight, ...]
    access: ir.AccessPolicy | None
    backends: tuple[Target, ...]
    """The Services' clusters (built only once the Route is served somewhere)."""


def _age(route: L4Route) -> tuple[bool, str, str, str, str]:
    ts = route.meta.creation_timestamp
    return (ts == "", ts, route.meta.namespace, route.meta.name, route.meta.ref.kind)


def _resolve(state: ClusterState, route: L4Route, b: BackendRef, where: str, protocol: str,
             clusters: HasCluster, policies: PolicyIndex | None,
             diagnostics: list[Diagnostic]) -> tuple[str, ir.AccessPolicy | None] | Condition:
    """The cluster of a backend reference and its client-IP rules, or why not."""
    ns = b.namespace or route.meta.namespace
    name = f"{ns}/{b.name}"
    kind = route.meta.ref.kind
    if b.group != "" or b.kind != "Service":
        return Condition("ResolvedRefs", False, "InvalidKind",
                         f"{where}: {b.group or 'core'}/{b.kind} {name} is not a Service")
    if ns != route.meta.namespace and not granted(state, kind, route.meta.namespace, "",
                                                  "Service", ns, b.name):
        return Condition("ResolvedRefs", False, "RefNotPermitted",
                         f"{where}: no ReferenceGrant in {ns} allows {kind}s of "
                         f"{route.meta.namespace} to use Service {name}")
    service = state.services.get((ns, b.name))
    port = next((p for p in service.ports if p.port == b.port and p.protocol == protocol),
                None) if service is not None else None
    cluster = port_cluster(service, port) if service is not None and port is not None else None
    if service is None or port is None or cluster is None \
            or not clusters((ns, b.name), cluster):
        what = "not found" if service is None else f"has no {protocol} port {b.port}"
        return Condition("ResolvedRefs", False, "BackendNotFound",
                         f"{where}: Service {name} {what}")
    access, problems = route_access(state, None, service, port, policies)
    diagnostics.extend(problems)
    return cluster, access


def _target(state: ClusterState, route: L4Route, protocol: str, clusters: HasCluster,
            policies: PolicyIndex | None, out: _Builder
            ) -> tuple[_Target | None, Condition, list[str]]:
    """The Route's one rule as a target (None: refused), ``ResolvedRefs``, and what of
    it kxds cannot serve."""
    unsupported = ["spec.rules: only one rule is supported (this Route kind has no "
                   "matches to choose between rules)"] if len(route.rules) > 1 else []
    problems: list[Condition] = []
    idle: set[int] = set()  # problems of backends without a share: nothing is refused
    weighted: list[ir.ClusterWeight] = []
    accesses: list[ir.AccessPolicy | None] = []
    backends: list[Target] = []
    broken = False
    for k, b in enumerate(route.rules[0].backend_refs if route.rules else ()):
        found = _resolve(state, route, b, f"spec.rules[0].backendRefs[{k}]", protocol,
                         clusters, policies, out.diagnostics)
        if isinstance(found, Condition):
            if b.weight == 0:
                idle.add(len(problems))
            problems.append(found)
            broken = broken or b.weight > 0
        elif b.weight > 0:
            weighted.append(ir.ClusterWeight(cluster=found[0], weight=b.weight))
            accesses.append(found[1])
            backends.append(((b.namespace or route.meta.namespace, b.name), found[0]))
    for i, c in enumerate(problems):
        where, what = c.message.split(": ", 1)
        out.diagnostics.append(Diagnostic(
            route.meta.ref, where, Reason.BACKEND_NOT_FOUND if c.reason == "BackendNotFound"
            else Reason.NOT_ALLOWED, f"{what}; " + ("it has weight 0, so no share is lost"
                                                    if i in idle else
                                                    "the Route's connections are refused")))
    resolved = (Condition("ResolvedRefs", True, "ResolvedRefs", "") if not problems else
                Condition("ResolvedRefs", False, problems[0].reason,
                          "; ".join(c.message for c in problems)))
    if broken or not weighted:
        return None, resolved, unsupported
    return (_Target(tuple(weighted), all_admit(accesses), tuple(backends)), resolved,
            unsupported)


@dataclass(slots=True)
class _Builder:
    config: TranslateConfig
    sni_taken: dict[tuple[int, str], str]
    """(port, SNI name) -> who serves it already (Ingresses, HTTPS listeners, older
    TLSRoutes)."""
    chains: dict[int, list[ir.PassthroughChain]] = field(default_factory=dict)
    tcp: dict[tuple[Key, str], ir.TcpListener] = field(default_factory=dict)
    udp: dict[tuple[Key, str], ir.UdpListener] = field(default_factory=dict)
    owners: dict[tuple[Key, str], ObjectRef] = field(default_factory=dict)
    backends: set[Target] = field(default_factory=set)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    attached: dict[tuple[Key, str], int] = field(default_factory=dict)
    certificates: Mapping[tuple[Key, str], ir.TLSCertificate] = field(default_factory=dict)
    """Each TLS listener in Terminate mode whose certificate resolved -> that certificate."""
    secrets: dict[str, ir.TLSCertificate] = field(default_factory=dict)
    splits: dict[str, UdpSplit] = field(default_factory=dict)

    def serve(self, route: L4Route, plan: ListenerPlan, target: _Target) -> None:
        """Put ``route``'s target on the listener of ``plan``."""
        ref, lis = route.meta.ref, plan.listener
        if isinstance(route, TLSRoute):
            https = names.https_listener(plan.port)
            cert = (self.certificates.get((plan.gateway, lis.name))
                    if lis.tls is not None and lis.tls.mode == "Terminate" else None)
            for host in route_hosts(lis.hostname, route.hostnames):
                owner = self.sni_taken.get((plan.port, host))
                if owner is not None:
                    if owner != str(ref):
                        self.diagnostics.append(Diagnostic(
                            ref, "spec.hostnames", Reason.CONFLICT,
                            f"SNI {host or '(any)'} is already served by {owner}; not "
                            "served for this Route"))
                    continue
                self.sni_taken[(plan.port, host)] = str(ref)
                self.backends.update(target.backends)
                self.chains.setdefault(plan.port, []).append(ir.PassthroughChain(
                    name=names.tls_chain(https, "tlsroute", host or "*"),
                    server_names=(host,) if host else (), cluster=target.weighted[0].cluster,
                    access=target.access, refs=(ref,),
                    weighted=target.weighted if len(target.weighted) > 1 else (),
                    secret=cert.name if cert is not None else None))
                if cert is not None:
                    self.secrets.setdefault(cert.name, cert)
            return
        key = (plan.gateway, lis.name)
        if key in self.owners:
            self.diagnostics.append(Diagnostic(
                ref, "spec.parentRefs", Reason.CONFLICT,
                f"listener {lis.name} of Gateway {key[0][0]}/{key[0][1]} already forwards to "
                f"{self.owners[key]} (the oldest Route); not served there"))
            return
        self.owners[key] = ref
        self.backends.update(target.backends)
        proto = "tcp" if isinstance(route, TCPRoute) else "udp"
        name = names.cap(f"gateway/{key[0][0]}/{key[0][1]}/{lis.name}/{lis.port}/{proto}")
        if isinstance(route, TCPRoute):
            self.tcp[key] = ir.TcpListener(
                name=name, ref=ref, address=self.config.listen_address, port=lis.port,
                cluster=target.weighted[0].cluster, access=target.access,
                weighted=target.weighted if len(target.weighted) > 1 else ())
        else:
            self.udp[key] = ir.UdpListener(
                name=name, ref=ref, address=self.config.listen_address, port=lis.port,
                cluster=self.udp_cluster(ref, target.weighted), access=target.access)

    def udp_cluster(self, ref: ObjectRef, weighted: tuple[ir.ClusterWeight, ...]) -> str:
        """The one cluster a UDPRoute's datagrams go to: its backend's, or a split's."""
        shares: dict[str, int] = {}  # one locality per backend: a repeated one adds up
        for w in weighted:
            shares[w.cluster] = shares.get(w.cluster, 0) + w.weight
        if len(shares) == 1:
            return weighted[0].cluster
        cluster = names.udp_split_cluster(ref.namespace, ref.name)
        self.splits[cluster] = UdpSplit(cluster, ref, tuple(
            ir.ClusterWeight(cluster=c, weight=n) for c, n in sorted(shares.items())))
        return cluster


def translate_l4(state: ClusterState, config: TranslateConfig,
                 listeners: Mapping[Key, list[ListenerPlan]], clusters: HasCluster,
                 policies: PolicyIndex | None, sni_taken: Mapping[tuple[int, str], str],
                 certificates: Mapping[tuple[Key, str], ir.TLSCertificate] | None = None
                 ) -> L4Result:
    """Every TLSRoute, TCPRoute and UDPRoute attached to our listeners, oldest first.

    ``sni_taken``: (port, SNI name) already served (by Ingresses and HTTPS listeners)
    -> by whom.
    """
    out = _Builder(config, dict(sni_taken), certificates=certificates or {})
    routes: list[L4Route] = [*state.tls_routes.values(), *state.tcp_routes.values(),
                             *state.udp_routes.values()]
    # A Route with no parent of ours whose status still holds entries of ours gets an
    # empty status: the writer takes those entries back.
    statuses = [s for r in sorted(routes, key=_age)
                if (s := _route(state, r, listeners, clusters, policies, out)).parents
                or CONTROLLER_NAME in r.status_controllers]
    return L4Result(
        passthrough={port: tuple(sorted(chains, key=lambda c: c.name))
                     for port, chains in sorted(out.chains.items())},
        tcp=tuple(sorted(out.tcp.values(), key=lambda lis: lis.name)),
        udp=tuple(sorted(out.udp.values(), key=lambda lis: lis.name)),
        backends=frozenset(out.backends), diagnostics=tuple(out.diagnostics),
        attached=out.attached, statuses=tuple(sorted(statuses, key=lambda s: s.ref)),
        secrets=tuple(out.secrets[k] for k in sorted(out.secrets)),
        splits=tuple(out.splits[k] for k in sorted(out.splits)))


_PROTOCOL = {"TLSRoute": "TCP", "TCPRoute": "TCP", "UDPRoute": "UDP"}


def _route(state: ClusterState, route: L4Route, listeners: Mapping[Key, list[ListenerPlan]],
           clusters: HasCluster, policies: PolicyIndex | None, out: _Builder) -> RouteStatus:
    target, resolved, unsupported = _target(state, route, _PROTOCOL[route.meta.ref.kind],
                                            clusters, policies, out)
    parents: list[ParentStatus] = []
    for p in route.parent_refs:
        gw_key = (p.namespace or route.meta.namespace, p.name)
        if p.group != GROUP or p.kind != "Gateway" or gw_key not in listeners:
            continue  # not a parent of ours: its controller reports it
        accepted, attached = attach(state, route, p, listeners[gw_key])
        if accepted.status and unsupported:
            accepted = Condition("Accepted", False, "UnsupportedValue", "; ".join(unsupported))
        parents.append(ParentStatus(parent=p, conditions=(accepted, resolved)))
        if not accepted.status:
            out.diagnostics.append(Diagnostic(
                route.meta.ref, "spec.parentRefs", Reason.UNSUPPORTED
                if accepted.reason == "UnsupportedValue" else Reason.NOT_ALLOWED,
                f"{p.name}: {accepted.reason}: {accepted.message}"))
            continue
        for plan in attached:
            key = (plan.gateway, plan.listener.name)
            out.attached[key] = out.attached.get(key, 0) + 1
            if target is not None:
                out.serve(route, plan, target)
    return RouteStatus(ref=route.meta.ref, generation=route.meta.generation,
                       parents=tuple(parents))


def add_l4(base: ir.IR, l4: L4Result, config: TranslateConfig
           ) -> tuple[ir.IR, tuple[Diagnostic, ...]]:
    """``base`` with the TLSRoutes' chains on the TLS listener of their port (the
    edge's, or a Gateway listener's own; made when missing), the TCP and UDP
    listeners, and the clusters of UDP splits; and the problems found."""
    if not (l4.passthrough or l4.tcp or l4.udp):
        return base, ()
    base, udp, problems = _add_splits(base, l4)
    base = with_tls_chains(base, l4.passthrough, config)
    listeners: list[ir.Listener] = [*base.listeners, *l4.tcp, *udp]
    secrets = {s.name: s for s in base.secrets}
    for cert in l4.secrets:
        secrets.setdefault(cert.name, cert)
    return dataclasses.replace(base, listeners=tuple(sorted(listeners, key=lambda x: x.name)),
                               secrets=tuple(secrets[k] for k in sorted(secrets))), problems


def _add_splits(base: ir.IR, l4: L4Result
                ) -> tuple[ir.IR, tuple[ir.UdpListener, ...], tuple[Diagnostic, ...]]:
    """``base`` with a cluster and load assignment per UDP split, the UDP listeners
    to serve, and the problems.

    A split's load assignment holds its backends' endpoints as they are now, so it
    changes with their EndpointSlices (an EDS update; the cluster stays). A backend
    whose cluster has no endpoints of its own here (one resolved by DNS: an
    ExternalName Service) cannot join the split: the Route's datagrams are refused.
    """
    if not l4.splits:
        return base, l4.udp, ()
    eds = {c.name for c in base.clusters if c.kind is ir.ClusterKind.EDS}
    assignments = {a.cluster: a for a in base.load_assignments}
    clusters, added, refused = list(base.clusters), list(base.load_assignments), set()
    problems: list[Diagnostic] = []
    for split in l4.splits:
        missing = [w.cluster for w in split.weighted
                   if w.cluster not in eds or w.cluster not in assignments]
        if missing:
            refused.add(split.cluster)
            problems.append(Diagnostic(
                split.ref, "spec.rules[0].backendRefs", Reason.UNSUPPORTED,
                f"cluster {', '.join(missing)} has no endpoints of its own here (resolved "
                "by DNS, or its Service not translated) to split datagrams by weight; "
                "the Route's datagrams are refused"))
            continue
        clusters.append(ir.Cluster(name=split.cluster, ref=split.ref,
                                   protocol=ir.UpstreamProtocol.UDP, locality_weighted=True))
        added.append(ir.LoadAssignment(cluster=split.cluster, ref=split.ref, groups=tuple(
            ir.EndpointGroup(name=w.cluster, weight=w.weight,
                             endpoints=assignments[w.cluster].endpoints)
            for w in split.weighted)))
    base = dataclasses.replace(
        base, clusters=tuple(sorted(clusters, key=lambda c: c.name)),
        load_assignments=tuple(sorted(added, key=lambda a: a.cluster)))
    return (base, tuple(lis for lis in l4.udp if lis.cluster not in refused),
            tuple(problems))


def sni_owners(edge_port: int, ingress_names: Iterable[str],
               https: Iterable[tuple[int, str | None, ObjectRef]]) -> dict[tuple[int, str], str]:
    """(port, SNI name) -> who serves it: the Ingresses' names (on the edge TLS
    listener, ``edge_port``), then the HTTPS listeners' (on their port's)."""
    owners = dict.fromkeys(((edge_port, name) for name in ingress_names), "an Ingress")
    for port, host, gateway in https:
        owners.setdefault((port, host or ""), f"an HTTPS listener of {gateway}")
    return owners

