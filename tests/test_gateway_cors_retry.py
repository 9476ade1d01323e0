"""HTTPRoute CORS filters and retries as tables: the CRD's rules, origins, retry policies,
timeouts and the Route status (through the real Envoy: e2e/test_gateway_cors_retry.py)."""

from __future__ import annotations

import re

import pytest
from envoy.config.route.v3.route_components_pb2 import Route as EnvoyRoute

from kxds.envoy.routes import build_route
from kxds.ir import Forward, RetryPolicy
from kxds.kube.gateway_models import CORSFilter, RouteRetry
from kxds.kube.loader import load_text
from kxds.translators.config import TranslateConfig
from kxds.translators.edge import translate
from kxds.translators.gateway import SUPPORTED_FEATURES
from kxds.translators.gateway_filters import (
    cors_origin,
    cors_policy,
    retry_policy,
    whole_timeout_ms,
)

_ROUTE = """
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: kxds}}
spec: {{controllerName: kxds.io/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: kxds
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - backendRefs: [{{name: web, port: 80}}]
    {rule}
"""


def _problems(rule: str) -> list[str]:
    """The parse problems of a Route with ``rule`` added to its one rule, as
    ``field: message``."""
    state = load_text(_ROUTE.format(rule=rule))
    return [f"{d.field}: {d.message}" for d in state.problems
            if d.ref.kind == "HTTPRoute"]


