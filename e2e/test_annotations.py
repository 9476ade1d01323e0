"""ingress-nginx annotations through the real Envoy: one gateway, one host per feature.

Backends: echo servers (``kxds.sandbox.echo``) and, for what they cannot do (a
slow answer, a WebSocket), a tiny raw-socket server started by this module.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.harness import (
    EchoBackend,
    Gateway,
    RawLoopback,
    http_get,
    switch_to_websocket,
    wait_for,
)

pytestmark = pytest.mark.e2e



class RawBackend:
    """``/slow``: answers after 3 s; a WebSocket upgrade: echoes one text frame."""

    def __init__(self) -> None:
        self.server = RawLoopback(self._serve)
        self.port = self.server.port

    def _serve(self, conn: socket.socket, headers: dict[str, str]) -> None:
        if headers.get("upgrade", "").lower() == "websocket":
            self._websocket(conn, headers["sec-websocket-key"])
            return
        time.sleep(3)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow")

    @staticmethod
    def _websocket(conn: socket.socket, key: str) -> None:
        switch_to_websocket(conn, key)
        frame = conn.recv(4096)
        length = frame[1] & 0x7F
        mask, payload = frame[2:6], frame[6:6 + length]
        text = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        conn.sendall(bytes([0x81, len(text)]) + text)

    def close(self) -> None:
        self.server.close()


def _service(name: str, echoes: list[EchoBackend] | list[int]) -> str:
    ports = [e.port if isinstance(e, EchoBackend) else e for e in echoes]
    # One slice per port: each echo backend listens on its own port.
    slices = "".join(f"""---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-{i}, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {p}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
""" for i, p in enumerate(ports))
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: http, port: 80}}]
{slices}"""


