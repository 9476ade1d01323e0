"""Upstream Gateway API conformance tests about routing, restated through the real Envoy.

kubernetes-sigs/gateway-api ``conformance/tests``: a request is served by the Routes of
the listener whose hostname matches it most specifically only (GatewayHTTPListenerIsolation);
a backend in another namespace is
reached only with a ReferenceGrant there (HTTPRouteReferenceGrant); headless Services and
Services whose EndpointSlices were written by hand are routed to like any other
(HTTPRouteServiceTypes); each backend's own request header changes reach that backend
only (HTTPRouteRequestHeaderModifierBackendWeights); a rule's name changes nothing of
its routing (HTTPRouteNamedRule); a Service port's ``appProtocol`` sets what the
backend is spoken to, cleartext HTTP/2 or HTTP/1.1 with WebSocket upgrades
(HTTPRouteBackendProtocolH2C, HTTPRouteBackendProtocolWebSocket); a rule whose backends
all weigh 0 answers 500 (HTTPRouteAllBackendsWeightZero).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from e2e.harness import (
    HTTP_LISTENER,
    EchoBackend,
    Gateway,
    Process,
    RawLoopback,
    gateway_manifest,
    read_head,
    service_manifest,
    switch_to_websocket,
    wait_for,
    write_manifests,
)

pytestmark = pytest.mark.e2e


def app_backend_service(name: str, echo: EchoBackend) -> str:
    """A Service of the ``app-backend`` namespace whose one endpoint is ``echo``."""
    return service_manifest(name, echo.host, echo.port, port=8080, namespace="app-backend")


def headless_service(name: str, echo: EchoBackend) -> str:
    """A headless Service (``clusterIP: None``) with a selector, and the EndpointSlice the
    EndpointSlice controller would write for its one Pod."""
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  clusterIP: None
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: {echo.port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-x1
  namespace: default
  labels:
    kubernetes.io/service-name: {name}
    endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io
addressType: IPv4
ports: [{{name: http, port: {echo.port}, protocol: TCP}}]
endpoints: [{{addresses: ["{echo.host}"], conditions: {{ready: true}}}}]
"""


GRANT = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: reference-grant, namespace: app-backend}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
  to: [{group: "", kind: Service, name: app-backend-v1}]
