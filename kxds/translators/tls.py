"""TLS at the edge: certificates by SNI, passthrough, HTTP -> HTTPS redirects, backend TLS.

:func:`apply_tls` takes the IR the ingress translator built (an HTTP listener
and its route table) and adds what Ingress ``spec.tls`` and the TLS
annotations ask for:

* one :class:`~kxds.ir.TlsListener` on ``config.https_port`` with one
  terminated chain per certificate, selected by SNI (``server_names`` = the
  TLS hosts using it, ``*.`` wildcards included), plus a chain without names
  for ``config.default_certificate``; without one, clients sending no SNI or
  an unknown one get no chain and Envoy closes the connection;
* one route table of the same name holding the HTTP virtual hosts of the
  hosts that chains serve (same routes as plain HTTP);
* certificates as SDS secrets (``ns/name``), only named by the listener, so a
  rotated Secret changes that secret resource alone;
* passthrough chains (``nginx.ingress.kubernetes.io/ssl-passthrough`` or
  ``kxds.io/tls-passthrough``): the rule's host is the SNI, the backend of its
  ``/`` path (else its first path) gets the still-encrypted TCP stream;
* on the HTTP route table, 301 redirects to HTTPS following ingress-nginx:
  ``ssl-redirect`` (default true) applies to routes of hosts that have TLS,
  ``force-ssl-redirect`` redirects even without TLS
  (https://kubernetes.github.io/ingress-nginx/user-guide/nginx-configuration/annotations/#server-side-https-enforcement-through-redirect).
  Like ingress-nginx, the redirect names the HTTPS port unless it is 443.

Fail closed: a TLS host whose Secret is missing or unusable (wrong type,
malformed PEM, key not matching, expired or not yet valid, host not among the
certificate's names) gets no chain, and its plain-HTTP routes redirect to
HTTPS whatever ``ssl-redirect`` says: it is never served in plaintext in
place of TLS. Passthrough hosts always redirect too (their backend speaks
TLS). Other hosts are unaffected.

Several Ingresses claiming one TLS host: the oldest (creation time, then
namespace/name) wins, as in ingress-nginx; the others get a CONFLICT
diagnostic. The only input from the clock is ``now``, given by the caller, which
validity is checked against (the controller rebuilds when a certificate's
validity changes); None checks no validity period.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from kxds import ir, names
from kxds.certs.check import Inspected, inspect_key_pair
from kxds.diagnostics import Diagnostic, ObjectRef
from kxds.kube.models import ClusterState, Ingress, Key
from kxds.translators import client_cert
from kxds.translators.client_cert import apply_client_certs, plan_client_certs
from kxds.translators.config import TranslateConfig
from kxds.translators.network_policy import PolicyIndex
from kxds.translators.tls_plan import (
    PASSTHROUGH,
    Claim,
    Inspect,
    PlanMemo,
    Planner,
    flag,
    plan,
)
from kxds.translators.upstream_tls import (
    apply_upstream_tls,
    names_protocol,
    protocol_diagnostics,
)

SSL_REDIRECT = ("kxds.io/ssl-redirect", "nginx.ingress.kubernetes.io/ssl-redirect")
FORCE_SSL_REDIRECT = ("kxds.io/force-ssl-redirect",
                      "nginx.ingress.kubernetes.io/force-ssl-redirect")


_FLAGS = (*PASSTHROUGH, *SSL_REDIRECT, *FORCE_SSL_REDIRECT)


def concerns(ing: Ingress) -> bool:
    """Whether :func:`apply_tls` reads ``ing``: it has TLS entries, or an annotation on
    passthrough, redirects, the backend protocol or client certificates. An Ingress
    with none of these changes nothing here, so a caller may leave it out."""
    return (bool(ing.tls) or any(k in ing.meta.annotations for k in _FLAGS)
            or names_protocol(ing) or client_cert.asks(ing))


def _claim_for(claims: dict[str, Claim], host: str) -> Claim | None:
    """The claim serving ``host`` as Envoy's SNI match would pick it: exact, then ``*.``."""
    if host in claims:
        return claims[host]
    head, _, rest = host.partition(".")
    return claims.get(f"*.{rest}") if rest and head != "*" else None


