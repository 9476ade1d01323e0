"""Gateway TLS listeners on ports of their own, through a real Envoy.

A Passthrough and a Terminate TLS listener on a free port beside the edge's own
are served on an Envoy TLS listener of that port, with an HTTPS listener there,
split by SNI: the passthrough client talks TLS with the backend itself, the
terminated one gets the listener's certificate and its TCP backend the decrypted
bytes, the HTTPS one its HTTPRoute's answer. The passthrough backend's NetworkPolicy
holds there as on the edge TLS listener.

Then restates the upstream conformance test ``TLSRouteHostnameIntersection``
(kubernetes-sigs/gateway-api ``conformance/tests``): three Gateways, listener
hostnames ``abc.example.com``, ``*.example.com`` and none, each with TLSRoutes
whose hostnames intersect its listener's. The suite gives each Gateway an address;
here each has a port of its own, and a client reaches only the Routes of the
Gateway it connects to (the same name goes to each Gateway's own Route, a name
one Gateway does not serve is refused there even when another serves it).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from e2e.harness import EchoBackend, Gateway, free_port, gateway_manifest, wait_for, write_manifests
from e2e.test_access import ip_rule, policy
from e2e.test_gateway_api import _l4_service
from e2e.test_gateway_tls_terminate import _exchange
from e2e.test_tls import client_context, https_get, refused
from kxds.certs.make import KeyPair, make_ca, make_leaf, tls_secret_yaml

pytestmark = pytest.mark.e2e

def _tls_route(name: str, parent: str, hostnames: str, service: str, port: int = 443) -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{{name: {parent}}}]
  hostnames: {hostnames}
  rules: [{{backendRefs: [{{name: {service}, port: {port}}}]}}]
"""


@pytest.fixture
def tls_echoes(tmp_path: Path) -> Iterator[tuple[KeyPair, dict[str, EchoBackend]]]:
    """TLS echo backends a, b and c, their certificate signed by the returned CA."""
    ca = make_ca("kxds backend CA")
    pair = make_leaf(ca, ["abc.example.com", "*.example.com", "pt.own.test",
                          "non.matching.com", "non.matching.org"])
    (tmp_path / "tls.crt").write_bytes(pair.cert_pem)
    (tmp_path / "tls.key").write_bytes(pair.key_pem)
    started = {name: EchoBackend(name, tmp_path, extra_args=[
        "--tls-cert", str(tmp_path / "tls.crt"), "--tls-key", str(tmp_path / "tls.key")])
        for name in ("a", "b", "c")}
    try:
        yield ca, started
    finally:
        for e in started.values():
            e.stop()


def _backend_from(port: int, sni: str, ca: KeyPair, source_ip: str) -> str | None:
    """The echo backend answering a GET over TLS from ``source_ip``; None when the
    connection is refused or closed."""
    ctx = client_context(ca)
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5,
                                      source_address=(source_ip, 0)) as raw, \
                ctx.wrap_socket(raw, server_hostname=sni) as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
            answer = tls.recv(4096).decode("latin-1").lower()
    except (ssl.SSLError, ConnectionError):
        return None
    for line in answer.split("\r\n"):
        if line.startswith("x-echo-backend:"):
            return line.split(":", 1)[1].strip()
    return None


