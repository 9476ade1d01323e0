"""External authentication (``auth-url`` and friends) through the real Envoy.

A small authentication service runs in this process (an ``http.server`` on
loopback, like oauth2-proxy's ``/oauth2/auth``): a ``session=ok`` cookie is
admitted with 202 and user headers, ``x-test-auth: forbid`` is refused with
403, ``x-test-auth: odd`` gets a 404 (nginx answers 500 for that), anything
else 401. It records every check it receives.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.harness import EchoBackend, Gateway, LoopbackHttp, QuietHandler, free_port

pytestmark = pytest.mark.e2e

N = "nginx.ingress.kubernetes.io/"
AUTH_PATH = "/oauth2/auth?group=a%2Cb"


class AuthService(LoopbackHttp):
    """The authentication service: decides by cookie and header, records each check."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        outer = self

        class Handler(QuietHandler):
            def _answer(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.seen.append({"method": self.command, "path": self.path,
                                   "headers": headers})
                which = headers.get("x-test-auth", "")
                if "session=ok" in headers.get("cookie", ""):
                    self.send_response(202)
                    self.send_header("x-auth-request-user", "alice")
                    self.send_header("x-not-copied", "1")
                    self.send_header("set-cookie", "refreshed=1")
                elif which == "forbid":
                    self.send_response(403)
                elif which == "odd":
                    self.send_response(404)
                else:
                    self.send_response(401)
                    self.send_header("www-authenticate", 'Bearer realm="test"')
                    self.send_header("set-cookie", "session=; Max-Age=0")
                self.send_header("content-length", "0")
                self.end_headers()

            do_GET = do_POST = do_HEAD = _answer

        super().__init__(Handler)

    def last(self) -> dict[str, Any]:
        return self.seen[-1]


def _service(name: str, port: int) -> str:
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
"""


def _ingress(name: str, host: str, annotations: dict[str, str]) -> str:
    return "---\n" + json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"ingressClassName": "kxds", "rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "app", "port": {"number": 80}}}}]}}]},
    }) + "\n"


_CHECK_HEADERS = """---
apiVersion: v1
kind: ConfigMap
metadata: {name: check-headers, namespace: default}
data:
  X-Gateway: "kxds 100%"
  X-Client: $remote_addr
  X-Want: ${host}$request_uri
  X-Tenant: tenant=$http_x_tenant_id
"""


@pytest.fixture(scope="module")
def auth() -> Iterator[AuthService]:
    service = AuthService()
    yield service
    service.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, auth: AuthService) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("ext-auth")
    app = EchoBackend("app", tmp)
    in_cluster = f"http://authsvc.default.svc.cluster.local{AUTH_PATH}"
    docs = [
        _service("app", app.port), _service("authsvc", auth.port),
        _ingress("authed", "auth.test", {
            N + "auth-url": in_cluster, N + "auth-response-headers": "X-Auth-Request-User"}),
        _ingress("signin", "signin.test", {
            N + "auth-url": in_cluster,
            N + "auth-signin": "https://login.example.com/start"}),
        _ingress("vars", "vars.test", {
            N + "auth-url": in_cluster, N + "auth-always-set-cookie": "true",
            N + "auth-request-redirect": "https://vars.test/back",
            N + "auth-signin": "https://$host/oauth2/start?rd=$escaped_request_uri",
            N + "auth-signin-redirect-param": "rd"}),
        _ingress("cors", "cors.test", {
            N + "auth-url": in_cluster, N + "enable-cors": "true",
            N + "cors-allow-origin": "https://app.example.com"}),
        _ingress("dns", "dns.test", {  # any other host: a cluster resolved by DNS
            N + "auth-url": f"http://localhost:{auth.port}/check", N + "auth-method": "POST"}),
        _ingress("down", "down.test", {N + "auth-url": f"http://127.0.0.1:{free_port()}/x"}),
        _ingress("missing", "missing.test", {N + "auth-url": "http://nope.default.svc/auth"}),
        _ingress("open", "open.test", {}),
        _ingress("either", "either.test", {  # satisfy any: the allow list or the check
            N + "auth-url": in_cluster, N + "satisfy": "any",
            N + "whitelist-source-range": "127.0.0.2/32"}),
        _ingress("both", "both.test", {  # satisfy all (the default): both
            N + "auth-url": in_cluster, N + "whitelist-source-range": "127.0.0.2/32"}),
        _ingress("setheaders", "setheaders.test", {
            N + "auth-url": in_cluster, N + "auth-proxy-set-headers": "check-headers"}),
        _ingress("noheaders", "noheaders.test", {  # its ConfigMap is missing: 503
            N + "auth-url": in_cluster, N + "auth-proxy-set-headers": "default/absent"}),
        _CHECK_HEADERS,
    ]
    manifests = tmp / "manifests"
    manifests.mkdir()
    (manifests / "all.yaml").write_text("".join(docs))
    g = Gateway(tmp, manifests)
    try:
        g.wait_backend("/", "open.test", (200, "app"))
        g.wait_backend("/", "auth.test", (200, "app"), headers={"cookie": "session=ok"})
        yield g
    finally:
        g.stop()
        app.stop()


def _echoed(body: bytes) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(body)
    return out


def test_admitted_request_reaches_the_backend_with_the_services_headers(
        gw: Gateway, auth: AuthService) -> None:
    status, headers, body = gw.get("/shop/item?x=1", host="auth.test",
                                   headers={"cookie": "session=ok", "authorization": "Basic x"})
    assert status == 200 and headers["x-echo-backend"] == "app"
    seen = _echoed(body)
    assert seen["path"] == "/shop/item?x=1"
    assert seen["headers"]["x-auth-request-user"] == "alice"  # auth-response-headers
    assert "x-not-copied" not in seen["headers"]
    assert headers["set-cookie"] == "refreshed=1"  # the service's cookie reaches the client
    check = auth.last()
    # Exactly the auth-url's path and query, not the request's path appended.
    assert check["path"] == AUTH_PATH
    h = check["headers"]
    assert h["host"] == "authsvc.default.svc.cluster.local"
    assert h["x-original-url"] == "http://auth.test/shop/item?x=1"
    assert h["x-original-method"] == "GET"
    assert h["x-auth-request-redirect"] == "/shop/item?x=1"
    assert h["x-sent-from"] == "nginx-ingress-controller"
    assert h["x-real-ip"] == "127.0.0.1"
    assert h["cookie"] == "session=ok" and h["authorization"] == "Basic x"
    assert not any(k.startswith("x-kxds-") for k in h)


def test_refusals_keep_the_services_status(gw: Gateway) -> None:
    status, headers, _ = gw.get("/", host="auth.test")
    assert status == 401 and headers["www-authenticate"] == 'Bearer realm="test"'
    assert "x-echo-backend" not in headers
    status, headers, _ = gw.get("/", host="auth.test", headers={"x-test-auth": "forbid"})
    assert status == 403 and "x-echo-backend" not in headers
    # Neither 2xx, 401 nor 403: refused with 500, as nginx does.
    status, headers, _ = gw.get("/", host="auth.test", headers={"x-test-auth": "odd"})
    assert status == 500 and "x-echo-backend" not in headers


def test_clients_cannot_steer_the_check(gw: Gateway, auth: AuthService) -> None:
    status, _, _ = gw.get("/p", host="auth.test", headers={
        "x-kxds-auth-cluster": "default/app/80", "x-kxds-auth-path": "/anything",
        "x-original-url": "http://evil/", "x-original-method": "PUT"})
    assert status == 401
    check = auth.last()
    assert check["path"] == AUTH_PATH
    assert check["headers"]["x-original-url"] == "http://auth.test/p"
    assert check["headers"]["x-original-method"] == "GET"


def test_signin_redirects_a_401_with_the_original_url(gw: Gateway) -> None:
    status, headers, _ = gw.get("/app/page?x=1&y=2", host="signin.test")
    assert status == 302
    location = urllib.parse.urlsplit(headers["location"])
    assert (location.scheme, location.netloc, location.path) == (
        "https", "login.example.com", "/start")
    assert urllib.parse.parse_qs(location.query) == {
        "rd": ["http://signin.test/app/page?x=1&y=2"]}
    # 403 is not redirected; a valid session passes.
    assert gw.get("/", host="signin.test", headers={"x-test-auth": "forbid"})[0] == 403
    assert gw.backend("/", host="signin.test", headers={"cookie": "session=ok"}) == (200, "app")


def test_signin_variables_cookies_and_request_redirect(gw: Gateway, auth: AuthService) -> None:
    status, headers, _ = gw.get("/app?x=1", host="vars.test")  # escaped as nginx does
    assert status == 302
    # $host and $escaped_request_uri are the request's; rd is there, so none is added.
    assert headers["location"] == "https://vars.test/oauth2/start?rd=/app%3Fx=1"
    # auth-always-set-cookie: the service's cookie reaches the client on a refusal too ...
    assert headers["set-cookie"] == "session=; Max-Age=0"
    assert auth.last()["headers"]["x-auth-request-redirect"] == "https://vars.test/back"
    # ... and not without it.
    status, headers, _ = gw.get("/", host="auth.test")
    assert status == 401 and "set-cookie" not in headers


def test_cors_preflights_are_answered_before_the_check(gw: Gateway, auth: AuthService) -> None:
    checks = len(auth.seen)
    status, headers, _ = gw.get("/api", host="cors.test", method="OPTIONS", headers={
        "origin": "https://app.example.com", "access-control-request-method": "GET"})
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://app.example.com"
    assert len(auth.seen) == checks  # as ingress-nginx: no check for a preflight
    assert gw.get("/api", host="cors.test", headers={"origin": "https://app.example.com"}
                  )[0] == 401


def test_dns_host_and_auth_method(gw: Gateway, auth: AuthService) -> None:
    assert gw.backend("/d?q=1", host="dns.test", headers={"cookie": "session=ok"}) == (
        200, "app")
    check = auth.last()
    assert check["method"] == "POST" and check["path"] == "/check"
    assert check["headers"]["host"] == f"localhost:{auth.port}"
    assert check["headers"]["x-original-method"] == "GET"
    assert gw.get("/", host="dns.test")[0] == 401


def test_unreachable_or_missing_service_refuses(gw: Gateway) -> None:
    # The service is down: refused (500, as nginx), never served open.
    status, headers, _ = gw.get("/", host="down.test", headers={"cookie": "session=ok"})
    assert status == 500 and "x-echo-backend" not in headers
    # The Service does not exist: every route of the Ingress answers 503 ...
    status, headers, _ = gw.get("/", host="missing.test", headers={"cookie": "session=ok"})
    assert status == 503 and "x-echo-backend" not in headers
    # ... while the others still serve.
    assert gw.backend("/", host="open.test") == (200, "app")
    assert gw.backend("/", host="auth.test", headers={"cookie": "session=ok"}) == (200, "app")



def test_auth_proxy_set_headers_reach_the_service(gw: Gateway, auth: AuthService) -> None:
    status, _, _ = gw.get("/p?q=1", host="setheaders.test",
                          headers={"cookie": "session=ok", "x-tenant-id": "t7"})
    assert status == 200
    h = auth.last()["headers"]
    assert h["x-gateway"] == "kxds 100%"
    assert h["x-client"] == "127.0.0.1"
    assert h["x-want"] == "setheaders.test/p?q=1"
    assert h["x-tenant"] == "tenant=t7"
    # The ConfigMap is missing: the check cannot be made as asked, so the routes refuse.
    status, headers, _ = gw.get("/", host="noheaders.test", headers={"cookie": "session=ok"})
    assert status == 503 and "x-echo-backend" not in headers


def test_adding_an_auth_url_changes_routes_only(gw: Gateway, auth: AuthService) -> None:
    """The filter is in every connection manager already: no listener or cluster update."""
    assert gw.envoy is not None
    before = (gw.envoy.stat("listener_manager.lds.update_success"),
              gw.envoy.stat("cluster_manager.cds.update_success"))
    text = (gw.manifests / "all.yaml").read_text()
    plain = _ingress("open", "open.test", {})
    assert plain in text
    gw.write("all.yaml", text.replace(plain, _ingress("open", "open.test", {
        N + "auth-url": f"http://authsvc.default.svc{AUTH_PATH}"})))
    gw.wait_backend("/", "open.test", (401, None))
    assert gw.backend("/", host="open.test", headers={"cookie": "session=ok"}) == (200, "app")
    assert (gw.envoy.stat("listener_manager.lds.update_success"),
            gw.envoy.stat("cluster_manager.cds.update_success")) == before


def test_satisfy_any_admits_the_allow_list_without_the_check(
        gw: Gateway, auth: AuthService) -> None:
    checks = len(auth.seen)
    # In the allow list: admitted without asking the service (which would say 401).
    assert gw.backend("/", host="either.test", source_ip="127.0.0.2") == (200, "app")
    assert len(auth.seen) == checks
    # Anyone else is checked: refused without a session, admitted with one.
    assert gw.backend("/", host="either.test", source_ip="127.0.0.3")[0] == 401
    assert gw.backend("/", host="either.test", source_ip="127.0.0.3",
                      headers={"cookie": "session=ok"}) == (200, "app")
    # satisfy all: outside the list refused whatever the session, inside still checked.
    assert gw.backend("/", host="both.test", source_ip="127.0.0.3",
                      headers={"cookie": "session=ok"})[0] == 403
    assert gw.backend("/", host="both.test", source_ip="127.0.0.2")[0] == 401
    assert gw.backend("/", host="both.test", source_ip="127.0.0.2",
                      headers={"cookie": "session=ok"}) == (200, "app")