def _ingress(name: str, host: str, service: str, annotations: dict[str, str],
             path: str = "/", path_type: str = "Prefix") -> str:
    return "---\n" + json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"ingressClassName": "kxds", "rules": [{"host": host, "http": {"paths": [
            {"path": path, "pathType": path_type,
             "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]},
    }) + "\n"


N = "nginx.ingress.kubernetes.io/"

_CUSTOM_HEADERS = """apiVersion: v1
kind: ConfigMap
metadata: {{name: resp, namespace: default}}
data: {{X-Custom-One: "{value}", X-Content-Type-Options: nosniff}}
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("annotations")
    echoes = {n: EchoBackend(n, tmp) for n in ("main", "canary", "s1", "s2", "s3", "errors")}
    raw = RawBackend()
    manifests = tmp / "manifests"
    docs = [
        _service("main", [echoes["main"]]), _service("canary", [echoes["canary"]]),
        _service("sticky", [echoes["s1"], echoes["s2"], echoes["s3"]]),
        _service("raw", [raw.port]), _service("errors", [echoes["errors"]]),
        _service("empty", []),
        _ingress("main", "canary.test", "main", {}),
        _ingress("canary", "canary.test", "canary", {
            N + "canary": "true", N + "canary-weight": "30",
            N + "canary-by-header": "x-canary", N + "canary-by-cookie": "beta"}),
        _ingress("sticky", "sticky.test", "sticky", {N + "affinity": "cookie"}),
        _ingress("rewrite", "rewrite.test", "main", {
            N + "use-regex": "true", N + "rewrite-target": "/$2"},
            path="/api(/|$)(.*)", path_type="ImplementationSpecific"),
        _ingress("moved", "moved.test", "main", {
            N + "permanent-redirect": "https://example.org/new",
            N + "permanent-redirect-code": "308"}),
        _ingress("temp", "temp.test", "main", {N + "temporal-redirect": "http://example.org/t"}),
        _ingress("approot", "approot.test", "main", {N + "app-root": "/app"}),
        _ingress("limited", "limited.test", "main", {
            N + "limit-rps": "1", N + "limit-burst-multiplier": "3",
            N + "proxy-body-size": "1k"}),
        _ingress("cors", "cors.test", "main", {
            N + "enable-cors": "true", N + "cors-allow-origin": "https://*.example.com",
            N + "cors-allow-methods": "GET, PUT", N + "cors-max-age": "600"}),
        _ingress("slow", "slow.test", "raw", {N + "proxy-read-timeout": "1"}),
        _ingress("quiet", "quiet.test", "main", {N + "enable-access-log": "false"}),
        _ingress("pages", "pages.test", "main", {
            N + "custom-http-errors": "404,500", N + "default-backend": "errors"}),
        _ingress("fallback", "fallback.test", "empty", {N + "default-backend": "errors"}),
        _ingress("headers", "headers.test", "main", {
            "kxds.io/request-headers-set": "X-Team: blue",
            "kxds.io/response-headers-set": "X-Served-By: kxds",
            N + "x-forwarded-prefix": "/pre", N + "upstream-vhost": "inside.local"}),
        _ingress("custom", "custom.test", "main", {N + "custom-headers": "default/resp"}),
        _ingress("nocustom", "nocustom.test", "main", {N + "custom-headers": "absent"}),
    ]
    manifests.mkdir()
    (manifests / "all.yaml").write_text("".join(docs))
    (manifests / "configmap.yaml").write_text(_CUSTOM_HEADERS.format(value="one"))
    g = Gateway(tmp, manifests)
    try:
        g.wait_backend("/", "canary.test", (200, "main"), headers={"x-canary": "never"})
        yield g
    finally:
        g.stop()
        raw.close()
        for e in echoes.values():
            e.stop()


def test_canary_weight_header_and_cookie(gw: Gateway) -> None:
    seen = [gw.backend("/", host="canary.test")[1] for _ in range(200)]
    share = seen.count("canary")
    # 30 of 100: binomial(200, 0.3) has sd 6.5; 35..85 is beyond 3.5 sd either way.
    assert 35 <= share <= 85 and seen.count("main") == 200 - share
    for _ in range(20):
        assert gw.backend("/", host="canary.test", headers={"x-canary": "always"}) == (
            200, "canary")
        assert gw.backend("/", host="canary.test", headers={"x-canary": "never"}) == (
            200, "main")
        # Header beats cookie: "never" by header wins over "always" by cookie.
        assert gw.backend("/", host="canary.test", headers={
            "x-canary": "never", "cookie": "beta=always"}) == (200, "main")
        assert gw.backend("/", host="canary.test", headers={
            "cookie": "a=1; beta=always"}) == (200, "canary")
        assert gw.backend("/", host="canary.test", headers={"cookie": "beta=never"}) == (
            200, "main")


def test_sticky_cookie_keeps_one_of_three_backends(gw: Gateway) -> None:
    status, headers, _ = gw.get("/", host="sticky.test")
    assert status == 200
    cookie = headers["set-cookie"]
    assert cookie.startswith("INGRESSCOOKIE=") and "Path=/" in cookie
    first = headers["x-echo-backend"]
    pair = cookie.split(";", 1)[0]
    got = {gw.backend("/", host="sticky.test", headers={"cookie": pair})[1] for _ in range(50)}
    assert got == {first}
    # Without the cookie, requests spread over the three.
    spread = {gw.backend("/", host="sticky.test")[1] for _ in range(30)}
    assert spread == {"s1", "s2", "s3"}


def test_rewrite_target_with_capture_groups(gw: Gateway) -> None:
    status, body = _json(gw, "/api/items/7?q=1", "rewrite.test")
    assert status == 200 and body["path"] == "/items/7?q=1"
    status, body = _json(gw, "/API", "rewrite.test")  # case-insensitive, as nginx's ~*
    assert status == 200 and body["path"] == "/"


def _json(gw: Gateway, path: str, host: str) -> tuple[int, dict[str, object]]:
    status, _, body = gw.get(path, host=host)
    return status, json.loads(body)


def test_redirects_with_their_codes(gw: Gateway) -> None:
    status, headers, _ = gw.get("/old?x=1", host="moved.test")
    assert (status, headers["location"]) == (308, "https://example.org/new")
    status, headers, _ = gw.get("/any", host="temp.test")
    assert (status, headers["location"]) == (302, "http://example.org/t")
    status, headers, _ = gw.get("/", host="approot.test")
    assert status == 302 and headers["location"].endswith("approot.test/app")
    assert gw.backend("/app", host="approot.test") == (200, "main")


def test_rate_limit_per_client_address_and_body_size(gw: Gateway) -> None:
    answers = [gw.get("/", host="limited.test", source_ip="127.0.0.2")[0] for _ in range(6)]
    assert answers[:3] == [200, 200, 200] and 429 in answers[3:]
    assert gw.get("/", host="limited.test", source_ip="127.0.0.3")[0] == 200
    time.sleep(1.1)  # the bucket refills one request per second
    assert gw.get("/", host="limited.test", source_ip="127.0.0.4")[0] == 200
    assert _post(gw, "limited.test", 2048, "127.0.0.5") == 413
    assert _post(gw, "limited.test", 100, "127.0.0.6") == 200


def _post(gw: Gateway, host: str, size: int, source: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", gw.http_port, timeout=5,
                                      source_address=(source, 0))
    try:
        conn.request("POST", "/", body=os.urandom(size), headers={"Host": host})
        return conn.getresponse().status
    finally:
        conn.close()


def test_cors_preflight(gw: Gateway) -> None:
    status, headers, _ = gw.get("/", host="cors.test", method="OPTIONS", headers={
        "origin": "https://app.example.com", "access-control-request-method": "PUT"})
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://app.example.com"
    assert headers["access-control-allow-methods"] == "GET,PUT"
    assert headers["access-control-max-age"] == "600"
    status, headers, _ = gw.get("/", host="cors.test", method="OPTIONS", headers={
        "origin": "https://a.b.example.com", "access-control-request-method": "PUT"})
    assert "access-control-allow-origin" not in headers  # one label only


def test_slow_backend_cut_at_proxy_read_timeout(gw: Gateway) -> None:
    start = time.monotonic()
    status, _, _ = gw.get("/slow", host="slow.test")
    took = time.monotonic() - start
    assert status in (408, 504) and 0.9 <= took < 2.5


def test_websocket_round_trip(gw: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", gw.http_port), timeout=5) as s:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /ws HTTP/1.1\r\nHost: slow.test\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101")
        mask = os.urandom(4)
        text = b"hello kxds"
        s.sendall(bytes([0x81, 0x80 | len(text)]) + mask
                  + bytes(b ^ mask[i % 4] for i, b in enumerate(text)))
        rest = head.split(b"\r\n\r\n", 1)[1]
        while len(rest) < 2 + len(text):
            rest += s.recv(4096)
        assert rest[:2 + len(text)] == bytes([0x81, len(text)]) + text


def test_header_annotations(gw: Gateway) -> None:
    status, headers, body = gw.get("/h", host="headers.test")
    seen = json.loads(body)
    assert status == 200 and headers["x-served-by"] == "kxds"
    assert seen["headers"]["x-team"] == "blue" and seen["headers"]["x-forwarded-prefix"] == "/pre"
    assert seen["host"] == "inside.local"


def test_custom_headers_from_a_config_map(gw: Gateway) -> None:
    """The ConfigMap's headers reach the client; editing it changes them; an Ingress
    naming a missing ConfigMap is served without them."""
    status, headers, _ = gw.get("/c", host="custom.test")
    assert status == 200
    assert headers["x-custom-one"] == "one" and headers["x-content-type-options"] == "nosniff"
    status, headers, _ = gw.get("/c", host="nocustom.test")
    assert status == 200 and "x-custom-one" not in headers
    (gw.manifests / "configmap.yaml").write_text(_CUSTOM_HEADERS.format(value="two"))
    wait_for(lambda: gw.get("/c", host="custom.test")[1].get("x-custom-one") == "two" or None,
             timeout=60)


def test_custom_errors_answered_by_the_default_backend(gw: Gateway) -> None:
    # The backend answers 404 (the echo backend answers the status it is asked for,
    # and so does the error backend, which gets the same request headers): the error
    # Service answers, told what happened.
    status, headers, body = gw.get("/missing?x=1", host="pages.test", headers={
        "x-echo-status": "404", "accept": "text/html"})
    seen = json.loads(body)
    assert (status, headers["x-echo-backend"]) == (404, "errors")
    assert seen["path"] == "/?x=1"
    assert {k: seen["headers"].get(k) for k in (
        "x-code", "x-format", "x-original-uri", "x-namespace", "x-ingress-name",
        "x-service-name", "x-service-port")} == {
        "x-code": "404", "x-format": "text/html", "x-original-uri": "/missing?x=1",
        "x-namespace": "default", "x-ingress-name": "pages", "x-service-name": "main",
        "x-service-port": "80"}
    # A status not listed is the backend's own; a success is untouched.
    assert gw.backend("/x", host="pages.test", headers={"x-echo-status": "502"}) == (
        502, "main")
    assert gw.backend("/ok", host="pages.test") == (200, "main")


def test_default_backend_answers_for_a_service_without_endpoints(gw: Gateway) -> None:
    # Envoy answers 503 (no healthy upstream); the error Service's page replaces it,
    # and the client keeps the 503 although the error Service answered 200.
    status, headers, body = gw.get("/anything", host="fallback.test")
    assert (status, headers["x-echo-backend"]) == (503, "errors")
    assert json.loads(body)["headers"]["x-code"] == "503"


def test_access_log_line(gw: Gateway) -> None:
    assert gw.envoy is not None
    log = Path(gw.envoy.log_path)
    status, _, _ = http_get(gw.url("/logged?a=b"), host="canary.test",
                            source_ip="127.0.0.7", headers={"x-canary": "never"})
    assert status == 200
    gw.get("/quiet-path", host="quiet.test")

    def line() -> dict[str, str] | None:
        for raw in log.read_text(errors="replace").splitlines():
            if '"/logged?a=b"' in raw:
                found: dict[str, str] = json.loads(raw)
                return found
        return None
    entry = wait_for(line, what="the access log line")
    assert entry["client"] == "127.0.0.7" and entry["method"] == "GET"
    assert entry["authority"] == "canary.test" and entry["path"] == "/logged?a=b"
    assert entry["protocol"] == "HTTP/1.1" and entry["status"] == 200
    assert entry["flags"] == "-" and entry["bytes_in"] == 0 and int(entry["bytes_out"]) > 0
    # The client's x-request-id is replaced (use_remote_address): Envoy's own id.
    assert int(entry["duration_ms"]) >= 0 and len(str(entry["request_id"])) == 36
    assert entry["upstream_cluster"] == "default/main/80"
    assert str(entry["upstream_address"]).startswith("127.0.0.1:")
    assert "ingress" not in entry and entry["time"]
    assert entry["route"] == "ingress/default/main/rule/0/path/0/canary/header-never"
    # enable-access-log "false": a request after the quiet one is logged, the quiet one not.
    gw.get("/after-quiet", host="canary.test", headers={"x-canary": "never"})
    wait_for(lambda: "/after-quiet" in log.read_text(errors="replace"), what="a later line")
    assert "/quiet-path" not in log.read_text(errors="replace")
