"""Gateway API rules as tables: hostname intersection, precedence, status reasons, CEL checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from envoy.config.route.v3.route_components_pb2 import RedirectAction

from kxds.certs.make import make_ca, make_leaf, tls_secret_yaml
from kxds.envoy.routes import build_route
from kxds.ir import Forward, MatchKind, PassthroughChain, TlsListener
from kxds.kube.gateway_models import (
    GRPCRoute,
    PathModifier,
    RequestRedirect,
    RouteMatch,
    ValueMatch,
)
from kxds.kube.loader import load_text
from kxds.translators.config import TranslateConfig
from kxds.translators.edge import translate
from kxds.translators.gateway import SUPPORTED_FEATURES
from kxds.translators.gateway_filters import path_rewrite, redirect
from kxds.translators.gateway_routes import intersect, path_match, precedence

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize(("listener", "route", "expected"), [
    (None, "a.example.com", "a.example.com"),
    ("a.example.com", "a.example.com", "a.example.com"),
    ("a.example.com", "b.example.com", None),
    ("*.example.com", "a.example.com", "a.example.com"),
    ("*.example.com", "a.b.example.com", "a.b.example.com"),  # wildcards span labels
    ("*.example.com", "example.com", None),
    ("a.example.com", "*.example.com", "a.example.com"),
    ("*.example.com", "*.b.example.com", "*.b.example.com"),
    ("*.b.example.com", "*.example.com", "*.b.example.com"),
    ("*.example.com", "*.example.org", None),
    ("*.example.com", "*.example.com", "*.example.com"),
], ids=lambda v: str(v))
def test_hostname_intersection(listener: str | None, route: str, expected: str | None) -> None:
    assert intersect(listener, route) == expected


@pytest.mark.parametrize(("kind", "value", "match_kind", "path"), [
    ("Exact", "/a/", MatchKind.EXACT, "/a/"),
    ("PathPrefix", "/a/", MatchKind.PATH_PREFIX, "/a"),
    ("PathPrefix", "/", MatchKind.PREFIX, "/"),
])
def test_path_match(kind: str, value: str, match_kind: MatchKind, path: str) -> None:
    m = path_match(kind, value)
    assert (m.kind, m.path) == (match_kind, path)


def test_precedence_exact_then_longest_prefix_then_oldest_route_then_rule_order() -> None:
    entries = {
        "old-prefix-short": precedence(path_match("PathPrefix", "/a"), 0, 0, 0),
        "new-prefix-long": precedence(path_match("PathPrefix", "/a/b"), 5, 0, 0),
        "new-exact": precedence(path_match("Exact", "/z"), 5, 0, 0),
        "old-root": precedence(path_match("PathPrefix", "/"), 0, 1, 0),
        "tie-older": precedence(path_match("PathPrefix", "/a/c"), 1, 3, 0),
        "tie-newer": precedence(path_match("PathPrefix", "/a/c"), 2, 0, 0),
        "tie-older-later-rule": precedence(path_match("PathPrefix", "/a/c"), 1, 4, 0),
    }
    assert sorted(entries, key=entries.__getitem__) == [
        "new-exact", "tie-older", "tie-older-later-rule", "tie-newer", "new-prefix-long",
        "old-prefix-short", "old-root"]


def _status(case: str) -> dict[str, str]:
    state = load_text((GOLDEN / case / "input.yaml").read_text())
    status = translate(state, TranslateConfig()).gateway_status
    out = {}
    for r in status.routes:
        for p in r.parents:
            key = f"{r.ref.key} -> {p.parent.name}/{p.parent.section_name or '*'}"
            out[key] = " ".join(f"{c.type}={c.status}:{c.reason}" for c in p.conditions)
    return out


def test_route_parent_conditions_name_the_specs_reasons() -> None:
    assert _status("gateway-invalid-refs") == {
        "default/extension -> gw/same":
            "Accepted=False:UnsupportedValue ResolvedRefs=True:ResolvedRefs",
        "default/odd-refs -> gw/nope":
            "Accepted=False:NoMatchingParent ResolvedRefs=False:InvalidKind",
        "default/odd-refs -> gw/same": "Accepted=True:Accepted ResolvedRefs=False:InvalidKind",
        "default/wrong-host -> gw/same":
            "Accepted=False:NoMatchingListenerHostname ResolvedRefs=True:ResolvedRefs",
        "team-a/no-grant -> gw/selected":
            "Accepted=True:Accepted ResolvedRefs=False:RefNotPermitted",
        "team-b/not-allowed -> gw/*":
            "Accepted=False:NotAllowedByListeners ResolvedRefs=True:ResolvedRefs",
    }


def test_gateway_and_listener_status() -> None:
    state = load_text((GOLDEN / "gateway-basic" / "input.yaml").read_text())
    status = translate(state, TranslateConfig()).gateway_status
    assert [c.ref.name for c in status.classes] == ["kxds"]  # not the other controller's
    (gw,) = status.gateways
    assert gw.generation == 3
    assert [(c.type, c.status, c.reason) for c in gw.conditions] == [
        ("Accepted", True, "Accepted"), ("Programmed", True, "Programmed")]
    by_name = {lis.name: lis for lis in gw.listeners}
    assert by_name["http"].attached_routes == 2
    assert {c.type: c.reason for c in by_name["tcp"].conditions}["Accepted"] == "Accepted"
    assert [k.kind for k in by_name["tcp"].supported_kinds] == ["TCPRoute"]
    # An HTTP listener beside the edge's ports: an Envoy listener of its own.
    assert {c.type: c.reason for c in by_name["odd-port"].conditions}["Programmed"] == \
        "Programmed"
    assert by_name["odd-port"].attached_routes == 1
    (shop,) = [r for r in status.routes if r.ref.name == "shop"]
    assert [p.parent.name for p in shop.parents] == ["gw"]  # "theirs" is not ours to report
    assert shop.generation == 2


def test_listeners_of_two_gateways_on_one_hostname_conflict_and_the_older_keeps_it() -> None:
    docs = "\n---\n".join([
        "{apiVersion: gateway.networking.k8s.io/v1, kind: GatewayClass, metadata: {name: k},"
        " spec: {controllerName: kxds.io/gateway-controller}}",
        *(f"{{apiVersion: gateway.networking.k8s.io/v1, kind: Gateway, metadata: {{name: {n},"
          f" namespace: default, creationTimestamp: '{ts}'}}, spec: {{gatewayClassName: k,"
          " listeners: [{name: http, port: 80, protocol: HTTP, hostname: a.example.com}]}}"
          for n, ts in (("young", "2024-01-02T00:00:00Z"), ("old", "2024-01-01T00:00:00Z")))])
    status = translate(load_text(docs), TranslateConfig()).gateway_status
    conds = {g.ref.name: {c.type: (c.status, c.reason) for c in g.listeners[0].conditions}
             for g in status.gateways}
    assert conds["old"]["Conflicted"] == (False, "NoConflicts")
    assert conds["young"]["Conflicted"] == (True, "HostnameConflict")
    assert conds["young"]["Accepted"][0] is False


@pytest.mark.parametrize(("spec", "message"), [
    ("listeners: [{name: a, port: 80, protocol: HTTP}, {name: a, port: 81, protocol: HTTP}]",
     "Listener name must be unique"),
    ("listeners: [{name: a, port: 80, protocol: HTTP}, {name: b, port: 80, protocol: HTTP}]",
     "Combination of port, protocol and hostname must be unique"),
    ("listeners: [{name: a, port: 443, protocol: HTTPS, tls: {mode: Terminate}}]",
     "certificateRefs or options must be specified"),
    ("listeners: [{name: a, port: 9, protocol: TCP, hostname: a.example.com}]",
     "hostname must not be specified"),
    ("listeners: []", "at least one listener"),
], ids=["name", "distinct", "certs", "tcp-hostname", "empty"])
def test_gateway_cel_rules_are_checked_for_manifests(spec: str, message: str) -> None:
    state = load_text("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n"
                      f"metadata: {{name: g}}\nspec:\n  gatewayClassName: k\n  {spec}\n")
    assert not state.gateways
    (problem,) = state.problems
    assert message in problem.message


@pytest.mark.parametrize(("rule", "message"), [
    ("{matches: [{path: {type: Exact, value: a}}]}", "must be an absolute path"),
    ("{matches: [{path: {value: /a//b}}]}", "must not contain '//'"),
    ("{matches: [{path: {value: '/a b'}}]}", "must only contain valid characters"),
    ("{backendRefs: [{name: web}]}", "Must have port for Service reference"),
    ("{timeouts: {request: 1s, backendRequest: 2s}}", "cannot be longer than request"),
    ("{filters: [{type: RequestRedirect, requestRedirect: {}}],"
     " backendRefs: [{name: web, port: 80}]}",
     "RequestRedirect filter must not be used together with backendRefs"),
    ("{filters: [{type: RequestRedirect}]}", "filter.requestRedirect must be specified"),
    ("{filters: [{type: URLRewrite, urlRewrite: {}, requestRedirect: {}}]}",
     "filter.requestRedirect must be nil"),
    ("{matches: [{path: {type: Exact, value: /a}}], filters: [{type: URLRewrite, urlRewrite:"
     " {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]}",
     "exactly one PathPrefix match"),
    ("{filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath}}}]}",
     "replaceFullPath must be specified"),
    ("{filters: [{type: RequestRedirect, requestRedirect: {statusCode: 304}}]}",
     "304 is not one of"),
    ("{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {}},"
     " {type: RequestHeaderModifier, requestHeaderModifier: {}}]}", "cannot be repeated"),
    ("{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80},"
     " percent: 5, fraction: {numerator: 1}}}]}", "Only one of percent or fraction"),
    ("{matches: [{headers: [{name: 'a b', value: x}]}]}", "is not a header"),
    ("{matches: [{method: FETCH}]}", "FETCH"),
], ids=["relative", "double-slash", "space", "port", "timeouts", "redirect-backends",
        "filter-settings-missing", "filter-settings-other", "prefix-needs-prefix-match",
        "full-path-missing", "status-code", "repeated-modifier", "mirror-percent-and-fraction",
        "header-name", "method"])
def test_httproute_cel_rules_are_checked_for_manifests(rule: str, message: str) -> None:
    state = load_text("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
                      f"metadata: {{name: r}}\nspec:\n  rules: [{rule}]\n")
    (problem,) = state.problems
    assert message in problem.message


def test_weights_are_kept_and_a_zero_weight_backend_gets_no_share() -> None:
    state = load_text((GOLDEN / "gateway-basic" / "input.yaml").read_text().replace(
        "weight: 1}", "weight: 0}"))
    (table,) = [t for t in translate(state, TranslateConfig()).ir.route_tables
                if t.name == "http/8080"]
    (vh,) = [v for v in table.virtual_hosts if v.name == "shop.example.com"]
    action = vh.routes[0].action
    assert isinstance(action, Forward)
    assert [(b.cluster, b.weight) for b in action.backends] == [("default/web/80", 3)]


def test_precedence_after_the_path_method_then_headers_then_query_params() -> None:
    prefix = path_match("PathPrefix", "/a")
    entries = {
        "plain-old": precedence(prefix, 0, 0, 0, RouteMatch()),
        "query": precedence(prefix, 5, 0, 0, RouteMatch(query_params=(_v("q"),))),
        "one-header": precedence(prefix, 5, 0, 0, RouteMatch(headers=(_v("a"),))),
        "two-headers": precedence(prefix, 6, 0, 0, RouteMatch(headers=(_v("a"), _v("b")))),
        "method": precedence(prefix, 7, 0, 0, RouteMatch(method="GET")),
        "longer-prefix": precedence(path_match("PathPrefix", "/a/b"), 9, 0, 0, RouteMatch()),
        "regex": precedence(path_match("RegularExpression", "/a.*"), 9, 0, 0, RouteMatch()),
        "exact": precedence(path_match("Exact", "/a"), 9, 0, 0, RouteMatch()),
    }
    assert sorted(entries, key=entries.__getitem__) == [
        "exact", "regex", "longer-prefix", "method", "two-headers", "one-header", "query",
        "plain-old"]


def _v(name: str) -> ValueMatch:
    return ValueMatch(name=name, value="x")


@pytest.mark.parametrize(("prefix", "value", "request_path", "expected"), [
    ("/prefix/one", "/one", "/prefix/one/two", "/one/two"),
    ("/prefix/one", "/one", "/prefix/one", "/one"),
    ("/strip-prefix", "/", "/strip-prefix/three", "/three"),
    ("/strip-prefix", "/", "/strip-prefix", "/"),
    ("/strip-prefix/", "/", "/strip-prefix/three", "/three"),
    ("/a", "/b/", "/a/x", "/b/x"),
    ("/", "/api", "/x", "/api/x"),
    ("/", "/api/", "/", "/api/"),
    ("/a.b", "/c", "/a.b/d", "/c/d"),
])
def test_replace_prefix_match_replaces_whole_path_elements(prefix: str, value: str,
                                                           request_path: str,
                                                           expected: str) -> None:
    rw = path_rewrite(PathModifier(type="ReplacePrefixMatch", value=value),
                      path_match("PathPrefix", prefix))
    assert rw.pattern is not None
    # Envoy's regex_rewrite substitutes every match of the pattern (anchored: one).
    assert re.sub(rw.pattern, rw.substitution, request_path, count=1) == expected


def test_replace_full_path_replaces_the_path() -> None:
    rw = path_rewrite(PathModifier(type="ReplaceFullPath", value="/new"),
                      path_match("PathPrefix", "/old"))
    assert rw.pattern is not None
    assert re.sub(rw.pattern, rw.substitution, "/old/a/b") == "/new"


@pytest.mark.parametrize(("spec", "https", "scheme", "port"), [
    (RequestRedirect(scheme="https"), True, None, None),
    (RequestRedirect(scheme="https", port=443), True, None, None),  # the well-known port
    (RequestRedirect(scheme="https", port=8443), True, None, 8443),
    (RequestRedirect(scheme="http", port=80), False, "http", None),
    (RequestRedirect(port=80), False, None, None),  # served on HTTP: 80 is its own
    (RequestRedirect(port=8080), False, None, 8080),
])
def test_redirect_leaves_out_the_schemes_well_known_port(
        spec: RequestRedirect, https: bool, scheme: str | None, port: int | None) -> None:
    r = redirect(spec, path_match("PathPrefix", "/"))
    assert (r.https, r.scheme, r.port, r.status) == (https, scheme, port, 302)


def test_a_header_or_query_name_given_twice_keeps_the_first() -> None:
    state = load_text(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\n"
        "spec:\n  rules: [{matches: [{headers: [{name: X-A, value: '1'}, {name: x-a, value: '2'}],"
        " queryParams: [{name: q, value: '1'}, {name: Q, value: '2'}, {name: q, value: '3'}]}]}]\n")
    (route,) = state.http_routes.values()
    m = route.rules[0].matches[0]
    assert [(h.name, h.value) for h in m.headers] == [("X-A", "1")]
    assert [(q.name, q.value) for q in m.query_params] == [("q", "1"), ("Q", "2")]


def test_an_httproute_with_header_matches_goes_before_an_ingress_path_it_shares() -> None:
    text = (GOLDEN / "gateway-with-ingress" / "input.yaml").read_text()
    state = load_text(text)
    ingress_paths = {(r.match.kind, r.match.path) for vh in
                     translate(state, TranslateConfig()).ir.route_tables[0].virtual_hosts
                     for r in vh.routes if r.ref.kind == "Ingress"}
    assert ingress_paths  # the case has Ingress routes to share a host with
    host = next(iter(state.ingresses.values())).rules[0].host
    path = next(p for k, p in sorted(ingress_paths) if k is MatchKind.PATH_PREFIX)
    extra = f"""
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: by-header, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [{host}]
  rules:
  - matches: [{{path: {{value: {path}}}, headers: [{{name: x-beta, value: "1"}}]}}]
    backendRefs: [{{name: web, port: 80}}]
