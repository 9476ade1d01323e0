"""Gateway API documents -> models (``gateway.networking.k8s.io/v1``, ReferenceGrant v1beta1).

Besides the schema (types, enums, lengths, patterns), the CRDs carry CEL rules
(``x-kubernetes-validations``) that an API server enforces on every write;
manifests meet no API server, so the same rules are checked here and a
violation is the object's diagnostic, with the CRD's own wording where it
has one. Defaults are applied as the CRD schema applies them (``PathPrefix``
``/`` matches, ``weight: 1``, ``allowedRoutes.namespaces.from: Same``).

This module parses GatewayClasses, Gateways, ReferenceGrants and BackendTLSPolicies;
the Route kinds are :mod:`kxds.kube.parse_gateway_routes`. :data:`PARSERS` names them all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from kxds.diagnostics import Reason
from kxds.kube import gateway_models as g
from kxds.kube.fields import (
    check_count,
    fail,
    get_int,
    get_list,
    get_map,
    get_str,
    items,
    one_of,
    parse_meta,
    parse_selector,
)
from kxds.kube.gateway_fields import (
    CONTROLLER_NAME,
    PROTOCOL,
    SECTION_NAME,
    group_kind,
    matching,
    object_name,
    parse_hostname,
)
from kxds.kube.limits import Limits
from kxds.kube.meta import LabelSelector
from kxds.kube.parse_gateway_routes import (
    parse_grpc_route,
    parse_http_route,
    parse_tcp_route,
    parse_tls_route,
    parse_udp_route,
)

# --- GatewayClass ----------------------------------------------------------------------


def parse_gateway_class(doc: Mapping[str, Any], limits: Limits) -> g.GatewayClass:
    meta = parse_meta(doc, "GatewayClass", namespaced=False)
    spec = get_map(doc, "spec", "")
    controller = get_str(spec, "controllerName", "spec", required=True)
    matching(controller, CONTROLLER_NAME, 253, "spec.controllerName",
              "a controller name (a domain-prefixed path, like example.com/controller)")
    return g.GatewayClass(meta=meta, controller_name=cast(str, controller))


# --- Gateway ---------------------------------------------------------------------------


def _certificate_ref(raw: Mapping[str, Any], path: str) -> g.SecretObjectReference:
    group, kind = group_kind(raw, path, "", "Secret")
    return g.SecretObjectReference(group=group, kind=kind,
                                   name=cast(str, object_name(raw, "name", path)),
                                   namespace=object_name(raw, "namespace", path, required=False))


def _listener_tls(raw: Mapping[str, Any], path: str) -> g.ListenerTLS:
    mode = one_of(get_str(raw, "mode", path), ("Terminate", "Passthrough"), f"{path}.mode",
                  "Terminate")
    check_count(get_list(raw, "certificateRefs", path), 64, f"{path}.certificateRefs",
                "the Gateway API allows 64")
    refs = items(raw, "certificateRefs", path, _certificate_ref)
    if mode == "Terminate" and not refs and not get_map(raw, "options", path):
        fail(path, "certificateRefs or options must be specified when mode is Terminate")
    return g.ListenerTLS(mode=mode, certificate_refs=refs)  # type: ignore[arg-type]


def _route_kind(raw: Mapping[str, Any], path: str) -> g.GroupKind:
    group, kind = group_kind(raw, path, g.GROUP, "")
    if not kind:
        fail(f"{path}.kind", "is required", Reason.MISSING_FIELD)
    return g.GroupKind(group=group, kind=kind)


def _allowed_routes(raw: Mapping[str, Any], path: str) -> g.AllowedRoutes:
    ns = get_map(raw, "namespaces", path)
    npath = f"{path}.namespaces"
    frm = one_of(get_str(ns, "from", npath), ("All", "Same", "Selector", "None"),
                 f"{npath}.from", "Same")
    selector: LabelSelector | None = None
    if ns.get("selector") is not None:
        selector = parse_selector(get_map(ns, "selector", npath), f"{npath}.selector")
    check_count(get_list(raw, "kinds", path), 8, f"{path}.kinds", "the Gateway API allows 8")
    return g.AllowedRoutes(namespaces_from=frm, selector=selector,  # type: ignore[arg-type]
                           kinds=items(raw, "kinds", path, _route_kind))


def _listener(raw: Mapping[str, Any], path: str) -> g.Listener:
    name = get_str(raw, "name", path, required=True)
    matching(name, SECTION_NAME, 253, f"{path}.name", "a section name (a DNS subdomain)")
    protocol = get_str(raw, "protocol", path, required=True)
    matching(protocol, PROTOCOL, 255, f"{path}.protocol", "a protocol name")
    tls = get_map(raw, "tls", path)
    return g.Listener(
        name=cast(str, name), port=cast(int, get_int(raw, "port", path, required=True)),
        protocol=cast(str, protocol),
        hostname=parse_hostname(get_str(raw, "hostname", path), f"{path}.hostname"),
        tls=_listener_tls(tls, f"{path}.tls") if raw.get("tls") is not None else None,
        allowed_routes=_allowed_routes(get_map(raw, "allowedRoutes", path),
                                       f"{path}.allowedRoutes"),
    )


def _check_listeners(listeners: tuple[g.Listener, ...]) -> None:
    """The CEL rules of ``spec.listeners``, in the CRD's words."""
    seen_names: set[str] = set()
    seen: set[tuple[int, str, str | None]] = set()
    for i, lis in enumerate(listeners):
        at = f"spec.listeners[{i}]"
        proto = lis.protocol.upper()
        if proto in ("HTTP", "TCP", "UDP") and lis.tls is not None:
            fail(f"{at}.tls", "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']")
        if proto == "HTTPS" and lis.tls is not None and lis.tls.mode != "Terminate":
            fail(f"{at}.tls.mode", "tls mode must be Terminate for protocol HTTPS")
        if proto == "TLS" and lis.tls is None:
            fail(f"{at}.tls", "tls mode must be set for protocol TLS")
        if proto in ("TCP", "UDP") and lis.hostname is not None:
            fail(f"{at}.hostname", "hostname must not be specified for protocols ['TCP', 'UDP']")
        if lis.name in seen_names:
            fail(f"{at}.name", "Listener name must be unique within the Gateway")
        if (lis.port, lis.protocol, lis.hostname) in seen:
            fail(at, "Combination of port, protocol and hostname must be unique for each "
                 "listener")
        seen_names.add(lis.name)
        seen.add((lis.port, lis.protocol, lis.hostname))


