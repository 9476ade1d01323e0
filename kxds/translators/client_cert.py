"""Client certificate authentication at the edge (ingress-nginx's ``auth-tls-*``).

An Ingress with ``auth-tls-secret`` (``namespace/name`` or ``name``: a Secret of
any type holding the CA bundle under ``ca.crt``) asks that clients of its
hosts present a certificate chaining to that CA. As in ingress-nginx the check
belongs to the host (nginx's ``server``), so it covers every Ingress's paths on
that host
(https://kubernetes.github.io/ingress-nginx/user-guide/nginx-configuration/annotations/#client-certificate-authentication):

* ``auth-tls-verify-client``: ``on`` (the default) requires a valid certificate,
  and Envoy refuses the handshake of a client without one (nginx answers 400);
  ``optional`` lets a client without a certificate in and refuses an invalid
  one; ``optional_no_ca`` also lets a certificate the CA did not sign in;
  ``off`` asks for none (the annotations then change nothing);
* ``auth-tls-error-page`` (an absolute URL): a request without a valid
  certificate (``on``) or with an invalid one (``optional``) is redirected
  there (302) instead, as nginx does; the handshake then lets every client in;
* ``auth-tls-verify-depth`` (default 1): the longest chain above the client's
  certificate;
* ``auth-tls-pass-certificate-to-upstream``: the backend gets the URL-encoded
  PEM in ``ssl-client-cert`` (see :mod:`kxds.envoy.client_cert`);
* ``auth-tls-match-cn``: a pattern (RE2, nginx: PCRE) that must match within the
  certificate's subject (``CN=..,O=..``), else 403; the host fails closed when
  RE2 cannot compile it.

In Envoy each such host gets an SNI chain of its own (its certificate, and the
CA as an SDS validation context) routing with a route table of its own. Other
ways in must not skip the check, so :func:`apply_client_certs`:

* answers 421 (Misdirected Request) for the host on the shared HTTPS route
  table, which clients reaching another SNI name (or none) use;
* on plain HTTP, keeps the host's redirects to HTTPS and makes its other
  Ingress routes answer 403 (ingress-nginx's answer to a request without a
  verified certificate); routes of an Ingress asking for client certificates
  outside such a host (a rule without host, a default backend) answer 403
  everywhere but in the checking chains.

Fail closed: a CA Secret missing, without ``ca.crt``, with a malformed bundle
or a ``ca.crl`` (revocation lists are not applied), an unknown verify mode or
depth, several Ingresses asking different settings of one host, or a host
served by TLS passthrough: the host gets no checking chain, its TLS names are
taken off the other chains (so the handshake is refused, or reaches a chain
answering 503 for it) and its routes answer 503 on HTTPS, redirect or 403 on
HTTP. Each problem is a diagnostic naming the Ingress and the annotation.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from kxds import ir, names
from kxds.certs.check import CertError, check_ca_bundle
from kxds.diagnostics import Diagnostic, ObjectRef, Reason, show
from kxds.kube.ingress_class import age_order
from kxds.kube.models import ClusterState, Ingress, Key
from kxds.translators.annotations import NGINX, field_of
from kxds.translators.annotations import parse as parse_annotations
from kxds.translators.annotations.values import re2_problem
from kxds.translators.translation import guarded

SECRET = "auth-tls-secret"
VERIFY = "auth-tls-verify-client"
DEPTH = "auth-tls-verify-depth"
PASS = "auth-tls-pass-certificate-to-upstream"
ERROR_PAGE = "auth-tls-error-page"
MATCH_CN = "auth-tls-match-cn"
_PREFIX = "/auth-tls-"
_OTHERS = (VERIFY, DEPTH, PASS, ERROR_PAGE, MATCH_CN)
_MODES = ("on", "off", "optional", "optional_no_ca")
_DEPTH = re.compile(r"[0-9]{1,3}")
_TRUE = {"true", "1", "t", "yes", "on"}
_FALSE = {"false", "0", "f", "no", "off"}
FORBIDDEN = ir.DirectResponse(status=403, body="client certificate required")
"""What a route checking client certificates answers where no certificate can be checked."""
MISDIRECTED = ir.DirectResponse(status=421, body="client certificate required: "
                                "connect with this host's name (SNI)")
REFUSED = ir.DirectResponse(status=503, body="client certificate check unavailable")


@dataclass(frozen=True, slots=True)
class _Want:
    """What one Ingress asks: the CA Secret and the check's settings."""

    ca: Key
    required: bool
    accept_untrusted: bool
    depth: int
    forward: bool
    error_page: ir.Redirect | None = None
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class HostCheck:
    """The client-certificate check of one host, or why it fails (``client`` None)."""

    ingress: ObjectRef
    """The (oldest) Ingress that asked for it."""
    client: ir.ClientCertificate | None
    want: _Want | None = None