"""
    tables = translate(load_text(text + extra), TranslateConfig()).ir.route_tables
    (vh,) = [v for t in tables for v in t.virtual_hosts if v.name == host]
    same = [r for r in vh.routes if r.match.path == path]
    assert [r.ref.kind for r in same][:2] == ["HTTPRoute", "Ingress"], vh.routes
    assert same[0].headers[0].name == "x-beta"


def test_supported_features_are_sorted_and_named_as_the_suite_names_them() -> None:
    assert list(SUPPORTED_FEATURES) == sorted(SUPPORTED_FEATURES)
    assert {"Gateway", "HTTPRoute", "ReferenceGrant", "HTTPRouteQueryParamMatching",
            "HTTPRouteMethodMatching", "HTTPRouteRequestMirror"} <= set(SUPPORTED_FEATURES)
    # Not served yet: ports beside the edge's, a Gateway's own addresses.
    assert not {"GatewayPort8080", "GatewayStaticAddresses",
                "HTTPRouteParentRefPort"} & set(SUPPORTED_FEATURES)


_FILTER_CASE = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: copy, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kxds}
spec: {controllerName: kxds.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: kxds
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [a.example.com]
  rules:
  - matches: [{path: {value: /mirror}}]
    filters:
    - {type: RequestMirror, requestMirror: {backendRef: {name: copy, port: 80}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: copy, port: 80},
                                            fraction: {numerator: 1, denominator: 8}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: nowhere, port: 80}}}
    backendRefs: [{name: web, port: 80}]
  - matches: [{path: {value: /s303}}]
    filters: [{type: RequestRedirect, requestRedirect: {statusCode: 303}}]
  - matches: [{path: {value: /s307}}]
    filters: [{type: RequestRedirect, requestRedirect: {statusCode: 307}}]
  - matches: [{path: {value: /s308}}]
    filters: [{type: RequestRedirect, requestRedirect: {statusCode: 308}}]
"""


