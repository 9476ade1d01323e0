"""Gateway API ``HTTPS`` listeners on the edge TLS listener, and the Gateways' own ports (pure).

An ``HTTPS`` listener (``tls.mode: Terminate``) on 443 or the edge HTTPS port
(``--https-port``: the edge Service publishes 443 there) becomes one
terminated filter chain of the edge's :class:`~kxds.ir.TlsListener` (on any
other port, of that port's own TLS listener, shared with the ``TLS`` listeners
there through :func:`with_tls_chains`; :func:`add_http_ports` gives the ``HTTP``
listeners on such ports theirs):

* selected by SNI, ``server_names`` the listener's ``hostname`` (``*.``
  wildcards as Envoy reads them); a listener without a hostname is the chain
  without names, taken by clients whose SNI no other chain names;
* its certificate the first of ``certificateRefs``: a ``kubernetes.io/tls``
  Secret whose pair parses, matches and is valid now (another namespace needs
  a ReferenceGrant there). Anything else is ``ResolvedRefs=False``
  (``InvalidCertificateRef``, ``RefNotPermitted``) and the listener is not
  served: no chain, so clients naming its hostname are refused the handshake
  (never served with another certificate). Further references must resolve
  too; only the first is served (a diagnostic says so);
* its own route table (``https/<port>/gateway/<ns>/<gateway>/<listener>``)
  holding only the routes attached to that listener: a request reaches only
  the routes of the listener its SNI chose.

**Ingress TLS and a Gateway HTTPS listener on the same SNI name: the Ingress
wins** (as on the HTTP listener). A name an Ingress of ours claims for TLS
(``spec.tls`` hosts, passthrough hosts; the name-less chain when
``--default-certificate`` is set) makes the Gateway listener with that very
hostname ``Conflicted=True`` (``HostnameConflict``) and not served (on the edge
TLS listener only: a listener on a port of its own shares no SNI name with
Ingresses). Different
names (an Ingress's ``a.example.com`` and a listener's ``*.example.com``)
coexist: Envoy picks the most specific SNI match.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from kxds import ir, names
from kxds.certs.check import CertError, Inspected, check_validity, inspect_key_pair
from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.kube.gateway_models import Gateway
from kxds.kube.models import ClusterState, Ingress, Key
from kxds.translators.config import TranslateConfig
from kxds.translators.gateway import granted
from kxds.translators.gateway_status import Condition
from kxds.translators.ingress import http_listener, unavailable_without
from kxds.translators.tls import TlsResult
from kxds.translators.tls_plan import PASSTHROUGH, TLS_SECRET_TYPE, flag
from kxds.translators.upstream_tls import apply_upstream_tls

Inspect = Callable[[Key, bytes, bytes], Inspected]
"""Inspect the (certificate, key) pair of the TLS Secret ``key``."""
ListenerKey = tuple[Key, str]
"""(Gateway, listener name)."""


@dataclass(frozen=True, slots=True, eq=False)
class Certificates:
    """Each HTTPS listener's certificate, or the ``ResolvedRefs`` condition saying why not."""

    served: Mapping[ListenerKey, ir.TLSCertificate]
    problems: Mapping[ListenerKey, Condition]
    diagnostics: tuple[Diagnostic, ...]
    bounds: frozenset[dt.datetime]
    """The validity bounds of every certificate checked (a rebuild is due at each)."""


def _inspect(_: Key, crt: bytes, key: bytes) -> Inspected:
    return inspect_key_pair(crt, key)


def _load(state: ClusterState, key: Key, inspect: Inspect, now: dt.datetime | None,
          bounds: set[dt.datetime]) -> ir.TLSCertificate | str:
    """The certificate of Secret ``key``, or why it cannot be served."""
    name = f"{key[0]}/{key[1]}"
    secret = state.secrets.get(key)
    if secret is None:
        return f"Secret {name} not found"
    if secret.type != TLS_SECRET_TYPE:
        return f"Secret {name} has type {secret.type}, not {TLS_SECRET_TYPE}"
    crt, pem = secret.data.get("tls.crt"), secret.data.get("tls.key")
    if not crt or not pem:
        return f"Secret {name} lacks tls.crt or tls.key"
    found = inspect(key, crt, pem)
    bounds.update(b for b in (found.not_before, found.not_after) if b is not None)
    try:
        check_validity(found, now)
        return ir.TLSCertificate(name=names.secret(*key), ref=ObjectRef("Secret", *key),
                                 certificate_chain=crt.decode("ascii"),
                                 private_key=pem.decode("ascii"))
    except (CertError, UnicodeDecodeError) as e:
        return f"Secret {name}: {e}"


