"""Gateway API front-end, part one: GatewayClasses, Gateways and their listeners (pure).

Which Envoys serve which Gateway: every edge Envoy serves every Gateway of a
GatewayClass whose ``controllerName`` is ``kxds.io/gateway-controller``, but a
Gateway pinned to one edge group (:mod:`kxds.translators.gateway_groups`). A
listener is served on the edge's own listeners:

* ``HTTP`` on port 80 or the edge HTTP port (``--http-port``): the edge
  Service publishes 80 and forwards it there, so both name the same Envoy
  listener;
* ``HTTPS`` (Terminate) on 443 or ``--https-port``: a terminated chain of the
  edge TLS listener, selected by the listener's hostname as SNI, when its
  certificate resolves (:mod:`kxds.translators.gateway_tls`);
* ``TLS`` (Passthrough or Terminate) there too, ``TCP`` and ``UDP`` on their own ports
  (:mod:`kxds.translators.gateway_l4`);
* any other port is ``PortUnavailable``, any other protocol ``UnsupportedProtocol``.

Listeners of every Gateway of ours that land on the same Envoy listener with
the same hostname are not distinct: the oldest Gateway (then namespace/name)
keeps the hostname, the others' listeners are ``Conflicted``
(``HostnameConflict``) and not accepted; within one Gateway, none of the
indistinct listeners is accepted (the spec forbids picking a winner there).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kxds.kube.gateway_models import GROUP, Gateway, GatewayClass, GroupKind, Listener
from kxds.kube.models import ClusterState, Key
from kxds.translators.config import TranslateConfig
from kxds.translators.gateway_status import CONTROLLER_NAME, ClassStatus, Condition

HTTPROUTE = GroupKind(group=GROUP, kind="HTTPRoute")
GRPCROUTE = GroupKind(group=GROUP, kind="GRPCRoute")
HTTP_KINDS = (HTTPROUTE, GRPCROUTE)
"""The Route kinds an HTTP listener serves."""
TLSROUTE = GroupKind(group=GROUP, kind="TLSRoute")
TCPROUTE = GroupKind(group=GROUP, kind="TCPRoute")
UDPROUTE = GroupKind(group=GROUP, kind="UDPRoute")
L4_KINDS = {"TLS": (TLSROUTE,), "TCP": (TCPROUTE,), "UDP": (UDPROUTE,)}
"""The Route kind each listener protocol beyond HTTP serves."""
SUPPORTED_FEATURES = (
    "BackendTLSPolicy", "BackendTLSPolicySANValidation", "GRPCRoute",
    "GRPCRouteNamedRouteRule", "Gateway", "GatewayHTTPListenerIsolation", "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode", "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C", "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendTimeout", "HTTPRouteHostRewrite", "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRoutePathRedirect", "HTTPRoutePathRewrite", "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching", "HTTPRouteRequestMirror", "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror", "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification", "HTTPRouteSchemeRedirect", "ReferenceGrant",
    "TCPRoute", "TLSRoute", "TLSRouteModeMixed", "TLSRouteModeTerminate", "UDPRoute")
"""The conformance suite's feature names of what kxds implements, sorted (the core
features and the HTTPRoute extended ones kxds serves)."""


def age(meta_owner: Gateway | GatewayClass) -> tuple[bool, str, str, str]:
    """Oldest first; objects without a timestamp (hand-written manifests) after the rest."""
    meta = meta_owner.meta
    ts = meta.creation_timestamp
    return (ts == "", ts, meta.namespace, meta.name)


def our_classes(state: ClusterState) -> dict[str, GatewayClass]:
    """The GatewayClasses kxds controls, by name."""
    return {c.meta.name: c for c in state.gateway_classes.values()
            if c.controller_name == CONTROLLER_NAME}


def class_status(cls: GatewayClass) -> ClassStatus:
    """A class of ours is always accepted (it has no parameters kxds would read)."""
    return ClassStatus(ref=cls.meta.ref, generation=cls.meta.generation,
                       conditions=(Condition("Accepted", True, "Accepted",
                                             "kxds serves Gateways of this class"),),
                       supported_features=SUPPORTED_FEATURES)


def our_gateways(state: ClusterState) -> list[Gateway]:
    """The Gateways of our classes, oldest first."""
    classes = our_classes(state)
    return sorted((g for g in state.gateways.values() if g.gateway_class_name in classes),
                  key=age)


@dataclass(frozen=True, slots=True)
class ListenerPlan:
    """What becomes of one listener: whether routes may attach, and its conditions."""

    gateway: Key
    listener: Listener
    accepted: bool
    supported_kinds: tuple[GroupKind, ...]
    conditions: tuple[Condition, ...]
    """Without ``Programmed`` (it follows from ``accepted``) and without the count."""


def _port_problem(lis: Listener, config: TranslateConfig) -> Condition | None:
    proto = lis.protocol.upper()
    if proto not in ("HTTP", "HTTPS", "TLS", "TCP", "UDP") or lis.protocol != proto:
        return Condition("Accepted", False, "UnsupportedProtocol",
                         f"protocol {lis.protocol} is not supported (HTTP, HTTPS, TLS, TCP "
                         "and UDP are)")
    if proto == "TLS" and lis.tls is None:
        return Condition("Accepted", False, "UnsupportedProtocol",
                         "a TLS listener needs tls (mode Passthrough or Terminate)")
    if proto in ("TCP", "UDP"):
        edge = {80, 443, config.http_port, config.https_port}
        if proto == "TCP" and lis.port in edge:
            return Condition("Accepted", False, "PortUnavailable",
                             f"port {lis.port} is the edge's own HTTP or HTTPS port")
        return None
    ports = (80, config.http_port) if proto == "HTTP" else (443, config.https_port)
    if lis.port not in ports:
        return Condition("Accepted", False, "PortUnavailable",
                         f"{proto} is served on port {' or '.join(map(str, sorted(set(ports))))} "
                         "(the edge Service's port and kxds's own)")
    return None


def kinds_of(protocol: str) -> tuple[GroupKind, ...]:
    """The Route kinds a listener of ``protocol`` serves."""
    return L4_KINDS.get(protocol.upper(), HTTP_KINDS)


def _kinds(lis: Listener) -> tuple[tuple[GroupKind, ...], Condition | None]:
    """The route kinds the listener supports, and ``ResolvedRefs=False`` for the others."""
    served = kinds_of(lis.protocol)
    if not lis.allowed_routes.kinds:
        return served, None
    good = tuple(k for k in lis.allowed_routes.kinds if k in served)
    bad = [f"{k.group}/{k.kind}" for k in lis.allowed_routes.kinds if k not in served]
    if not bad:
        return good, None
    return good, Condition("ResolvedRefs", False, "InvalidRouteKinds",
                           f"route kinds {', '.join(bad)} are not supported on "
                           f"{lis.protocol} listeners")


def _slot(lis: Listener) -> tuple[str, str | None]:
    """What makes listeners distinct on the edge: HTTPS and TLS listeners share one Envoy
    listener (by SNI name), a TCP or UDP listener has its port to itself."""
    proto = lis.protocol.upper()
    if proto in ("HTTPS", "TLS"):
        return ("SNI", lis.hostname)
    if proto in ("TCP", "UDP"):
        return (f"{proto}/{lis.port}", None)
    return (lis.protocol, lis.hostname)


def plan_listeners(gateways: Iterable[Gateway], config: TranslateConfig,
                   cert_refs: dict[tuple[Key, str], Condition]) -> list[ListenerPlan]:
    """Every listener of ``gateways`` (oldest Gateway first), with conflicts settled.

    ``cert_refs``: the ``ResolvedRefs`` condition of each HTTPS listener's
    certificates (absent: none to resolve).
    """
    plans: list[ListenerPlan] = []
    claimed: dict[tuple[str, str | None], Key] = {}
    for gw in gateways:
        local: dict[tuple[str, str | None], list[int]] = {}
        for lis in gw.listeners:
            problem = _port_problem(lis, config)
            kinds, kinds_problem = _kinds(lis)
            conds = [problem or Condition("Accepted", True, "Accepted", "")]
            conds.append(cert_refs.get((gw.meta.key, lis.name)) or kinds_problem
                         or Condition("ResolvedRefs", True, "ResolvedRefs", ""))
            ok = problem is None and conds[1].status
            if ok:
                local.setdefault(_slot(lis), []).append(len(plans))
            plans.append(ListenerPlan(gw.meta.key, lis, ok, kinds, tuple(conds)))
        for slot, indexes in local.items():
            owner = claimed.get(slot)
            if len(indexes) == 1 and owner is None:
                claimed[slot] = gw.meta.key
                continue
            what = (f"port {slot[0].partition('/')[2]}" if "/" in slot[0]
                    else f"hostname {slot[1] or '(any)'}")
            why = (f"{what} is also served by Gateway "
                   f"{owner[0]}/{owner[1]}" if owner is not None else
                   f"listeners {', '.join(plans[i].listener.name for i in indexes)} of this "
                   "Gateway are not distinct (port 80 and the edge port are one listener)"
                   if slot[0] == "HTTP" else
                   f"listeners {', '.join(plans[i].listener.name for i in indexes)} of this "
                   f"Gateway are not distinct (they share the edge's {what})")
            for i in indexes:
                plans[i] = _conflicted(plans[i], why)
    return plans


def _conflicted(plan: ListenerPlan, why: str) -> ListenerPlan:
    conds = (Condition("Accepted", False, "HostnameConflict", why), *plan.conditions[1:],
             Condition("Conflicted", True, "HostnameConflict", why))
    return ListenerPlan(plan.gateway, plan.listener, False, plan.supported_kinds, conds)


def granted(state: ClusterState, from_kind: str, from_ns: str, to_group: str, to_kind: str,
            to_ns: str, name: str) -> bool:
    """Whether a ReferenceGrant in ``to_ns`` lets ``from_kind`` objects of ``from_ns``
    (Gateway API group) refer to ``to_group``/``to_kind`` ``name``."""
    return any(grant.meta.namespace == to_ns
               and grant.allows(GROUP, from_kind, from_ns, to_group, to_kind, name)
               for grant in state.reference_grants.values())