def test_several_mirrors_percentages_and_redirect_codes_reach_envoy() -> None:
    result = translate(load_text(_FILTER_CASE), TranslateConfig())
    (vh,) = [v for t in result.ir.route_tables for v in t.virtual_hosts
             if v.name == "a.example.com"]
    built = {r.name.split("/rule/")[1]: build_route(r) for r in vh.routes}
    mirrors = built["0/match/0"].route.request_mirror_policies
    assert [m.cluster for m in mirrors] == ["default/copy/80", "default/copy/80"]
    assert not mirrors[0].HasField("runtime_fraction")
    assert mirrors[1].runtime_fraction.default_value.numerator == 125_000  # 12.5%
    codes = {k: built[f"{k}/match/0"].redirect.response_code for k in (1, 2, 3)}
    assert codes == {1: RedirectAction.SEE_OTHER, 2: RedirectAction.TEMPORARY_REDIRECT,
                     3: RedirectAction.PERMANENT_REDIRECT}
    # A mirror that does not resolve is left out and reported; the rule is served.
    (route_status,) = result.gateway_status.routes
    conds = {c.type: c for c in route_status.parents[0].conditions}
    assert conds["Accepted"].status
    assert not conds["ResolvedRefs"].status and conds["ResolvedRefs"].reason == "BackendNotFound"
    assert "requestMirror.backendRef" in conds["ResolvedRefs"].message
    (diag,) = [d for d in result.diagnostics if "requestMirror" in d.field]
    assert diag.message.endswith("the mirror is left out")


