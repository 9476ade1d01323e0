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
from collections.abc import Callable, Mapping
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
from kxds.kube.limits import Limits
from kxds.kube.meta import LabelSelector

_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
CONTROLLER_NAME = re.compile(_DNS_SUBDOMAIN + r"/[A-Za-z0-9/\-._~%!$&'()*+,;=:]+")
SECTION_NAME = re.compile(_DNS_SUBDOMAIN)
HOSTNAME = re.compile(r"(\*\.)?" + _DNS_SUBDOMAIN)
PROTOCOL = re.compile(r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?|" + _DNS_SUBDOMAIN
                      + r"/[A-Za-z0-9]+")
KIND = re.compile(r"[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?")
GROUP = re.compile(r"|" + _DNS_SUBDOMAIN)
DURATION = re.compile(r"([0-9]{1,5}(h|m|s|ms)){1,4}")
PATH_CHARS = re.compile(r"(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
_PATH_TYPES = ("Exact", "PathPrefix", "RegularExpression")
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}


def _matching(value: str | None, pattern: re.Pattern[str], limit: int, field: str,
              what: str) -> str | None:
    """``value`` when it fits the CRD's pattern and length, else fail (None passes)."""
    if value is not None and (len(value) > limit or not pattern.fullmatch(value)):
        fail(field, f"{show(value)} is not {what}")
    return value


def _name(raw: Mapping[str, Any], key: str, path: str, *, required: bool = True) -> str | None:
    """An ``ObjectName`` (1-253 characters) or a namespace (a DNS label)."""
    value = get_str(raw, key, path, required=required)
    if value is not None and len(value) > 253:
        fail(f"{path}.{key}", f"is {len(value)} characters, more than 253")
    return value


def _group_kind(raw: Mapping[str, Any], path: str, group: str, kind: str) -> tuple[str, str]:
    """``group`` and ``kind`` of a reference, defaulted as the CRD defaults them."""
    grp = raw.get("group")
    if grp is not None and not isinstance(grp, str):
        fail(f"{path}.group", f"must be a string, not {show(grp)}")
    value_group = group if grp is None else grp
    _matching(value_group, GROUP, 253, f"{path}.group", "a group (a DNS subdomain, or empty)")
    value_kind = get_str(raw, "kind", path) or kind
    _matching(value_kind, KIND, 63, f"{path}.kind", "a kind")
    return value_group, value_kind


def parse_hostname(value: str | None, field: str) -> str | None:
    """A Gateway API ``Hostname``: a DNS name, optionally ``*.`` first; no IP, no port."""
    if value is None:
        return None
    host = value.lower()
    _matching(host, HOSTNAME, 253, field, "a host name (a DNS name, optionally '*.' first)")
    labels = host.removeprefix("*.").split(".")
    if all(lbl.isdigit() for lbl in labels) and len(labels) == 4:
        fail(field, f"{show(value)} is an IP address, not a host name")
    return host


# --- GatewayClass ----------------------------------------------------------------------


def parse_gateway_class(doc: Mapping[str, Any], limits: Limits) -> g.GatewayClass:
    meta = parse_meta(doc, "GatewayClass", namespaced=False)
    spec = get_map(doc, "spec", "")
    controller = get_str(spec, "controllerName", "spec", required=True)
    _matching(controller, CONTROLLER_NAME, 253, "spec.controllerName",
              "a controller name (a domain-prefixed path, like example.com/controller)")
    return g.GatewayClass(meta=meta, controller_name=cast(str, controller))


# --- Gateway ---------------------------------------------------------------------------


