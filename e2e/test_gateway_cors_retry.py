"""HTTPRoute CORS filters and retries through the real Envoy.

Conformance intent restated (kubernetes-sigs/gateway-api conformance/tests,
httproute-cors and httproute-retry): a preflight from an allowed origin, exact or
wildcard, is answered by the gateway with the origin echoed, the methods, headers,
max age and credentials of the filter; one from another origin, and a simple
request from it, get no ``Access-Control-Allow-Origin``; ``*`` methods and headers
answer what the preflight asks for. A backend failing with a listed code is tried
again up to ``attempts`` retries (fails twice, then answers: attempts 3 gives 200,
attempts 1 the backend's 500), a code not listed is not retried, and neither are
requests of a rule with attempts 0; a closed connection and an attempt past
``timeouts.backendRequest`` are retried too (HTTPRouteRetryConnectionError,
HTTPRouteRetryBackendTimeout), within ``timeouts.request`` (HTTPRouteRetryWithTimeouts).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from e2e.harness import (
    EchoBackend,
    Gateway,
    Process,
    gateway_manifest,
    http_json,
    service_manifest,
    wait_for,
    write_manifests,
)

pytestmark = pytest.mark.e2e

GATEWAY = gateway_manifest()

CORS_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cors, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [cors.test]
  rules:
  - matches: [{path: {value: /cors-1}}]
    filters:
    - type: CORS
      cors:
        allowOrigins: ["https://www.foo.com", "https://*.bar.com"]
        allowMethods: [GET, OPTIONS]
        allowHeaders: [x-header-1, x-header-2]
        exposeHeaders: [x-header-3, x-header-4]
        allowCredentials: true
        maxAge: 3600
    backendRefs: [{name: web, port: 80}]
  - matches: [{path: {value: /cors-any}}]
    filters:
    - type: CORS
      cors:
        allowOrigins: ["https://other.foo.com"]
        allowMethods: ["*"]
        allowHeaders: ["*"]
        allowCredentials: true
    backendRefs: [{name: web, port: 80}]
  - matches: [{path: {value: /plain}}]
    backendRefs: [{name: web, port: 80}]
"""


def _preflight(gw: Gateway, path: str, origin: str, method: str = "GET",
               headers: str | None = None) -> tuple[int, dict[str, str]]:
    asked = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        asked["Access-Control-Request-Headers"] = headers
    status, got, _ = gw.get(path, host="cors.test", method="OPTIONS", headers=asked)
    return status, got


def _cors_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("access-control-")}