def _grpc_route(rule: str) -> GRPCRoute:
    state = load_text("apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\n"
                      f"metadata: {{name: r}}\nspec:\n  rules: [{rule}]\n")
    assert not state.problems, state.problems
    (route,) = state.grpc_routes.values()
    return route


@pytest.mark.parametrize(("method", "kind", "value"), [
    ("{service: a.B, method: Do}", "Exact", "/a.B/Do"),
    ("{service: a.B}", "PathPrefix", "/a.B/"),
    ("{method: Do}", "RegularExpression", "/[^/]+/Do"),
    ("{type: RegularExpression, service: 'a\\..*'}", "RegularExpression",
     "/(?:a\\..*)/(?:[^/]+)"),
    ("{type: RegularExpression, service: a.B, method: 'Do|Get'}", "RegularExpression",
     "/(?:a.B)/(?:Do|Get)"),
])
def test_grpc_method_matches_are_the_paths_of_their_calls(method: str, kind: str,
                                                          value: str) -> None:
    (m,) = _grpc_route(f"{{matches: [{{method: {method}}}]}}").rules[0].matches
    assert (m.path.type, m.path.value) == (kind, value)


def test_a_grpcroute_without_matches_takes_every_call_and_a_listener_may_refuse_it() -> None:
    (m,) = _grpc_route("{}").rules[0].matches
    assert (m.path.type, m.path.value) == ("PathPrefix", "/")
    text = (GOLDEN / "gateway-grpcroute" / "input.yaml").read_text().replace(
        "  - {name: http, port: 80, protocol: HTTP}",
        "  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: HTTPRoute}]}}")
    status = translate(load_text(text), TranslateConfig()).gateway_status
    (greeter,) = [r for r in status.routes if r.ref.name == "greeter"]
    accepted = greeter.parents[0].conditions[0]
    assert (accepted.status, accepted.reason) == (False, "NotAllowedByListeners")
    assert "GRPCRoutes" in accepted.message


