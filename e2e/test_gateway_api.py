"""Gateway API through the real Envoy: a Gateway and HTTPRoutes served beside an Ingress.

Conformance intent restated (kubernetes-sigs/gateway-api conformance/tests): a route
attached to a Gateway listener serves its hostnames and paths (HTTPRouteSimpleSameNamespace,
HTTPRouteMatching), weighted backendRefs split traffic (HTTPRouteWeight), and a backendRef
that does not resolve answers 500 (HTTPRouteInvalidNonExistentBackendRef); an Ingress and
an HTTPRoute share a host. Header, query parameter, method and RegularExpression path
matches, precedence across Routes, header modifiers, redirects, rewrites and mirrors
(HTTPRouteHeaderMatching, HTTPRouteQueryParamMatching, HTTPRouteMethodMatching,
HTTPRouteMatchingAcrossRoutes, HTTPRouteRequestHeaderModifier,
HTTPRouteResponseHeaderModifier, HTTPRouteRedirectHostAndStatus, HTTPRouteRewritePath,
HTTPRouteRewriteHost, HTTPRouteRequestMirror, HTTPRouteTimeoutBackendRequest), and
GRPCRoute methods and headers to a gRPC backend (GRPCExactMethodMatching,
GRPCRouteHeaderMatching, GRPCRouteNamedRule).
"""

from __future__ import annotations

import json
import socket
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from e2e.harness import (
    EchoBackend,
    Envoy,
    Gateway,
    Process,
    free_port,
    gateway_manifest,
    service_manifest,
    wait_for,
    write_manifests,
)
from e2e.test_tls import handshake, https_get, names_of, refused
from kxds.certs.make import make_ca, make_leaf, tls_secret_yaml

pytestmark = pytest.mark.e2e


def service(name: str, echo: EchoBackend) -> str:
    return service_manifest(name, echo.host, echo.port)


ROUTES = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: default}
spec:
  ingressClassName: kxds
  rules:
  - host: shop.test
    http:
      paths:
      - {path: /ingress, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}