def _certificate_ref(raw: Mapping[str, Any], path: str) -> g.SecretObjectReference:
    group, kind = _group_kind(raw, path, "", "Secret")
    return g.SecretObjectReference(group=group, kind=kind, name=cast(str, _name(raw, "name", path)),
                                   namespace=_name(raw, "namespace", path, required=False))


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
    group, kind = _group_kind(raw, path, g.GROUP, "")
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
    _matching(name, SECTION_NAME, 253, f"{path}.name", "a section name (a DNS subdomain)")
    protocol = get_str(raw, "protocol", path, required=True)
    _matching(protocol, PROTOCOL, 255, f"{path}.protocol", "a protocol name")
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
    cls = _name(spec, "gatewayClassName", "spec")
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
    group, kind = _group_kind(raw, path, g.GROUP, "Gateway")
    section = get_str(raw, "sectionName", path)
    _matching(section, SECTION_NAME, 253, f"{path}.sectionName", "a section name")
    return g.ParentReference(group=group, kind=kind,
                             namespace=_name(raw, "namespace", path, required=False),
                             name=cast(str, _name(raw, "name", path)), section_name=section,
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
        _check_path(value, field)
    return g.PathMatch(type=kind, value=value)  # type: ignore[arg-type]


def _check_path(value: str, field: str) -> None:
    """The CEL rules of an Exact or PathPrefix ``value``, in the CRD's words."""
    if not value.startswith("/"):
        fail(field, "value must be an absolute path and start with '/' when type one of "
             "['Exact', 'PathPrefix']")
    for bad in ("//", "/./", "/../", "%2f", "%2F", "#"):
        if bad in value:
            fail(field, f"must not contain '{bad}' when type one of ['Exact', 'PathPrefix']")
    for end in ("/..", "/."):
        if value.endswith(end):
            fail(field, f"must not end with '{end}' when type one of ['Exact', 'PathPrefix']")
    if not PATH_CHARS.fullmatch(value):
        fail(field, f"{show(value)} must only contain valid characters (matching "
             "^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$) for types "
             "['Exact', 'PathPrefix']")


HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
_FILTER_FIELDS = {"RequestHeaderModifier": "requestHeaderModifier",
                  "ResponseHeaderModifier": "responseHeaderModifier",
                  "RequestRedirect": "requestRedirect", "URLRewrite": "urlRewrite",
                  "RequestMirror": "requestMirror", "ExtensionRef": "extensionRef",
                  "CORS": "cors", "ExternalAuth": "externalAuth"}


def _value_match(raw: Mapping[str, Any], path: str) -> g.ValueMatch:
    kind = one_of(get_str(raw, "type", path), ("Exact", "RegularExpression"), f"{path}.type",
                  "Exact")
    name = get_str(raw, "name", path, required=True)
    _matching(name, HEADER_NAME, 256, f"{path}.name", "a header or query parameter name")
    value = raw.get("value")
    if not isinstance(value, str):
        fail(f"{path}.value", f"must be a string, not {show(value)}",
             Reason.MISSING_FIELD if value is None else Reason.INVALID_VALUE)
    if len(value) > 4096:
        fail(f"{path}.value", f"is {len(value)} characters, more than 4096")
    return g.ValueMatch(type=kind, name=cast(str, name), value=value)  # type: ignore[arg-type]


def _value_matches(raw: Mapping[str, Any], key: str, path: str, *, fold: bool
                   ) -> tuple[g.ValueMatch, ...]:
    """A header (``fold``: names case-insensitive) or query parameter match list; a
    name given again is ignored, as the spec says (the first wins)."""
    check_count(get_list(raw, key, path), 16, f"{path}.{key}", "the Gateway API allows 16")
    out: dict[str, g.ValueMatch] = {}
    for m in items(raw, key, path, _value_match):
        out.setdefault(m.name.lower() if fold else m.name, m)
    return tuple(out.values())


def _route_match(raw: Mapping[str, Any], path: str) -> g.RouteMatch:
    method = get_str(raw, "method", path)
    one_of(method, METHODS, f"{path}.method", "")
    return g.RouteMatch(path=_path_match(get_map(raw, "path", path), f"{path}.path"),
                        headers=_value_matches(raw, "headers", path, fold=True),
                        query_params=_value_matches(raw, "queryParams", path, fold=False),
                        method=method)


def _header_modifier(raw: Mapping[str, Any], path: str) -> g.HeaderModifier:
    def pairs(key: str) -> tuple[tuple[str, str], ...]:
        check_count(get_list(raw, key, path), 16, f"{path}.{key}", "the Gateway API allows 16")
        out = items(raw, key, path, _header_value)
        if len({n.lower() for n, _ in out}) < len(out):
            fail(f"{path}.{key}", "header names must be unique")
        return out
    check_count(get_list(raw, "remove", path), 16, f"{path}.remove", "the Gateway API allows 16")
    remove = tuple(str(v) for v in get_list(raw, "remove", path))
    for i, name in enumerate(remove):
        _matching(name, HEADER_NAME, 256, f"{path}.remove[{i}]", "a header name")
    return g.HeaderModifier(set=pairs("set"), add=pairs("add"), remove=remove)


def _header_value(raw: Mapping[str, Any], path: str) -> tuple[str, str]:
    name = get_str(raw, "name", path, required=True)
    _matching(name, HEADER_NAME, 256, f"{path}.name", "a header name")
    value = raw.get("value")
    if not isinstance(value, str):
        fail(f"{path}.value", f"must be a string, not {show(value)}",
             Reason.MISSING_FIELD if value is None else Reason.INVALID_VALUE)
    return cast(str, name), value


def _path_modifier(raw: Mapping[str, Any], path: str) -> g.PathModifier | None:
    if not raw:
        return None
    kind = one_of(get_str(raw, "type", path, required=True),
                  ("ReplaceFullPath", "ReplacePrefixMatch"), f"{path}.type", "")
    key = "replaceFullPath" if kind == "ReplaceFullPath" else "replacePrefixMatch"
    other = "replacePrefixMatch" if kind == "ReplaceFullPath" else "replaceFullPath"
    if raw.get(other) is not None:
        fail(f"{path}.{other}", f"{other} must not be specified when type is not "
             f"{other[0].upper()}{other[1:]}")
    value = get_str(raw, key, path)
    if value is None:
        fail(f"{path}.{key}", f"{key} must be specified when type is set to '{kind}'",
             Reason.MISSING_FIELD)
    _check_path(value, f"{path}.{key}")
    return g.PathModifier(type=kind, value=value)  # type: ignore[arg-type]


def _redirect(raw: Mapping[str, Any], path: str) -> g.RequestRedirect:
    scheme = get_str(raw, "scheme", path)
    one_of(scheme, ("http", "https"), f"{path}.scheme", "")
    code = get_int(raw, "statusCode", path, lo=301, hi=308)
    if code is not None and code not in (301, 302, 303, 307, 308):
        fail(f"{path}.statusCode", f"{code} is not one of 301, 302, 303, 307, 308")
    return g.RequestRedirect(
        scheme=scheme, hostname=_redirect_host(raw, path),
        path=_path_modifier(get_map(raw, "path", path), f"{path}.path"),
        port=get_int(raw, "port", path), status_code=code or 302)


def _redirect_host(raw: Mapping[str, Any], path: str) -> str | None:
    host = parse_hostname(get_str(raw, "hostname", path), f"{path}.hostname")
    if host is not None and host.startswith("*."):
        fail(f"{path}.hostname", f"{show(host)} must be a host name, not a wildcard")
    return host


def _rewrite(raw: Mapping[str, Any], path: str) -> g.URLRewrite:
    return g.URLRewrite(hostname=_redirect_host(raw, path),
                        path=_path_modifier(get_map(raw, "path", path), f"{path}.path"))


def _mirror(raw: Mapping[str, Any], path: str) -> g.RequestMirror:
    ref = get_map(raw, "backendRef", path)
    if not ref:
        fail(f"{path}.backendRef", "is required", Reason.MISSING_FIELD)
    group, kind = _group_kind(ref, f"{path}.backendRef", "", "Service")
    port = get_int(ref, "port", f"{path}.backendRef")
    if group == "" and kind == "Service" and port is None:
        fail(f"{path}.backendRef", "Must have port for Service reference", Reason.MISSING_FIELD)
    backend = g.BackendRef(group=group, kind=kind,
                           name=cast(str, _name(ref, "name", f"{path}.backendRef")),
                           namespace=_name(ref, "namespace", f"{path}.backendRef",
                                           required=False), port=port)
    percent = get_int(raw, "percent", path, lo=0, hi=100)
    fraction = get_map(raw, "fraction", path)
    if percent is not None and fraction:
        fail(path, "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter")
    if fraction:
        num = cast(int, get_int(fraction, "numerator", f"{path}.fraction", lo=0, hi=2**31 - 1,
                                required=True))
        den = get_int(fraction, "denominator", f"{path}.fraction", lo=1, hi=2**31 - 1) or 100
        if num > den:
            fail(f"{path}.fraction", "numerator must be less than or equal to denominator")
        return g.RequestMirror(backend=backend, percent=100.0 * num / den)
    return g.RequestMirror(backend=backend, percent=100.0 if percent is None else float(percent))


def _filter(raw: Mapping[str, Any], path: str) -> g.RouteFilter:
    kind = cast(str, get_str(raw, "type", path, required=True))
    for other, name in _FILTER_FIELDS.items():
        if other != kind and raw.get(name) is not None:
            fail(f"{path}.{name}", f"filter.{name} must be nil if the filter.type is not {other}")
    key = _FILTER_FIELDS.get(kind)
    settings = get_map(raw, key, path) if key else {}
    if key is not None and raw.get(key) is None:
        fail(f"{path}.{key}", f"filter.{key} must be specified for {kind} filter.type",
             Reason.MISSING_FIELD)
    at = f"{path}.{key}"
    if kind == "RequestHeaderModifier":
        return g.RouteFilter(type=kind, request_headers=_header_modifier(settings, at))
    if kind == "ResponseHeaderModifier":
        return g.RouteFilter(type=kind, response_headers=_header_modifier(settings, at))
    if kind == "RequestRedirect":
        return g.RouteFilter(type=kind, redirect=_redirect(settings, at))
    if kind == "URLRewrite":
        return g.RouteFilter(type=kind, rewrite=_rewrite(settings, at))
    if kind == "RequestMirror":
        return g.RouteFilter(type=kind, mirror=_mirror(settings, at))
    return g.RouteFilter(type=kind)


def _filters(raw: Mapping[str, Any], path: str) -> tuple[g.RouteFilter, ...]:
    check_count(get_list(raw, "filters", path), 16, f"{path}.filters",
                "the Gateway API allows 16")
    out = items(raw, "filters", path, _filter)
    for once in ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect",
                 "URLRewrite"):
        if sum(f.type == once for f in out) > 1:
            fail(f"{path}.filters", f"{once} filter cannot be repeated")
    return out