@pytest.mark.parametrize(("rule", "message"), [
    ("{matches: [{method: {}}]}", "One or both of 'service' or 'method'"),
    ("{matches: [{method: {service: 'a/b'}}]}", "service must only contain valid characters"),
    ("{matches: [{method: {service: a, method: 'x.y'}}]}",
     "method must only contain valid characters"),
    ("{filters: [{type: URLRewrite, urlRewrite: {}}]}", "is not one of"),
])
def test_grpcroute_cel_rules_are_checked_for_manifests(rule: str, message: str) -> None:
    state = load_text("apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\n"
                      f"metadata: {{name: r}}\nspec:\n  rules: [{rule}]\n")
    (problem,) = state.problems
    assert message in problem.message


@pytest.mark.parametrize(("timeouts", "whole", "per_try"), [
    ("{request: 10s, backendRequest: 2s}", 10_000, 2000),
    ("{backendRequest: 30s}", 30_000, 30_000),  # not cut by Envoy's 15 s default
    ("{request: 0s, backendRequest: 5s}", 0, 5000),
    ("{request: 3s}", 3000, None),
    ("{backendRequest: 0s}", None, None),
])
def test_backend_request_timeout_is_each_attempts(timeouts: str, whole: int | None,
                                                  per_try: int | None) -> None:
    text = _FILTER_CASE.replace(
        "  - matches: [{path: {value: /s303}}]",
        f"  - matches: [{{path: {{value: /t}}}}]\n    timeouts: {timeouts}\n"
        "    backendRefs: [{name: web, port: 80}]\n  - matches: [{path: {value: /s303}}]")
    (vh,) = [v for t in translate(load_text(text), TranslateConfig()).ir.route_tables
             for v in t.virtual_hosts if v.name == "a.example.com"]
    (route,) = [r for r in vh.routes if r.match.path == "/t"]
    assert isinstance(route.action, Forward)
    assert (route.action.timeout_ms, route.action.per_try_timeout_ms) == (whole, per_try)


def test_a_mirror_to_a_backend_that_admits_only_some_clients_is_left_out() -> None:
    text = _FILTER_CASE.replace(
        "metadata: {name: copy, namespace: default}\nspec: {ports: [{name: http, port: 80}]}",
        "metadata: {name: copy, namespace: default}\nspec: {type: LoadBalancer, ports: "
        "[{name: http, port: 80}], loadBalancerSourceRanges: [10.0.0.0/8]}")
    assert text != _FILTER_CASE
    result = translate(load_text(text), TranslateConfig())
    (vh,) = [v for t in result.ir.route_tables for v in t.virtual_hosts
             if v.name == "a.example.com"]
    (route,) = [r for r in vh.routes if r.match.path == "/mirror"]
    assert isinstance(route.action, Forward) and route.action.mirrors == ()
    left_out = [d for d in result.diagnostics if d.message.endswith("the mirror is left out")
                and "admits only some clients" in d.message]
    assert len(left_out) == 2  # the two mirrors to that Service


def test_grpcroute_weights_and_listener_hostnames_as_for_httproute() -> None:
    text = (GOLDEN / "gateway-grpcroute" / "input.yaml").read_text().replace(
        "  - {name: http, port: 80, protocol: HTTP}",
        "  - {name: http, port: 80, protocol: HTTP, hostname: '*.example.com'}").replace(
        "  - backendRefs: [{name: greeter, port: 50051}]",
        "  - backendRefs: [{name: greeter, port: 50051, weight: 3},"
        " {name: greeter-v2, port: 50051, weight: 1}]")
    result = translate(load_text(text), TranslateConfig())
    hosts = {v.name: v for t in result.ir.route_tables for v in t.virtual_hosts}
    assert "grpc.example.com" in hosts  # inside the listener's wildcard
    last = hosts["grpc.example.com"].routes[-1]
    assert isinstance(last.action, Forward)
    assert [(b.cluster, b.weight) for b in last.action.backends] == [
        ("default/greeter/50051/h2", 3), ("default/greeter-v2/50051", 1)]
    other = text.replace("hostnames: [grpc.example.com]", "hostnames: [grpc.example.org]")
    status = translate(load_text(other), TranslateConfig()).gateway_status
    (greeter,) = [r for r in status.routes if r.ref.name == "greeter"]
    assert greeter.parents[0].conditions[0].reason == "NoMatchingListenerHostname"


