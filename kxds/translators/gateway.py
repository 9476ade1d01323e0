"""Gateway API front-end, part one: GatewayClasses, Gateways and their listeners (pure).

Which Envoys serve which Gateway: every edge Envoy serves every Gateway of a
GatewayClass whose ``controllerName`` is ``kxds.io/gateway-controller``, but a
Gateway pinned to one edge group (:mod:`kxds.translators.gateway_groups`). A
listener is served on the edge's own listeners:

* ``HTTP`` on port 80 or the edge HTTP port (``--http-port``): the edge
  Service publishes 80 and forwards it there, so both name the same Envoy
  listener (the Ingresses' too);
* ``HTTPS`` (Terminate) on 443 or ``--https-port``: a terminated chain of the
  edge TLS listener, selected by the listener's hostname as SNI, when its
  certificate resolves (:mod:`kxds.translators.gateway_tls`);
* ``TLS`` (Passthrough or Terminate) on 443 or ``--https-port``: chains of the
  edge TLS listener beside the HTTPS ones, selected by SNI
  (:mod:`kxds.translators.gateway_l4`);
* ``HTTP``, ``HTTPS`` and ``TLS`` on any other port: the same, on an Envoy
  listener of that port's own (``http/<port>``, ``https/<port>``: HTTPS and
  TLS listeners of one port share it, split by SNI) holding only the Routes of
  the Gateway listeners on that port (:func:`edge_port`);
* ``TCP`` and ``UDP`` on their own ports (:mod:`kxds.translators.gateway_l4`);
* any other protocol is ``UnsupportedProtocol``.

One TCP port serves one protocol family (HTTP, HTTPS or TLS, TCP): a listener
on a port that the edge or an older listener serves another way is
``PortUnavailable``, as is one on ``--reserved-ports`` (the edge Envoys' admin
port). Listeners of every Gateway of ours that land on the same Envoy listener
with the same hostname are not distinct: the oldest Gateway (then
namespace/name) keeps the hostname, the others' listeners are ``Conflicted``
(``HostnameConflict``) and not accepted; within one Gateway, none of the
indistinct listeners is accepted (the spec forbids picking a winner there).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

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
    "HTTPRouteBackendTimeout", "HTTPRouteCORS", "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching", "HTTPRouteNamedRouteRule",
    "HTTPRoutePathRedirect", "HTTPRoutePathRewrite", "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching", "HTTPRouteRequestMirror", "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror", "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification", "HTTPRouteRetry", "HTTPRouteRetryBackendTimeout",
    "HTTPRouteRetryConnectionError", "HTTPRouteSchemeRedirect", "ReferenceGrant",
    "TCPRoute", "TLSRoute", "TLSRouteModeMixed", "TLSRouteModeTerminate", "UDPRoute")
"""The conformance suite's feature names of what kxds implements, sorted (the core
features and the HTTPRoute extended ones kxds serves)."""
PORT_FEATURES = ("GatewayPort8080", "HTTPRouteParentRefPort")
"""Claimed when ports 8080 and 8090 are free for Gateway listeners of their own: the
suite's tests of these features want listeners on 80, 8080 and 8090 told apart,
which they are not when one is the edge HTTP or HTTPS port (80 and the edge HTTP
port are one Envoy listener) or a reserved one (:func:`supported_features`)."""


def age(meta_owner: Gateway | GatewayClass) -> tuple[bool, str, str, str]:
    """Oldest first; objects without a timestamp (hand-written manifests) after the rest."""
    meta = meta_owner.meta
    ts = meta.creation_timestamp
    return (ts == "", ts, meta.namespace, meta.name)


def our_classes(state: ClusterState) -> dict[str, GatewayClass]:
    """The GatewayClasses kxds controls, by name."""
    return {c.meta.name: c for c in state.gateway_classes.values()
            if c.controller_name == CONTROLLER_NAME}


def supported_features(config: TranslateConfig) -> tuple[str, ...]:
    """The features claimed with ``config``'s edge ports, sorted."""
    taken = {config.http_port, config.https_port, *config.reserved_ports}
    if taken & {8080, 8090}:
        return SUPPORTED_FEATURES
    return tuple(sorted((*SUPPORTED_FEATURES, *PORT_FEATURES)))