"""

ROUTES = """
apiVersion: v1
kind: Namespace
metadata: {name: app-backend}
---""" + gateway_manifest(
    HTTP_LISTENER,
    '{name: wildcard-example-com, port: 80, protocol: HTTP, hostname: "*.example.com"}',
    '{name: wildcard-foo-example-com, port: 80, protocol: HTTP, hostname: "*.foo.example.com"}',
    "{name: abc-foo-example-com, port: 80, protocol: HTTP, hostname: abc.foo.example.com}",
    "{name: quiet, port: 80, protocol: HTTP, hostname: quiet.example.org}",
    name="same-namespace") + """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reference-grant, namespace: default}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [grant.test]
  rules:
  - matches: [{path: {value: /v2}}]
    backendRefs: [{name: app-backend-v2, namespace: app-backend, port: 8080}]
  - backendRefs: [{name: app-backend-v1, namespace: app-backend, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: service-types, namespace: default}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [types.test]
  rules:
  - matches: [{path: {value: /headless}}]
    backendRefs: [{name: headless, port: 80}]
  - matches: [{path: {value: /manual-endpointslices}}]
    backendRefs: [{name: manual, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: all-backends-weight-zero, namespace: default}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [zero.test]
  rules:
  - backendRefs: [{name: a, port: 80, weight: 0}, {name: b, port: 80, weight: 0}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-named-rules, namespace: default}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [named.test]
  rules:
  - name: named-rule
    matches: [{path: {value: /named}}]
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {value: /unnamed}}]
    backendRefs: [{name: b, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: request-header-modifier-backend-weights, namespace: default}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [weights.test]
  rules:
  - backendRefs:
    - name: a
      port: 80
      weight: 1
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: backend, value: a}]}
    - name: b
      port: 80
      weight: 1
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: backend, value: b}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attaches-to-empty-hostname, namespace: default}
spec:
  parentRefs: [{name: same-namespace, sectionName: http}]
  rules:
  - matches: [{path: {value: /empty-hostname}}]
    backendRefs: [{name: a, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attaches-to-wildcard-example-com, namespace: default}
spec:
  parentRefs: [{name: same-namespace, sectionName: wildcard-example-com}]
  rules:
  - matches: [{path: {value: /wildcard-example-com}}]
    backendRefs: [{name: a, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attaches-to-wildcard-foo-example-com, namespace: default}
spec:
  parentRefs: [{name: same-namespace, sectionName: wildcard-foo-example-com}]
  rules:
  - matches: [{path: {value: /wildcard-foo-example-com}}]
    backendRefs: [{name: a, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attaches-to-abc-foo-example-com, namespace: default}
spec:
  parentRefs: [{name: same-namespace, sectionName: abc-foo-example-com}]
  rules:
  - matches: [{path: {value: /abc-foo-example-com}}]
    backendRefs: [{name: a, port: 80}]
---
# Beyond the suite: the listener without a hostname names a host that the listener
# "quiet" owns; "quiet" has no Route, so those requests find none (404).
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wider-listener, namespace: default}
spec:
  parentRefs: [{name: same-namespace, sectionName: http}]
  hostnames: [quiet.example.org, bar.com]
  rules:
  - matches: [{path: {value: /wider}}]
    backendRefs: [{name: b, port: 80}]
"""

ISOLATION = {  # host -> the one path its listener's Route serves
    "bar.com": "/empty-hostname", "bar.example.com": "/wildcard-example-com",
    "bar.foo.example.com": "/wildcard-foo-example-com",
    "abc.foo.example.com": "/abc-foo-example-com"}


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[dict[str, EchoBackend]]:
    started = {name: EchoBackend(name, tmp_path) for name in ("a", "b")}
    try:
        yield started
    finally:
        for b in started.values():
            b.stop()


def test_reference_grants_service_types_and_backend_header_changes_through_envoy(
        manifests_dir: Path, backends: dict[str, EchoBackend],
        kxds_envoy: Callable[..., Gateway]) -> None:
    a, b = backends["a"], backends["b"]
    write_manifests(manifests_dir, "backends.yaml", "---".join([
        service_manifest("a", a.host, a.port), service_manifest("b", b.host, b.port),
        app_backend_service("app-backend-v1", a), app_backend_service("app-backend-v2", b),
        headless_service("headless", a),
        # No selector, its EndpointSlice written by hand (or mirrored from a hand-written
        # Endpoints object by Kubernetes): what the suite calls manual EndpointSlices.
        service_manifest("manual", b.host, b.port)]))
    write_manifests(manifests_dir, "grant.yaml", GRANT)
    write_manifests(manifests_dir, "routes.yaml", ROUTES)
    gw = kxds_envoy(manifests_dir, wait=False)

    # HTTPRouteReferenceGrant: the granted Service answers; the other one of that
    # namespace, which the grant does not name, is refused (the rule's 500).
    gw.wait_backend("/", "grant.test", (200, "a"))
    assert gw.backend("/v2", host="grant.test")[0] == 500
    # HTTPRouteServiceTypes.
    assert gw.backend("/headless", host="types.test") == (200, "a")
    assert gw.backend("/manual-endpointslices", host="types.test") == (200, "b")
    # GatewayHTTPListenerIsolation: each request is served by the Routes of the listener
    # whose hostname matches it most specifically, never by a wider listener's.
    for host, own in ISOLATION.items():
        for path in ISOLATION.values():
            assert gw.backend(path, host=host)[0] == (200 if path == own else 404), (host, path)
    assert gw.backend("/wider", host="bar.com") == (200, "b")
    assert gw.backend("/wider", host="quiet.example.org")[0] == 404
    # HTTPRouteAllBackendsWeightZero (a later release's test): no share for anyone, 500.
    assert gw.backend("/", host="zero.test") == (500, None)
    # HTTPRouteNamedRule.
    assert gw.backend("/named", host="named.test") == (200, "a")
    assert gw.backend("/unnamed", host="named.test") == (200, "b")
    # HTTPRouteRequestHeaderModifierBackendWeights: each request carries the header of
    # the backend that got it, never the other's.
    seen: Counter[str] = Counter()
    for _ in range(40):
        status, headers, body = gw.get("/", host="weights.test")
        assert status == 200
        assert json.loads(body)["headers"]["backend"] == headers["x-echo-backend"]
        seen[headers["x-echo-backend"]] += 1
    assert set(seen) == {"a", "b"}, seen

    # The grant withdrawn: the Service in the other namespace is refused again.
    write_manifests(manifests_dir, "grant.yaml", "")
    gw.wait_backend("/", "grant.test", (500, None))


class UpgradeEcho:
    """A backend that speaks HTTP/1.1 only until a WebSocket upgrade (RFC 6455 section
    4.2.2: 101 with the Sec-WebSocket-Accept of the client's key), then echoes every
    byte back: enough to see the upgraded connection carried both ways."""

    def __init__(self) -> None:
        self.upgrades = 0
        self.server = RawLoopback(self._one)
        self.port = self.server.port

    def _one(self, conn: socket.socket, headers: dict[str, str]) -> None:
        if headers.get("upgrade", "").lower() != "websocket":
            conn.sendall(b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: 0\r\n\r\n")
            return
        self.upgrades += 1
        switch_to_websocket(conn, headers["sec-websocket-key"])
        while data := conn.recv(4096):
            conn.sendall(data)

    def stop(self) -> None:
        self.server.close()


def websocket_echo(port: int, host: str, payload: bytes) -> tuple[str, bytes]:
    """Upgrade a connection to ``port`` with Host ``host``, send ``payload``: (the status
    line, what came back)."""
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall((f"GET /ws HTTP/1.1\r\nhost: {host}\r\nupgrade: websocket\r\n"
                   f"connection: Upgrade\r\nsec-websocket-key: {key}\r\n"
                   "sec-websocket-version: 13\r\n\r\n").encode())
        head = read_head(s)
        status, _, rest = head.partition(b"\r\n")
        echoed = rest.partition(b"\r\n\r\n")[2]
        if b" 101 " in status:
            s.sendall(payload)
            while len(echoed) < len(payload):
                chunk = s.recv(4096)
                if not chunk:
                    break
                echoed += chunk
        return status.decode(), echoed


def protocol_service(name: str, port: int, app_protocol: str) -> str:
    return service_manifest(name, "127.0.0.1", port, port_name="p", app_protocol=app_protocol)


PROTOCOL_ROUTES = gateway_manifest(name="same-namespace") + """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-protocol-h2c, namespace: default}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [h2c.test]
  rules:
  - backendRefs: [{name: h2c-only, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-protocol-websocket, namespace: default}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [ws.test]
  rules:
  - backendRefs: [{name: ws-only, port: 80}]
"""


@pytest.fixture
def h2c_backend(tmp_path: Path) -> Iterator[int]:
    """A gRPC server: cleartext HTTP/2 with prior knowledge, and nothing else."""
    proc = Process("grpc h2c", [sys.executable, str(Path(__file__).parent / "grpc_backend.py"),
                                "h2c"], tmp_path / "grpc-h2c.log")
    try:
        yield int(wait_for(lambda: _first_log_line(proc), 15.0, what="the h2c backend"))
    finally:
        proc.stop()


def _first_log_line(proc: Process) -> str | None:
    text = proc.log_path.read_text(errors="replace")
    return text.split("\n", 1)[0] if "\n" in text else None


def h2c_call(port: int, authority: str) -> str:
    """One gRPC call (HTTP/2 with prior knowledge) through Envoy: the status's name."""
    with grpc.insecure_channel(f"127.0.0.1:{port}",
                               options=[("grpc.default_authority", authority)]) as ch:
        try:
            ch.unary_unary("/helloworld.Greeter/SayHello")(b"{}", timeout=5)
        except grpc.RpcError as e:
            return str(e.code().name)  # type: ignore[attr-defined]
    return "OK"


def test_backend_protocols_h2c_and_websocket_through_envoy(
        manifests_dir: Path, h2c_backend: int, kxds_envoy: Callable[..., Gateway]) -> None:
    """HTTPRouteBackendProtocolH2C: a Service port of ``appProtocol: kubernetes.io/h2c``
    is reached over cleartext HTTP/2 (its backend speaks nothing else);
    HTTPRouteBackendProtocolWebSocket: one of ``kubernetes.io/ws`` gets the WebSocket
    upgrade, and the upgraded connection carries bytes both ways."""
    ws = UpgradeEcho()
    try:
        write_manifests(manifests_dir, "backends.yaml", "---".join([
            protocol_service("h2c-only", h2c_backend, "kubernetes.io/h2c"),
            protocol_service("ws-only", ws.port, "kubernetes.io/ws")]))
        write_manifests(manifests_dir, "routes.yaml", PROTOCOL_ROUTES)
        gw = kxds_envoy(manifests_dir, wait=False)
        wait_for(lambda: h2c_call(gw.http_port, "h2c.test") == "OK", 30.0,
                 what="a gRPC call over h2c through Envoy")
        status, echoed = websocket_echo(gw.http_port, "ws.test", b"hello over the upgrade")
        assert " 101 " in status, status
        assert echoed == b"hello over the upgrade"
        assert ws.upgrades == 1
    finally:
        ws.stop()