def resolve_certificates(state: ClusterState, gateways: Iterable[Gateway],
                         config: TranslateConfig, inspect: Inspect | None = None
                         ) -> Certificates:
    """The certificate of every HTTPS listener of ``gateways`` that names certificates."""
    served: dict[ListenerKey, ir.TLSCertificate] = {}
    problems: dict[ListenerKey, Condition] = {}
    diagnostics: list[Diagnostic] = []
    bounds: set[dt.datetime] = set()
    for gw in gateways:
        ns = gw.meta.namespace
        for i, lis in enumerate(gw.listeners):
            where = (gw.meta.key, lis.name)
            if lis.protocol != "HTTPS" and (lis.tls is None or lis.tls.mode != "Terminate"):
                continue
            if lis.tls is None or not lis.tls.certificate_refs:
                problems[where] = Condition(
                    "ResolvedRefs", False, "InvalidCertificateRef",
                    "the listener names no certificate (tls.certificateRefs; tls.options "
                    "alone are not supported)")
                continue
            first: ir.TLSCertificate | None = None
            for j, ref in enumerate(lis.tls.certificate_refs):
                target = ref.namespace or ns
                name = f"{target}/{ref.name}"
                if ref.group != "" or ref.kind != "Secret":
                    cond = Condition("ResolvedRefs", False, "InvalidCertificateRef",
                                     f"{ref.group or 'core'}/{ref.kind} {name} is not a Secret")
                elif target != ns and not granted(state, "Gateway", ns, "", "Secret", target,
                                                  ref.name):
                    cond = Condition("ResolvedRefs", False, "RefNotPermitted",
                                     f"no ReferenceGrant in {target} allows Gateways of {ns} "
                                     f"to use Secret {name}")
                else:
                    loaded = _load(state, (target, ref.name), inspect or _inspect,
                                   config.tls_now, bounds)
                    if isinstance(loaded, ir.TLSCertificate):
                        if first is None:
                            first = loaded
                        else:
                            diagnostics.append(Diagnostic(
                                gw.meta.ref, f"spec.listeners[{i}].tls.certificateRefs[{j}]",
                                Reason.UNSUPPORTED, f"only the first certificate is served; "
                                f"Secret {name} is not"))
                        continue
                    cond = Condition("ResolvedRefs", False, "InvalidCertificateRef", loaded)
                problems.setdefault(where, cond)
            if first is not None and where not in problems:
                served[where] = first
    return Certificates(served, problems, tuple(diagnostics), frozenset(bounds))


