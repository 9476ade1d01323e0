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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from kxds import ir, names
from kxds.certs.check import (
    CertError,
    CertInfo,
    Inspected,
    check_validity,
    covers,
    inspect_key_pair,
)
from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.kube.ingress_class import age_order
from kxds.kube.models import ClusterState, Ingress, IngressPath, Key, Service, ServicePort
from kxds.translators.access import route_access
from kxds.translators.annotations import parse as parse_annotations
from kxds.translators.auth_basic import passthrough_problem
from kxds.translators.auth_external import passthrough_problem as external_passthrough
from kxds.translators.client_cert import apply_client_certs, plan_client_certs
from kxds.translators.config import TranslateConfig
from kxds.translators.ingress import narrowing_problem
from kxds.translators.network_policy import PolicyIndex
from kxds.translators.translation import guarded
from kxds.translators.upstream_tls import apply_upstream_tls, protocol_diagnostics

PASSTHROUGH = ("kxds.io/tls-passthrough", "nginx.ingress.kubernetes.io/ssl-passthrough")
SSL_REDIRECT = ("kxds.io/ssl-redirect", "nginx.ingress.kubernetes.io/ssl-redirect")
FORCE_SSL_REDIRECT = ("kxds.io/force-ssl-redirect",
                      "nginx.ingress.kubernetes.io/force-ssl-redirect")
TLS_SECRET_TYPE = "kubernetes.io/tls"
_TRUE = {"true", "1", "t", "yes", "on"}
_FALSE = {"false", "0", "f", "no", "off"}


@dataclass(frozen=True, slots=True)
class _Claim:
    """Who serves a host over TLS, and how."""

    ingress: Ingress
    secret: Key | None = None
    """Terminated: the certificate's Secret."""
    cluster: str | None = None
    """Passthrough: the backend cluster."""
    broken: bool = False
    """The certificate is unusable for this host: fail closed."""
    access: ir.AccessPolicy | None = None
    """Passthrough: the client-IP rules of the backend (as its HTTP routes would have)."""

    def same_target(self, other: _Claim) -> bool:
        return (self.secret, self.cluster) == (other.secret, other.cluster)


def flag(ing: Ingress, keys: Sequence[str], default: bool,
         diagnostics: list[Diagnostic]) -> bool:
    """A boolean annotation (first of ``keys`` present wins), parsed like Go's ParseBool."""
    for k in keys:
        if k in ing.meta.annotations:
            raw = ing.meta.annotations[k].strip().lower()
            if raw in _TRUE or raw in _FALSE:
                return raw in _TRUE
            diagnostics.append(Diagnostic(ing.meta.ref, f"metadata.annotations[{k}]",
                                          Reason.INVALID_VALUE,
                                          f"{raw!r} is not a boolean; using {default}"))
            return default
    return default


@dataclass(frozen=True, slots=True)
class _Loaded:
    """A Secret's certificate, or why it is unusable."""

    cert: ir.TLSCertificate | None = None
    info: CertInfo | None = None
    reason: Reason = Reason.INVALID_SECRET
    why: str = ""