---""" + gateway_manifest() + """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [shop.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /gateway}}]
    backendRefs: [{name: b, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /split}}]
    backendRefs: [{name: a, port: 80, weight: 1}, {name: b, port: 80, weight: 1}]
  - matches: [{path: {type: Exact, value: /missing}}]
    backendRefs: [{name: nowhere, port: 80}]
  # The Ingress's own path, for requests with a header only: before the Ingress route.
  - matches: [{path: {value: /ingress}, headers: [{name: x-beta, value: "1"}]}]
    backendRefs: [{name: b, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [api.test]
  rules:
  - backendRefs: [{name: a, port: 80}]
"""


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[dict[str, EchoBackend]]:
    started = {name: EchoBackend(name, tmp_path) for name in ("a", "b")}
    try:
        yield started
    finally:
        for b in started.values():
            b.stop()


def test_gateway_routes_beside_an_ingress(manifests_dir: Path, backends: dict[str, EchoBackend],
                                          kxds_envoy: Callable[..., Gateway]) -> None:
    write_manifests(manifests_dir, "backends.yaml",
                    "---".join(service(n, e) for n, e in sorted(backends.items())))
    write_manifests(manifests_dir, "routes.yaml", ROUTES)
    gw = kxds_envoy(manifests_dir)
    gw.wait_backend("/gateway", "shop.test", (200, "b"))
    assert gw.backend("/ingress/x", host="shop.test") == (200, "a")  # the Ingress, same host
    assert gw.backend("/ingress/x", host="shop.test", headers={"x-beta": "1"}) == (200, "b")
    assert gw.backend("/", host="api.test") == (200, "a")  # a route of its own hostname
    assert gw.backend("/missing", host="shop.test")[0] == 500  # the spec's answer
    assert gw.backend("/other", host="shop.test")[0] == 404  # nothing matches
    seen = Counter(gw.backend("/split", host="shop.test")[1] for _ in range(80))
    # Equal weights: each backend's share of 80 requests within ~4.5 standard deviations.
    assert set(seen) == {"a", "b"} and all(20 <= n <= 60 for n in seen.values()), seen
    # The status kxds computed, on its debug page (the API source also writes it).
    status, page = gw.kxds.get("/debug/gateway-api")
    assert status == 200
    assert "GatewayClass kxds: Accepted=True" in page
    assert "Gateway default/gw: Accepted=True" in page
    assert "HTTPRoute default/shop: parent" in page and "BackendNotFound" in page


# Matches and filters, each rule restating the intent of an upstream conformance test
# (named beside it) on its own path of one host.
MATCHES_AND_FILTERS = gateway_manifest() + """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: older, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw}]
  hostnames: [match.test]
  rules:
  # HTTPRouteMatchingAcrossRoutes: the newer Route's header match wins over age.
  - matches: [{path: {value: /across}}]
    backendRefs: [{name: a, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: matches, namespace: default, creationTimestamp: "2024-01-02T00:00:00Z"}
spec:
  parentRefs: [{name: gw}]
  hostnames: [match.test]
  rules:
  - matches: [{path: {value: /across}, headers: [{name: x-team, value: b}]}]
    backendRefs: [{name: b, port: 80}]
  # HTTPRouteHeaderMatching: exact values, names case-insensitive, and a regex.
  - matches: [{path: {value: /headers}, headers: [{name: Version, value: one}]}]
    backendRefs: [{name: a, port: 80}]
  - matches:
    - path: {value: /headers}
      headers: [{name: version, value: two}, {name: color, type: RegularExpression,
                 value: "(red|blue)"}]
    backendRefs: [{name: b, port: 80}]
  # HTTPRouteQueryParamMatching.
  - matches: [{path: {value: /query}, queryParams: [{name: animal, value: whale}]}]
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {value: /query}, queryParams: [{name: animal, type: RegularExpression,
                                                     value: "dol.*"}]}]
    backendRefs: [{name: b, port: 80}]
  # HTTPRouteMethodMatching.
  - matches: [{path: {value: /method}, method: POST}]
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {value: /method}, method: GET}]
    backendRefs: [{name: b, port: 80}]
  # RegularExpression paths: the whole path.
  - matches: [{path: {type: RegularExpression, value: "/regex/[0-9]+"}}]
    backendRefs: [{name: a, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: filters, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [match.test]
  rules:
  # HTTPRouteRequestHeaderModifier and HTTPRouteResponseHeaderModifier, and a
  # backendRef's own request header modifier.
  - matches: [{path: {value: /modify}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Set, value: set}]
        add: [{name: X-Add, value: added}]
        remove: [X-Remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: X-Response-Set, value: set}]
        remove: [X-Echo-Backend]
    backendRefs:
    - name: b
      port: 80
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: X-Backend, value: b}]}
  # HTTPRouteRedirectHostAndStatus (scheme, hostname, prefix path, status) and the port.
  - matches: [{path: {value: /redirect}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: new.test, statusCode: 301,
                        path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
  - matches: [{path: {value: /moved}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {port: 8081, path: {type: ReplaceFullPath, replaceFullPath: /full}}
  # HTTPRouteRewritePath and HTTPRouteRewriteHost.
  - matches: [{path: {value: /strip}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: internal.test,
                   path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {value: /full-rewrite}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /replaced}}
    backendRefs: [{name: a, port: 80}]
  # HTTPRouteTimeoutBackendRequest: each attempt's timeout.
  - matches: [{path: {value: /slow}}]
    timeouts: {request: 20s, backendRequest: 1s}
    backendRefs: [{name: a, port: 80}]
  # HTTPRouteRequestMirror.
  - matches: [{path: {value: /mirror}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow, port: 80}}
    backendRefs: [{name: a, port: 80}]
"""


@pytest.fixture
def three_backends(tmp_path: Path) -> Iterator[dict[str, EchoBackend]]:
    started = {name: EchoBackend(name, tmp_path) for name in ("a", "b", "shadow")}
    try:
        yield started
    finally:
        for b in started.values():
            b.stop()


def _echo(gw: Gateway, path: str, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
    status, headers, body = gw.get(path, host="match.test", **kwargs)
    try:
        return status, headers, json.loads(body)
    except ValueError:
        return status, headers, None


def test_httproute_matches_and_filters_through_envoy(
        manifests_dir: Path, three_backends: dict[str, EchoBackend],
        kxds_envoy: Callable[..., Gateway]) -> None:
    write_manifests(manifests_dir, "backends.yaml",
                    "---".join(service(n, e) for n, e in sorted(three_backends.items())))
    write_manifests(manifests_dir, "routes.yaml", MATCHES_AND_FILTERS)
    gw = kxds_envoy(manifests_dir)
    host = "match.test"
    gw.wait_backend("/across", host, (200, "a"))
    # Across Routes: more header matches before the older Route's plain prefix.
    assert gw.backend("/across", host=host, headers={"x-team": "b"}) == (200, "b")
    # Headers.
    assert gw.backend("/headers", host=host, headers={"version": "one"}) == (200, "a")
    assert gw.backend("/headers", host=host, headers={"VERSION": "one"}) == (200, "a")
    assert gw.backend("/headers", host=host,
                      headers={"version": "two", "color": "blue"}) == (200, "b")
    # The regex matches the whole value; every header match must hold.
    assert gw.backend("/headers", host=host,
                      headers={"version": "two", "color": "blueish"})[0] == 404
    assert gw.backend("/headers", host=host, headers={"version": "two"})[0] == 404
    assert gw.backend("/headers", host=host)[0] == 404
    # Query parameters.
    assert gw.backend("/query?animal=whale", host=host) == (200, "a")
    assert gw.backend("/query?animal=dolphin", host=host) == (200, "b")
    assert gw.backend("/query?animal=whaleshark", host=host)[0] == 404
    assert gw.backend("/query", host=host)[0] == 404
    # Methods.
    assert gw.backend("/method", host=host, method="POST") == (200, "a")
    assert gw.backend("/method", host=host) == (200, "b")
    assert gw.backend("/method", host=host, method="PUT")[0] == 404
    # RegularExpression paths match the whole path.
    assert gw.backend("/regex/42", host=host) == (200, "a")
    assert gw.backend("/regex/42/more", host=host)[0] == 404
    assert gw.backend("/regex/abc", host=host)[0] == 404

    # Header modifiers.
    status, headers, echo = _echo(gw, "/modify", headers={
        "X-Set": "client", "X-Add": "client", "X-Remove": "gone"})
    assert status == 200 and echo["backend"] == "b"
    sent = echo["headers"]
    assert sent["x-set"] == "set" and "x-remove" not in sent and sent["x-backend"] == "b"
    # Appended as a second line (the echo backend shows the last line of a name).
    assert sent["x-add"] in ("added", "client,added"), sent["x-add"]
    assert headers["x-response-set"] == "set" and "x-echo-backend" not in headers

    # Redirects: the Location is built as the filter says; no backend is asked.
    status, headers, _ = gw.get("/redirect/page?q=1", host=host)
    assert (status, headers["location"]) == (301, "https://new.test/new/page?q=1")
    status, headers, _ = gw.get("/moved/x", host=host)
    assert (status, headers["location"]) == (302, "http://match.test:8081/full")

    # Rewrites: path prefix and host.
    status, _, echo = _echo(gw, "/strip/three?x=1")
    assert status == 200 and (echo["path"], echo["host"]) == ("/three?x=1", "internal.test")
    assert _echo(gw, "/strip")[2]["path"] == "/"
    assert _echo(gw, "/full-rewrite/any/thing")[2]["path"] == "/replaced"

    # The attempt's timeout (1 s) cuts a 4 s answer: Envoy's 504.
    assert gw.backend("/slow", host=host) == (200, "a")
    assert gw.get("/slow", host=host, headers={"x-echo-delay-ms": "4000"}, timeout=15)[0] == 504

    # Mirror: the shadow backend gets a copy; the client gets a's answer.
    assert gw.envoy is not None
    before = gw.envoy.stat("cluster.default/shadow/80.upstream_rq_total")
    for _ in range(3):
        assert gw.backend("/mirror", host=host) == (200, "a")
    gw.envoy.wait_until(
        lambda e: e.stat("cluster.default/shadow/80.upstream_rq_total") >= before + 3 or None)


GRPC_ROUTES = gateway_manifest() + """---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: greeter, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [grpc.test]
  rules:
  # GRPCExactMethodMatching: service and method; a named rule (GRPCRouteNamedRule).
  - name: say-hello
    matches: [{method: {service: helloworld.Greeter, method: SayHello}}]
    backendRefs: [{name: one, port: 50051}]
  # A service's methods with a header (GRPCRouteHeaderMatching), and a header filter.
  - matches: [{method: {service: helloworld.Greeter}, headers: [{name: version, value: two}]}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-route, value: greeter}]}
    backendRefs: [{name: two, port: 50051}]
  - matches: [{method: {service: helloworld.Greeter}}]
    backendRefs: [{name: one, port: 50051}]
  # A backend that does not resolve, and every weight 0: UNAVAILABLE, as the GRPCRoute
  # spec asks (GRPCRouteAllBackendsWeightZero).
  - matches: [{method: {service: helloworld.Greeter, method: SayNothing}}]
    backendRefs: [{name: nowhere, port: 50051}]
  - matches: [{method: {service: helloworld.Greeter, method: SayZero}}]
    backendRefs: [{name: one, port: 50051, weight: 0}]
"""


def _grpc_service(name: str, port: int) -> str:
    """A Service without appProtocol: the GRPCRoute alone makes kxds speak HTTP/2."""
    return service_manifest(name, "127.0.0.1", port, port=50051, port_name="grpc")


@pytest.fixture
def grpc_backends(tmp_path: Path) -> Iterator[dict[str, int]]:
    script = str(Path(__file__).parent / "grpc_backend.py")
    started: list[Process] = []
    ports: dict[str, int] = {}
    try:
        for name in ("one", "two"):
            proc = Process(f"grpc {name}", [sys.executable, script, name],
                           tmp_path / f"grpc-{name}.log")
            started.append(proc)
            ports[name] = int(wait_for(lambda p=proc: _port_line(p), 15.0,
                                       what=f"grpc backend {name}"))
        yield ports
    finally:
        for p in started:
            p.stop()


def _port_line(proc: Process) -> str | None:
    text = proc.log_path.read_text(errors="replace")
    return text.split("\n", 1)[0] if "\n" in text else None


def _call(gw: Gateway, method: str, metadata: tuple[tuple[str, str], ...] = ()
          ) -> tuple[str, Any]:
    """One unary call through Envoy's HTTP listener (HTTP/2 without TLS):
    ("OK", the answer) or (the status code's name, None)."""
    with grpc.insecure_channel(f"127.0.0.1:{gw.http_port}",
                               options=[("grpc.default_authority", "grpc.test")]) as ch:
        try:
            answer = ch.unary_unary(method)(b"{}", metadata=metadata, timeout=5)
        except grpc.RpcError as e:
            return e.code().name, None  # type: ignore[attr-defined]
    return "OK", json.loads(answer)


def test_grpcroute_methods_and_headers_through_envoy(
        manifests_dir: Path, grpc_backends: dict[str, int],
        kxds_envoy: Callable[..., Gateway]) -> None:
    write_manifests(manifests_dir, "backends.yaml",
                    "---".join(_grpc_service(n, p) for n, p in sorted(grpc_backends.items())))
    write_manifests(manifests_dir, "routes.yaml", GRPC_ROUTES)
    gw = kxds_envoy(manifests_dir)

    def say_hello() -> bool:
        status, answer = _call(gw, "/helloworld.Greeter/SayHello")
        return status == "OK" and answer["backend"] == "one"
    wait_for(say_hello, 30.0, what="SayHello through Envoy")
    status, answer = _call(gw, "/helloworld.Greeter/SayGoodbye", (("version", "two"),))
    assert status == "OK" and answer["backend"] == "two"
    assert answer["method"] == "/helloworld.Greeter/SayGoodbye"
    assert answer["metadata"]["x-route"] == "greeter"
    # The exact method match goes before the service's header match.
    assert _call(gw, "/helloworld.Greeter/SayHello", (("version", "two"),))[1]["backend"] == "one"
    assert _call(gw, "/helloworld.Greeter/SayGoodbye")[1]["backend"] == "one"
    assert _call(gw, "/helloworld.Greeter/SayNothing")[0] == "UNAVAILABLE"
    assert _call(gw, "/helloworld.Greeter/SayZero")[0] == "UNAVAILABLE"
    # No rule for another service: Envoy answers 404, which gRPC calls UNIMPLEMENTED.
    assert _call(gw, "/other.Service/Call")[0] == "UNIMPLEMENTED"
    status, page = gw.kxds.get("/debug/gateway-api")
    assert "GRPCRoute default/greeter: parent" in page


def _https_listener(name: str, hostname: str, certificate: str) -> str:
    """A Gateway listener for HTTPS on port 443 with one certificate reference."""
    return (f'{{name: {name}, port: 443, protocol: HTTPS, hostname: "{hostname}", '
            f"tls: {{certificateRefs: [{certificate}]}}}}")


# HTTPS listeners: HTTPRouteHTTPSListener, GatewaySecretReferenceGrantSpecific,
# GatewaySecretMissingReferenceGrant and GatewayInvalidTLSConfiguration restated: a
# listener whose certificate resolves is served by SNI, one whose certificate does
# not is refused the handshake, and an Ingress keeps the SNI name it serves.
HTTPS = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: taken, namespace: default}
spec:
  ingressClassName: kxds
  tls: [{hosts: [taken.test], secretName: ingress-cert}]
  rules:
  - host: taken.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}
---""" + gateway_manifest(
    "{name: http, port: 80, protocol: HTTP, hostname: shop.test}",
    _https_listener("shop", "shop.test", "{name: shop-cert}"),
    _https_listener("granted", "*.wild.test", "{name: wild-cert, namespace: certs}"),
    _https_listener("not-granted", "nogrant.test", "{name: nogrant-cert, namespace: certs}"),
    _https_listener("taken", "taken.test", "{name: shop-cert}")) + """---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: gateways, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}]
  to: [{group: "", kind: Secret, name: wild-cert}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: plain, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  rules:
  - backendRefs: [{name: a, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: secure, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: shop}, {name: gw, sectionName: granted},
               {name: gw, sectionName: taken}]
  rules:
  - backendRefs: [{name: b, port: 80}]
"""


def test_https_listeners_through_envoy(manifests_dir: Path, backends: dict[str, EchoBackend],
                                       kxds_envoy: Callable[..., Gateway]) -> None:
    ca = make_ca("kxds gateway e2e CA")
    pairs = {"shop-cert": ("default", ["shop.test"]), "wild-cert": ("certs", ["*.wild.test"]),
             "nogrant-cert": ("certs", ["nogrant.test"]),
             "ingress-cert": ("default", ["taken.test"])}
    secrets = {name: make_leaf(ca, hosts) for name, (_, hosts) in pairs.items()}
    write_manifests(manifests_dir, "backends.yaml",
                    "---".join(service(n, e) for n, e in sorted(backends.items())))
    write_manifests(manifests_dir, "secrets.yaml", "\n---\n".join(
        tls_secret_yaml(ns, name, secrets[name]) for name, (ns, _) in pairs.items()))
    write_manifests(manifests_dir, "routes.yaml", HTTPS)
    gw = kxds_envoy(manifests_dir)
    assert gw.envoy is not None
    gw.envoy.wait_listening(gw.https_port)
    wait_for(lambda: https_get(gw.https_port, "shop.test", ca)[0] == 200,
             what="shop.test over HTTPS")
    # The HTTPS listener's route, and over plain HTTP the HTTP listener's.
    assert https_get(gw.https_port, "shop.test", ca)[1]["x-echo-backend"] == "b"
    assert gw.backend("/", host="shop.test") == (200, "a")
    # A cross-namespace certificate a ReferenceGrant allows, by the listener's wildcard.
    cert, _ = handshake(gw.https_port, "x.wild.test", ca)
    assert names_of(cert) == ["*.wild.test"]
    assert https_get(gw.https_port, "x.wild.test", ca)[1]["x-echo-backend"] == "b"
    # No grant: the listener is not served, its SNI name is refused the handshake.
    assert refused(gw.https_port, "nogrant.test", ca)
    # The Ingress keeps taken.test: its certificate, its backend.
    cert, _ = handshake(gw.https_port, "taken.test", ca)
    assert cert.serial_number == x509.load_pem_x509_certificate(
        secrets["ingress-cert"].cert_pem).serial_number
    assert https_get(gw.https_port, "taken.test", ca)[1]["x-echo-backend"] == "a"
    _, page = gw.kxds.get("/debug/gateway-api")
    assert "RefNotPermitted" in page and "HostnameConflict" in page


# TLS passthrough, TCP and UDP listeners: TLSRouteSimpleSameNamespace, and the
# experimental TCPRoute/UDPRoute intents restated: the stream reaches the backend
# untouched (its own certificate), TCP connections split by weight, a backend's
# NetworkPolicy admits only its clients, datagrams reach a UDP backend.
def _l4_service(name: str, echo: EchoBackend, port: int, protocol: str = "TCP") -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: main, port: {port}, targetPort: {echo.port}, protocol: {protocol}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: main, port: {echo.port}, protocol: {protocol}}}]
endpoints:
- addresses: ["{echo.host}"]
  targetRef: {{kind: Pod, namespace: default, name: {name}-0}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}-0, namespace: default, labels: {{app: {name}}}}}
status: {{podIP: 10.0.0.1}}
"""


def _l4_routes(split: int, guarded: int, udp: int) -> str:
    return gateway_manifest(
        '{name: tls, port: 443, protocol: TLS, hostname: "*.pt.test", tls: {mode: Passthrough}}',
        f"{{name: split, port: {split}, protocol: TCP}}",
        f"{{name: guarded, port: {guarded}, protocol: TCP}}",
        f"{{name: dns, port: {udp}, protocol: UDP}}") + """---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: pt, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: tls}]
  hostnames: [web.pt.test]
  rules: [{backendRefs: [{name: tlsweb, port: 443}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: split, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: split}]
  rules:
  - backendRefs: [{name: ta, port: 7000, weight: 1}, {name: tb, port: 7000, weight: 1}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: guarded, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: guarded}]
  rules: [{backendRefs: [{name: guarded, port: 7000}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: guarded, namespace: default}
spec:
  podSelector: {matchLabels: {app: guarded}}
  policyTypes: [Ingress]
  ingress: [{from: [{ipBlock: {cidr: 127.0.0.2/32}}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {name: dns, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: dns}]
  rules: [{backendRefs: [{name: ua, port: 53}]}]
"""


def _tcp_echo(port: int, source: str = "127.0.0.1") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5,
                                  source_address=(source, 0)) as s:
        s.sendall(b"ping")
        return s.recv(200)


