"""HTTPRoute (and GRPCRoute) header and query parameter matches, filters and backend
references -> models, with the CRD's CEL rules in its words (see :mod:`kxds.kube.parse_gateway`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, cast

from kxds.diagnostics import Reason, show
from kxds.kube import gateway_models as g
from kxds.kube.fields import (
    check_count,
    fail,
    get_bool,
    get_int,
    get_list,
    get_map,
    get_str,
    items,
    one_of,
)
from kxds.kube.gateway_fields import (
    HEADER_NAME,
    METHODS,
    check_path,
    duration_ms,
    group_kind,
    matching,
    object_name,
    parse_hostname,
)

_FILTER_FIELDS = {"RequestHeaderModifier": "requestHeaderModifier",
                  "ResponseHeaderModifier": "responseHeaderModifier",
                  "RequestRedirect": "requestRedirect", "URLRewrite": "urlRewrite",
                  "RequestMirror": "requestMirror", "ExtensionRef": "extensionRef",
                  "CORS": "cors", "ExternalAuth": "externalAuth"}


def _value_match(raw: Mapping[str, Any], path: str) -> g.ValueMatch:
    kind = one_of(get_str(raw, "type", path), ("Exact", "RegularExpression"), f"{path}.type",
                  "Exact")
    name = get_str(raw, "name", path, required=True)
    matching(name, HEADER_NAME, 256, f"{path}.name", "a header or query parameter name")
    value = raw.get("value")
    if not isinstance(value, str):
        fail(f"{path}.value", f"must be a string, not {show(value)}",
             Reason.MISSING_FIELD if value is None else Reason.INVALID_VALUE)
    if len(value) > 4096:
        fail(f"{path}.value", f"is {len(value)} characters, more than 4096")
    return g.ValueMatch(type=kind, name=cast(str, name), value=value)  # type: ignore[arg-type]


def value_matches(raw: Mapping[str, Any], key: str, path: str, *, fold: bool
                   ) -> tuple[g.ValueMatch, ...]:
    """A header (``fold``: names case-insensitive) or query parameter match list; a
    name given again is ignored, as the spec says (the first wins)."""
    check_count(get_list(raw, key, path), 16, f"{path}.{key}", "the Gateway API allows 16")
    out: dict[str, g.ValueMatch] = {}
    for m in items(raw, key, path, _value_match):
        out.setdefault(m.name.lower() if fold else m.name, m)
    return tuple(out.values())


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
        matching(name, HEADER_NAME, 256, f"{path}.remove[{i}]", "a header name")
    return g.HeaderModifier(set=pairs("set"), add=pairs("add"), remove=remove)


def _header_value(raw: Mapping[str, Any], path: str) -> tuple[str, str]:
    name = get_str(raw, "name", path, required=True)
    matching(name, HEADER_NAME, 256, f"{path}.name", "a header name")
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
    check_path(value, f"{path}.{key}")
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
    group, kind = group_kind(ref, f"{path}.backendRef", "", "Service")
    port = get_int(ref, "port", f"{path}.backendRef")
    if group == "" and kind == "Service" and port is None:
        fail(f"{path}.backendRef", "Must have port for Service reference", Reason.MISSING_FIELD)
    backend = g.BackendRef(group=group, kind=kind,
                           name=cast(str, object_name(ref, "name", f"{path}.backendRef")),
                           namespace=object_name(ref, "namespace", f"{path}.backendRef",
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


CORS_ORIGIN = re.compile(r"\*|[a-zA-Z][a-zA-Z0-9+\-.]+://[^:/?#]+(:[0-9]{1,5})?")
"""The CRD's ``CORSOrigin`` pattern: ``*``, or ``scheme://host[:port]``."""


def _strings(raw: Mapping[str, Any], key: str, path: str, limit: int) -> tuple[str, ...]:
    """A ``listType=set`` list of strings of at most ``limit`` items (the API server
    refuses a value given twice)."""
    values = get_list(raw, key, path)
    check_count(values, limit, f"{path}.{key}", f"the Gateway API allows {limit}")
    for i, v in enumerate(values):
        if not isinstance(v, str):
            fail(f"{path}.{key}[{i}]", f"must be a string, not {show(v)}")
        if v in values[:i]:
            fail(f"{path}.{key}[{i}]", f"Duplicate value: {show(v)}")
    return tuple(values)


