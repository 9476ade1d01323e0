"""External authentication: auth-url and friends -> ExternalAuth -> ext_authz per route."""

from __future__ import annotations

import dataclasses
import json

import pytest

from kxds import ir
from kxds.diagnostics import ObjectRef, Reason
from kxds.envoy import ext_authz
from kxds.envoy.ext_authz_relay import RELAY
from kxds.envoy.filter_names import EXT_AUTHZ
from kxds.envoy.routes import build_route
from kxds.envoy.satisfy_any import SATISFY_ANY
from kxds.kube.loader import load_text
from kxds.translators import edge

N = "nginx.ingress.kubernetes.io/"
SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: oauth, namespace: auth}
spec: {ports: [{name: http, port: 4180}, {name: other, port: 80}]}
"""


def _ingress(annotations: dict[str, str], default_backend: bool = False) -> str:
    spec: dict[str, object] = {"ingressClassName": "kxds", "rules": [
        {"host": "a.test", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
            "service": {"name": "web", "port": {"number": 80}}}}]}}]}
    if default_backend:
        spec["defaultBackend"] = {"service": {"name": "web", "port": {"number": 80}}}
    return "---\n" + json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "shop", "namespace": "default", "annotations": annotations},
        "spec": spec}) + "\n"


def _translate(annotations: dict[str, str], default_backend: bool = False
               ) -> tuple[list[ir.Route], ir.IR, list[tuple[str, Reason, str]]]:
    t = edge.translate(load_text(SERVICES + _ingress(annotations, default_backend)))
    routes = [r for tb in t.ir.route_tables for vh in tb.virtual_hosts for r in vh.routes]
    return routes, t.ir, [(d.field, d.reason, d.message) for d in t.diagnostics]


def _auth(route: ir.Route) -> ir.ExternalAuth:
    assert route.policy is not None and route.policy.auth is not None
    assert route.policy.auth.external is not None
    return route.policy.auth.external


@pytest.mark.parametrize(("url", "cluster", "host", "path", "service"), [
    ("http://oauth.auth.svc.cluster.local:4180/oauth2/auth?allowed_groups=a%2Cb",
     "auth/oauth/4180", "oauth.auth.svc.cluster.local:4180",
     "/oauth2/auth?allowed_groups=a%2Cb", True),
    ("http://oauth.auth.svc", "auth/oauth/80", "oauth.auth.svc", "/", True),
    ("https://login.example.com/check", "ext-authz/login.example.com/443/tls",
     "login.example.com", "/check", False),
    ("http://10.0.0.9:9000/v?x=1", "ext-authz/10.0.0.9/9000", "10.0.0.9:9000", "/v?x=1",
     False),
], ids=["service-with-port-and-query", "service-default-port", "https-by-dns", "ip"])
def test_auth_url_resolves_like_a_backend(url: str, cluster: str, host: str, path: str,
                                          service: bool) -> None:
    routes, model, diags = _translate({N + "auth-url": url})
    assert diags == []
    (route,) = routes
    auth = _auth(route)
    assert (auth.cluster, auth.host, auth.path) == (cluster, host, path)
    assert (auth.service is not None) is service
    assert isinstance(route.action, ir.Forward)
    # The check's cluster is built although no route forwards to it.
    built = {c.name: c for c in model.clusters}
    assert cluster in built
    if not service:
        c = built[cluster]
        assert c.kind is ir.ClusterKind.STRICT_DNS and c.ref == ObjectRef(
            "Ingress", "default", "shop")
        assert (c.upstream_tls is not None) is url.startswith("https")
    assert ir.consistency_problems(model) == []


@pytest.mark.parametrize(("url", "reason", "words"), [
    ("http://$host/auth", Reason.INVALID_VALUE, "nginx variables"),
    ("ftp://a.example/", Reason.INVALID_VALUE, "absolute http(s)"),
    ("/oauth2/auth", Reason.INVALID_VALUE, "absolute http(s)"),
    ("http://u:p@a.example/", Reason.INVALID_VALUE, "credentials"),
    ("http://a.example:99999/", Reason.INVALID_VALUE, "invalid port"),
    ("http://nope.auth.svc/", Reason.BACKEND_NOT_FOUND, "Service auth/nope not found"),
    ("http://oauth.auth.svc:81/", Reason.PORT_NOT_FOUND, "port 81"),
    ("https://oauth.auth.svc:4180/", Reason.INVALID_VALUE, "in-cluster"),
    ("http://a.example/\u00e9", Reason.INVALID_VALUE, "printable ASCII"),
    ("http://a.example/" + "a" * 5000, Reason.INVALID_VALUE, "printable ASCII"),
])
def test_an_unusable_auth_url_fails_closed(url: str, reason: Reason, words: str) -> None:
    routes, model, diags = _translate({N + "auth-url": url}, default_backend=True)
    [(field, got, message)] = diags
    assert field == f"metadata.annotations[{N}auth-url]" and got is reason
    assert words in message and "503" in message
    assert len(routes) == 2  # the path and the default backend
    for r in routes:
        assert isinstance(r.action, ir.DirectResponse) and r.action.status == 503
    assert not any(c.name.startswith("ext-authz/") for c in model.clusters)


def test_options_are_carried_and_bad_ones_reported() -> None:
    routes, _, diags = _translate({
        N + "auth-url": "http://oauth.auth.svc:4180/oauth2/auth",
        N + "auth-method": "post", N + "auth-response-headers": "X-User, X-Email",
        N + "auth-signin": "https://$host/oauth2/start?rd=$escaped_request_uri",
        N + "auth-signin-redirect-param": "next", N + "auth-always-set-cookie": "true",
        N + "auth-request-redirect": "$bad", N + "auth-keepalive": "10",
        N + "auth-cache-duration": "200 202 401 5m"})
    assert [(f, r) for f, r, _ in diags] == [
        (f"metadata.annotations[{N}auth-cache-duration]", Reason.UNSUPPORTED),
        (f"metadata.annotations[{N}auth-request-redirect]", Reason.INVALID_VALUE)]
    (route,) = routes
    auth = _auth(route)
    assert auth.method == "POST" and auth.response_headers == ("x-user", "x-email")
    assert auth.signin == "https://$host/oauth2/start?rd=$escaped_request_uri"
    assert auth.signin_param == "next" and auth.always_set_cookie
    assert auth.request_redirect is None
    assert isinstance(route.action, ir.Forward)  # cache and keep-alive never narrow access


@pytest.mark.parametrize("signin", ["https://$host/a b", "https://x/$remote_user",
                                    "ftp://x/", "https://x/%2F", "https://x/\u00e9"])
def test_a_bad_signin_is_reported_and_401_stays(signin: str) -> None:
    routes, _, diags = _translate({N + "auth-url": "http://a.example/auth",
                                   N + "auth-signin": signin})
    assert [(f, r) for f, r, _ in diags] == [
        (f"metadata.annotations[{N}auth-signin]", Reason.INVALID_VALUE)]
    assert _auth(routes[0]).signin is None


def test_followers_without_auth_url_are_reported() -> None:
    routes, _, diags = _translate({N + "auth-signin": "https://login.example/",
                                   N + "auth-method": "GET"})
    assert sorted((f, r) for f, r, _ in diags) == [
        (f"metadata.annotations[{N}auth-method]", Reason.UNSUPPORTED),
        (f"metadata.annotations[{N}auth-signin]", Reason.UNSUPPORTED)]
    assert routes[0].policy is None


def test_auth_proxy_set_headers_fails_closed() -> None:
    routes, _, _ = _translate({N + "auth-url": "http://a.example/auth",
                               N + "auth-proxy-set-headers": "default/headers"})
    assert isinstance(routes[0].action, ir.DirectResponse) and routes[0].action.status == 503


def test_the_default_backend_is_checked_too() -> None:
    routes, _, diags = _translate({N + "auth-url": "http://a.example/auth",
                                   N + "enable-access-log": "false"}, default_backend=True)
    assert diags == [] and len(routes) == 2
    for r in routes:
        assert _auth(r).cluster == "ext-authz/a.example/80"
        assert r.policy is not None and not r.policy.access_log


def test_a_route_naming_a_missing_auth_cluster_is_inconsistent() -> None:
    _, model, _ = _translate({N + "auth-url": "http://a.example/auth"})
    pruned = dataclasses.replace(model, clusters=tuple(
        c for c in model.clusters if c.name != "ext-authz/a.example/80"))
    assert ir.consistency_problems(pruned) == [
        "route table http/8080 names missing cluster ext-authz/a.example/80"]


def test_per_route_config_goes_through_the_relay() -> None:
    auth = ir.ExternalAuth(cluster="auth/oauth/4180", url="u", host="h:1", path="/p?q=%2F",
                           method="POST", signin="/start", response_headers=("x-user",))
    msg = ext_authz.ea_pb2.ExtAuthzPerRoute()
    ext_authz.per_route(auth).Unpack(msg)
    service = msg.check_settings.http_service
    assert service.server_uri.cluster == RELAY and service.path_prefix == ""
    added = {h.key: h.value for h in service.authorization_request.headers_to_add}
    assert added["x-kxds-auth-cluster"] == "auth/oauth/4180"
    assert added["x-kxds-auth-path"] == "/p?q=%%2F"  # a literal for Envoy's formatter
    assert added["x-kxds-auth-method"] == "POST" and added["x-kxds-auth-signin"] == "/start"
    assert added["x-original-method"] == "%REQ(:method)%"
    assert [p.exact for p in service.authorization_response.allowed_upstream_headers.patterns
            ] == ["x-user"]
    # Never a pseudo-header or Host: Envoy rejects those at request time.
    assert not any(k.startswith(":") or k == "host" for k in added)
    f = ext_authz.ext_authz_filter()
    assert f.disabled  # inert on every route without a check


def test_satisfy_any_lets_the_allow_list_skip_the_check() -> None:
    routes, _, diags = _translate({
        N + "auth-url": "http://oauth.auth.svc:4180/oauth2/auth", N + "satisfy": "any",
        N + "whitelist-source-range": "10.0.0.0/8"})
    [route] = routes
    assert not [d for d in diags if "satisfy" in d[0]]
    assert route.policy is not None and route.policy.auth is not None
    assert route.policy.auth.external is not None
    assert route.policy.auth.satisfy_any is not None
    assert [r.cidr for r in route.policy.auth.satisfy_any.ranges] == ["10.0.0.0/8"]
    assert route.access is None  # the allow list left the route's RBAC for the marker
    built = build_route(route)
    assert {EXT_AUTHZ, SATISFY_ANY} <= set(built.typed_per_filter_config)


def test_satisfy_all_keeps_the_allow_list_and_the_check() -> None:
    routes, _, _ = _translate({
        N + "auth-url": "http://oauth.auth.svc:4180/oauth2/auth", N + "satisfy": "all",
        N + "whitelist-source-range": "10.0.0.0/8"})
    [route] = routes
    assert route.policy is not None and route.policy.auth is not None
    assert route.policy.auth.satisfy_any is None and route.policy.auth.external is not None
    assert route.access is not None and len(route.access.all_of) == 1
