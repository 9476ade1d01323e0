"""The annotation registry, its parsers, and what an Ingress's annotations turn into."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kxds import ir
from kxds.diagnostics import Reason
from kxds.kube.loader import load_text
from kxds.translators import edge
from kxds.translators.annotations import doc
from kxds.translators.annotations.registry import REGISTRY

N = "nginx.ingress.kubernetes.io/"
DOC = Path(__file__).parent.parent / "docs" / "ingress-nginx.md"

# The names of ingress-nginx's annotation documentation (user-guide/nginx-configuration/
# annotations.md): every one must be in the registry.
_DOCUMENTED_TEXT = """app-root affinity affinity-mode affinity-canary-behavior auth-realm
auth-secret
auth-secret-type auth-type auth-tls-secret auth-tls-verify-depth auth-tls-verify-client
auth-tls-error-page auth-tls-pass-certificate-to-upstream auth-url auth-cache-key
auth-cache-duration auth-proxy-set-headers auth-snippet enable-global-auth backend-protocol
canary canary-by-header canary-by-header-value canary-by-header-pattern canary-by-cookie
canary-weight canary-weight-total client-body-buffer-size configuration-snippet
custom-http-errors default-backend enable-cors cors-allow-origin cors-allow-methods
cors-allow-headers cors-expose-headers cors-allow-credentials cors-max-age force-ssl-redirect
from-to-www-redirect http2-push-preload limit-connections limit-rps global-rate-limit
global-rate-limit-window global-rate-limit-key global-rate-limit-ignored-cidrs
permanent-redirect permanent-redirect-code temporal-redirect preserve-trailing-slash
proxy-body-size proxy-cookie-domain proxy-cookie-path proxy-connect-timeout proxy-send-timeout
proxy-read-timeout proxy-next-upstream proxy-next-upstream-timeout proxy-next-upstream-tries
proxy-request-buffering proxy-redirect-from proxy-redirect-to proxy-http-version
proxy-ssl-secret proxy-ssl-ciphers proxy-ssl-name proxy-ssl-protocols proxy-ssl-verify
proxy-ssl-verify-depth proxy-ssl-server-name enable-rewrite-log rewrite-target satisfy
server-alias server-snippet service-upstream session-cookie-name session-cookie-path
session-cookie-change-on-failure session-cookie-samesite
session-cookie-conditional-samesite-none ssl-redirect ssl-passthrough stream-snippet
upstream-hash-by x-forwarded-prefix load-balance upstream-vhost whitelist-source-range
proxy-buffering proxy-buffers-number proxy-buffer-size proxy-max-temp-file-size ssl-ciphers
ssl-prefer-server-ciphers connection-proxy-header enable-access-log enable-opentracing
opentracing-trust-incoming-span enable-influxdb influxdb-measurement influxdb-port
influxdb-host influxdb-server-name use-regex enable-modsecurity enable-owasp-core-rules
modsecurity-transaction-id modsecurity-snippet mirror-request-body mirror-target
limit-rpm limit-burst-multiplier limit-rate limit-rate-after limit-whitelist
session-cookie-max-age session-cookie-expires session-cookie-secure session-cookie-domain
auth-method auth-signin auth-signin-redirect-param auth-response-headers
auth-request-redirect auth-always-set-cookie custom-headers enable-opentelemetry
opentelemetry-trust-incoming-span upstream-hash-by-subset upstream-hash-by-subset-size"""
DOCUMENTED = _DOCUMENTED_TEXT.split()


def test_registry_knows_every_documented_annotation() -> None:
    assert sorted(set(DOCUMENTED) - set(REGISTRY)) == []


def test_compatibility_table_is_generated_from_the_registry() -> None:
    assert DOC.read_text() == doc.render(), (
        "docs/ingress-nginx.md is stale: python -m kxds.translators.annotations.doc "
        "> docs/ingress-nginx.md")
    for name, a in REGISTRY.items():
        assert f"/{name}`" in DOC.read_text()
        assert a.status.value in ("supported", "partial", "unsupported")


SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: beta, namespace: default}
spec: {ports: [{port: 80}]}
"""