def _vhost_host(vh: ir.VirtualHost) -> str:
    return vh.domains[0].lower() if vh.domains else ""


def _chains(p: Planner, listener: str, route_table: str
            ) -> tuple[list[ir.TerminatedChain | ir.PassthroughChain], list[ir.Secret]]:
    by_secret: dict[Key, list[str]] = {}
    refs: dict[Key, set[ObjectRef]] = {}
    chains: list[ir.TerminatedChain | ir.PassthroughChain] = []
    version = p.config.min_tls_version
    for host, c in p.claims.items():
        if c.cluster is not None:
            chains.append(ir.PassthroughChain(
                name=names.tls_chain(listener, "passthrough", host), server_names=(host,),
                cluster=c.cluster, access=c.access, refs=(c.ingress.meta.ref,)))
        elif c.secret is not None and not c.broken:
            by_secret.setdefault(c.secret, []).append(host)
            refs.setdefault(c.secret, set()).add(c.ingress.meta.ref)
    secrets: dict[str, ir.Secret] = {}
    for key, hosts in by_secret.items():
        cert = p.load(key).cert
        assert cert is not None
        secrets[cert.name] = cert
        chains.append(ir.TerminatedChain(
            name=names.tls_chain(listener, "cert", cert.name), server_names=tuple(sorted(hosts)),
            secret=cert.name, route_table=route_table, min_tls_version=version,  # type: ignore[arg-type]
            refs=(*sorted(refs[key]), cert.ref)))
    if p.config.default_certificate is not None:
        loaded = p.load(p.config.default_certificate)
        if loaded.cert is None:
            p.diagnostics.append(Diagnostic(
                ObjectRef("Secret", *p.config.default_certificate), "--default-certificate",
                loaded.reason, f"{loaded.why}; clients without SNI are refused"))
        else:
            secrets[loaded.cert.name] = loaded.cert
            chains.append(ir.TerminatedChain(
                name=names.tls_chain(listener, "default", loaded.cert.name), server_names=(),
                secret=loaded.cert.name, route_table=route_table,
                min_tls_version=version, refs=(loaded.cert.ref,)))  # type: ignore[arg-type]
    chains.sort(key=lambda c: c.name)
    return chains, [secrets[k] for k in sorted(secrets)]


def _https_table(name: str, http_tables: Sequence[ir.RouteTable],
                 claims: dict[str, Claim]) -> ir.RouteTable:
    """The virtual hosts of the HTTP tables whose host a terminated chain serves."""
    vhosts: dict[str, ir.VirtualHost] = {}
    for table in http_tables:
        for vh in table.virtual_hosts:
            c = _claim_for(claims, _vhost_host(vh))
            if c is not None and c.secret is not None and not c.broken:
                vhosts.setdefault(vh.name, vh)
    return ir.RouteTable(name=name, virtual_hosts=tuple(vhosts[k] for k in sorted(vhosts)))


@dataclass(frozen=True, slots=True)
class _RedirectFlags:
    """The Ingresses (by key) whose annotations bear on HTTP -> HTTPS redirects."""

    forced: frozenset[Key]
    not_redirected: frozenset[Key]
    passthrough: frozenset[Key]


def _redirect_flags(ingresses: Iterable[Ingress], diagnostics: list[Diagnostic]
                    ) -> _RedirectFlags:
    """Read the redirect annotations once per Ingress, reporting bad values."""
    forced, off, passthrough = set(), set(), set()
    quiet: list[Diagnostic] = []  # the planner already reported bad passthrough values
    for ing in ingresses:
        if flag(ing, FORCE_SSL_REDIRECT, False, diagnostics):
            forced.add(ing.meta.key)
        if not flag(ing, SSL_REDIRECT, True, diagnostics):
            off.add(ing.meta.key)
        if flag(ing, PASSTHROUGH, False, quiet):
            passthrough.add(ing.meta.key)
    return _RedirectFlags(frozenset(forced), frozenset(off), frozenset(passthrough))


