"""Gateway API documents -> models (``gateway.networking.k8s.io/v1``, ReferenceGrant v1beta1).

Besides the schema (types, enums, lengths, patterns), the CRDs carry CEL rules
(``x-kubernetes-validations``) that an API server enforces on every write;
manifests meet no API server, so the same rules are checked here and a
violation is the object's diagnostic, with the CRD's own wording where it
has one. Defaults are applied as the CRD schema applies them (``PathPrefix``
``/`` matches, ``weight: 1``, ``allowedRoutes.namespaces.from: Same``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from kxds.diagnostics import Reason, show
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
    METHODS,
    PROTOCOL,
    SECTION_NAME,
    check_path,
    duration_ms,
    group_kind,
    matching,
    object_name,
    parse_hostname,
)
from kxds.kube.limits import Limits
from kxds.kube.meta import LabelSelector, Meta
from kxds.kube.parse_route_filters import backend_ref, route_filters, route_retry, value_matches

_PATH_TYPES = ("Exact", "PathPrefix", "RegularExpression")


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


# --- HTTPRoute -------------------------------------------------------------------------


def _parent_ref(raw: Mapping[str, Any], path: str) -> g.ParentReference:
    group, kind = group_kind(raw, path, g.GROUP, "Gateway")
    section = get_str(raw, "sectionName", path)
    matching(section, SECTION_NAME, 253, f"{path}.sectionName", "a section name")
    return g.ParentReference(group=group, kind=kind,
                             namespace=object_name(raw, "namespace", path, required=False),
                             name=cast(str, object_name(raw, "name", path)), section_name=section,
                             port=get_int(raw, "port", path))


def _check_parents(parents: tuple[g.ParentReference, ...]) -> None:
    """CEL of ``spec.parentRefs``: several references to one parent must each name a
    section or port, and no two the same."""
    by_parent: dict[tuple[str, str, str | None, str], list[g.ParentReference]] = {}
    for p in parents:
        by_parent.setdefault((p.group, p.kind, p.namespace, p.name), []).append(p)
    for same in by_parent.values():
        if len(same) < 2:
            continue
        if any(p.section_name is None and p.port is None for p in same):
            fail("spec.parentRefs", "sectionName or port must be specified when parentRefs "
                 "includes 2 or more references to the same parent")
        if len({(p.section_name, p.port) for p in same}) < len(same):
            fail("spec.parentRefs", "sectionName or port must be unique when parentRefs "
                 "includes 2 or more references to the same parent")


def _path_match(raw: Mapping[str, Any], path: str) -> g.PathMatch:
    kind = one_of(get_str(raw, "type", path), _PATH_TYPES, f"{path}.type", "PathPrefix")
    value = get_str(raw, "value", path) or "/"
    field = f"{path}.value"
    if len(value) > 1024:
        fail(field, f"is {len(value)} characters, more than 1024")
    if kind != "RegularExpression":
        check_path(value, field)
    return g.PathMatch(type=kind, value=value)  # type: ignore[arg-type]


def _route_match(raw: Mapping[str, Any], path: str) -> g.RouteMatch:
    method = get_str(raw, "method", path)
    one_of(method, METHODS, f"{path}.method", "")
    return g.RouteMatch(path=_path_match(get_map(raw, "path", path), f"{path}.path"),
                        headers=value_matches(raw, "headers", path, fold=True),
                        query_params=value_matches(raw, "queryParams", path, fold=False),
                        method=method)


def _rule(raw: Mapping[str, Any], path: str) -> g.RouteRule:
    name = get_str(raw, "name", path)
    matching(name, SECTION_NAME, 253, f"{path}.name", "a section name")
    check_count(get_list(raw, "matches", path), 64, f"{path}.matches", "the Gateway API allows 64")
    check_count(get_list(raw, "backendRefs", path), 16, f"{path}.backendRefs",
                "the Gateway API allows 16")
    matches = items(raw, "matches", path, _route_match) or (g.RouteMatch(),)
    timeouts = get_map(raw, "timeouts", path)
    request = get_str(timeouts, "request", f"{path}.timeouts")
    backend = get_str(timeouts, "backendRequest", f"{path}.timeouts")
    request_ms = duration_ms(request, f"{path}.timeouts.request") if request else None
    backend_ms = duration_ms(backend, f"{path}.timeouts.backendRequest") if backend else None
    if request_ms and backend_ms is not None and backend_ms > request_ms:
        fail(f"{path}.timeouts", "backendRequest timeout cannot be longer than request timeout")
    unsupported = ("sessionPersistence",) if raw.get("sessionPersistence") is not None else ()
    filters = route_filters(raw, path)
    types = {f.type for f in filters}
    if "RequestRedirect" in types and get_list(raw, "backendRefs", path):
        fail(path, "RequestRedirect filter must not be used together with backendRefs")
    if "RequestRedirect" in types and "URLRewrite" in types:
        fail(f"{path}.filters", "May specify either httpRouteFilterRequestRedirect or "
             "httpRouteFilterRequestRewrite, but not both")
    if any(_replaces_prefix(f) for f in filters) and (
            len(matches) != 1 or matches[0].path.type != "PathPrefix"):
        fail(f"{path}.filters", "When using ReplacePrefixMatch, exactly one PathPrefix match "
             "must be specified")
    return g.RouteRule(name=name, matches=matches, filters=filters,
                       backend_refs=items(raw, "backendRefs", path, backend_ref),
                       request_timeout_ms=request_ms, backend_request_timeout_ms=backend_ms,
                       retry=route_retry(raw, path), unsupported=unsupported)


def _replaces_prefix(f: g.RouteFilter) -> bool:
    modifier = (f.redirect.path if f.redirect is not None
                else f.rewrite.path if f.rewrite is not None else None)
    return modifier is not None and modifier.type == "ReplacePrefixMatch"


def _route_parents(spec: Mapping[str, Any]) -> tuple[g.ParentReference, ...]:
    """A Route's ``spec.parentRefs``, checked as the CRD does (at most 32, distinct)."""
    check_count(get_list(spec, "parentRefs", "spec"), 32, "spec.parentRefs",
                "the Gateway API allows 32")
    parents = items(spec, "parentRefs", "spec", _parent_ref)
    _check_parents(parents)
    return parents