def test_a_parent_port_no_listener_has_is_no_matching_parent() -> None:
    text = (GOLDEN / "gateway-grpcroute" / "input.yaml").read_text().replace(
        "kind: GRPCRoute\nmetadata: {name: greeter, namespace: default}\nspec:\n"
        "  parentRefs: [{name: gw}]",
        "kind: GRPCRoute\nmetadata: {name: greeter, namespace: default}\nspec:\n"
        "  parentRefs: [{name: gw, port: 81}]")
    status = translate(load_text(text), TranslateConfig()).gateway_status
    (greeter,) = [r for r in status.routes if r.ref.name == "greeter"]
    assert greeter.parents[0].conditions[0].reason == "NoMatchingParent"


def test_a_listener_asking_for_a_route_kind_it_cannot_serve_reports_invalid_route_kinds() -> None:
    text = (GOLDEN / "gateway-grpcroute" / "input.yaml").read_text().replace(
        "  - {name: http, port: 80, protocol: HTTP}",
        "  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: TCPRoute}]}}")
    status = translate(load_text(text), TranslateConfig()).gateway_status
    (listener,) = status.gateways[0].listeners
    conds = {c.type: c for c in listener.conditions}
    assert (conds["ResolvedRefs"].status, conds["ResolvedRefs"].reason) == (
        False, "InvalidRouteKinds")
    assert listener.supported_kinds == ()


def test_https_listener_status_follows_its_certificate_and_the_ingress_wins_its_sni() -> None:
    """GatewaySecretInvalidReferenceGrant, GatewaySecretMissingReferenceGrant,
    GatewaySecretReferenceGrantSpecific, GatewayInvalidTLSConfiguration (restated)."""
    state = load_text((GOLDEN / "gateway-https" / "input.yaml").read_text())
    translation = translate(state, TranslateConfig())
    (gw,) = translation.gateway_status.gateways
    conds = {lis.name: {c.type: (c.status, c.reason) for c in lis.conditions}
             for lis in gw.listeners}
    for served in ("shop", "granted"):
        assert conds[served]["Accepted"] == (True, "Accepted")
        assert conds[served]["ResolvedRefs"] == (True, "ResolvedRefs")
        assert conds[served]["Programmed"] == (True, "Programmed")
    assert conds["not-granted"]["ResolvedRefs"] == (False, "RefNotPermitted")
    assert conds["missing"]["ResolvedRefs"] == (False, "InvalidCertificateRef")
    assert conds["wrong-type"]["ResolvedRefs"] == (False, "InvalidCertificateRef")
    for refused in ("not-granted", "missing", "wrong-type"):
        assert conds[refused]["Programmed"][0] is False
    assert conds["taken"]["Conflicted"] == (True, "HostnameConflict")
    assert conds["taken"]["Accepted"][0] is False
    # Only served listeners have chains; the Ingress keeps a.example.com.
    (tls,) = [lis for lis in translation.ir.listeners if lis.name == "https/8443"]
    assert sorted(n for c in tls.chains for n in c.server_names) == [
        "*.granted.example.com", "a.example.com", "shop.example.com"]
    # A route attached to HTTPS listeners only is not served on plain HTTP.
    (http,) = [t for t in translation.ir.route_tables if t.name == "http/8080"]
    assert all(r.ref.kind == "Ingress" for vh in http.virtual_hosts for r in vh.routes)


def test_https_listener_without_a_hostname_yields_to_the_default_certificate() -> None:
    docs = "\n---\n".join([
        "{apiVersion: gateway.networking.k8s.io/v1, kind: GatewayClass, metadata: {name: k},"
        " spec: {controllerName: kxds.io/gateway-controller}}",
        "{apiVersion: gateway.networking.k8s.io/v1, kind: Gateway, metadata: {name: g,"
        " namespace: default}, spec: {gatewayClassName: k, listeners: [{name: s, port: 443,"
        " protocol: HTTPS, tls: {certificateRefs: [{name: c}]}}]}}",
        tls_secret_yaml("default", "c", make_leaf(make_ca(), ["a.test"]))])
    config = TranslateConfig(default_certificate=("default", "c"))
    status = translate(load_text(docs), config).gateway_status
    (lis,) = status.gateways[0].listeners
    assert {c.type: c.reason for c in lis.conditions}["Conflicted"] == "HostnameConflict"


@pytest.mark.parametrize(("grant", "expected"), [
    ("", (False, "RefNotPermitted")),  # GatewaySecretMissingReferenceGrant
    ("{group: '', kind: Secret, name: other}", (False, "RefNotPermitted")),  # ...Invalid...
    ("{group: '', kind: Secret, name: c}", (True, "ResolvedRefs")),  # ...Specific
    ("{group: '', kind: Secret}", (True, "ResolvedRefs")),  # ...AllInNamespace
], ids=["missing", "other-secret", "specific", "all-in-namespace"])
def test_https_certificate_in_another_namespace_needs_a_reference_grant(
        grant: str, expected: tuple[bool, str]) -> None:
    docs = [
        "{apiVersion: gateway.networking.k8s.io/v1, kind: GatewayClass, metadata: {name: k},"
        " spec: {controllerName: kxds.io/gateway-controller}}",
        "{apiVersion: gateway.networking.k8s.io/v1, kind: Gateway, metadata: {name: g,"
        " namespace: default}, spec: {gatewayClassName: k, listeners: [{name: s, port: 443,"
        " protocol: HTTPS, hostname: a.test, tls: {certificateRefs: [{name: c,"
        " namespace: certs}]}}]}}",
        tls_secret_yaml("certs", "c", make_leaf(make_ca(), ["a.test"]))]
    if grant:
        docs.append("{apiVersion: gateway.networking.k8s.io/v1beta1, kind: ReferenceGrant,"
                    " metadata: {name: r, namespace: certs}, spec: {from: [{group:"
                    " gateway.networking.k8s.io, kind: Gateway, namespace: default}],"
                    f" to: [{grant}]}}}}")
    translation = translate(load_text("\n---\n".join(docs)), TranslateConfig())
    (lis,) = translation.gateway_status.gateways[0].listeners
    assert {c.type: (c.status, c.reason) for c in lis.conditions}["ResolvedRefs"] == expected
    chains = [c for lis in translation.ir.listeners if lis.name == "https/8443"
              for c in lis.chains]  # type: ignore[union-attr]
    assert len(chains) == (1 if expected[0] else 0)