def _redirect_route(key: Key, claim: Claim | None, flags: _RedirectFlags) -> bool:
    """Whether a route of Ingress ``key`` on a host with ``claim`` redirects to HTTPS."""
    if claim is not None and (claim.broken or claim.cluster is not None):
        return True  # fail closed, or a passthrough host: never plaintext
    if key in flags.passthrough or key in flags.forced:
        return True  # a passthrough Ingress's backends speak TLS, never plain HTTP
    return claim is not None and key not in flags.not_redirected


@dataclass(frozen=True, slots=True)
class _Redirected:
    """A virtual host as the redirect pass left it, and what decided that."""

    source: ir.VirtualHost
    moved: tuple[bool, ...]
    """For each of its routes, whether it redirects."""
    redirect: ir.Redirect
    result: ir.VirtualHost


@dataclass(frozen=True, slots=True, eq=False)
class TlsMemo:
    """What a call of :func:`apply_tls` may take from the last one: the virtual hosts its
    redirect pass made, by the identity of those it was given (each kept, so that no
    other takes its ``id``), and its listener. The same virtual host with the same
    routes redirected gives the very same object back, so that the builds after find
    it unchanged by identity (every virtual host of a table with TLS everywhere would
    otherwise be copied, and encoded again, at every rebuild)."""

    redirected: Mapping[int, _Redirected] = dataclasses.field(default_factory=dict)
    listener: ir.TlsListener | None = None
    plan: PlanMemo | None = None
    """What the TLS plan may take from the last one."""


def _redirects(table: ir.RouteTable, claims: dict[str, Claim], flags: _RedirectFlags,
               redirect: ir.Redirect, last: Mapping[int, _Redirected],
               done: dict[int, _Redirected]) -> ir.RouteTable:
    """``table`` with HTTP -> HTTPS redirects where ingress-nginx (or fail-closed) wants
    them; the virtual hosts redirected are recorded in ``done`` (``last``: the last call's)."""
    eager = flags.forced | flags.passthrough
    if not claims and not eager:
        return table  # no TLS host and no forced redirect: nothing can change
    vhosts = []
    for vh in table.virtual_hosts:
        claim = _claim_for(claims, _vhost_host(vh))
        if claim is None and not any((r.ref.namespace, r.ref.name) in eager for r in vh.routes):
            vhosts.append(vh)  # the common case: nothing to change, nothing to copy
            continue
        moved = tuple(r.ref.kind == "Ingress"
                      and _redirect_route((r.ref.namespace, r.ref.name), claim, flags)
                      for r in vh.routes)
        before = last.get(id(vh))
        if (before is None or before.source is not vh or before.moved != moved
                or before.redirect != redirect):
            routes = tuple(dataclasses.replace(r, action=redirect) if m else r
                           for r, m in zip(vh.routes, moved, strict=True))
            before = _Redirected(vh, moved, redirect, dataclasses.replace(vh, routes=routes)
                                 if routes != vh.routes else vh)
        done[id(vh)] = before
        vhosts.append(before.result)
    if all(a is b for a, b in zip(vhosts, table.virtual_hosts, strict=True)):
        return table  # unchanged: the same object, so later stages can tell without comparing
    return dataclasses.replace(table, virtual_hosts=tuple(vhosts))


@dataclass(frozen=True, slots=True, eq=False)
class TlsResult:
    """:func:`apply_tls`'s IR and problems, and when its certificate checks stop being true."""

    ir: ir.IR
    diagnostics: list[Diagnostic]
    bounds: frozenset[dt.datetime]
    """The ``not_before`` and ``not_after`` of every certificate checked: at each, a
    check made now may change its verdict (the caller rebuilds then)."""
    memo: TlsMemo = dataclasses.field(default_factory=TlsMemo)
    """What the next call may take from this one (see :class:`TlsMemo`)."""