class _Planner:
    """Decides, host by host, which chain (if any) serves it; checks each Secret once."""

    def __init__(self, state: ClusterState, config: TranslateConfig,
                 clusters: Mapping[str, ObjectRef],
                 policies: PolicyIndex | None, inspect: Inspect) -> None:
        self.state = state
        self.clusters = clusters
        self.policies = policies
        self.config = config
        self.inspect = inspect
        self.bounds: set[dt.datetime] = set()
        """The validity bounds of every certificate checked (see :class:`TlsResult`)."""
        self.claims: dict[str, _Claim] = {}
        self.certs: dict[Key, _Loaded] = {}
        self.diagnostics: list[Diagnostic] = []

    def load(self, key: Key) -> _Loaded:
        """The certificate in Secret ``key``, or why not (checked once per Secret)."""
        if key not in self.certs:
            self.certs[key] = guarded(ObjectRef("Secret", *key), lambda: self._load(key),
                                      self._unreadable)
        return self.certs[key]

    def _unreadable(self, problem: Diagnostic) -> _Loaded:
        """A Secret whose check failed (a bug): reported, and unusable (fail closed)."""
        self.diagnostics.append(problem)
        return _Loaded(reason=Reason.INTERNAL_ERROR,
                       why=f"{problem.ref} could not be checked (an internal error)")

    def _load(self, key: Key) -> _Loaded:
        ref = ObjectRef("Secret", *key)
        secret = self.state.secrets.get(key)
        if secret is None:
            return _Loaded(reason=Reason.SECRET_NOT_FOUND, why=f"{ref} not found")
        if secret.type != TLS_SECRET_TYPE:
            return _Loaded(why=f"{ref} has type {secret.type}, not {TLS_SECRET_TYPE}")
        crt, pem_key = secret.data.get("tls.crt"), secret.data.get("tls.key")
        if not crt or not pem_key:
            return _Loaded(why=f"{ref} lacks tls.crt or tls.key")
        found = self.inspect(key, crt, pem_key)
        self.bounds.update(b for b in (found.not_before, found.not_after) if b is not None)
        try:
            # The clock is read only here: a translation without certificates
            # does not depend on the instant of its rebuild.
            info = check_validity(found, self.config.tls_now)
            cert = ir.TLSCertificate(name=names.secret(*key), ref=ref,
                                     certificate_chain=crt.decode("ascii"),
                                     private_key=pem_key.decode("ascii"))
        except (CertError, UnicodeDecodeError) as e:
            return _Loaded(why=f"{ref}: {e}")
        return _Loaded(cert=cert, info=info)
    def claim(self, host: str, new: _Claim, field: str) -> None:
        old = self.claims.get(host)
        if old is None:
            self.claims[host] = new
        elif old.ingress.meta.key != new.ingress.meta.key and not old.same_target(new):
            self.diagnostics.append(Diagnostic(
                new.ingress.meta.ref, field, Reason.CONFLICT,
                f"TLS for host {host} is already configured by {old.ingress.meta.ref}"))

    def passthrough(self, ing: Ingress) -> None:
        for i, rule in enumerate(ing.rules):
            field = f"spec.rules[{i}]"
            if not rule.host or not rule.paths:
                self.diagnostics.append(Diagnostic(
                    ing.meta.ref, field, Reason.INVALID_VALUE,
                    "TLS passthrough needs a host (the SNI) and a path naming the backend"))
                continue
            target = self._cluster_of(ing, _passthrough_path(rule.paths))
            if target is None:
                self.diagnostics.append(Diagnostic(
                    ing.meta.ref, f"{field}.http.paths", Reason.BACKEND_NOT_FOUND,
                    f"passthrough backend {_passthrough_path(rule.paths).backend.service} of "
                    f"host {rule.host} "
                    "does not resolve to a Service port"))
                continue
            self.claim(rule.host, _Claim(ing, cluster=target[0], access=target[1]), field)

    def _cluster_of(self, ing: Ingress, path: IngressPath
                    ) -> tuple[str, ir.AccessPolicy | None] | None:
        """The backend's cluster and access policy; None when it does not resolve."""
        found = _backend_port(self.state, ing, path)
        if found is None:
            return None
        svc, port, cluster = found
        if self.clusters.get(cluster) != svc.meta.ref:
            return None  # not built, or built for another Service (a name collision)
        if self.policies is None:
            self.policies = PolicyIndex.of(self.state)  # once per translation, not per route
        policy, diags = route_access(self.state, ing, svc, port, self.policies)
        self.diagnostics.extend(diags)
        return cluster, policy

    def plan(self, ing: Ingress) -> None:
        """Claim the TLS hosts of ``ing`` (passthrough or terminated)."""
        if flag(ing, PASSTHROUGH, False, self.diagnostics):
            # A passthrough chain bypasses the HTTP routes that fail closed for an
            # annotation narrowing access: refuse its hosts' handshakes instead.
            parsed = parse_annotations(ing)
            refused = (narrowing_problem(ing, parsed.narrowing, self.config.ignore_snippets)
                       or passthrough_problem(ing) or external_passthrough(parsed))
            if refused is not None:
                self.failed(ing, refused)
                return
            self.passthrough(ing)
        else:
            self.terminated(ing)

    def failed(self, ing: Ingress, problem: Diagnostic) -> None:
        """Planning ``ing`` failed (a bug): its TLS hosts are claimed as broken, so they get
        no chain and their plain-HTTP routes redirect to HTTPS: never served in plaintext
        in place of TLS. Hosts an older Ingress claimed keep their claim."""
        self.diagnostics.append(problem)
        mine = [h for h, c in self.claims.items() if c.ingress.meta.key == ing.meta.key]
        for host in mine:
            del self.claims[host]  # whatever it claimed before failing
        hosts = {h.lower() for t in ing.tls for h in t.hosts}
        if any(not t.hosts for t in ing.tls) or PASSTHROUGH[0] in ing.meta.annotations \
                or PASSTHROUGH[1] in ing.meta.annotations:
            hosts.update(r.host for r in ing.rules if r.host)
        for host in sorted(hosts):
            self.claims.setdefault(host, _Claim(ing, broken=True))

    def terminated(self, ing: Ingress) -> None:
        default = self.config.default_certificate
        for j, tls in enumerate(ing.tls):
            field = f"spec.tls[{j}]"
            # ingress-nginx serves a TLS entry without secretName with the default certificate.
            key = (ing.meta.namespace, tls.secret_name) if tls.secret_name else default
            loaded = self.load(key) if key is not None else _Loaded(
                reason=Reason.MISSING_FIELD,
                why="no secretName and no default certificate (--default-certificate)")
            hosts = [h.lower() for h in tls.hosts] or self._rule_hosts(ing, loaded.info)
            if loaded.info is None:
                self.diagnostics.append(Diagnostic(
                    ing.meta.ref, f"{field}.secretName", loaded.reason,
                    f"{loaded.why}; hosts {', '.join(hosts) or '(none)'} are not served"))
            for host in hosts:
                ok = loaded.info is not None
                if loaded.info is not None and not covers(loaded.info.dns_names, host):
                    ok = False
                    self.diagnostics.append(Diagnostic(
                        ing.meta.ref, f"{field}.hosts", Reason.INVALID_SECRET,
                        f"certificate of {loaded.cert.ref if loaded.cert else key} does not "
                        f"cover host {host} (it names {', '.join(loaded.info.dns_names)})"))
                self.claim(host, _Claim(ing, secret=key, broken=not ok), f"{field}.hosts")

    @staticmethod
    def _rule_hosts(ing: Ingress, info: CertInfo | None) -> list[str]:
        # ingress-nginx: a TLS entry without hosts serves the rule hosts its
        # certificate covers.
        hosts = sorted({r.host for r in ing.rules if r.host})
        return [h for h in hosts if covers(info.dns_names, h)] if info else hosts