@dataclass(frozen=True, slots=True, eq=False)
class ClientCertPlan:
    """Every host's check, the Ingresses asking, the CA secrets and the problems."""

    hosts: Mapping[str, HostCheck]
    asking: frozenset[Key]
    """The Ingresses asking for client certificates (valid or not): their routes are
    served only through a checking chain."""
    secrets: Mapping[str, ir.ValidationContext]
    diagnostics: list[Diagnostic]


class _Reader:
    """Reads the annotations of one Ingress, reporting problems."""

    def __init__(self, ing: Ingress, out: list[Diagnostic]) -> None:
        self.ing = ing
        self.keys = parse_annotations(ing).keys
        self.out = out

    def raw(self, short: str) -> str | None:
        key = self.keys.get(short)
        return self.ing.meta.annotations[key] if key is not None else None

    def field(self, short: str) -> str:
        return field_of(self.keys.get(short, NGINX + short))

    def bad(self, short: str, reason: Reason, why: str) -> None:
        self.out.append(Diagnostic(
            self.ing.meta.ref, self.field(short), reason,
            f"{why}; the Ingress's hosts refuse clients (fail closed)"))


def _read(ing: Ingress, diagnostics: list[Diagnostic]) -> _Want | bool | None:
    """What ``ing`` asks: a want, None (nothing asked) or False (unusable: fail closed)."""
    r = _Reader(ing, diagnostics)
    secret = r.raw(SECRET)
    if secret is None:
        for short in _OTHERS:
            if r.raw(short) is not None:
                diagnostics.append(Diagnostic(
                    ing.meta.ref, r.field(short), Reason.MISSING_FIELD,
                    f"has no effect without {SECRET} (no client certificate is asked)"))
        return None
    mode = (r.raw(VERIFY) or "on").strip()
    if mode not in _MODES:
        r.bad(VERIFY, Reason.INVALID_VALUE, f"{show(mode)} is not one of {', '.join(_MODES)}")
        return False
    if mode == "off":
        return None
    depth_raw = (r.raw(DEPTH) or "1").strip()
    if not _DEPTH.fullmatch(depth_raw) or int(depth_raw) < 1:
        r.bad(DEPTH, Reason.INVALID_VALUE, f"{show(depth_raw)} is not a depth of 1 or more")
        return False
    forward_raw = (r.raw(PASS) or "false").strip().lower()
    if forward_raw not in _TRUE | _FALSE:
        r.bad(PASS, Reason.INVALID_VALUE, f"{show(forward_raw)} is not a boolean")
        return False
    ns, _, name = secret.strip().rpartition("/")
    if not name or "/" in ns:
        r.bad(SECRET, Reason.INVALID_VALUE, f"{show(secret)} is not NAME or NAMESPACE/NAME")
        return False
    subject = (r.raw(MATCH_CN) or "").strip() or None
    problem = re2_problem(subject) if subject is not None else None
    if problem is not None:
        r.bad(MATCH_CN, Reason.INVALID_VALUE, f"{show(subject)}: {problem}")
        return False
    return _Want(ca=(ns or ing.meta.namespace, name), required=mode == "on",
                 accept_untrusted=mode == "optional_no_ca", depth=int(depth_raw),
                 forward=forward_raw in _TRUE, error_page=_error_page(r, mode),
                 subject=subject)


