"""TLS at the edge, the plan: which chain, if any, serves each TLS host of the Ingresses.

Each Secret is checked once (type, PEM, key pair, validity at ``config.tls_now``,
names). The oldest Ingress claiming a host wins it; a host whose certificate
is unusable, or whose Ingress could not be planned, is claimed as broken, so it
gets no chain and its plain-HTTP routes redirect (fail closed). What the claims
become (listener, chains, secrets, redirects) is :mod:`kxds.translators.tls`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from kxds import ir, names
from kxds.certs.check import CertError, CertInfo, Inspected, check_validity, covers
from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.kube.ingress_class import age_order
from kxds.kube.models import (
    ClusterState,
    Ingress,
    IngressPath,
    Key,
    Secret,
    Service,
    ServicePort,
)
from kxds.translators.access import route_access
from kxds.translators.annotations import parse as parse_annotations
from kxds.translators.auth_basic import passthrough_problem
from kxds.translators.auth_external import passthrough_problem as external_passthrough
from kxds.translators.config import TranslateConfig
from kxds.translators.ingress import narrowing_problem
from kxds.translators.network_policy import PolicyIndex
from kxds.translators.translation import guarded

PASSTHROUGH = ("kxds.io/tls-passthrough", "nginx.ingress.kubernetes.io/ssl-passthrough")


TLS_SECRET_TYPE = "kubernetes.io/tls"


_TRUE = {"true", "1", "t", "yes", "on"}


_FALSE = {"false", "0", "f", "no", "off"}


@dataclass(frozen=True, slots=True)
class Claim:
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

    def same_target(self, other: Claim) -> bool:
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


@dataclass(frozen=True, slots=True, eq=False)
class _Checked:
    """A Secret's check, and what it was made from (reused while they are the same)."""

    secret: object
    """The Secret model (None when missing), by identity."""
    found: Inspected | None
    """Its pair inspected (None when it had none to inspect), by identity."""
    now: dt.datetime | None
    loaded: _Loaded


_Claimed = tuple[str, Claim, str]
"""A host claimed: the host, the claim, and the field it comes from."""


@dataclass(frozen=True, slots=True, eq=False)
class _Wants:
    """What planning a terminating Ingress did, in order (diagnostics and claims made),
    and the certificates it read: done again the same while they are the same."""

    ingress: Ingress
    default: Key | None
    loads: tuple[tuple[Key, _Loaded], ...]
    events: tuple[Diagnostic | _Claimed, ...]


@dataclass(frozen=True, slots=True, eq=False)
class PlanMemo:
    """What a plan may take from the last one: each Secret's check and each terminating
    Ingress's wants (by the identity of the Ingress, which each keeps). Settling the
    claims (oldest Ingress first) is done again in full; reading every Ingress's TLS
    entries and checking every certificate again is not."""

    checked: Mapping[Key, _Checked] = dataclasses.field(default_factory=dict)
    wants: Mapping[int, _Wants] = dataclasses.field(default_factory=dict)