def test_cors_preflights_and_simple_requests_through_envoy(
        manifests_dir: Path, echo: Callable[..., EchoBackend],
        kxds_envoy: Callable[..., Gateway]) -> None:
    web = echo("web")
    write_manifests(manifests_dir, "routes.yaml", "---".join(
        [service_manifest("web", web.host, web.port), GATEWAY, CORS_ROUTE]))
    gw = kxds_envoy(manifests_dir)
    gw.wait_backend("/plain", "cors.test", (200, "web"))

    # A preflight from an allowed origin, exact or wildcard (any number of labels),
    # is answered by Envoy itself: the backend never sees it.
    for origin in ("https://www.foo.com", "https://www.bar.com", "https://xpto.www.bar.com"):
        status, headers = _preflight(gw, "/cors-1", origin, headers="x-header-1, x-header-2")
        assert status == 200 and "x-echo-backend" not in headers, (origin, headers)
        assert _cors_headers(headers) == {
            "access-control-allow-origin": origin,
            "access-control-allow-methods": "GET,OPTIONS",
            "access-control-allow-headers": "x-header-1,x-header-2",
            "access-control-expose-headers": "x-header-3,x-header-4",
            "access-control-max-age": "3600",
            "access-control-allow-credentials": "true",
        }, origin
    # Another origin (also the wildcard's own domain, and another port or scheme):
    # no CORS header; the preflight goes on to the backend, which answers it.
    for origin in ("https://foobar.com", "https://bar.com", "https://www.foo.com:8443",
                   "http://www.foo.com"):
        status, headers = _preflight(gw, "/cors-1", origin)
        assert "access-control-allow-origin" not in headers, (origin, headers)
        assert headers.get("x-echo-backend") == "web", origin

    # A simple request from an allowed origin: the origin echoed, credentials, the
    # exposed headers; from another origin none of them.
    status, headers, _ = gw.get("/cors-1", host="cors.test",
                                headers={"Origin": "https://www.bar.com"})
    assert status == 200 and headers.get("x-echo-backend") == "web"
    assert _cors_headers(headers) == {
        "access-control-allow-origin": "https://www.bar.com",
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "x-header-3,x-header-4"}
    status, headers, _ = gw.get("/cors-1", host="cors.test",
                                headers={"Origin": "https://foobar.com"})
    assert status == 200 and _cors_headers(headers) == {}

    # "*" methods and headers with credentials: the method and headers asked for,
    # never a "*" (which browsers read literally on a credentialed request).
    status, headers = _preflight(gw, "/cors-any", "https://other.foo.com", "PUT",
                                 "x-header-1, x-header-2")
    assert status == 200
    assert _cors_headers(headers) == {
        "access-control-allow-origin": "https://other.foo.com",
        "access-control-allow-methods": "PUT",
        "access-control-allow-headers": "x-header-1, x-header-2",
        "access-control-max-age": "5",  # the CRD's default
        "access-control-allow-credentials": "true"}

    # A route without the filter adds no CORS header, preflight or not.
    status, headers = _preflight(gw, "/plain", "https://www.foo.com")
    assert headers.get("x-echo-backend") == "web" and _cors_headers(headers) == {}


RETRY_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: retries, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [retry.test]
  rules:
  - matches: [{path: {value: /attempts-3}}]
    retry: {codes: [500], attempts: 3}
    backendRefs: [{name: flaky, port: 80}]
  - matches: [{path: {value: /attempts-1}}]
    retry: {codes: [500], attempts: 1}
    backendRefs: [{name: flaky, port: 80}]
  - matches: [{path: {value: /attempts-0}}]
    retry: {codes: [500], attempts: 0}
    backendRefs: [{name: flaky, port: 80}]
  - matches: [{path: {value: /no-retry}}]
    backendRefs: [{name: flaky, port: 80}]
  - matches: [{path: {value: /per-try}}]
    retry: {attempts: 1}
    timeouts: {backendRequest: 500ms}
    backendRefs: [{name: flaky, port: 80}]
  # HTTPRouteRetryWithTimeouts (conformance/tests/httproute-retry-with-timeouts.yaml).
  - matches: [{path: {value: /backend-request-timeout-200ms}}]
    retry: {attempts: 2}
    timeouts: {backendRequest: 200ms}
    backendRefs: [{name: flaky, port: 80}]
  - matches: [{path: {value: /request-timeout-200ms}}]
    retry: {codes: [500], attempts: 5}
    timeouts: {backendRequest: 200ms, request: 400ms}
    backendRefs: [{name: flaky, port: 80}]