def _error_page(r: _Reader, mode: str) -> ir.Redirect | None:
    """The redirect for a failed check (``auth-tls-error-page``), when it can apply.

    nginx redirects to an absolute URL (302) and serves a local path itself
    (an internal redirect); a redirect to a path of the same host would meet the
    same check again, so only absolute http(s) URLs are applied.
    """
    raw = r.raw(ERROR_PAGE)
    if raw is None:
        return None
    if mode == "optional_no_ca":
        r.out.append(Diagnostic(r.ing.meta.ref, r.field(ERROR_PAGE), Reason.INVALID_VALUE,
                                "has no effect with optional_no_ca, where no certificate "
                                "fails the check"))
        return None
    u = urllib.parse.urlsplit(raw.strip())
    try:
        port = u.port
    except ValueError:
        port = -1
    if u.scheme not in ("http", "https") or not u.hostname or port == -1 or any(
            c in raw for c in " \r\n\t"):
        r.out.append(Diagnostic(
            r.ing.meta.ref, r.field(ERROR_PAGE), Reason.UNSUPPORTED,
            f"{show(raw)} is not an absolute http(s) URL (a path of this host is not "
            "supported); not applied: a client without a valid certificate is refused at "
            "the TLS handshake instead"))
        return None
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    return ir.Redirect(https=u.scheme == "https", scheme=None if u.scheme == "https"
                       else "http", host=u.hostname, port=port, status=302, path=path,
                       strip_query=True)


def _failed(diagnostics: list[Diagnostic], problem: Diagnostic) -> bool:
    """Reading an Ingress's settings failed (a bug): reported, and its hosts fail closed."""
    diagnostics.append(problem)
    return False


def _load_ca(state: ClusterState, key: Key) -> ir.ValidationContext | str:
    """The CA bundle of Secret ``key`` as an SDS validation context, or why not."""
    ref = ObjectRef("Secret", *key)
    secret = state.secrets.get(key)
    if secret is None:
        return f"{ref} not found"
    if "ca.crt" not in secret.data:
        return f"{ref} has no ca.crt key"
    if "ca.crl" in secret.data:
        return f"{ref} has a ca.crl, and kxds does not apply revocation lists"
    try:
        check_ca_bundle(secret.data["ca.crt"])
        pem = secret.data["ca.crt"].decode("ascii")
    except (CertError, UnicodeDecodeError) as e:
        return f"{ref}: ca.crt: {e}"
    return ir.ValidationContext(name=names.ca_secret(*key), ref=ref, trusted_ca=pem)


def asks(ing: Ingress) -> bool:
    """Whether ``ing`` has a client-certificate annotation (:func:`plan_client_certs`
    reads no other Ingress)."""
    return any(_PREFIX in k for k in ing.meta.annotations)


def plan_client_certs(state: ClusterState, ingresses: Iterable[Ingress]) -> ClientCertPlan:
    """Each host's check, oldest Ingress first; disagreeing Ingresses fail the host."""
    diagnostics: list[Diagnostic] = []
    hosts: dict[str, HostCheck] = {}
    asking: set[Key] = set()
    secrets: dict[str, ir.ValidationContext] = {}
    for ing in sorted(ingresses, key=age_order):
        if not asks(ing):
            continue  # the common case, without parsing the annotations
        want = guarded(ing.meta.ref, partial(_read, ing, diagnostics),
                       partial(_failed, diagnostics))
        if want is None:
            continue
        asking.add(ing.meta.key)
        client: ir.ClientCertificate | None = None
        if isinstance(want, _Want):
            loaded = _load_ca(state, want.ca)
            if isinstance(loaded, str):
                _Reader(ing, diagnostics).bad(SECRET, Reason.INVALID_SECRET
                                              if state.secrets.get(want.ca) else
                                              Reason.SECRET_NOT_FOUND, loaded)
            else:
                secrets[loaded.name] = loaded
                client = ir.ClientCertificate(
                    validation_secret=loaded.name, required=want.required,
                    accept_untrusted=want.accept_untrusted, max_verify_depth=want.depth,
                    forward_certificate=want.forward, error_redirect=want.error_page,
                    subject_pattern=want.subject)
        check = HostCheck(ing.meta.ref, client, want if isinstance(want, _Want) else None)
        for i, rule in enumerate(ing.rules):
            host = rule.host.lower()
            if not host:
                diagnostics.append(Diagnostic(
                    ing.meta.ref, f"spec.rules[{i}].host", Reason.MISSING_FIELD,
                    "client certificates are checked per TLS host: the paths of a rule "
                    "without host answer 403"))
                continue
            _claim(hosts, host, check, ing, diagnostics)
    return ClientCertPlan(hosts, frozenset(asking), secrets, diagnostics)