class Planner:
    """Decides, host by host, which chain (if any) serves it; checks each Secret once."""

    def __init__(self, state: ClusterState, config: TranslateConfig,
                 clusters: Mapping[str, ObjectRef],
                 policies: PolicyIndex | None, inspect: Inspect,
                 last: PlanMemo | None = None) -> None:
        self.state = state
        self.clusters = clusters
        self.policies = policies
        self.config = config
        self.inspect = inspect
        self.bounds: set[dt.datetime] = set()
        """The validity bounds of every certificate checked (see :class:`TlsResult`)."""
        self.claims: dict[str, Claim] = {}
        self.certs: dict[Key, _Loaded] = {}
        self.diagnostics: list[Diagnostic] = []
        self.last = last if last is not None else PlanMemo()
        self.checked: dict[Key, _Checked] = {}
        self.wants: dict[int, _Wants] = {}

    def memo(self) -> PlanMemo:
        """What the next plan may take from this one."""
        return PlanMemo(self.checked, self.wants)

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
        secret = self.state.secrets.get(key)
        crt, pem_key = (secret.data.get("tls.crt"), secret.data.get("tls.key")) \
            if secret is not None and secret.type == TLS_SECRET_TYPE else (None, None)
        found = self.inspect(key, crt, pem_key) if crt and pem_key else None
        if found is not None:
            self.bounds.update(b for b in (found.not_before, found.not_after) if b is not None)
        # The clock is read only for a pair to check: a translation without
        # certificates does not depend on the instant of its rebuild.
        now = self.config.tls_now if found is not None else None
        last = self.last.checked.get(key)
        if (last is None or last.secret is not secret or last.found is not found
                or not _same_verdict(found, last.now, now)):
            last = _Checked(secret, found, now, self._check(key, secret, crt, pem_key, found))
        self.checked[key] = last
        return last.loaded

    def _check(self, key: Key, secret: Secret | None, crt: bytes | None,
               pem_key: bytes | None, found: Inspected | None) -> _Loaded:
        """The verdict on Secret ``key``, from what :meth:`_load` read of it."""
        ref = ObjectRef("Secret", *key)
        if secret is None:
            return _Loaded(reason=Reason.SECRET_NOT_FOUND, why=f"{ref} not found")
        if secret.type != TLS_SECRET_TYPE:
            return _Loaded(why=f"{ref} has type {secret.type}, not {TLS_SECRET_TYPE}")
        if not crt or not pem_key or found is None:
            return _Loaded(why=f"{ref} lacks tls.crt or tls.key")
        try:
            info = check_validity(found, self.config.tls_now)
            cert = ir.TLSCertificate(name=names.secret(*key), ref=ref,
                                     certificate_chain=crt.decode("ascii"),
                                     private_key=pem_key.decode("ascii"))
        except (CertError, UnicodeDecodeError) as e:
            return _Loaded(why=f"{ref}: {e}")
        return _Loaded(cert=cert, info=info)

    def claim(self, host: str, new: Claim, field: str) -> None:
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
            self.claim(rule.host, Claim(ing, cluster=target[0], access=target[1]), field)

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
            self.claims.setdefault(host, Claim(ing, broken=True))

    def terminated(self, ing: Ingress) -> None:
        """Claim the hosts of ``ing``'s TLS entries (done as the last plan did when the
        Ingress and the certificates it reads are the very same)."""
        wants = self.last.wants.get(id(ing))
        if (wants is None or wants.ingress is not ing
                or wants.default != self.config.default_certificate
                or any(self.load(key) is not loaded for key, loaded in wants.loads)):
            wants = self._wants(ing)
        self.wants[id(ing)] = wants
        for event in wants.events:
            if isinstance(event, Diagnostic):
                self.diagnostics.append(event)
            else:
                self.claim(*event)

    def _wants(self, ing: Ingress) -> _Wants:
        """The diagnostics and claims of ``ing``'s TLS entries, in order."""
        events: list[Diagnostic | _Claimed] = []
        loads: list[tuple[Key, _Loaded]] = []
        default = self.config.default_certificate
        for j, tls in enumerate(ing.tls):
            field = f"spec.tls[{j}]"
            # ingress-nginx serves a TLS entry without secretName with the default certificate.
            key = (ing.meta.namespace, tls.secret_name) if tls.secret_name else default
            if key is not None:
                loaded = self.load(key)
                loads.append((key, loaded))
            else:
                loaded = _Loaded(
                    reason=Reason.MISSING_FIELD,
                    why="no secretName and no default certificate (--default-certificate)")
            hosts = [h.lower() for h in tls.hosts] or self._rule_hosts(ing, loaded.info)
            if loaded.info is None:
                events.append(Diagnostic(
                    ing.meta.ref, f"{field}.secretName", loaded.reason,
                    f"{loaded.why}; hosts {', '.join(hosts) or '(none)'} are not served"))
            for host in hosts:
                ok = loaded.info is not None
                if loaded.info is not None and not covers(loaded.info.dns_names, host):
                    ok = False
                    events.append(Diagnostic(
                        ing.meta.ref, f"{field}.hosts", Reason.INVALID_SECRET,
                        f"certificate of {loaded.cert.ref if loaded.cert else key} does not "
                        f"cover host {host} (it names {', '.join(loaded.info.dns_names)})"))
                events.append((host, Claim(ing, secret=key, broken=not ok), f"{field}.hosts"))
        return _Wants(ing, default, tuple(loads), tuple(events))

    @staticmethod
    def _rule_hosts(ing: Ingress, info: CertInfo | None) -> list[str]:
        # ingress-nginx: a TLS entry without hosts serves the rule hosts its
        # certificate covers.
        hosts = sorted({r.host for r in ing.rules if r.host})
        return [h for h in hosts if covers(info.dns_names, h)] if info else hosts


def _same_verdict(found: Inspected | None, before: dt.datetime | None,
                  now: dt.datetime | None) -> bool:
    """Whether :func:`~kxds.certs.check.check_validity` of ``found`` says the same at
    ``before`` and ``now``: the instant matters only by the side of each bound it is on."""
    if before is now or found is None or found.error is not None:
        return True
    if before is None or now is None:
        return False
    return all((before < b) == (now < b) and (before > b) == (now > b)
               for b in (found.not_before, found.not_after) if b is not None)


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


def plan(state: ClusterState, config: TranslateConfig, ingresses: Iterable[Ingress],
         clusters: Mapping[str, ObjectRef], policies: PolicyIndex | None,
         inspect: Inspect, last: PlanMemo | None = None) -> Planner:
    """Decide every TLS host's chain, oldest Ingress first (it wins conflicts); ``last``:
    the last plan's :meth:`Planner.memo` (the plan is the same without it)."""
    p = Planner(state, config, clusters, policies, inspect, last)
    for ing in sorted(ingresses, key=age_order):
        guarded(ing.meta.ref, partial(p.plan, ing), partial(p.failed, ing))
    return p


Inspect = Callable[[Key, bytes, bytes], Inspected]
"""Inspect the (certificate, key) pair of the TLS Secret ``key``."""