def ingress_sni_names(ingresses: Iterable[Ingress], config: TranslateConfig) -> frozenset[str]:
    """The SNI names Ingresses of ours claim on the edge TLS listener (``""``: the chain
    without names, the default certificate's): a Gateway listener of the same
    hostname yields to them."""
    out: set[str] = {""} if config.default_certificate is not None else set()
    for ing in ingresses:
        rule_hosts = {r.host.lower() for r in ing.rules if r.host}
        if flag(ing, PASSTHROUGH, False, []):
            out |= rule_hosts
            continue
        for t in ing.tls:
            out |= {h.lower() for h in t.hosts} if t.hosts else rule_hosts
    return frozenset(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayChain:
    """One served HTTPS listener: its SNI name, certificate and routes per host."""

    gateway: ObjectRef
    listener: str
    hostname: str | None
    certificate: ir.TLSCertificate
    by_host: Mapping[str, tuple[ir.Route, ...]]
    """Host (``""``: every host) -> routes in Envoy order, wider hosts' routes after."""
    port: int
    """The port of the Envoy TLS listener serving it: the edge HTTPS port, or the
    listener's own."""


def route_table_name(chain: GatewayChain) -> str:
    """``https/<port>/gateway/<ns>/<gateway>/<listener>``."""
    ref = chain.gateway
    return names.cap(f"{names.https_listener(chain.port)}/gateway/"
                     f"{ref.namespace}/{ref.name}/{chain.listener}")


def _table(name: str, chain: GatewayChain) -> ir.RouteTable:
    vhosts = [ir.VirtualHost(name=names.virtual_host(host), domains=(host or "*",),
                             routes=routes, refs=tuple(sorted({r.ref for r in routes})))
              for host, routes in sorted(chain.by_host.items())]
    return ir.RouteTable(name=name, virtual_hosts=tuple(vhosts))


def add_chains(base: ir.IR, chains: Iterable[GatewayChain], config: TranslateConfig
               ) -> tuple[ir.IR, list[str]]:
    """``base`` with a terminated chain, a route table and a certificate per HTTPS
    listener; the TLS listener of each port (the edge's, or a listener's own) is
    created when missing (the Ingresses made none). Returns the IR and the new
    route tables' names."""
    by_port: dict[int, list[ir.TerminatedChain]] = {}
    tables: list[ir.RouteTable] = []
    secrets = {s.name: s for s in base.secrets}
    for c in chains:
        listener = names.https_listener(c.port)
        table = route_table_name(c)
        tables.append(_table(table, c))
        secrets.setdefault(c.certificate.name, c.certificate)
        by_port.setdefault(c.port, []).append(ir.TerminatedChain(
            name=names.tls_chain(listener, "gateway", table.removeprefix(f"{listener}/gateway/")),
            server_names=(c.hostname,) if c.hostname else (), secret=c.certificate.name,
            route_table=table, min_tls_version=config.min_tls_version,  # type: ignore[arg-type]
            refs=(c.gateway, c.certificate.ref)))
    if not by_port:
        return base, []
    base = with_tls_chains(base, by_port, config)
    return dataclasses.replace(
        base, route_tables=tuple(sorted((*base.route_tables, *tables), key=lambda t: t.name)),
        secrets=tuple(secrets[k] for k in sorted(secrets))), [t.name for t in tables]


TlsChain = ir.TerminatedChain | ir.PassthroughChain


def with_tls_chains(base: ir.IR, by_port: Mapping[int, Iterable[TlsChain]],
                    config: TranslateConfig) -> ir.IR:
    """``base`` with ``by_port``'s chains on the TLS listener of each port: the edge's,
    or that of a Gateway's own port (made when missing, as the edge's is when no
    Ingress made it). The one way HTTPS listeners' chains and TLSRoutes' chains reach
    a port, so both share it, split by SNI."""
    listeners = {lis.name: lis for lis in base.listeners}
    for port, new_chains in by_port.items():
        name = names.https_listener(port)
        old = listeners.get(name)
        kept: tuple[TlsChain, ...] = old.chains if isinstance(old, ir.TlsListener) else ()
        merged = tuple(sorted((*kept, *new_chains), key=lambda ch: ch.name))
        listeners[name] = (dataclasses.replace(old, chains=merged)
                           if isinstance(old, ir.TlsListener) else
                           ir.TlsListener(name=name, address=config.listen_address, port=port,
                                          chains=merged, client_ip=config.client_ip,
                                          http=config.http))
    return dataclasses.replace(base, listeners=tuple(listeners[k] for k in sorted(listeners)))


def add_http_ports(base: ir.IR, by_port: Mapping[int, Mapping[str, tuple[ir.Route, ...]]],
                   config: TranslateConfig) -> tuple[ir.IR, list[str]]:
    """``base`` with an HTTP listener and its route table per port of Gateway HTTP
    listeners beside the edge's own (the same listener as the edge HTTP one, on
    another port, with only those listeners' routes). Returns the IR and the new
    route tables' names."""
    listeners = [http_listener(config, port) for port in sorted(by_port)]
    tables = [ir.RouteTable(name=lis.route_table, virtual_hosts=tuple(
        ir.VirtualHost(name=names.virtual_host(host), domains=(host or "*",), routes=routes,
                       refs=tuple(sorted({r.ref for r in routes})))
        for host, routes in sorted(by_port[lis.port].items()))) for lis in listeners]
    if not listeners:
        return base, []
    return dataclasses.replace(
        base, listeners=tuple(sorted((*base.listeners, *listeners), key=lambda x: x.name)),
        route_tables=tuple(sorted((*base.route_tables, *tables), key=lambda t: t.name))
    ), [t.name for t in tables]


class _Served(Protocol):
    """What :func:`gateway_https` reads of the Gateway API front-end's result."""

    @property
    def chains(self) -> tuple[GatewayChain, ...]: ...
    @property
    def bounds(self) -> frozenset[dt.datetime]: ...
    @property
    def http_ports(self) -> Mapping[int, Mapping[str, tuple[ir.Route, ...]]]: ...


def gateway_https(secured: TlsResult, state: ClusterState, config: TranslateConfig,
                  served: _Served, https_ports: bool,
                  clusters: frozenset[str] | None = None) -> TlsResult:
    """The edge IR after Ingress TLS, with the Gateways' own listeners added: the HTTPS
    listeners' chains (on the edge TLS listener or their port's) and the HTTP
    listeners on ports of their own, their GRPCRoute and TLS backends moved to their
    twin clusters, as on the edge HTTP table.

    ``https_ports``: whether a Service port has ``appProtocol: https`` (see
    :func:`~kxds.translators.upstream_tls.apply_upstream_tls`); ``clusters``: when
    some Service's translation failed, the clusters that exist (routes of the new
    tables to others answer 503, as on the edge table)."""
    if not served.chains and not served.http_ports:
        return secured
    base, tables = add_chains(secured.ir, served.chains, config)
    base, plain = add_http_ports(base, served.http_ports, config)
    tables += plain
    if clusters is not None:
        base = dataclasses.replace(base, route_tables=tuple(
            unavailable_without(t, clusters) if t.name in tables else t
            for t in base.route_tables))
    # The new tables hold Gateway API routes only: no Ingress asks anything of them.
    base, diagnostics = apply_upstream_tls(base, state, tables, (), https_ports)
    seen: dict[str, ir.LoadAssignment] = {}
    for a in base.load_assignments:
        seen.setdefault(a.cluster, a)  # the twins the HTTP tables already made come twice
    base = dataclasses.replace(base, load_assignments=tuple(seen[k] for k in sorted(seen)))
    return TlsResult(base, [*secured.diagnostics, *diagnostics],
                     secured.bounds | served.bounds)
