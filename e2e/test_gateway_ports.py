"""Gateway HTTP and HTTPS listeners on ports of their own, through a real Envoy.

Restates the intent of three upstream conformance tests (kubernetes-sigs/gateway-api
``conformance/tests``) with free ports standing for 8080 and 8090, the intent being
"listeners on different ports are distinct Envoy listeners":

- ``GatewayWithAttachedRoutesWithPort8080``: a Gateway listener on a port beside the
  edge's own is ``Programmed`` with its attached Route counted, and that Route answers
  on that port;
- ``HTTPRouteListenerPortMatching``: listeners on 80 (the edge HTTP listener) and two
  other ports are told apart, a Route whose parentRef names a port (or a section) is
  served on that listener only;
- ``HTTPRouteRedirectPortAndScheme``: the ``Location`` of a RequestRedirect follows the
  listener's port and scheme (no port and no scheme: the listener's port; a scheme
  alone: its well-known port, left out).

NetworkPolicy client-IP rules hold on such a listener as on the edge's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from e2e.harness import (
    EchoBackend,
    Gateway,
    free_port,
    gateway_manifest,
    http_get,
    wait_for,
    write_manifests,
)
from e2e.test_access import backend, ip_rule, policy
from e2e.test_tls import https_get
from kxds.certs.make import make_ca, make_leaf, tls_secret_yaml

pytestmark = pytest.mark.e2e

@pytest.fixture
def echoes(tmp_path: Path) -> Iterator[dict[str, EchoBackend]]:
    started = {name: EchoBackend(name, tmp_path) for name in ("a", "b", "c")}
    try:
        yield started
    finally:
        for e in started.values():
            e.stop()


def _route(name: str, parent: str, service: str, path: str = "/") -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{parent}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    backendRefs: [{{name: {service}, port: 80}}]
"""


def _answer(port: int, path: str = "/", **kwargs: object) -> tuple[int, str | None]:
    status, headers, _ = http_get(f"http://127.0.0.1:{port}{path}", host="ports.test",
                                  **kwargs)  # type: ignore[arg-type]
    return status, headers.get("x-echo-backend")


def test_listeners_on_their_own_ports_are_distinct_through_envoy(
        manifests_dir: Path, echoes: dict[str, EchoBackend],
        kxds_envoy: Callable[..., Gateway]) -> None:
    p1, p2 = free_port(), free_port()
    write_manifests(manifests_dir, "backends.yaml", "---".join(
        [*(backend(n, e) for n, e in sorted(echoes.items())), backend("guarded", echoes["a"]),
         policy("guarded", "guarded", f"[{ip_rule('127.0.0.2/32')}]")]))
    write_manifests(manifests_dir, "routes.yaml", "---".join([
        gateway_manifest("{name: edge, port: 80, protocol: HTTP}",
                         f"{{name: one, port: {p1}, protocol: HTTP}}",
                         f"{{name: two, port: {p2}, protocol: HTTP}}"),
        _route("on-80", "{name: gw, port: 80}", "a"),
        _route("on-one", f"{{name: gw, port: {p1}}}", "b"),
        _route("on-two", "{name: gw, sectionName: two}", "c"),
        _route("guarded", f"{{name: gw, port: {p1}}}", "guarded", "/guarded"),
        _route("nowhere", "{name: gw, port: 9}", "c")]))
    gw = kxds_envoy(manifests_dir, wait=False)
    assert gw.envoy is not None
    for port in (gw.http_port, p1, p2):
        gw.envoy.wait_listening(port)
    wait_for(lambda: _answer(p1) == (200, "b"), what=f"the Route of port {p1}")
    wait_for(lambda: _answer(p2) == (200, "c"), what=f"the Route of port {p2}")
    # Each port serves its own listener's Route, and no other's.
    assert _answer(gw.http_port) == (200, "a")
    assert _answer(p1) == (200, "b") and _answer(p2) == (200, "c")
    assert _answer(p1, "/guarded", source_ip="127.0.0.2") == (200, "a")
    assert _answer(gw.http_port, "/guarded") == (200, "a")  # the edge's "/" Route
    assert _answer(p2, "/guarded") == (200, "c")
    # The NetworkPolicy of the guarded Service holds on the listener of its own port.
    assert _answer(p1, "/guarded", source_ip="127.0.0.3")[0] == 403
    _, page = gw.kxds.get("/debug/gateway-api")
    assert "Gateway default/gw: listener one (attachedRoutes 2): Programmed=True" in page
    assert "Gateway default/gw: listener two (attachedRoutes 1): Programmed=True" in page
    assert "Gateway default/gw: listener edge (attachedRoutes 1): Programmed=True" in page
    assert ("HTTPRoute default/nowhere: parent Gateway gw port 9: Accepted=False "
            "(NoMatchingParent)") in page, page


REDIRECT_PATHS = {
    "/scheme-nil-and-port-nil": "{}",
    "/scheme-nil-and-port-80": "{port: 80}",
    "/scheme-nil-and-port-8080": "{port: 8080}",
    "/scheme-nil-and-port-443": "{port: 443}",
    "/scheme-nil-and-port-8443": "{port: 8443}",
    "/scheme-https-and-port-nil": "{scheme: https}",
    "/scheme-https-and-port-443": "{scheme: https, port: 443}",
    "/scheme-https-and-port-8443": "{scheme: https, port: 8443}",
    "/scheme-http-and-port-nil": "{scheme: http}",
    "/scheme-http-and-port-80": "{scheme: http, port: 80}",
    "/scheme-http-and-port-8080": "{scheme: http, port: 8080}",
}