def _udp_echo(port: int) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        s.sendto(b"ping", ("127.0.0.1", port))
        try:
            return s.recv(200)
        except OSError:
            return None


def _refused(port: int, source: str) -> bool:
    try:
        return _tcp_echo(port, source) == b""  # RBAC closes the connection at once
    except OSError:
        return True


def test_tls_tcp_and_udp_listeners_through_envoy(
        manifests_dir: Path, tmp_path: Path, kxds_envoy: Callable[..., Gateway]) -> None:
    ca = make_ca("kxds gateway l4 CA")
    pair = make_leaf(ca, ["web.pt.test"])
    (tmp_path / "tls.crt").write_bytes(pair.cert_pem)
    (tmp_path / "tls.key").write_bytes(pair.key_pem)
    started = {"tlsweb": EchoBackend("tlsweb", tmp_path, extra_args=[
        "--tls-cert", str(tmp_path / "tls.crt"), "--tls-key", str(tmp_path / "tls.key")])}
    try:
        for name in ("ta", "tb", "guarded"):
            started[name] = EchoBackend(name, tmp_path, kind="tcp")
        started["ua"] = EchoBackend("ua", tmp_path, kind="udp")
        write_manifests(manifests_dir, "backends.yaml", "---".join([
            _l4_service("tlsweb", started["tlsweb"], 443),
            *(_l4_service(n, started[n], 7000) for n in ("ta", "tb", "guarded")),
            _l4_service("ua", started["ua"], 53, "UDP")]))
        split, guarded, udp = free_port(), free_port(), free_port(kind=socket.SOCK_DGRAM)
        write_manifests(manifests_dir, "routes.yaml", _l4_routes(split, guarded, udp))
        gw = kxds_envoy(manifests_dir, wait=False)
        assert gw.envoy is not None
        for port in (gw.https_port, split, guarded):
            gw.envoy.wait_listening(port)
        # Passthrough: the backend's own certificate, its answer over that TLS.
        cert, _ = handshake(gw.https_port, "web.pt.test", ca)
        assert names_of(cert) == ["web.pt.test"]
        assert https_get(gw.https_port, "web.pt.test", ca)[1]["x-echo-backend"] == "tlsweb"
        assert refused(gw.https_port, "other.pt.test", ca)  # no Route for that host
        # TCP split by weight: both backends answer within 40 connections.
        seen = Counter(_tcp_echo(split).split(b" ")[0] for _ in range(40))
        assert set(seen) == {b"ta", b"tb"} and all(n >= 5 for n in seen.values()), seen
        # The guarded backend's NetworkPolicy admits 127.0.0.2 only.
        assert _tcp_echo(guarded, "127.0.0.2").startswith(b"guarded ")
        assert _refused(guarded, "127.0.0.3")
        # UDP: datagrams to the UDP backend.
        wait_for(lambda: (_udp_echo(udp) or b"").startswith(b"ua "), what="UDP echo")
    finally:
        for b in started.values():
            b.stop()