@pytest.mark.parametrize(("rule", "field", "words"), [
    ("filters: [{type: CORS, cors: {allowOrigins: ['https://a.test/x']}}]",
     "cors.allowOrigins[0]", "is not an origin"),
    ("filters: [{type: CORS, cors: {allowOrigins: ['a.test']}}]",
     "cors.allowOrigins[0]", "is not an origin"),
    ("filters: [{type: CORS, cors: {allowOrigins: ['*', 'https://a.test']}}]",
     "cors.allowOrigins", "cannot contain '*' alongside other origins"),
    ("filters: [{type: CORS, cors: {allowOrigins: ['https://a.test', 'https://a.test']}}]",
     "cors.allowOrigins[1]", "Duplicate value"),
    ("filters: [{type: CORS, cors: {allowMethods: [get]}}]",
     "cors.allowMethods[0]", "is not one of"),
    ("filters: [{type: CORS, cors: {allowMethods: ['*', GET]}}]",
     "cors.allowMethods", "cannot contain '*' alongside other methods"),
    ("filters: [{type: CORS, cors: {allowMethods: [GET, HEAD, POST, PUT, DELETE, CONNECT, "
     "OPTIONS, TRACE, PATCH, GET]}}]", "cors.allowMethods", "more than 9"),
    ("filters: [{type: CORS, cors: {allowHeaders: ['x a']}}]",
     "cors.allowHeaders[0]", "is not a header name"),
    ("filters: [{type: CORS, cors: {exposeHeaders: ['x:a']}}]",
     "cors.exposeHeaders[0]", "is not a header name"),
    ("filters: [{type: CORS, cors: {maxAge: 0}}]", "cors.maxAge", "is outside"),
    ("filters: [{type: CORS, cors: {allowCredentials: 'yes'}}]",
     "cors.allowCredentials", "must be true or false"),
    ("filters: [{type: CORS}]", "filters[0].cors", "must be specified"),
    ("retry: {codes: [399]}", "retry.codes[0]", "from 400 to 599"),
    ("retry: {codes: [600]}", "retry.codes[0]", "from 400 to 599"),
    ("retry: {codes: ['500']}", "retry.codes[0]", "from 400 to 599"),
    ("retry: {codes: [500, 500]}", "retry.codes[1]", "Duplicate value"),
    ("retry: {attempts: -1}", "retry.attempts", "is outside"),
    ("retry: {backoff: 1x}", "retry.backoff", "is not a duration"),
    ("retry: 3", "retry", "must be an object"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None)
def test_the_crds_rules_refuse_the_route(rule: str, field: str, words: str) -> None:
    (problem,) = _problems(rule)
    assert f".{field}: " in problem and words in problem, problem


@pytest.mark.parametrize(("origin", "exact", "matches", "refuses"), [
    ("*", "*", (), ()),
    ("https://www.foo.com", "https://www.foo.com", (), ()),
    ("HTTPS://WWW.Foo.com", "https://www.foo.com", (), ()),  # browsers send lower case
    ("https://a.test:443", "https://a.test", (), ()),  # nor the default port
    ("http://a.test:80", "http://a.test", (), ()),
    ("http://a.test:8080", "http://a.test:8080", (), ()),
    ("https://a.test:80", "https://a.test:80", (), ()),
    ("https://*.bar.com", None,
     ("https://www.bar.com", "https://xpto.www.bar.com"),
     ("https://bar.com", "http://www.bar.com", "https://www.bar.com:8443",
      "https://www.bar.community", "https://evil.com/.bar.com", "https://wwwxbar.com")),
    ("https://*", None, ("https://a", "https://a.b.c"),
     ("https://a.b:444", "http://a.b", "https://")),
    ("http://*.local.test:8080", None, ("http://a.local.test:8080",),
     ("http://a.local.test", "http://a.local.test:80800")),
], ids=lambda v: v if isinstance(v, str) else None)
def test_origins(origin: str, exact: str | None, matches: tuple[str, ...],
                 refuses: tuple[str, ...]) -> None:
    one, pattern = cors_origin(origin)
    assert one == exact
    if exact is None:
        assert pattern is not None
        # Envoy's safe_regex matches the whole origin (RE2; this pattern is plain).
        assert [o for o in matches if not re.fullmatch(pattern, o)] == []
        assert [o for o in refuses if re.fullmatch(pattern, o)] == []
    else:
        assert pattern is None


def test_cors_policy_keeps_the_filter_and_the_crd_default_max_age() -> None:
    policy = cors_policy(CORSFilter(allow_origins=("https://b.test", "https://*.a.test"),
                                    allow_methods=("*",), allow_headers=("x-a",),
                                    expose_headers=("x-b",), allow_credentials=True))
    assert policy.origins == ("https://b.test",)
    assert policy.origin_patterns == (r"https://[A-Za-z0-9.-]+\.a\.test",)
    assert (policy.methods, policy.headers, policy.expose_headers) == (("*",), ("x-a",),
                                                                        ("x-b",))
    assert policy.credentials and policy.max_age_s == 5
    # No origin allowed: a policy that adds no header to any request.
    assert cors_policy(CORSFilter()).origins == ()


@pytest.mark.parametrize(("retry", "expected"), [
    (None, None),
    (RouteRetry(attempts=0, codes=(500,)), None),
    (RouteRetry(), RetryPolicy(attempts=3, reset=True)),  # kxds's default: 2 retries
    (RouteRetry(attempts=3, codes=(500,)),
     RetryPolicy(attempts=4, reset=True, status_codes=(500,))),
    (RouteRetry(attempts=1, codes=(502, 503), backoff_ms=100),
     RetryPolicy(attempts=2, reset=True, status_codes=(502, 503), backoff_ms=100)),
    (RouteRetry(attempts=1, backoff_ms=0), RetryPolicy(attempts=2, reset=True)),
], ids=str)
def test_retry_policy(retry: RouteRetry | None, expected: RetryPolicy | None) -> None:
    assert retry_policy(retry) == expected


@pytest.mark.parametrize(("request_ms", "per_try_ms", "retry", "expected"), [
    (None, None, None, None),  # Envoy's default
    (None, None, RetryPolicy(attempts=3), None),
    (20_000, 1000, RetryPolicy(attempts=3), 20_000),  # timeouts.request covers the retries
    (0, 1000, RetryPolicy(attempts=3), 0),
    (None, 1000, None, 1000),
    # Room for 3 attempts and 2 waits of at most 10 x Envoy's 25 ms base.
    (None, 1000, RetryPolicy(attempts=3), 3500),
    (None, 1000, RetryPolicy(attempts=2, backoff_ms=100), 3000),
], ids=str)
def test_whole_timeout(request_ms: int | None, per_try_ms: int | None,
                       retry: RetryPolicy | None, expected: int | None) -> None:
    assert whole_timeout_ms(request_ms, per_try_ms, retry) == expected


def _served(rule: str) -> tuple[str, Forward, EnvoyRoute | None]:
    """The Route's Accepted condition, its route's action and Envoy route."""
    result = translate(load_text(_ROUTE.format(rule=rule)), TranslateConfig())
    (status,) = result.gateway_status.routes
    accepted = next(c for c in status.parents[0].conditions if c.type == "Accepted")
    routes = [r for t in result.ir.route_tables for v in t.virtual_hosts for r in v.routes
              if r.ref.kind == "HTTPRoute"]
    if not routes:
        return f"{accepted.reason}: {accepted.message}", Forward(backends=()), None
    (route,) = routes
    assert isinstance(route.action, Forward)
    return accepted.reason, route.action, build_route(route)


def test_a_route_with_cors_and_retry_is_accepted_and_reaches_envoy() -> None:
    reason, action, built = _served(
        "filters: [{type: CORS, cors: {allowOrigins: ['https://a.test']}}]\n"
        "    retry: {codes: [500, 503], attempts: 2, backoff: 50ms}\n"
        "    timeouts: {backendRequest: 2s}")
    assert reason == "Accepted"
    assert action.retry == RetryPolicy(attempts=3, reset=True, status_codes=(500, 503),
                                       backoff_ms=50)
    assert (action.per_try_timeout_ms, action.timeout_ms) == (2000, 2000 * 3 + 500 * 2)
    assert built is not None
    policy = built.route.retry_policy
    assert policy.num_retries.value == 2
    assert policy.retry_on == ("connect-failure,refused-stream,reset-before-request,reset,"
                               "retriable-status-codes")
    assert list(policy.retriable_status_codes) == [500, 503]
    assert policy.retry_back_off.base_interval.ToMilliseconds() == 50
    assert policy.per_try_timeout.ToMilliseconds() == 2000
    assert "envoy.filters.http.cors" in built.typed_per_filter_config


def test_two_cors_filters_in_a_rule_are_not_served() -> None:
    reason, _, built = _served(
        "filters: [{type: CORS, cors: {allowOrigins: ['https://a.test']}},\n"
        "              {type: CORS, cors: {allowOrigins: ['https://b.test']}}]")
    assert reason.startswith("UnsupportedValue: spec.rules[0].filters[1]: a second CORS")
    assert built is None


def test_cors_on_a_backend_ref_is_not_served() -> None:
    state = load_text(_ROUTE.format(rule="").replace(
        "backendRefs: [{name: web, port: 80}]",
        "backendRefs: [{name: web, port: 80, filters: [{type: CORS, cors: {}}]}]"))
    result = translate(state, TranslateConfig())
    (status,) = result.gateway_status.routes
    accepted = next(c for c in status.parents[0].conditions if c.type == "Accepted")
    assert accepted.reason == "UnsupportedValue"
    assert "backendRefs[0].filters[0]: CORS filters are not supported" in accepted.message


def test_the_features_are_claimed() -> None:
    assert {"HTTPRouteCORS", "HTTPRouteRetry", "HTTPRouteRetryBackendTimeout",
            "HTTPRouteRetryConnectionError"} <= set(SUPPORTED_FEATURES)


def test_retry_and_cors_on_a_redirecting_rule_are_reported() -> None:
    text = _ROUTE.format(rule="").replace(
        "  - backendRefs: [{name: web, port: 80}]",
        "  - filters:\n"
        "    - {type: RequestRedirect, requestRedirect: {hostname: b.test}}\n"
        "    - {type: CORS, cors: {allowOrigins: ['https://a.test']}}\n"
        "    retry: {attempts: 2}")
    result = translate(load_text(text), TranslateConfig())
    found = sorted((d.field, d.message) for d in result.diagnostics if d.ref.kind == "HTTPRoute")
    assert found == [
        ("spec.rules[0].filters[1]", "the CORS filter has no effect on a rule that redirects"),
        ("spec.rules[0].retry", "retry has no effect on a rule that redirects")]


def test_a_regex_too_large_for_envoy_is_not_served() -> None:
    # RE2 compiles it, but Envoy refuses programs larger than 100: the whole route
    # table would be rejected, so the Route is UnsupportedValue instead.
    long_path = "/" + "/".join(["abcdefghij"] * 12)
    reason, _, built = _served(
        f"matches: [{{path: {{type: RegularExpression, value: '{long_path}'}}}}]")
    assert built is None
    assert reason.startswith("UnsupportedValue: spec.rules[0].matches[0].path.value: too "
                             "long for Envoy's regex engine"), reason