def class_status(cls: GatewayClass, config: TranslateConfig) -> ClassStatus:
    """A class of ours is always accepted (it has no parameters kxds would read)."""
    return ClassStatus(ref=cls.meta.ref, generation=cls.meta.generation,
                       conditions=(Condition("Accepted", True, "Accepted",
                                             "kxds serves Gateways of this class"),),
                       supported_features=supported_features(config))


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
    port: int = 0
    """The port of the Envoy listener serving it (:func:`edge_port`)."""
    own_port: bool = False
    """Whether that Envoy listener is the Gateways' alone (an HTTP, HTTPS or TLS
    listener beside the edge's own ports, which Ingresses share)."""


def edge_port(lis: Listener, config: TranslateConfig) -> int:
    """The port of the Envoy listener that serves ``lis``: 80 and the edge HTTP port
    are the one edge HTTP listener (the edge Service publishes 80 there), 443 and
    the edge HTTPS port the edge TLS listener; any other port is its own."""
    proto = lis.protocol.upper()
    if proto == "HTTP" and lis.port in (80, config.http_port):
        return config.http_port
    if proto in ("HTTPS", "TLS") and lis.port in (443, config.https_port):
        return config.https_port
    return lis.port


def _port_problem(lis: Listener, config: TranslateConfig) -> Condition | None:
    proto = lis.protocol.upper()
    if proto not in ("HTTP", "HTTPS", "TLS", "TCP", "UDP") or lis.protocol != proto:
        return Condition("Accepted", False, "UnsupportedProtocol",
                         f"protocol {lis.protocol} is not supported (HTTP, HTTPS, TLS, TCP "
                         "and UDP are)")
    if proto == "TLS" and lis.tls is None:
        return Condition("Accepted", False, "UnsupportedProtocol",
                         "a TLS listener needs tls (mode Passthrough or Terminate)")
    if lis.port in config.reserved_ports and proto != "UDP":
        return Condition("Accepted", False, "PortUnavailable",
                         f"port {lis.port} is reserved on the edge Envoys (their admin or "
                         "health port: --reserved-ports)")
    web = {80, config.http_port}
    secure = {443, config.https_port}
    taken = (set() if proto == "UDP" else web | secure if proto == "TCP"
             else secure if proto == "HTTP" else web)
    if lis.port in taken:
        return Condition("Accepted", False, "PortUnavailable",
                         f"port {lis.port} is the edge's own "
                         f"{'HTTP' if lis.port in web else 'HTTPS'} port")
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


def _slot(lis: Listener, config: TranslateConfig) -> tuple[str, str | None]:
    """What makes listeners distinct on the edge: the HTTP listeners of one port share
    an Envoy listener (by hostname), the HTTPS and TLS ones of one port too (by SNI
    name), a TCP or UDP listener has its port to itself."""
    proto = lis.protocol.upper()
    if proto in ("HTTPS", "TLS"):
        return (f"SNI/{edge_port(lis, config)}", lis.hostname)
    if proto in ("TCP", "UDP"):
        return (f"{proto}/{lis.port}", None)
    return (f"HTTP/{edge_port(lis, config)}", lis.hostname)


_FAMILY = {"HTTP": "HTTP", "SNI": "HTTPS or TLS", "TCP": "TCP"}
"""What a TCP port of the edge serves (one of them per port); UDP ports are apart."""


