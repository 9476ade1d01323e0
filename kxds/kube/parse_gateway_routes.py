"""Gateway API Route documents -> models: HTTPRoute and GRPCRoute (v1), TLSRoute, TCPRoute
and UDPRoute (v1alpha2).

As for the other Gateway API kinds (:mod:`kxds.kube.parse_gateway`), the CRDs' CEL
rules are checked here and defaults applied as the CRD schema applies them.
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
)
from kxds.kube.gateway_fields import (
    METHODS,
    SECTION_NAME,
    check_path,
    duration_ms,
    group_kind,
    matching,
    object_name,
    parse_hostname,
)
from kxds.kube.limits import Limits
from kxds.kube.meta import Meta
from kxds.kube.parse_route_filters import backend_ref, route_filters, route_retry, value_matches

_PATH_TYPES = ("Exact", "PathPrefix", "RegularExpression")


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
    meta, parents, hostnames, rules = _l7_route(doc, "HTTPRoute", _rule)
    return g.HTTPRoute(meta=meta, parent_refs=parents, hostnames=hostnames, rules=rules,
                       status_controllers=status_controllers(doc))


def _l7_route(doc: Mapping[str, Any], kind: str,
              rule: Callable[[Mapping[str, Any], str], g.RouteRule]
              ) -> tuple[Meta, tuple[g.ParentReference, ...], tuple[str, ...],
                         tuple[g.RouteRule, ...]]:
    """What HTTPRoute and GRPCRoute share: metadata, parents, hostnames and rules
    (at most 16, named uniquely; none is one rule that matches everything)."""
    meta = parse_meta(doc, kind, namespaced=True)
    spec = get_map(doc, "spec", "")
    parents = _route_parents(spec)
    hostnames = _route_hostnames(spec)
    check_count(get_list(spec, "rules", "spec"), 16, "spec.rules", "the Gateway API allows 16")
    rules = items(spec, "rules", "spec", rule) or (g.RouteRule(),)
    _unique_rule_names(rules)
    return meta, parents, hostnames, rules


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
    meta, parents, hostnames, rules = _l7_route(doc, "GRPCRoute", _grpc_rule)
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