def _backend_ref(raw: Mapping[str, Any], path: str) -> g.BackendRef:
    group, kind = _group_kind(raw, path, "", "Service")
    port = get_int(raw, "port", path)
    if group == "" and kind == "Service" and port is None:
        fail(path, "Must have port for Service reference", Reason.MISSING_FIELD)
    weight = get_int(raw, "weight", path, lo=0, hi=1_000_000)
    return g.BackendRef(group=group, kind=kind, name=cast(str, _name(raw, "name", path)),
                        namespace=_name(raw, "namespace", path, required=False), port=port,
                        weight=1 if weight is None else weight,
                        filters=_filters(raw, path))


def duration_ms(value: str, field: str) -> int:
    """A Gateway API ``Duration`` (``1h30m``, ``500ms``: at most four parts) in milliseconds."""
    if not DURATION.fullmatch(value):
        fail(field, f"{show(value)} is not a duration (like 10s, 1m30s or 500ms)")
    return sum(int(n) * _UNIT_MS[u] for n, u in re.findall(r"([0-9]+)(ms|h|m|s)", value))


def _rule(raw: Mapping[str, Any], path: str) -> g.RouteRule:
    name = get_str(raw, "name", path)
    _matching(name, SECTION_NAME, 253, f"{path}.name", "a section name")
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
    unsupported = tuple(f for f, present in (
        ("retry", raw.get("retry") is not None),
        ("sessionPersistence", raw.get("sessionPersistence") is not None)) if present)
    filters = _filters(raw, path)
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
                       backend_refs=items(raw, "backendRefs", path, _backend_ref),
                       request_timeout_ms=request_ms, backend_request_timeout_ms=backend_ms,
                       unsupported=unsupported)