"""


@pytest.fixture
def flaky(tmp_path: Path) -> Iterator[int]:
    """The port of a backend that counts attempts and fails the first ones on request."""
    script = str(Path(__file__).parent / "attempts_backend.py")
    proc = Process("attempts backend", [sys.executable, script], tmp_path / "attempts.log")
    try:
        def port() -> int | None:
            text = proc.log_path.read_text()
            return int(text.split("\n", 1)[0]) if "\n" in text else None
        yield wait_for(port, 15.0, what="the attempts backend")
    finally:
        proc.stop()


def _attempt(gw: Gateway, path: str, fail: int, **query: str) -> tuple[int, str]:
    """(status, request id) of one request that fails its first ``fail`` attempts."""
    key = uuid.uuid4().hex
    args = "&".join(f"{k}={v}" for k, v in {"id": key, "fail": str(fail), **query}.items())
    status, _, _ = gw.get(f"{path}?{args}", host="retry.test", timeout=10.0)
    return status, key


def _attempts(port: int, key: str) -> int:
    status, answer = http_json(f"http://127.0.0.1:{port}/count?id={key}")
    assert status == 200, answer
    return int(answer["attempts"])


def test_retries_through_envoy(manifests_dir: Path, flaky: int,
                               kxds_envoy: Callable[..., Gateway]) -> None:
    write_manifests(manifests_dir, "routes.yaml", "---".join(
        [service_manifest("flaky", "127.0.0.1", flaky), GATEWAY, RETRY_ROUTE]))
    gw = kxds_envoy(manifests_dir)
    wait_for(lambda: _attempt(gw, "/no-retry", 0)[0] == 200, 30.0, what="the route")

    # Fails twice, then answers: 3 retries are enough, the third attempt answers.
    status, key = _attempt(gw, "/attempts-3", 2)
    assert (status, _attempts(flaky, key)) == (200, 3)
    # One retry is not: the client gets the backend's 500 after 2 attempts.
    status, key = _attempt(gw, "/attempts-1", 2)
    assert (status, _attempts(flaky, key)) == (500, 2)
    # A code not listed is not retried.
    status, key = _attempt(gw, "/attempts-3", 2, code="503")
    assert (status, _attempts(flaky, key)) == (503, 1)
    # attempts 0, and a rule without retry: one attempt.
    for path in ("/attempts-0", "/no-retry"):
        status, key = _attempt(gw, path, 1)
        assert (status, _attempts(flaky, key)) == (500, 1), path
    # Connection errors: a connection closed without an answer is retried...
    status, key = _attempt(gw, "/attempts-1", 1, how="close")
    assert (status, _attempts(flaky, key)) == (200, 2)
    status, key = _attempt(gw, "/no-retry", 1, how="close")
    assert (status, _attempts(flaky, key)) == (503, 1)
    # ...and so is an attempt past timeouts.backendRequest (500 ms of a 3 s answer).
    status, key = _attempt(gw, "/per-try", 1, delay="3000")
    assert (status, _attempts(flaky, key)) == (200, 2)
    status, key = _attempt(gw, "/per-try", 2, delay="3000")
    assert (status, _attempts(flaky, key)) == (504, 2)


def test_retries_within_timeouts_through_envoy(manifests_dir: Path, flaky: int,
                                               kxds_envoy: Callable[..., Gateway]) -> None:
    """HTTPRouteRetryWithTimeouts restated: retries only while the timeouts allow."""
    write_manifests(manifests_dir, "routes.yaml", "---".join(
        [service_manifest("flaky", "127.0.0.1", flaky), GATEWAY, RETRY_ROUTE]))
    gw = kxds_envoy(manifests_dir)
    wait_for(lambda: _attempt(gw, "/no-retry", 0)[0] == 200, 30.0, what="the route")
    # Attempts of 300 ms cut at 200 ms: two retries reach the third, which answers...
    status, key = _attempt(gw, "/backend-request-timeout-200ms", 2, delay="300")
    assert (status, _attempts(flaky, key)) == (200, 3)
    # ...and three such attempts are all there are: the gateway's 504.
    status, key = _attempt(gw, "/backend-request-timeout-200ms", 3, delay="300")
    assert (status, _attempts(flaky, key)) == (504, 3)
    # A 500 retried at once fits timeouts.request (400 ms)...
    status, key = _attempt(gw, "/request-timeout-200ms", 1)
    assert (status, _attempts(flaky, key)) == (200, 2)
    # ...four 500s of 100 ms each do not: 504 when the request's 400 ms are up.
    status, key = _attempt(gw, "/request-timeout-200ms", 4, delay="100")
    assert status == 504 and _attempts(flaky, key) <= 4