def _ingress(name: str, annotations: dict[str, str], service: str = "web",
             paths: tuple[str, ...] = ("/",), created: str = "2024-01-01T00:00:00Z",
             path_type: str = "Prefix") -> str:
    return "---\n" + json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations,
                     "creationTimestamp": created},
        "spec": {"ingressClassName": "kxds", "rules": [{"host": "a.test", "http": {"paths": [
            {"path": p, "pathType": path_type,
             "backend": {"service": {"name": service, "port": {"number": 80}}}}
            for p in paths]}}]}}) + "\n"


def _translate(*docs: str) -> tuple[list[ir.Route], list[tuple[str, str, Reason]]]:
    state = load_text(SERVICES + "".join(docs) + "\n")
    t = edge.translate(state)
    table = next(t for t in t.ir.route_tables if t.name == "http/8080")
    routes = [r for vh in table.virtual_hosts for r in vh.routes]
    return routes, [(d.ref.name, d.field, d.reason) for d in t.diagnostics]


@pytest.mark.parametrize(("annotations", "field", "reason"), [
    ({N + "proxy-cookie-path": "/ /app"}, N + "proxy-cookie-path", Reason.UNSUPPORTED),
    ({N + "mirror-target": "ftp://m/"}, N + "mirror-target", Reason.INVALID_VALUE),
    ({N + "mirror-target": "http://169.254.169.254/"}, N + "mirror-target",
     Reason.NOT_ALLOWED),
    ({N + "no-such-thing": "1"}, N + "no-such-thing", Reason.UNSUPPORTED),
    ({N + "request-headers-set": "A: b"}, N + "request-headers-set", Reason.UNSUPPORTED),
    ({N + "auth-url": "http://$host/auth"}, N + "auth-url", Reason.INVALID_VALUE),
    ({N + "auth-url": "http://auth.default.svc/"}, N + "auth-url", Reason.BACKEND_NOT_FOUND),
    ({N + "auth-url": "http://web.default.svc:81/"}, N + "auth-url", Reason.PORT_NOT_FOUND),
    ({N + "auth-url": "http://a.example/", N + "auth-proxy-set-headers": "cm"},
     N + "auth-proxy-set-headers", Reason.CONFIG_MAP_NOT_FOUND),
    ({N + "configuration-snippet": "deny all;"}, N + "configuration-snippet",
     Reason.UNSUPPORTED),
    ({N + "proxy-read-timeout": "soon"}, N + "proxy-read-timeout", Reason.INVALID_VALUE),
    ({N + "proxy-body-size": "-1"}, N + "proxy-body-size", Reason.INVALID_VALUE),
    ({N + "canary-weight": "abc"}, N + "canary-weight",
     Reason.INVALID_VALUE),
    ({N + "limit-rps": "-5"}, N + "limit-rps", Reason.INVALID_VALUE),
    ({N + "rewrite-target": "/$host"}, N + "rewrite-target", Reason.INVALID_VALUE),
    ({"kxds.io/enable-cors": "maybe"}, "kxds.io/enable-cors", Reason.INVALID_VALUE),
    ({N + "custom-http-errors": "404,abc"}, N + "custom-http-errors", Reason.INVALID_VALUE),
    ({N + "custom-http-errors": "399"}, N + "custom-http-errors", Reason.INVALID_VALUE),
    ({N + "custom-http-errors": "404"}, N + "custom-http-errors", Reason.UNSUPPORTED),
    ({N + "default-backend": "missing"}, N + "default-backend", Reason.BACKEND_NOT_FOUND),
])
def test_problems_name_the_annotation_and_routing_goes_on(
        annotations: dict[str, str], field: str, reason: Reason) -> None:
    routes, diags = _translate(_ingress("main", {}), _ingress("other", annotations,
                                                              paths=("/other",)))
    assert ("other", f"metadata.annotations[{field}]", reason) in diags
    assert {r.match.path for r in routes} >= {"/", "/other"}