def _replaces_prefix(f: g.RouteFilter) -> bool:
    modifier = (f.redirect.path if f.redirect is not None
                else f.rewrite.path if f.rewrite is not None else None)
    return modifier is not None and modifier.type == "ReplacePrefixMatch"


def parse_http_route(doc: Mapping[str, Any], limits: Limits) -> g.HTTPRoute:
    meta = parse_meta(doc, "HTTPRoute", namespaced=True)
    spec = get_map(doc, "spec", "")
    check_count(get_list(spec, "parentRefs", "spec"), 32, "spec.parentRefs",
                "the Gateway API allows 32")
    parents = items(spec, "parentRefs", "spec", _parent_ref)
    _check_parents(parents)
    check_count(get_list(spec, "hostnames", "spec"), 16, "spec.hostnames",
                "the Gateway API allows 16")
    hostnames = tuple(cast(str, parse_hostname(h if isinstance(h, str) else show(h),
                                               f"spec.hostnames[{i}]"))
                      for i, h in enumerate(get_list(spec, "hostnames", "spec")))
    check_count(get_list(spec, "rules", "spec"), 16, "spec.rules", "the Gateway API allows 16")
    rules = items(spec, "rules", "spec", _rule) or (g.RouteRule(),)
    names = [r.name for r in rules if r.name is not None]
    if len(set(names)) < len(names):
        fail("spec.rules", "Rule name must be unique within the route")
    return g.HTTPRoute(meta=meta, parent_refs=parents, hostnames=hostnames, rules=rules)


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
                        headers=_value_matches(raw, "headers", path, fold=True))