def _has_listener(envoy: Envoy, name: str) -> bool:
    return any(n.partition("::")[0] == name for n in envoy.listener_names())


def test_a_gateway_pinned_to_an_edge_group_is_served_by_its_envoys_only(
        manifests_dir: Path, tmp_path: Path, kxds_envoy: Callable[..., Gateway]) -> None:
    """``kxds.io/edge-group`` on a Gateway: only the Envoys of that group (their
    ``node.cluster``) get its listeners; the default group's Envoy does not."""
    echo = EchoBackend("db", tmp_path, kind="tcp")
    internal: Envoy | None = None
    try:
        port = free_port()
        write_manifests(manifests_dir, "all.yaml", "---".join([
            _l4_service("db", echo, 7000),
            gateway_manifest(f"{{name: db, port: {port}, protocol: TCP}}",
                             metadata="annotations: {kxds.io/edge-group: internal}") + """---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: db, port: 7000}]}]
"""]))
        gw = kxds_envoy(manifests_dir, wait=False)
        assert gw.envoy is not None
        internal = Envoy(tmp_path, gw.kxds.xds_address, group="internal", name="internal")
        name = f"gateway/default/gw/db/{port}/tcp"
        internal.wait_until(lambda e: _has_listener(e, name) or None)
        internal.wait_listening(port)
        assert _tcp_echo(port).startswith(b"db ")  # only the internal Envoy binds it
        gw.envoy.wait_until(lambda e: _has_listener(e, f"http/{gw.http_port}") or None)
        assert not _has_listener(gw.envoy, name)
    finally:
        echo.stop()
        if internal is not None:
            internal.stop()