def test_l4_routes_status_and_listeners() -> None:
    """TLSRouteSimpleSameNamespace, TCPRoute and UDPRoute intents (restated): the
    golden case gateway-l4's computed status."""
    state = load_text((GOLDEN / "gateway-l4" / "input.yaml").read_text())
    translation = translate(state, TranslateConfig())
    status = translation.gateway_status
    (gw,) = status.gateways
    listeners = {lis.name: lis for lis in gw.listeners}
    assert [k.kind for k in listeners["tls"].supported_kinds] == ["TLSRoute"]
    assert [k.kind for k in listeners["dns"].supported_kinds] == ["UDPRoute"]
    assert listeners["tls"].attached_routes == 2
    assert listeners["pg"].attached_routes == 2
    assert {c.type: c.reason for c in listeners["terminate"].conditions}["Accepted"] == \
        "Accepted"  # TLS in Terminate mode: see gateway-tls-terminate
    assert {c.type: c.reason for c in listeners["on-http-port"].conditions}["Accepted"] == \
        "PortUnavailable"
    routes = {(r.ref.kind, r.ref.name): {c.type: c.reason for c in r.parents[0].conditions}
              for r in status.routes}
    assert routes[("TLSRoute", "shop")] == {"Accepted": "Accepted", "ResolvedRefs": "ResolvedRefs"}
    assert routes[("TLSRoute", "broken")]["ResolvedRefs"] == "BackendNotFound"
    assert routes[("UDPRoute", "dns-split")] == {  # its weight 0 backend does not resolve
        "Accepted": "Accepted", "ResolvedRefs": "BackendNotFound"}
    assert routes[("UDPRoute", "dns")]["Accepted"] == "Accepted"
    names = {lis.name for lis in translation.ir.listeners}
    assert {"gateway/default/gw/pg/5432/tcp", "gateway/default/gw/dns/5353/udp",
            "gateway/default/gw/dns-split/5354/udp"} <= names  # split: see test_gateway_l4


@pytest.mark.parametrize(("kind", "rules", "problem"), [
    ("TCPRoute", "[]", "must have at least one rule"),
    ("UDPRoute", "[{backendRefs: []}]", "must have at least one entry"),
    ("TLSRoute", "[{backendRefs: [{name: a, port: 1, filters: [{type: X}]}]}]",
     "is not a field of this Route kind"),
], ids=["no-rules", "no-backends", "filters"])
def test_l4_route_parse_problems(kind: str, rules: str, problem: str) -> None:
    doc = (f"{{apiVersion: gateway.networking.k8s.io/v1alpha2, kind: {kind}, metadata:"
           f" {{name: r, namespace: default}}, spec: {{parentRefs: [{{name: gw}}],"
           f" rules: {rules}}}}}")
    state = load_text(doc)
    assert problem in " ".join(d.message for d in state.problems)


def test_an_http_route_does_not_attach_to_a_tcp_listener() -> None:
    docs = "\n---\n".join([
        "{apiVersion: gateway.networking.k8s.io/v1, kind: GatewayClass, metadata: {name: k},"
        " spec: {controllerName: kxds.io/gateway-controller}}",
        "{apiVersion: gateway.networking.k8s.io/v1, kind: Gateway, metadata: {name: g,"
        " namespace: default}, spec: {gatewayClassName: k, listeners: [{name: t, port: 9000,"
        " protocol: TCP}]}}",
        "{apiVersion: gateway.networking.k8s.io/v1, kind: HTTPRoute, metadata: {name: h,"
        " namespace: default}, spec: {parentRefs: [{name: g}]}}"])
    (route,) = translate(load_text(docs), TranslateConfig()).gateway_status.routes
    assert route.parents[0].conditions[0].reason == "NotAllowedByListeners"