def test_passthrough_and_terminate_on_a_port_of_their_own_through_envoy(
        manifests_dir: Path, tmp_path: Path, tls_echoes: tuple[KeyPair, dict[str, EchoBackend]],
        kxds_envoy: Callable[..., Gateway]) -> None:
    backend_ca, echoes = tls_echoes
    gateway_ca = make_ca("kxds gateway CA")
    tcp = EchoBackend("tcpecho", tmp_path, kind="tcp")
    web = EchoBackend("web", tmp_path)
    try:
        own = free_port()
        write_manifests(manifests_dir, "backends.yaml", "---".join([
            _l4_service("tlsweb", echoes["a"], 443), _l4_service("tcpecho", tcp, 7000),
            _l4_service("web", web, 80),
            policy("guard", "tlsweb", f"[{ip_rule('127.0.0.2/32')}]")]))
        write_manifests(manifests_dir, "routes.yaml", "---\n".join([gateway_manifest(
            f"{{name: pt, port: {own}, protocol: TLS, hostname: pt.own.test, "
            "tls: {mode: Passthrough}}",
            f"{{name: term, port: {own}, protocol: TLS, hostname: term.own.test, "
            "tls: {mode: Terminate, certificateRefs: [{name: term-cert}]}}",
            f"{{name: web, port: {own}, protocol: HTTPS, hostname: web.own.test, "
            "tls: {certificateRefs: [{name: term-cert}]}}"), """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: web}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
""",
            _tls_route("pt", "gw", "[pt.own.test]", "tlsweb"),
            _tls_route("term", "gw", "[term.own.test]", "tcpecho", 7000),
            tls_secret_yaml("default", "term-cert",
                            make_leaf(gateway_ca, ["term.own.test", "web.own.test"]))]))
        gw = kxds_envoy(manifests_dir, wait=False)
        assert gw.envoy is not None
        gw.envoy.wait_listening(own)
        wait_for(lambda: _backend_from(own, "pt.own.test", backend_ca, "127.0.0.2") == "a",
                 what=f"the passthrough Route on port {own}")
        # Passthrough: the client verified the backend's own certificate (its CA, not
        # the gateway's) and got the backend's answer over that TLS.
        # Terminate, same port: Envoy's certificate, the plain bytes to the TCP backend.
        names, answer = _exchange(own, "term.own.test", gateway_ca)
        assert names == ["term.own.test", "web.own.test"]  # the listeners' certificate
        assert answer.startswith(b"tcpecho ")
        # An HTTPS listener on the same port: its own SNI name, its HTTPRoute.
        status, headers = https_get(own, "web.own.test", gateway_ca)
        assert (status, headers.get("x-echo-backend")) == (200, "web")
        # The passthrough backend's NetworkPolicy admits 127.0.0.2 only, on this port too.
        assert _backend_from(own, "pt.own.test", backend_ca, "127.0.0.3") is None
        assert refused(own, "other.own.test", gateway_ca)
        # Nothing of these listeners on the edge TLS port.
        assert refused(gw.https_port, "pt.own.test", backend_ca)
        assert refused(gw.https_port, "term.own.test", gateway_ca)
    finally:
        tcp.stop()
        web.stop()


def test_tls_route_hostname_intersection_isolated_per_gateway_port_through_envoy(
        manifests_dir: Path, tls_echoes: tuple[KeyPair, dict[str, EchoBackend]],
        kxds_envoy: Callable[..., Gateway]) -> None:
    ca, echoes = tls_echoes
    exact, wide, empty = free_port(), free_port(), free_port()

    def listener(port: int, hostname: str | None) -> str:
        host = f", hostname: '{hostname}'" if hostname else ""
        return f"{{name: l, port: {port}, protocol: TLS{host}, tls: {{mode: Passthrough}}}}"

    write_manifests(manifests_dir, "backends.yaml", "---".join(
        _l4_service(name, e, 443) for name, e in sorted(echoes.items())))
    write_manifests(manifests_dir, "routes.yaml", "---".join([
        gateway_manifest(listener(exact, "abc.example.com"), name="exact"),
        gateway_manifest(listener(wide, "*.example.com"), name="wide", gateway_class=False),
        gateway_manifest(listener(empty, None), name="empty", gateway_class=False),
        _tls_route("exact-wide", "exact", "['*.example.com']", "a"),
        _tls_route("wide-exact", "wide", "[abc.example.com]", "b"),
        _tls_route("wide-less", "wide", "['*.com']", "c"),
        _tls_route("empty-exact", "empty", "[abc.example.com]", "c"),
        _tls_route("empty-less", "empty", "['*.com']", "b")]))
    gw = kxds_envoy(manifests_dir, wait=False)
    assert gw.envoy is not None
    for port in (exact, wide, empty):
        gw.envoy.wait_listening(port)

    def backend(port: int, sni: str) -> str | None:
        if refused(port, sni, ca):
            return None
        return https_get(port, sni, ca)[1].get("x-echo-backend")

    wait_for(lambda: backend(empty, "other.example.com") == "b", what="the Routes of 'empty'")
    # One name, three Gateways: each port serves its own Gateway's Route.
    assert [backend(p, "abc.example.com") for p in (exact, wide, empty)] == ["a", "b", "c"]
    # The intersection of the listener's and the Route's hostnames, no more.
    assert backend(exact, "other.example.com") is None
    assert backend(wide, "other.example.com") == "c"
    assert backend(empty, "other.example.com") == "b"
    # A name a Gateway does not serve is refused there, though another port serves it.
    assert backend(exact, "non.matching.com") is None
    assert backend(wide, "non.matching.com") is None
    assert backend(empty, "non.matching.com") == "b"
    assert backend(empty, "non.matching.org") is None
    # Every Route is accepted and counted on its Gateway's listener.
    _, page = gw.kxds.get("/debug/gateway-api")
    for name, count in (("exact", 1), ("wide", 2), ("empty", 2)):
        assert f"Gateway default/{name}: listener l (attachedRoutes {count}): " \
            "Programmed=True" in page, page
