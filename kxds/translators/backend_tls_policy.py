"""BackendTLSPolicy: TLS from the gateway to the Services it targets.

A policy (``gateway.networking.k8s.io/v1``) targets Services of its namespace,
all their ports or the one ``sectionName`` names. The HTTPRoute and GRPCRoute
backends on those ports are reached over TLS through the twin clusters of
:mod:`kxds.translators.upstream_tls`: the SNI is ``validation.hostname`` and the
backend's certificate must chain to ``validation.caCertificateRefs`` and carry
that host name; or, when ``validation.subjectAltNames`` are given, one of them
instead (a ``Hostname`` as a DNS SAN, a ``URI`` as a URI SAN; the hostname
stays the SNI), as the spec has them replace the hostname check.

What kxds can honour: CA bundles from Secrets with a ``ca.crt`` key (an
implementation-specific kind the spec allows). What it cannot, and so makes the
routes answer 503 rather than connect less checked than asked (fail closed):
ConfigMap CA references (kxds does not read ConfigMaps),
``wellKnownCACertificates`` (Envoy needs a CA file kxds cannot know) and
``options``. Each is a diagnostic naming the policy
and the field.

Two policies on one port: the one naming the port (``sectionName``) wins over
one naming the whole Service (an override, not a conflict); between two as
specific, the older, then the first by name, wins and the other gets a
``Conflict`` diagnostic and ``Accepted=False`` (``Conflicted``), as GEP-713 says.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from kxds import ir, names
from kxds.certs.check import CertError, check_ca_bundle
from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.kube.gateway_models import GROUP, ParentReference
from kxds.kube.models import (
    BackendTLSPolicy,
    ClusterState,
    GRPCRoute,
    HTTPRoute,
    Key,
    Service,
    ServicePort,
)
from kxds.translators.gateway_status import Condition, ParentStatus, RouteStatus

_FAIL = "its routes answer 503 rather than connect unverified"
Problem = tuple[str, str]
"""Why kxds cannot honour a policy, and the condition reason it means: ``Invalid``
(a field kxds does not act on), ``InvalidKind`` or ``InvalidCACertificateRef``."""


@dataclass(frozen=True, slots=True)
class PolicyTLS:
    """What a policy asks of the connections to one Service port."""

    policy: ObjectRef
    sni: str
    ca: str | None
    """The name the CA bundle is known by in the policy's namespace (see :func:`names.ca_secret`);
    None with ``problem``."""
    problem: Problem | None = None
    """Why kxds cannot honour the policy: its routes to the port answer 503."""
    sans: tuple[str, ...] = ()
    """``subjectAltNames`` as ``DNS:name`` and ``URI:uri``, in the policy's order."""


@dataclass(frozen=True, slots=True)
class PolicyPlan:
    by_cluster: Mapping[str, PolicyTLS]
    secrets: Mapping[str, ir.ValidationContext]
    diagnostics: tuple[Diagnostic, ...]
    conditions: Mapping[ObjectRef, tuple[Condition, ...]] = dataclasses.field(
        default_factory=dict)
    """Each policy's ``Accepted`` and ``ResolvedRefs`` conditions."""


def _ca_bundle(state: ClusterState, ns: str, kind: str, name: str) -> str | tuple[Reason, str]:
    """The PEM under ``ca.crt`` of the Secret or ConfigMap ``ns/name``, or why not."""
    ref = ObjectRef(kind, ns, name)
    data: bytes | None
    if kind == "ConfigMap":
        cm = state.config_maps.get((ns, name))
        if cm is None:
            return Reason.CONFIG_MAP_NOT_FOUND, f"{ref} not found"
        if cm.too_large:
            return Reason.INVALID_VALUE, f"{ref} is too large to be read"
        text = cm.data.get("ca.crt")
        data = text.encode() if text is not None else None
        missing = Reason.INVALID_VALUE
    else:
        secret = state.secrets.get((ns, name))
        if secret is None:
            return Reason.SECRET_NOT_FOUND, f"{ref} not found"
        data, missing = secret.data.get("ca.crt"), Reason.INVALID_SECRET
    if data is None:
        return missing, f"{ref} has no ca.crt key"
    try:
        check_ca_bundle(data)
        return data.decode("ascii")
    except (CertError, UnicodeDecodeError) as e:
        return missing, f"{ref}: ca.crt: {e}"