def _family_clash(slot: tuple[str, str | None], holders: dict[int, tuple[str, str]],
                  who: str) -> Condition | None:
    """``PortUnavailable`` when the slot's port already serves another family (an
    older listener's, or the edge's own ports); otherwise the port is claimed."""
    family, _, port_text = slot[0].partition("/")
    if family == "UDP":
        return None
    port = int(port_text)
    holder = holders.setdefault(port, (family, who))
    if holder[0] == family:
        return None
    return Condition("Accepted", False, "PortUnavailable",
                     f"port {port} already serves {_FAMILY[holder[0]]} ({holder[1]})")


def plan_listeners(gateways: Iterable[Gateway], config: TranslateConfig,
                   cert_refs: dict[tuple[Key, str], Condition]) -> list[ListenerPlan]:
    """Every listener of ``gateways`` (oldest Gateway first), with conflicts settled.

    ``cert_refs``: the ``ResolvedRefs`` condition of each HTTPS listener's
    certificates (absent: none to resolve).
    """
    plans: list[ListenerPlan] = []
    claimed: dict[tuple[str, str | None], Key] = {}
    holders = {config.http_port: ("HTTP", "the edge HTTP listener"),
               config.https_port: ("SNI", "the edge TLS listener")}
    for gw in gateways:
        local: dict[tuple[str, str | None], list[int]] = {}
        for lis in gw.listeners:
            problem = _port_problem(lis, config) or _family_clash(
                _slot(lis, config), holders,
                f"listener {lis.name} of Gateway {gw.meta.namespace}/{gw.meta.name}")
            kinds, kinds_problem = _kinds(lis)
            conds = [problem or Condition("Accepted", True, "Accepted", "")]
            conds.append(cert_refs.get((gw.meta.key, lis.name)) or kinds_problem
                         or Condition("ResolvedRefs", True, "ResolvedRefs", ""))
            ok = problem is None and conds[1].status
            if ok:
                local.setdefault(_slot(lis, config), []).append(len(plans))
            port = edge_port(lis, config)
            plans.append(ListenerPlan(gw.meta.key, lis, ok, kinds, tuple(conds), port,
                                      port not in (config.http_port, config.https_port)
                                      and lis.protocol in ("HTTP", "HTTPS", "TLS")))
        for slot, indexes in local.items():
            owner = claimed.get(slot)
            if len(indexes) == 1 and owner is None:
                claimed[slot] = gw.meta.key
                continue
            why = _indistinct(slot, owner, [plans[i].listener.name for i in indexes], config)
            for i in indexes:
                plans[i] = _conflicted(plans[i], why)
    return plans


def _indistinct(slot: tuple[str, str | None], owner: Key | None, listeners: list[str],
                config: TranslateConfig) -> str:
    """Why listeners on one slot are conflicted: another Gateway has it, or several
    listeners of this one share it."""
    family, _, port = slot[0].partition("/")
    what = f"port {port}" if family in ("TCP", "UDP") else f"hostname {slot[1] or '(any)'}"
    if owner is not None:
        return f"{what} is also served by Gateway {owner[0]}/{owner[1]}"
    shared = ("port 80 and the edge port are one listener"
              if family == "HTTP" and int(port) == config.http_port
              else f"they share the edge's {what}" if family in ("TCP", "UDP")
              else f"they share {what} on port {port}")
    return f"listeners {', '.join(listeners)} of this Gateway are not distinct ({shared})"


def _conflicted(plan: ListenerPlan, why: str) -> ListenerPlan:
    conds = (Condition("Accepted", False, "HostnameConflict", why), *plan.conditions[1:],
             Condition("Conflicted", True, "HostnameConflict", why))
    return replace(plan, accepted=False, conditions=conds)


def granted(state: ClusterState, from_kind: str, from_ns: str, to_group: str, to_kind: str,
            to_ns: str, name: str) -> bool:
    """Whether a ReferenceGrant in ``to_ns`` lets ``from_kind`` objects of ``from_ns``
    (Gateway API group) refer to ``to_group``/``to_kind`` ``name``."""
    return any(grant.meta.namespace == to_ns
               and grant.allows(GROUP, from_kind, from_ns, to_group, to_kind, name)
               for grant in state.reference_grants.values())
