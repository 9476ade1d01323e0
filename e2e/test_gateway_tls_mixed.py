"""Passthrough and Terminate TLS listeners on one port, through a real Envoy.

Restates the intent of the upstream conformance feature ``TLSRouteModeMixed``:
two TLS listeners with distinct modes on the same port serve side by side. A
client naming the Passthrough listener's host talks TLS with the backend itself
(the backend's own certificate, its answer over that TLS); a client naming the
Terminate listener's host gets the listener's certificate from Envoy, and the
TCP backend behind it receives the decrypted bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from e2e.harness import EchoBackend, Gateway, gateway_manifest, write_manifests
from e2e.test_gateway_api import _l4_service
from e2e.test_gateway_tls_terminate import _exchange
from e2e.test_tls import handshake, https_get, names_of, refused
from kxds.certs.make import make_ca, make_leaf, tls_secret_yaml

pytestmark = pytest.mark.e2e

ROUTES = gateway_manifest(
    "{name: pt, port: 443, protocol: TLS, hostname: pt.mixed.test, tls: {mode: Passthrough}}",
    "{name: term, port: 443, protocol: TLS, hostname: term.mixed.test, "
    "tls: {mode: Terminate, certificateRefs: [{name: term-cert}]}}") + """---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: pt, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: pt}]
  hostnames: [pt.mixed.test]
  rules: [{backendRefs: [{name: tlsweb, port: 443}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: term, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: term}]
  hostnames: [term.mixed.test]
  rules: [{backendRefs: [{name: tcpecho, port: 7000}]}]
"""


def test_passthrough_and_terminate_listeners_share_a_port_through_envoy(
        manifests_dir: Path, tmp_path: Path, kxds_envoy: Callable[..., Gateway]) -> None:
    backend_ca, gateway_ca = make_ca("kxds backend CA"), make_ca("kxds gateway CA")
    pair = make_leaf(backend_ca, ["pt.mixed.test"])
    (tmp_path / "tls.crt").write_bytes(pair.cert_pem)
    (tmp_path / "tls.key").write_bytes(pair.key_pem)
    started = {"tlsweb": EchoBackend("tlsweb", tmp_path, extra_args=[
        "--tls-cert", str(tmp_path / "tls.crt"), "--tls-key", str(tmp_path / "tls.key")]),
        "tcpecho": EchoBackend("tcpecho", tmp_path, kind="tcp")}
    try:
        write_manifests(manifests_dir, "backends.yaml", "---".join([
            _l4_service("tlsweb", started["tlsweb"], 443),
            _l4_service("tcpecho", started["tcpecho"], 7000)]))
        write_manifests(manifests_dir, "routes.yaml", "---\n".join([ROUTES, tls_secret_yaml(
            "default", "term-cert", make_leaf(gateway_ca, ["term.mixed.test"]))]))
        gw = kxds_envoy(manifests_dir, wait=False)
        assert gw.envoy is not None
        gw.envoy.wait_listening(gw.https_port)
        # Passthrough: the backend's own certificate, and its answer over that TLS.
        cert, _ = handshake(gw.https_port, "pt.mixed.test", backend_ca)
        assert names_of(cert) == ["pt.mixed.test"]
        assert https_get(gw.https_port, "pt.mixed.test", backend_ca)[1][
            "x-echo-backend"] == "tlsweb"
        # Terminate, same port: Envoy's certificate, the plain bytes to the TCP backend.
        names, answer = _exchange(gw.https_port, "term.mixed.test", gateway_ca)
        assert names == ["term.mixed.test"]
        assert answer.startswith(b"tcpecho ")
        # Neither mode serves a name no listener has.
        assert refused(gw.https_port, "other.mixed.test", gateway_ca)
    finally:
        for b in started.values():
            b.stop()