def _route_hostnames(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """A Route's ``spec.hostnames`` (at most 16, each a valid hostname)."""
    check_count(get_list(spec, "hostnames", "spec"), 16, "spec.hostnames",
                "the Gateway API allows 16")
    return tuple(cast(str, parse_hostname(h if isinstance(h, str) else show(h),
                                          f"spec.hostnames[{i}]"))
                 for i, h in enumerate(get_list(spec, "hostnames", "spec")))


def _unique_rule_names(rules: Iterable[g.RouteRule | g.L4Rule]) -> None:
    names = [r.name for r in rules if r.name is not None]
    if len(set(names)) < len(names):
        fail("spec.rules", "Rule name must be unique within the route")


def status_controllers(doc: Mapping[str, Any]) -> tuple[str, ...]:
    """The controllers with an entry in a Route's ``status.parents`` (at most the 32 the
    CRD allows). Status is written by controllers, not users: a malformed one is read
    as empty rather than refusing the Route."""
    status = doc.get("status")
    parents = status.get("parents") if isinstance(status, Mapping) else None
    if not isinstance(parents, list):
        return ()
    names = {p.get("controllerName") for p in parents[:32] if isinstance(p, Mapping)}
    return tuple(sorted(n for n in names if isinstance(n, str) and len(n) <= 253))


def parse_http_route(doc: Mapping[str, Any], limits: Limits) -> g.HTTPRoute:
    meta = parse_meta(doc, "HTTPRoute", namespaced=True)
    spec = get_map(doc, "spec", "")
    parents = _route_parents(spec)
    hostnames = _route_hostnames(spec)
    check_count(get_list(spec, "rules", "spec"), 16, "spec.rules", "the Gateway API allows 16")
    rules = items(spec, "rules", "spec", _rule) or (g.RouteRule(),)
    _unique_rule_names(rules)
    return g.HTTPRoute(meta=meta, parent_refs=parents, hostnames=hostnames, rules=rules,
                       status_controllers=status_controllers(doc))


# --- GRPCRoute --------------------------------------------------------------------------

GRPC_SERVICE = re.compile(r"(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*")
GRPC_METHOD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_GRPC_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror",
                 "ExtensionRef")


def _grpc_method(raw: Mapping[str, Any], path: str) -> g.PathMatch:
    """A gRPC method match as the path of its HTTP/2 request (``/service/method``)."""
    kind = one_of(get_str(raw, "type", path), ("Exact", "RegularExpression"), f"{path}.type",
                  "Exact")
    service = get_str(raw, "service", path)
    method = get_str(raw, "method", path)
    if service is None and method is None:
        fail(path, "One or both of 'service' or 'method' must be specified")
    for key, value in (("service", service), ("method", method)):
        if value is not None and len(value) > 1024:
            fail(f"{path}.{key}", f"is {len(value)} characters, more than 1024")
    if kind == "Exact":
        if service is not None and not GRPC_SERVICE.fullmatch(service):
            fail(f"{path}.service", "service must only contain valid characters (matching "
                 "^(?i)\\.?[a-z_][a-z_0-9]*(\\.[a-z_][a-z_0-9]*)*$)")
        if method is not None and not GRPC_METHOD.fullmatch(method):
            fail(f"{path}.method", "method must only contain valid characters (matching "
                 "^[A-Za-z_][A-Za-z_0-9]*$)")
        if service is not None and method is not None:
            return g.PathMatch(type="Exact", value=f"/{service}/{method}")
        if service is not None:
            return g.PathMatch(type="PathPrefix", value=f"/{service}/")
        return g.PathMatch(type="RegularExpression", value=f"/[^/]+/{re.escape(cast(str, method))}")
    return g.PathMatch(type="RegularExpression",
                       value=f"/(?:{service or '[^/]+'})/(?:{method or '[^/]+'})")