def _claim(hosts: dict[str, HostCheck], host: str, check: HostCheck, ing: Ingress,
           diagnostics: list[Diagnostic]) -> None:
    old = hosts.get(host)
    if old is None:
        hosts[host] = check
    elif old.ingress != check.ingress and (
            old.want != check.want or check.client is None or old.client is None):
        if old.client is not None and check.client is not None:
            diagnostics.append(Diagnostic(
                ing.meta.ref, field_of(NGINX + SECRET), Reason.CONFLICT,
                f"host {host}: client certificate settings differ from those of "
                f"{old.ingress}; the host refuses clients (fail closed)"))
        hosts[host] = HostCheck(old.ingress, None)


# --- applying the plan to the IR --------------------------------------------------------


def _sni_target(chains: Sequence[ir.TerminatedChain | ir.PassthroughChain], host: str
                ) -> ir.TerminatedChain | ir.PassthroughChain | None:
    """The chain Envoy would pick for SNI ``host``: an exact name, else a ``*.`` one."""
    head, _, rest = host.partition(".")
    for candidate in (host, f"*.{rest}" if rest and head != "*" else None):
        for c in chains:
            if candidate is not None and candidate in c.server_names:
                return c
    return None


def _without(chain: ir.TerminatedChain | ir.PassthroughChain, hosts: set[str]
             ) -> ir.TerminatedChain | ir.PassthroughChain | None:
    """``chain`` without the SNI names ``hosts``; None when it would have none left (a
    chain without names would catch every other client)."""
    kept = tuple(n for n in chain.server_names if n not in hosts)
    if kept == chain.server_names:
        return chain
    return dataclasses.replace(chain, server_names=kept) if kept else None


def _refusing_vhost(vh: ir.VirtualHost, check: HostCheck) -> ir.VirtualHost:
    route = ir.Route(name=names.cap(f"{vh.name}/client-certificate"),
                     ref=check.ingress, match=ir.PathMatch(kind=ir.MatchKind.PREFIX, path="/"),
                     action=MISDIRECTED if check.client is not None else REFUSED)
    return dataclasses.replace(vh, routes=(route,))


def _key(ref: ObjectRef) -> Key:
    return (ref.namespace, ref.name)


def _guard_table(table: ir.RouteTable, plan: ClientCertPlan, *, plain: bool,
                 shared_https: bool) -> ir.RouteTable:
    """``table`` with what would skip the check refused (see the module's docstring)."""
    vhosts = []
    for vh in table.virtual_hosts:
        check = plan.hosts.get(vh.domains[0].lower() if vh.domains else "")
        if check is not None and shared_https:
            vhosts.append(_refusing_vhost(vh, check))
            continue
        routes = tuple(_guard_route(r, protected=check is not None, plan=plan, plain=plain)
                       for r in vh.routes)
        vhosts.append(dataclasses.replace(vh, routes=routes) if routes != vh.routes else vh)
    return dataclasses.replace(table, virtual_hosts=tuple(vhosts))


def _guard_route(r: ir.Route, *, protected: bool, plan: ClientCertPlan,
                 plain: bool) -> ir.Route:
    if r.ref.kind != "Ingress" or isinstance(r.action, (ir.Redirect, ir.DirectResponse)):
        return r  # redirects (to HTTPS, or away) and refusals serve no backend
    if (protected and plain) or _key(r.ref) in plan.asking:
        return dataclasses.replace(r, action=FORBIDDEN)
    return r