def _redirects(name: str, section: str, keep_host: str | None = None) -> str:
    """Redirects to example.org, or with ``keep_host`` (the Route's hostname) to the
    request's own host."""
    to = "" if keep_host else "hostname: example.org, "
    rules = "".join(f"""
  - matches: [{{path: {{type: Exact, value: {path}}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{{to}statusCode: 302, {spec.strip('{}')}}}"""
                    for path, spec in REDIRECT_PATHS.items())
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{{name: gw, sectionName: {section}}}]
  hostnames: [{keep_host or ""}]
  rules:{rules}
"""


def test_redirect_port_and_scheme_follow_the_listener_through_envoy(
        manifests_dir: Path, kxds_envoy: Callable[..., Gateway]) -> None:
    own, secure = free_port(), free_port()
    ca = make_ca("kxds gateway ports CA")
    write_manifests(manifests_dir, "secret.yaml", tls_secret_yaml(
        "default", "example-cert", make_leaf(ca, ["example.org"])))
    write_manifests(manifests_dir, "routes.yaml", "---".join([
        gateway_manifest("{name: edge, port: 80, protocol: HTTP, hostname: edge.test}",
                         f"{{name: own, port: {own}, protocol: HTTP}}",
                         f"{{name: secure, port: {secure}, protocol: HTTPS, hostname: example.org, "
                         "tls: {certificateRefs: [{name: example-cert}]}}"),
        _redirects("on-edge", "edge"), _redirects("on-own", "own"),
        _redirects("on-secure", "secure"), _redirects("keep-host", "own", "keep.test")]))
    gw = kxds_envoy(manifests_dir)
    assert gw.envoy is not None
    gw.envoy.wait_listening(own)
    gw.envoy.wait_listening(secure)

    def location(port: int, path: str, host: str) -> str | None:
        status, headers, _ = http_get(f"http://127.0.0.1:{port}{path}", host=host)
        return headers.get("location") if status == 302 else None

    wait_for(lambda: location(own, "/scheme-nil-and-port-nil", f"127.0.0.1:{own}"),
             what=f"the redirects of port {own}")
    wait_for(lambda: https_get(secure, "example.org", ca, "/scheme-nil-and-port-nil")[0]
             == 302, what=f"the redirects of port {secure}")
    # The edge listener (port 80 in the Gateway, the edge Service's port): a client of
    # port 80 sends no port, and a redirect keeping the scheme writes none.
    edge = {p: location(gw.http_port, p, "edge.test") for p in REDIRECT_PATHS}
    assert edge["/scheme-nil-and-port-nil"] == "http://example.org/scheme-nil-and-port-nil"
    assert edge["/scheme-nil-and-port-80"] == "http://example.org/scheme-nil-and-port-80"
    assert edge["/scheme-nil-and-port-8080"] == \
        "http://example.org:8080/scheme-nil-and-port-8080"
    assert edge["/scheme-https-and-port-nil"] == "https://example.org/scheme-https-and-port-nil"
    assert edge["/scheme-https-and-port-8443"] == \
        "https://example.org:8443/scheme-https-and-port-8443"
    # A listener on a port of its own: its port, whatever the client's Host says.
    for host in (f"127.0.0.1:{own}", "plain.test"):
        got = {p: location(own, p, host) for p in REDIRECT_PATHS}
        assert got["/scheme-nil-and-port-nil"] == \
            f"http://example.org:{own}/scheme-nil-and-port-nil", (host, got)
        assert got["/scheme-nil-and-port-80"] == \
            "http://example.org/scheme-nil-and-port-80", (host, got)
        assert got["/scheme-nil-and-port-8080"] == \
            "http://example.org:8080/scheme-nil-and-port-8080", (host, got)
        assert got["/scheme-https-and-port-nil"] == \
            "https://example.org/scheme-https-and-port-nil", (host, got)
        assert got["/scheme-https-and-port-443"] == \
            "https://example.org/scheme-https-and-port-443", (host, got)
        assert got["/scheme-https-and-port-8443"] == \
            "https://example.org:8443/scheme-https-and-port-8443", (host, got)
    # The request's own host kept, with the port the client named (a port of its
    # own is the listener's; none is what a client of a well-known port sends).
    for host in (f"keep.test:{own}", "keep.test"):
        got = {p: location(own, p, host) for p in REDIRECT_PATHS}
        assert got["/scheme-nil-and-port-nil"] == \
            f"http://keep.test:{own}/scheme-nil-and-port-nil", (host, got)
        # The well-known port is written here (Envoy would keep the client's port
        # otherwise); the conformance suite accepts it.
        assert got["/scheme-nil-and-port-80"] == \
            "http://keep.test:80/scheme-nil-and-port-80", (host, got)
        assert got["/scheme-https-and-port-nil"] == \
            "https://keep.test:443/scheme-https-and-port-nil", (host, got)
        assert got["/scheme-https-and-port-8443"] == \
            "https://keep.test:8443/scheme-https-and-port-8443", (host, got)
    # An HTTPS listener on a port of its own: scheme https, its port.
    got = {p: https_get(secure, "example.org", ca, p)[1].get("location")
           for p in REDIRECT_PATHS}
    assert got["/scheme-nil-and-port-nil"] == \
        f"https://example.org:{secure}/scheme-nil-and-port-nil", got
    assert got["/scheme-nil-and-port-443"] == \
        "https://example.org/scheme-nil-and-port-443", got
    assert got["/scheme-nil-and-port-8443"] == \
        "https://example.org:8443/scheme-nil-and-port-8443", got
    assert got["/scheme-http-and-port-nil"] == \
        "http://example.org/scheme-http-and-port-nil", got
    assert got["/scheme-http-and-port-80"] == \
        "http://example.org/scheme-http-and-port-80", got
    assert got["/scheme-http-and-port-8080"] == \
        "http://example.org:8080/scheme-http-and-port-8080", got