def _cors(raw: Mapping[str, Any], path: str) -> g.CORSFilter:
    origins = _strings(raw, "allowOrigins", path, 64)
    for i, o in enumerate(origins):
        matching(o, CORS_ORIGIN, 253, f"{path}.allowOrigins[{i}]",
                 "an origin ('*', or scheme://host[:port])")
    if "*" in origins and len(origins) > 1:
        fail(f"{path}.allowOrigins", "AllowOrigins cannot contain '*' alongside other origins")
    methods = _strings(raw, "allowMethods", path, 9)
    for i, m in enumerate(methods):
        one_of(m, (*METHODS, "*"), f"{path}.allowMethods[{i}]", "")
    if "*" in methods and len(methods) > 1:
        fail(f"{path}.allowMethods", "AllowMethods cannot contain '*' alongside other methods")
    headers = {key: _strings(raw, key, path, 64) for key in ("allowHeaders", "exposeHeaders")}
    for key, names in headers.items():
        for i, name in enumerate(names):
            matching(name, HEADER_NAME, 256, f"{path}.{key}[{i}]", "a header name")
    max_age = get_int(raw, "maxAge", path, lo=1, hi=2**31 - 1)
    return g.CORSFilter(allow_origins=origins, allow_methods=methods,
                        allow_headers=headers["allowHeaders"],
                        expose_headers=headers["exposeHeaders"],
                        allow_credentials=get_bool(raw, "allowCredentials", path, False),
                        max_age_s=5 if max_age is None else max_age)


def route_retry(raw: Mapping[str, Any], path: str) -> g.RouteRetry | None:
    """A rule's ``retry`` (None when absent): codes 400-599, attempts, backoff."""
    if raw.get("retry") is None:
        return None
    retry = get_map(raw, "retry", path)
    at = f"{path}.retry"
    codes = get_list(retry, "codes", at)
    check_count(codes, 200, f"{at}.codes", "there are 200 codes from 400 to 599")
    for i, code in enumerate(codes):
        if isinstance(code, bool) or not isinstance(code, int) or not 400 <= code <= 599:
            fail(f"{at}.codes[{i}]", f"{show(code)} is not a status code from 400 to 599")
        if code in codes[:i]:
            fail(f"{at}.codes[{i}]", f"Duplicate value: {code}")
    backoff = get_str(retry, "backoff", at)
    return g.RouteRetry(codes=tuple(sorted(codes)),
                        attempts=get_int(retry, "attempts", at, lo=0, hi=2**31 - 1),
                        backoff_ms=duration_ms(backoff, f"{at}.backoff") if backoff else None)


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
    if kind == "CORS":
        return g.RouteFilter(type=kind, cors=_cors(settings, at))
    return g.RouteFilter(type=kind)


def route_filters(raw: Mapping[str, Any], path: str) -> tuple[g.RouteFilter, ...]:
    check_count(get_list(raw, "filters", path), 16, f"{path}.filters",
                "the Gateway API allows 16")
    out = items(raw, "filters", path, _filter)
    for once in ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect",
                 "URLRewrite"):
        if sum(f.type == once for f in out) > 1:
            fail(f"{path}.filters", f"{once} filter cannot be repeated")
    return out


def backend_ref(raw: Mapping[str, Any], path: str) -> g.BackendRef:
    group, kind = group_kind(raw, path, "", "Service")
    port = get_int(raw, "port", path)
    if group == "" and kind == "Service" and port is None:
        fail(path, "Must have port for Service reference", Reason.MISSING_FIELD)
    weight = get_int(raw, "weight", path, lo=0, hi=1_000_000)
    return g.BackendRef(group=group, kind=kind, name=cast(str, object_name(raw, "name", path)),
                        namespace=object_name(raw, "namespace", path, required=False), port=port,
                        weight=1 if weight is None else weight,
                        filters=route_filters(raw, path))