def apply_tls(base: ir.IR, state: ClusterState, config: TranslateConfig,
              ingresses: Sequence[Ingress], https_ports: bool,
              policies: PolicyIndex | None = None, inspect: Inspect | None = None,
              last: TlsMemo | None = None) -> TlsResult:
    """Add TLS (listener, chains, secrets, HTTPS routes, redirects, backend TLS) to ``base``.

    ``ingresses`` are the Ingresses of our class that ``base`` was built from (those
    that :func:`concerns` says it does not read may be left out);
    ``https_ports``: whether a Service port has ``appProtocol: https`` (see
    :func:`~kxds.translators.upstream_tls.apply_upstream_tls`);
    certificates are checked at ``config.tls_now`` (None: validity is not checked);
    ``policies``: the translation's policy index (built here when needed and not given);
    ``inspect``: how a Secret's pair is inspected (a caller that keeps the result
    per Secret passes its own; by default every pair is inspected again); ``last``:
    the last result's :attr:`TlsResult.memo` (the result is the same without it).
    """
    http_names = [lis.route_table for lis in base.listeners if isinstance(lis, ir.HttpListener)]
    base, diagnostics = apply_upstream_tls(base, state, http_names, ingresses, https_ports)
    diagnostics += protocol_diagnostics(ingresses)
    last = last if last is not None else TlsMemo()
    p = plan(state, config, ingresses, _ClusterRefs(base.clusters), policies,
             inspect or _inspect, last.plan)
    flags = _redirect_flags(ingresses, p.diagnostics)
    listener = names.https_listener(config.https_port)
    chains, secrets = _chains(p, listener, listener)
    http_tables = [t for t in base.route_tables if t.name in http_names]
    redirect = ir.Redirect(https=True, status=301,
                           port=None if config.https_port == 443 else config.https_port)
    redirected: dict[int, _Redirected] = {}
    tables = [_redirects(t, p.claims, flags, redirect, last.redirected, redirected)
              if t.name in http_names else t for t in base.route_tables]
    listeners = list(base.listeners)
    tls_listener = None
    if chains:
        tls_listener = ir.TlsListener(name=listener, address=config.listen_address,
                                      port=config.https_port, chains=tuple(chains),
                                      client_ip=config.client_ip, http=config.http)
        if last.listener is not None and tls_listener == last.listener:
            tls_listener = last.listener  # the very object: its build is found by identity
        listeners.append(tls_listener)
        if any(isinstance(c, ir.TerminatedChain) for c in chains):
            tables.append(_https_table(listener, http_tables, p.claims))
    all_secrets = {s.name: s for s in (*base.secrets, *secrets)}
    secured = dataclasses.replace(
        base,
        listeners=tuple(sorted(listeners, key=lambda lis: lis.name)),
        route_tables=tuple(sorted(tables, key=lambda t: t.name)),
        secrets=tuple(all_secrets[k] for k in sorted(all_secrets)),
    )
    checks = plan_client_certs(state, ingresses)
    secured, client_diagnostics = apply_client_certs(secured, checks, listener, http_names)
    return TlsResult(secured, diagnostics + p.diagnostics + checks.diagnostics
                     + client_diagnostics, frozenset(p.bounds),
                     TlsMemo(redirected, tls_listener, p.memo()))


class _ClusterRefs(Mapping[str, ObjectRef]):
    """Cluster name -> the ref of what it was built for, indexed when first looked at
    (only a passthrough chain looks, and most rebuilds plan none)."""

    def __init__(self, clusters: Sequence[ir.Cluster]) -> None:
        self._clusters = clusters
        self._index: dict[str, ObjectRef] | None = None

    def _refs(self) -> dict[str, ObjectRef]:
        if self._index is None:
            self._index = {c.name: c.ref for c in self._clusters}
        return self._index

    def __getitem__(self, name: str) -> ObjectRef:
        return self._refs()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._refs())

    def __len__(self) -> int:
        return len(self._refs())


def _inspect(_: Key, cert_pem: bytes, key_pem: bytes) -> Inspected:
    return inspect_key_pair(cert_pem, key_pem)