def _passthrough_path(paths: Sequence[IngressPath]) -> IngressPath:
    """The path whose backend gets a passthrough host's stream: ``/``, else the first."""
    return next((p for p in paths if p.path == "/"), paths[0])


def _backend_port(state: ClusterState, ing: Ingress, path: IngressPath
                  ) -> tuple[Service, ServicePort, str] | None:
    """The Service, TCP port and cluster name of ``path``'s backend; None when unresolvable."""
    ns = ing.meta.namespace
    svc = state.services.get((ns, path.backend.service))
    if svc is None:
        return None
    port = (svc.port_by_number(path.backend.port_number) if path.backend.port_number
            else svc.port_by_name(path.backend.port_name or ""))
    if port is None or port.protocol != "TCP":
        return None
    return svc, port, names.service_cluster(ns, svc.meta.name, port.port)


def passthrough_targets(state: ClusterState, ing: Ingress) -> list[tuple[Key, str]]:
    """The Service clusters the passthrough chains of ``ing`` would forward to (none when
    it does not ask for passthrough): the edge builds them even if no route names them."""
    if not flag(ing, PASSTHROUGH, False, []):  # a bad value is reported by the planner
        return []
    out = []
    for rule in ing.rules:
        if rule.host and rule.paths:
            found = _backend_port(state, ing, _passthrough_path(rule.paths))
            if found is not None:
                out.append((found[0].meta.key, found[2]))
    return out


def _claim_for(claims: dict[str, _Claim], host: str) -> _Claim | None:
    """The claim serving ``host`` as Envoy's SNI match would pick it: exact, then ``*.``."""
    if host in claims:
        return claims[host]
    head, _, rest = host.partition(".")
    return claims.get(f"*.{rest}") if rest and head != "*" else None


def _vhost_host(vh: ir.VirtualHost) -> str:
    return vh.domains[0].lower() if vh.domains else ""