def _ca(state: ClusterState, pol: BackendTLSPolicy, out: list[Diagnostic],
        secrets: dict[str, ir.ValidationContext]) -> tuple[str | None, Problem | None]:
    """(the CA bundle's name, None) or (None, why the policy cannot be honoured)."""
    ns = pol.meta.namespace
    if pol.well_known_cas is not None:
        out.append(Diagnostic(pol.meta.ref, "spec.validation.wellKnownCACertificates",
                              Reason.UNSUPPORTED, f"{pol.well_known_cas!r} is not supported "
                              f"(Envoy needs a CA file kxds does not know); {_FAIL}"))
        return None, ("wellKnownCACertificates is not supported", "Invalid")
    pems: list[str] = []
    for i, ref in enumerate(pol.ca_refs):
        field = f"spec.validation.caCertificateRefs[{i}]"
        problem: tuple[Reason, str] | None = None
        if ref.group != "" or ref.kind not in ("Secret", "ConfigMap"):
            problem = (Reason.INVALID_VALUE, f"kind {ref.group or 'core'}/{ref.kind} is not a "
                       "CA certificate reference kxds reads (Secret or ConfigMap)")
        else:
            found = _ca_bundle(state, ns, ref.kind, ref.name)
            if isinstance(found, str):
                pems.append(found)
            else:
                problem = found
        if problem is not None:
            out.append(Diagnostic(pol.meta.ref, field, problem[0], f"{problem[1]}; {_FAIL}"))
            kind_ok = ref.group == "" and ref.kind in ("Secret", "ConfigMap")
            return None, (f"{field}: {problem[1]}",
                          "InvalidCACertificateRef" if kind_ok else "InvalidKind")
    # Names hold no '+' nor ':', so a joined name cannot be another bundle's.
    name = "+".join(f"configmap:{r.name}" if r.kind == "ConfigMap" else r.name
                    for r in pol.ca_refs)
    sds = names.ca_secret(ns, name)
    bundle = "".join(p if p.endswith("\n") else p + "\n" for p in pems)
    holder = (ObjectRef("Secret", ns, pol.ca_refs[0].name) if len(pol.ca_refs) == 1
              else pol.meta.ref)
    secrets[sds] = ir.ValidationContext(name=sds, ref=holder, trusted_ca=bundle)
    return name, None


def _unhonoured(pol: BackendTLSPolicy, out: list[Diagnostic]) -> Problem | None:
    """The first field kxds cannot act on (reported), or None."""
    if pol.options:
        out.append(Diagnostic(pol.meta.ref, "spec.options", Reason.UNSUPPORTED,
                              f"kxds defines no options ({', '.join(pol.options)}); {_FAIL}"))
        return "options are not supported", "Invalid"
    return None


Rank = tuple[int, str, str]
"""A policy's precedence on a port (the lowest wins): naming the port, age, name."""


@dataclass(slots=True)
class _Choice:
    """The policy winning each cluster so far, and the policies that lost a conflict."""

    chosen: dict[str, tuple[Rank, PolicyTLS]] = dataclasses.field(default_factory=dict)
    conflicted: set[ObjectRef] = dataclasses.field(default_factory=set)

    def offer(self, cluster: str, rank: Rank, tls: PolicyTLS, where: str,
              out: list[Diagnostic]) -> None:
        """Give ``cluster`` to ``tls`` unless a policy of lower rank holds it; of two as
        specific, the loser gets a ``Conflict`` diagnostic."""
        held = self.chosen.get(cluster)
        if held is not None and held[1].policy != tls.policy:
            loser = max(held, (rank, tls), key=lambda x: x[0])
            winner = min(held, (rank, tls), key=lambda x: x[0])
            self.chosen[cluster] = winner
            if loser[0][0] != winner[0][0]:
                return  # the policy naming the port overrides: no conflict
            self.conflicted.add(loser[1].policy)
            out.append(Diagnostic(loser[1].policy, "spec.targetRefs", Reason.CONFLICT,
                                  f"{where} is already targeted by {winner[1].policy}, "
                                  "which applies there"))
        elif held is None or rank < held[0]:
            self.chosen[cluster] = (rank, tls)


def plan(state: ClusterState) -> PolicyPlan:
    """Every Service-port cluster targeted by a BackendTLSPolicy -> what the winning policy asks."""
    out: list[Diagnostic] = []
    secrets: dict[str, ir.ValidationContext] = {}
    choice = _Choice()
    problems: dict[ObjectRef, Problem | None] = {}
    targeted: dict[ObjectRef, int] = {}
    for pol in sorted(state.backend_tls_policies.values(), key=lambda p: p.meta.key):
        problem = _unhonoured(pol, out)
        ca: str | None = None
        if problem is None:
            ca, problem = _ca(state, pol, out, secrets)
        problems[pol.meta.ref] = problem
        targeted[pol.meta.ref] = 0
        for i, t in enumerate(pol.target_refs):
            found = _target_ports(state, pol, i, out)
            if found is None:
                continue
            svc, ports = found
            rank = (0 if t.section_name else 1, pol.meta.creation_timestamp or "~",
                    pol.meta.name)
            tls = _policy_tls(pol, ca, problem)
            targeted[pol.meta.ref] += len(ports)
            ns, name = svc.meta.namespace, svc.meta.name
            for p in ports:
                choice.offer(names.service_cluster(ns, name, p.port), rank, tls,
                             f"port {p.port} of Service {ns}/{name}", out)
    conditions = {ref: _conditions(problems[ref], targeted[ref], ref not in choice.conflicted)
                  for ref in problems}
    return PolicyPlan(by_cluster={c: v[1] for c, v in choice.chosen.items()}, secrets=secrets,
                      diagnostics=tuple(out), conditions=conditions)