def test_kxds_spelling_wins() -> None:
    routes, diags = _translate(_ingress("main", {N + "proxy-read-timeout": "5",
                                                 "kxds.io/proxy-read-timeout": "7"}))
    assert diags == []
    assert isinstance(routes[0].action, ir.Forward) and routes[0].action.idle_timeout_ms == 7000


def test_canary_never_takes_a_path_by_age() -> None:
    canary = _ingress("canary", {N + "canary": "true", N + "canary-weight": "10"},
                      service="beta", created="2020-01-01T00:00:00Z")
    routes, diags = _translate(canary, _ingress("main", {}))
    assert diags == []
    (route,) = routes
    assert route.ref.name == "main" and isinstance(route.action, ir.Forward)
    assert route.action.backends == (ir.WeightedBackend(cluster="default/web/80", weight=90),
                                     ir.WeightedBackend(cluster="default/beta/80", weight=10))


def test_canary_without_main_serves_nothing() -> None:
    routes, diags = _translate(_ingress("canary", {N + "canary": "true"}, service="beta"))
    assert routes == []
    assert diags == [("canary", "spec.rules[0].http.paths[0]", Reason.BACKEND_NOT_FOUND)]


def test_canary_weight_over_total_is_reported_and_not_applied() -> None:
    canary = _ingress("canary", {N + "canary": "true", N + "canary-weight": "120"},
                      service="beta")
    routes, diags = _translate(_ingress("main", {}), canary)
    assert ("canary", f"metadata.annotations[{N}canary-weight]", Reason.INVALID_VALUE) in diags
    assert isinstance(routes[0].action, ir.Forward)
    assert [b.cluster for b in routes[0].action.backends] == ["default/web/80"]


def test_regex_re2_refuses_is_reported_and_other_paths_serve() -> None:
    routes, diags = _translate(_ingress("main", {N + "use-regex": "true"},
                                        paths=("/(?=x)y", "/ok/(.*)"),
                                        path_type="ImplementationSpecific"))
    assert ("main", "spec.rules[0].http.paths[0].path", Reason.INVALID_VALUE) in diags
    assert [r.match for r in routes] == [ir.PathMatch(kind=ir.MatchKind.REGEX, path="/ok/(.*)")]


def test_regex_too_large_for_envoy_is_reported_and_other_paths_serve() -> None:
    routes, diags = _translate(_ingress("main", {N + "use-regex": "true"},
                                        paths=("/" + "(ab|cd)" * 40, "/ok/(.*)"),
                                        path_type="ImplementationSpecific"))
    assert ("main", "spec.rules[0].http.paths[0].path", Reason.INVALID_VALUE) in diags
    assert [r.match for r in routes] == [ir.PathMatch(kind=ir.MatchKind.REGEX, path="/ok/(.*)")]


def test_error_pages_cover_every_path_and_add_one_error_route_per_host() -> None:
    routes, diags = _translate(_ingress("main", {
        N + "custom-http-errors": "502, 404,404", N + "default-backend": "beta"},
        paths=("/", "/api")))
    assert not diags
    [error] = [r for r in routes if r.match.path == "/.kxds/errors/default/main"]
    assert error.match.kind is ir.MatchKind.EXACT
    assert isinstance(error.action, ir.Forward)
    assert [b.cluster for b in error.action.backends] == ["default/beta/80"]
    assert error.action.rewrite == ir.PathRewrite(prefix="/")
    for r in routes:
        if r is not error:
            assert r.policy is not None and r.policy.error_pages is not None
            assert r.policy.error_pages.codes == (404, 502, 503)
            assert r.policy.error_pages.path == error.match.path