def plan(state: ClusterState, config: TranslateConfig, ingresses: Iterable[Ingress],
         clusters: Mapping[str, ObjectRef], policies: PolicyIndex | None,
         inspect: Inspect) -> _Planner:
    """Decide every TLS host's chain, oldest Ingress first (it wins conflicts)."""
    p = _Planner(state, config, clusters, policies, inspect)
    for ing in sorted(ingresses, key=age_order):
        guarded(ing.meta.ref, partial(p.plan, ing), partial(p.failed, ing))
    return p


def _chains(p: _Planner, listener: str, route_table: str
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
                 claims: dict[str, _Claim]) -> ir.RouteTable:
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


def _redirect_route(key: Key, claim: _Claim | None, flags: _RedirectFlags) -> bool:
    """Whether a route of Ingress ``key`` on a host with ``claim`` redirects to HTTPS."""
    if claim is not None and (claim.broken or claim.cluster is not None):
        return True  # fail closed, or a passthrough host: never plaintext
    if key in flags.passthrough or key in flags.forced:
        return True  # a passthrough Ingress's backends speak TLS, never plain HTTP
    return claim is not None and key not in flags.not_redirected


def _redirects(table: ir.RouteTable, claims: dict[str, _Claim], flags: _RedirectFlags,
               redirect: ir.Redirect) -> ir.RouteTable:
    """``table`` with HTTP -> HTTPS redirects where ingress-nginx (or fail-closed) wants them."""
    eager = flags.forced | flags.passthrough
    if not claims and not eager:
        return table  # no TLS host and no forced redirect: nothing can change
    vhosts = []
    for vh in table.virtual_hosts:
        claim = _claim_for(claims, _vhost_host(vh))
        if claim is None and not any((r.ref.namespace, r.ref.name) in eager for r in vh.routes):
            vhosts.append(vh)  # the common case: nothing to change, nothing to copy
            continue
        routes = tuple(
            dataclasses.replace(r, action=redirect)
            if r.ref.kind == "Ingress"
            and _redirect_route((r.ref.namespace, r.ref.name), claim, flags) else r
            for r in vh.routes)
        vhosts.append(dataclasses.replace(vh, routes=routes) if routes != vh.routes else vh)
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


def apply_tls(base: ir.IR, state: ClusterState, config: TranslateConfig,
              ingresses: Sequence[Ingress], policies: PolicyIndex | None = None,
              inspect: Inspect | None = None) -> TlsResult:
    """Add TLS (listener, chains, secrets, HTTPS routes, redirects, backend TLS) to ``base``.

    ``ingresses`` are the Ingresses of our class that ``base`` was built from;
    certificates are checked at ``config.tls_now`` (None: validity is not checked);
    ``policies``: the translation's policy index (built here when needed and not given);
    ``inspect``: how a Secret's pair is inspected (a caller that keeps the result
    per Secret passes its own; by default every pair is inspected again).
    """
    http_names = [lis.route_table for lis in base.listeners if isinstance(lis, ir.HttpListener)]
    base, diagnostics = apply_upstream_tls(base, state, http_names)
    diagnostics += protocol_diagnostics(ingresses)
    p = plan(state, config, ingresses, {c.name: c.ref for c in base.clusters}, policies,
             inspect or _inspect)
    flags = _redirect_flags(ingresses, p.diagnostics)
    listener = names.https_listener(config.https_port)
    chains, secrets = _chains(p, listener, listener)
    http_tables = [t for t in base.route_tables if t.name in http_names]
    redirect = ir.Redirect(https=True, status=301,
                           port=None if config.https_port == 443 else config.https_port)
    tables = [_redirects(t, p.claims, flags, redirect) if t.name in http_names else t
              for t in base.route_tables]
    listeners = list(base.listeners)
    if chains:
        listeners.append(ir.TlsListener(name=listener, address=config.listen_address,
                                        port=config.https_port, chains=tuple(chains),
                                        client_ip=config.client_ip, http=config.http))
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
                     + client_diagnostics, frozenset(p.bounds))


Inspect = Callable[[Key, bytes, bytes], Inspected]
"""Inspect the (certificate, key) pair of the TLS Secret ``key``."""


def _inspect(_: Key, cert_pem: bytes, key_pem: bytes) -> Inspected:
    return inspect_key_pair(cert_pem, key_pem)