def apply_client_certs(base: ir.IR, plan: ClientCertPlan, https_listener: str,
                       http_tables: Iterable[str]) -> tuple[ir.IR, list[Diagnostic]]:
    """``base`` (with TLS applied) with checking chains, their route tables and CA secrets,
    and every other way to the checked hosts refused."""
    if not plan.asking:
        return base, []
    diagnostics: list[Diagnostic] = []
    plain = set(http_tables)
    listener = next((lis for lis in base.listeners if isinstance(lis, ir.TlsListener)
                     and lis.name == https_listener), None)
    chains = list(listener.chains) if listener is not None else []
    shared = {t.name: t for t in base.route_tables}.get(https_listener)
    moved: dict[str, list[str]] = {}  # a checking chain -> its hosts
    new_chains: dict[str, ir.TerminatedChain] = {}
    taken: set[str] = set()
    for host, check in sorted(plan.hosts.items()):
        target = _sni_target(chains, host)
        taken.add(host)
        if target is None:
            diagnostics.append(Diagnostic(
                check.ingress, "spec.tls", Reason.MISSING_FIELD,
                f"host {host} asks for client certificates but is not served over TLS "
                "(no usable TLS entry): it refuses plain-HTTP clients (403)"))
            continue
        if isinstance(target, ir.PassthroughChain):
            diagnostics.append(Diagnostic(
                check.ingress, field_of(NGINX + SECRET), Reason.CONFLICT,
                f"host {host} is served by TLS passthrough, where the edge cannot check "
                "client certificates: its handshakes are refused (fail closed)"))
            continue
        if check.client is None:
            continue
        chain = _checking_chain(target, check.client, https_listener)
        chain = new_chains.setdefault(chain.name, chain)
        new_chains[chain.name] = dataclasses.replace(chain, refs=tuple(sorted(
            {*chain.refs, check.ingress, plan.secrets[check.client.validation_secret].ref})))
        moved.setdefault(chain.name, []).append(host)
    chains = [c for c in (_without(c, taken) for c in chains) if c is not None]
    tables = [_guard_table(t, plan, plain=t.name in plain,
                           shared_https=t.name == https_listener)
              if t.name in plain or t.name == https_listener else t
              for t in base.route_tables]
    secrets = {s.name: s for s in base.secrets}
    for name, chain in new_chains.items():
        hosts = tuple(sorted(moved[name]))
        chains.append(dataclasses.replace(chain, server_names=hosts))
        assert chain.client_certificate is not None
        secrets[chain.client_certificate.validation_secret] = (
            plan.secrets[chain.client_certificate.validation_secret])
        tables.append(_checking_table(name, shared, hosts, chain.client_certificate))
    listeners = [lis for lis in base.listeners if lis is not listener]
    if chains and listener is not None:
        listeners.append(dataclasses.replace(
            listener, chains=tuple(sorted(chains, key=lambda c: c.name))))
    return dataclasses.replace(
        base, listeners=tuple(sorted(listeners, key=lambda lis: lis.name)),
        route_tables=tuple(sorted(tables, key=lambda t: t.name)),
        secrets=tuple(secrets[k] for k in sorted(secrets)),
    ), diagnostics


def _checking_chain(target: ir.TerminatedChain, client: ir.ClientCertificate,
                    listener: str) -> ir.TerminatedChain:
    """A chain like ``target`` (its certificate) that checks client certificates."""
    mode = "on" if client.required else "optional_no_ca" if client.accept_untrusted \
        else "optional"
    key = (f"{target.secret}/ca={client.validation_secret}/{mode}/"
           f"depth={client.max_verify_depth}{'/pass' if client.forward_certificate else ''}")
    if client.subject_pattern is not None:  # hosts with other patterns need other chains
        key += f"/subject={client.subject_pattern}"
    if client.error_redirect is not None:  # hosts with other error pages need other chains
        page = client.error_redirect
        port = f":{page.port}" if page.port is not None else ""
        key += f"/error-page={'https' if page.https else page.scheme}://{page.host}{port}"
        key += page.path or ""
    name = names.tls_chain(listener, "client-cert", key)
    # Its refs: the Ingresses asking (added by the caller), the certificate's Secret.
    refs = tuple(r for r in target.refs if r.kind == "Secret")
    return dataclasses.replace(target, name=name, route_table=name, client_certificate=client,
                               refs=refs)


def _checking_table(name: str, shared: ir.RouteTable | None, hosts: tuple[str, ...],
                    client: ir.ClientCertificate) -> ir.RouteTable:
    """The route table of a checking chain: its hosts' virtual hosts, telling backends
    about the certificate."""
    wanted = set(hosts)
    vhosts = [dataclasses.replace(vh, client_certificate=client)
              for vh in (shared.virtual_hosts if shared is not None else ())
              if vh.domains and vh.domains[0].lower() in wanted]
    return ir.RouteTable(name=name, virtual_hosts=tuple(vhosts))