def _grpc_match(raw: Mapping[str, Any], path: str) -> g.RouteMatch:
    method = get_map(raw, "method", path)
    return g.RouteMatch(path=_grpc_method(method, f"{path}.method")
                        if raw.get("method") is not None else g.PathMatch(),
                        headers=value_matches(raw, "headers", path, fold=True))


def _grpc_rule(raw: Mapping[str, Any], path: str) -> g.RouteRule:
    name = get_str(raw, "name", path)
    matching(name, SECTION_NAME, 253, f"{path}.name", "a section name")
    check_count(get_list(raw, "matches", path), 8, f"{path}.matches", "the Gateway API allows 8")
    check_count(get_list(raw, "backendRefs", path), 16, f"{path}.backendRefs",
                "the Gateway API allows 16")
    filters = route_filters(raw, path)
    backends = items(raw, "backendRefs", path, backend_ref)
    for at, f in [(f"{path}.filters", f) for f in filters] + [
            (f"{path}.backendRefs[{k}].filters", f) for k, b in enumerate(backends)
            for f in b.filters]:
        one_of(f.type, _GRPC_FILTERS, at, "")
    return g.RouteRule(
        name=name, matches=items(raw, "matches", path, _grpc_match) or (g.RouteMatch(),),
        filters=filters, backend_refs=backends,
        unsupported=("sessionPersistence",) if raw.get("sessionPersistence") is not None else ())


def parse_grpc_route(doc: Mapping[str, Any], limits: Limits) -> g.GRPCRoute:
    meta = parse_meta(doc, "GRPCRoute", namespaced=True)
    spec = get_map(doc, "spec", "")
    parents = _route_parents(spec)
    hostnames = _route_hostnames(spec)
    check_count(get_list(spec, "rules", "spec"), 16, "spec.rules", "the Gateway API allows 16")
    rules = items(spec, "rules", "spec", _grpc_rule) or (g.RouteRule(),)
    _unique_rule_names(rules)
    return g.GRPCRoute(meta=meta, parent_refs=parents, hostnames=hostnames, rules=rules,
                       status_controllers=status_controllers(doc))


# --- TLSRoute, TCPRoute, UDPRoute (v1alpha2) ------------------------------------------


def _l4_rule(raw: Mapping[str, Any], path: str) -> g.L4Rule:
    name = get_str(raw, "name", path)
    matching(name, SECTION_NAME, 253, f"{path}.name", "a section name")
    if not get_list(raw, "backendRefs", path):
        fail(f"{path}.backendRefs", "must have at least one entry", Reason.MISSING_FIELD)
    check_count(get_list(raw, "backendRefs", path), 16, f"{path}.backendRefs",
                "the Gateway API allows 16")
    backends = items(raw, "backendRefs", path, backend_ref)
    for k, b in enumerate(backends):
        if b.filters:
            fail(f"{path}.backendRefs[{k}].filters", "is not a field of this Route kind")
    return g.L4Rule(name=name, backend_refs=backends)


def _l4_common(doc: Mapping[str, Any], kind: str
               ) -> tuple[Meta, tuple[g.ParentReference, ...], tuple[g.L4Rule, ...]]:
    meta = parse_meta(doc, kind, namespaced=True)
    spec = get_map(doc, "spec", "")
    parents = _route_parents(spec)
    if not get_list(spec, "rules", "spec"):
        fail("spec.rules", "must have at least one rule", Reason.MISSING_FIELD)
    check_count(get_list(spec, "rules", "spec"), 16, "spec.rules", "the Gateway API allows 16")
    rules = items(spec, "rules", "spec", _l4_rule)
    _unique_rule_names(rules)
    return meta, parents, rules


def parse_tls_route(doc: Mapping[str, Any], limits: Limits) -> g.TLSRoute:
    meta, parents, rules = _l4_common(doc, "TLSRoute")
    spec = get_map(doc, "spec", "")
    hostnames = _route_hostnames(spec)
    return g.TLSRoute(meta=meta, parent_refs=parents, hostnames=hostnames, rules=rules,
                      status_controllers=status_controllers(doc))


def parse_tcp_route(doc: Mapping[str, Any], limits: Limits) -> g.TCPRoute:
    meta, parents, rules = _l4_common(doc, "TCPRoute")
    return g.TCPRoute(meta=meta, parent_refs=parents, rules=rules,
                      status_controllers=status_controllers(doc))


def parse_udp_route(doc: Mapping[str, Any], limits: Limits) -> g.UDPRoute:
    meta, parents, rules = _l4_common(doc, "UDPRoute")
    return g.UDPRoute(meta=meta, parent_refs=parents, rules=rules,
                      status_controllers=status_controllers(doc))


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