def _target_ports(state: ClusterState, pol: BackendTLSPolicy, i: int, out: list[Diagnostic]
                  ) -> tuple[Service, list[ServicePort]] | None:
    """The Service and ports ``spec.targetRefs[i]`` targets; None (reported) when none."""
    t = pol.target_refs[i]
    ns, field = pol.meta.namespace, f"spec.targetRefs[{i}]"
    if t.group != "" or t.kind != "Service":
        out.append(Diagnostic(pol.meta.ref, field, Reason.UNSUPPORTED,
                              f"{t.group or 'core'}/{t.kind} is not a target kxds "
                              "supports (only Services)"))
        return None
    svc = state.services.get((ns, t.name))
    if svc is None:
        out.append(Diagnostic(pol.meta.ref, field, Reason.BACKEND_NOT_FOUND,
                              f"Service {ns}/{t.name} not found"))
        return None
    ports = [p for p in svc.ports if t.section_name is None or p.name == t.section_name]
    if not ports:
        out.append(Diagnostic(pol.meta.ref, f"{field}.sectionName", Reason.PORT_NOT_FOUND,
                              f"Service {ns}/{t.name} has no port named {t.section_name!r}"))
        return None
    return svc, ports


def _policy_tls(pol: BackendTLSPolicy, ca: str | None, problem: Problem | None) -> PolicyTLS:
    return PolicyTLS(policy=pol.meta.ref, sni=pol.hostname, ca=ca, problem=problem,
                     sans=tuple(("DNS:" if s.type == "Hostname" else "URI:") + s.value
                                for s in pol.subject_alt_names))


def _conditions(problem: Problem | None, targeted: int, wins: bool) -> tuple[Condition, ...]:
    """``Accepted`` and ``ResolvedRefs`` as the spec names their reasons."""
    text, kind = problem or ("", "")
    if problem is None or kind == "Invalid":
        resolved = Condition("ResolvedRefs", True, "ResolvedRefs")
    else:
        resolved = Condition("ResolvedRefs", False, kind, text)
    if problem is not None:
        accepted = Condition("Accepted", False,
                             "Invalid" if kind == "Invalid" else "NoValidCACertificate", text)
    elif not targeted:
        accepted = Condition("Accepted", False, "TargetNotFound",
                             "no target is a Service port that exists")
    elif not wins:
        accepted = Condition("Accepted", False, "Conflicted",
                             "a targeted port is taken by an older policy as specific")
    else:
        accepted = Condition("Accepted", True, "Accepted")
    return accepted, resolved


def policy_statuses(state: ClusterState, ours: set[Key],
                    conditions: Mapping[ObjectRef, tuple[Condition, ...]]
                    ) -> tuple[RouteStatus, ...]:
    """Each policy's ``status.ancestors``: the Gateways of ours that HTTPRoutes or
    GRPCRoutes to a Service it targets are attached to (in the RouteStatus shape,
    ``parents`` being the ancestors)."""
    out: list[RouteStatus] = []
    for pol in sorted(state.backend_tls_policies.values(), key=lambda p: p.meta.ref):
        services = {(pol.meta.namespace, t.name) for t in pol.target_refs
                    if t.group == "" and t.kind == "Service"}
        gateways: set[Key] = set()
        routes: list[HTTPRoute | GRPCRoute] = [*state.http_routes.values(),
                                               *state.grpc_routes.values()]
        for route in routes:
            ns = route.meta.namespace
            if not any(b.group == "" and b.kind == "Service"
                       and (b.namespace or ns, b.name) in services
                       for rule in route.rules for b in rule.backend_refs):
                continue
            gateways.update(key for p in route.parent_refs
                            if p.group == GROUP and p.kind == "Gateway"
                            and (key := (p.namespace or ns, p.name)) in ours)
        conds = conditions.get(pol.meta.ref, ())
        out.append(RouteStatus(ref=pol.meta.ref, generation=pol.meta.generation, parents=tuple(
            ParentStatus(parent=ParentReference(namespace=g[0], name=g[1]), conditions=conds)
            for g in sorted(gateways))))
    return tuple(out)