def _grpc_rule(raw: Mapping[str, Any], path: str) -> g.RouteRule:
    name = get_str(raw, "name", path)
    _matching(name, SECTION_NAME, 253, f"{path}.name", "a section name")
    check_count(get_list(raw, "matches", path), 8, f"{path}.matches", "the Gateway API allows 8")
    check_count(get_list(raw, "backendRefs", path), 16, f"{path}.backendRefs",
                "the Gateway API allows 16")
    filters = _filters(raw, path)
    backends = items(raw, "backendRefs", path, _backend_ref)
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
    check_count(get_list(spec, "parentRefs", "spec"), 32, "spec.parentRefs",
                "the Gateway API allows 32")
    parents = items(spec, "parentRefs", "spec", _parent_ref)
    _check_parents(parents)
    check_count(get_list(spec, "hostnames", "spec"), 16, "spec.hostnames",
                "the Gateway API allows 16")
    hostnames = tuple(cast(str, parse_hostname(h if isinstance(h, str) else show(h),
                                               f"spec.hostnames[{i}]"))
                      for i, h in enumerate(get_list(spec, "hostnames", "spec")))
    check_count(get_list(spec, "rules", "spec"), 16, "spec.rules", "the Gateway API allows 16")
    rules = items(spec, "rules", "spec", _grpc_rule) or (g.RouteRule(),)
    names = [r.name for r in rules if r.name is not None]
    if len(set(names)) < len(names):
        fail("spec.rules", "Rule name must be unique within the route")
    return g.GRPCRoute(meta=meta, parent_refs=parents, hostnames=hostnames, rules=rules)


# --- ReferenceGrant --------------------------------------------------------------------


def _grant_from(raw: Mapping[str, Any], path: str) -> g.GrantFrom:
    group, kind = _group_kind(raw, path, "", "")
    if not kind:
        fail(f"{path}.kind", "is required", Reason.MISSING_FIELD)
    return g.GrantFrom(group=group, kind=kind,
                       namespace=cast(str, get_str(raw, "namespace", path, required=True)))


def _grant_to(raw: Mapping[str, Any], path: str) -> g.GrantTo:
    group, kind = _group_kind(raw, path, "", "")
    if not kind:
        fail(f"{path}.kind", "is required", Reason.MISSING_FIELD)
    return g.GrantTo(group=group, kind=kind, name=_name(raw, "name", path, required=False))


def parse_reference_grant(doc: Mapping[str, Any], limits: Limits) -> g.ReferenceGrant:
    meta = parse_meta(doc, "ReferenceGrant", namespaced=True)
    spec = get_map(doc, "spec", "")
    for key in ("from", "to"):
        if not get_list(spec, key, "spec"):
            fail(f"spec.{key}", "must have at least one entry", Reason.MISSING_FIELD)
        check_count(get_list(spec, key, "spec"), 16, f"spec.{key}", "the Gateway API allows 16")
    return g.ReferenceGrant(meta=meta, from_=items(spec, "from", "spec", _grant_from),
                            to=items(spec, "to", "spec", _grant_to))


_V1 = f"{g.GROUP}/v1"
PARSERS: Mapping[tuple[str, str], Callable[[Mapping[str, Any], Limits], g.GatewayModel]] = {
    (_V1, "GatewayClass"): parse_gateway_class,
    (_V1, "Gateway"): parse_gateway,
    (_V1, "HTTPRoute"): parse_http_route,
    (_V1, "GRPCRoute"): parse_grpc_route,
    (_V1, "ReferenceGrant"): parse_reference_grant,
    # The standard channel serves ReferenceGrant as v1beta1 (v1 came later).
    (f"{g.GROUP}/v1beta1", "ReferenceGrant"): parse_reference_grant,
}
"""``(apiVersion, kind)`` -> parser, merged into :data:`kxds.kube.parse.PARSERS`."""