@pytest.mark.parametrize("kind", ["TLSRoute", "TCPRoute", "UDPRoute"])
@pytest.mark.parametrize("grant", [False, True], ids=["no-grant", "grant"])
def test_l4_backend_in_another_namespace_needs_a_reference_grant(kind: str, grant: bool) -> None:
    """TLSRouteInvalidReferenceGrant, UDPRouteInvalidCrossNamespaceBackendRef and
    TCPRouteReferenceGrant (restated)."""
    proto, listener = {"TLSRoute": ("TCP", "{name: l, port: 443, protocol: TLS, tls: {mode:"
                                    " Passthrough}}"),
                       "TCPRoute": ("TCP", "{name: l, port: 9000, protocol: TCP}"),
                       "UDPRoute": ("UDP", "{name: l, port: 9000, protocol: UDP}")}[kind]
    docs = [
        "{apiVersion: gateway.networking.k8s.io/v1, kind: GatewayClass, metadata: {name: k},"
        " spec: {controllerName: kxds.io/gateway-controller}}",
        "{apiVersion: gateway.networking.k8s.io/v1, kind: Gateway, metadata: {name: g,"
        f" namespace: default}}, spec: {{gatewayClassName: k, listeners: [{listener}]}}}}",
        "{apiVersion: v1, kind: Service, metadata: {name: s, namespace: other}, spec:"
        f" {{ports: [{{port: 9000, protocol: {proto}}}]}}}}",
        f"{{apiVersion: gateway.networking.k8s.io/v1alpha2, kind: {kind}, metadata: {{name: r,"
        " namespace: default}, spec: {parentRefs: [{name: g}],"
        + (" hostnames: [a.test]," if kind == "TLSRoute" else "")
        + " rules: [{backendRefs: [{name: s, namespace: other, port: 9000}]}]}}"]
    if grant:
        docs.append("{apiVersion: gateway.networking.k8s.io/v1beta1, kind: ReferenceGrant,"
                    " metadata: {name: r, namespace: other}, spec: {from: [{group:"
                    f" gateway.networking.k8s.io, kind: {kind}, namespace: default}}],"
                    " to: [{group: '', kind: Service}]}}")
    translation = translate(load_text("\n---\n".join(docs)), TranslateConfig())
    (route,) = translation.gateway_status.routes
    conds = {c.type: c.reason for c in route.parents[0].conditions}
    assert conds == {"Accepted": "Accepted",
                     "ResolvedRefs": "ResolvedRefs" if grant else "RefNotPermitted"}
    served = [lis for lis in translation.ir.listeners if lis.name != "http/8080"]
    assert bool(served) == grant  # refused without the grant: no listener, no chain


@pytest.mark.parametrize("ref", [
    "{name: nowhere}",  # a Secret that does not exist
    "{group: example.com, kind: Secret, name: c}",  # not the core group
    "{kind: ConfigMap, name: c}",  # not a Secret
    "{name: malformed}",  # a kubernetes.io/tls Secret whose PEM does not parse
], ids=["nonexistent", "group", "kind", "malformed"])
def test_https_listener_with_an_invalid_certificate_ref_is_not_served(ref: str) -> None:
    """GatewayInvalidTLSConfiguration (restated): ResolvedRefs=False, InvalidCertificateRef."""
    docs = "\n---\n".join([
        "{apiVersion: gateway.networking.k8s.io/v1, kind: GatewayClass, metadata: {name: k},"
        " spec: {controllerName: kxds.io/gateway-controller}}",
        "{apiVersion: gateway.networking.k8s.io/v1, kind: Gateway, metadata: {name: g,"
        " namespace: default}, spec: {gatewayClassName: k, listeners: [{name: https,"
        f" port: 443, protocol: HTTPS, hostname: a.test, tls: {{certificateRefs: [{ref}]}}}}]}}}}",
        tls_secret_yaml("default", "c", make_leaf(make_ca(), ["a.test"])),
        "{apiVersion: v1, kind: Secret, metadata: {name: malformed, namespace: default},"
        " type: kubernetes.io/tls, stringData: {tls.crt: not a certificate, tls.key: nor a key}}"])
    translation = translate(load_text(docs), TranslateConfig())
    (lis,) = translation.gateway_status.gateways[0].listeners
    conds = {c.type: (c.status, c.reason) for c in lis.conditions}
    assert conds["ResolvedRefs"] == (False, "InvalidCertificateRef")
    assert conds["Programmed"][0] is False
    assert not [x for x in translation.ir.listeners if x.name == "https/8443"]


def test_a_tls_listener_in_terminate_mode_serves_its_tlsroute_decrypted() -> None:
    """TLSRouteTerminateSimpleSameNamespace (restated): the listener's certificate on a
    chain selected by SNI, tcp_proxy to the TLSRoute's backends by weight."""
    state = load_text((GOLDEN / "gateway-tls-terminate" / "input.yaml").read_text())
    translation = translate(state, TranslateConfig())
    (gw,) = translation.gateway_status.gateways
    (lis,) = gw.listeners
    assert {c.type: c.reason for c in lis.conditions}["Programmed"] == "Programmed"
    assert lis.attached_routes == 1
    (tls,) = [x for x in translation.ir.listeners if x.name == "https/8443"]
    assert isinstance(tls, TlsListener)
    (chain,) = tls.chains
    assert isinstance(chain, PassthroughChain)
    assert chain.secret == "default/a-cert" and chain.server_names == ("a.example.com",)
    assert [(w.cluster, w.weight) for w in chain.weighted] == [
        ("default/db/5432", 3), ("default/db-replica/5432", 1)]
    assert any(s.name == "default/a-cert" for s in translation.ir.secrets)