def parse_gateway(doc: Mapping[str, Any], limits: Limits) -> g.Gateway:
    meta = parse_meta(doc, "Gateway", namespaced=True)
    spec = get_map(doc, "spec", "")
    cls = object_name(spec, "gatewayClassName", "spec")
    raw = get_list(spec, "listeners", "spec")
    if not raw:
        fail("spec.listeners", "must have at least one listener", Reason.MISSING_FIELD)
    check_count(raw, 64, "spec.listeners", "the Gateway API allows 64")
    listeners = items(spec, "listeners", "spec", _listener)
    _check_listeners(listeners)
    check_count(get_list(spec, "addresses", "spec"), 16, "spec.addresses",
                "the Gateway API allows 16")
    addresses = tuple(str(a.get("value") or "") for a in get_list(spec, "addresses", "spec")
                      if isinstance(a, Mapping))
    return g.Gateway(meta=meta, gateway_class_name=cast(str, cls), listeners=listeners,
                     addresses=addresses, infrastructure=bool(get_map(spec, "infrastructure",
                                                                      "spec")))


# --- ReferenceGrant --------------------------------------------------------------------


def _grant_from(raw: Mapping[str, Any], path: str) -> g.GrantFrom:
    group, kind = group_kind(raw, path, "", "")
    if not kind:
        fail(f"{path}.kind", "is required", Reason.MISSING_FIELD)
    return g.GrantFrom(group=group, kind=kind,
                       namespace=cast(str, get_str(raw, "namespace", path, required=True)))


def _grant_to(raw: Mapping[str, Any], path: str) -> g.GrantTo:
    group, kind = group_kind(raw, path, "", "")
    if not kind:
        fail(f"{path}.kind", "is required", Reason.MISSING_FIELD)
    return g.GrantTo(group=group, kind=kind, name=object_name(raw, "name", path, required=False))


def parse_reference_grant(doc: Mapping[str, Any], limits: Limits) -> g.ReferenceGrant:
    meta = parse_meta(doc, "ReferenceGrant", namespaced=True)
    spec = get_map(doc, "spec", "")
    for key in ("from", "to"):
        if not get_list(spec, key, "spec"):
            fail(f"spec.{key}", "must have at least one entry", Reason.MISSING_FIELD)
        check_count(get_list(spec, key, "spec"), 16, f"spec.{key}", "the Gateway API allows 16")
    return g.ReferenceGrant(meta=meta, from_=items(spec, "from", "spec", _grant_from),
                            to=items(spec, "to", "spec", _grant_to))


# --- BackendTLSPolicy (v1) ---------------------------------------------------------------


def _policy_target(raw: Mapping[str, Any], path: str) -> g.PolicyTargetRef:
    group, kind = group_kind(raw, path, "", "")
    if not kind:
        fail(f"{path}.kind", "is required", Reason.MISSING_FIELD)
    section = get_str(raw, "sectionName", path)
    matching(section, SECTION_NAME, 253, f"{path}.sectionName", "a section name")
    return g.PolicyTargetRef(group=group, kind=kind,
                             name=cast(str, object_name(raw, "name", path)),
                             section_name=section)


def _local_ref(raw: Mapping[str, Any], path: str) -> g.LocalObjectRef:
    group, kind = group_kind(raw, path, "", "")
    if not kind:
        fail(f"{path}.kind", "is required", Reason.MISSING_FIELD)
    return g.LocalObjectRef(group=group, kind=kind, name=cast(str, object_name(raw, "name", path)))


def _subject_alt_name(raw: Mapping[str, Any], path: str) -> g.SubjectAltName:
    kind = one_of(get_str(raw, "type", path, required=True), ("Hostname", "URI"),
                  f"{path}.type", "Hostname")
    key = "hostname" if kind == "Hostname" else "uri"
    value = get_str(raw, key, path)
    if not value:
        fail(f"{path}.{key}", f"is required when type is {kind}", Reason.MISSING_FIELD)
    return g.SubjectAltName(type=kind, value=value)  # type: ignore[arg-type]


def parse_backend_tls_policy(doc: Mapping[str, Any], limits: Limits) -> g.BackendTLSPolicy:
    meta = parse_meta(doc, "BackendTLSPolicy", namespaced=True)
    spec = get_map(doc, "spec", "")
    if not get_list(spec, "targetRefs", "spec"):
        fail("spec.targetRefs", "must have at least one entry", Reason.MISSING_FIELD)
    check_count(get_list(spec, "targetRefs", "spec"), 16, "spec.targetRefs",
                "the Gateway API allows 16")
    targets = items(spec, "targetRefs", "spec", _policy_target)
    val = get_map(spec, "validation", "spec")
    if not val:
        fail("spec.validation", "is required", Reason.MISSING_FIELD)
    hostname = parse_hostname(get_str(val, "hostname", "spec.validation", required=True),
                              "spec.validation.hostname")
    if hostname is None or hostname.startswith("*"):
        fail("spec.validation.hostname", "must be a DNS name without a wildcard")
    check_count(get_list(val, "caCertificateRefs", "spec.validation"), 8,
                "spec.validation.caCertificateRefs", "the Gateway API allows 8")
    cas = items(val, "caCertificateRefs", "spec.validation", _local_ref)
    well_known = get_str(val, "wellKnownCACertificates", "spec.validation")
    if bool(cas) == bool(well_known):
        fail("spec.validation", "must specify either caCertificateRefs or "
             "wellKnownCACertificates, not both")
    check_count(get_list(val, "subjectAltNames", "spec.validation"), 5,
                "spec.validation.subjectAltNames", "the Gateway API allows 5")
    sans = items(val, "subjectAltNames", "spec.validation", _subject_alt_name)
    return g.BackendTLSPolicy(meta=meta, target_refs=targets, hostname=hostname,
                              ca_refs=cas, well_known_cas=well_known, subject_alt_names=sans,
                              options=tuple(sorted(get_map(spec, "options", "spec"))))


_V1 = f"{g.GROUP}/v1"
PARSERS: Mapping[tuple[str, str], Callable[[Mapping[str, Any], Limits], g.GatewayModel]] = {
    (_V1, "GatewayClass"): parse_gateway_class,
    (_V1, "Gateway"): parse_gateway,
    (_V1, "HTTPRoute"): parse_http_route,
    (_V1, "GRPCRoute"): parse_grpc_route,
    (_V1, "ReferenceGrant"): parse_reference_grant,
    (_V1, "BackendTLSPolicy"): parse_backend_tls_policy,
    (f"{g.GROUP}/v1alpha3", "BackendTLSPolicy"): parse_backend_tls_policy,
    (f"{g.GROUP}/v1alpha2", "TLSRoute"): parse_tls_route,
    (f"{g.GROUP}/v1alpha3", "TLSRoute"): parse_tls_route,
    (f"{g.GROUP}/v1alpha2", "TCPRoute"): parse_tcp_route,
    (f"{g.GROUP}/v1alpha2", "UDPRoute"): parse_udp_route,
    # The standard channel serves ReferenceGrant as v1beta1 (v1 came later).
    (f"{g.GROUP}/v1beta1", "ReferenceGrant"): parse_reference_grant,
}
"""``(apiVersion, kind)`` -> parser, merged into :data:`kxds.kube.parse.PARSERS`."""
