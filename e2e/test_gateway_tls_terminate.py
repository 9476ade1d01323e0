"""A Gateway TLS listener in Terminate mode through a real Envoy.

Restates the intent of the upstream conformance test
``TLSRouteTerminateSimpleSameNamespace``: Envoy completes the handshake with the
listener's certificate for the Route's host name, and the TLSRoute's TCP backend
receives the decrypted bytes and answers through the same TLS connection.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from e2e.harness import EchoBackend, Gateway, gateway_manifest, write_manifests
from e2e.test_gateway_api import _l4_service
from e2e.test_tls import client_context, names_of, refused
from kxds.certs.make import KeyPair, make_ca, make_leaf, tls_secret_yaml

pytestmark = pytest.mark.e2e

ROUTES = gateway_manifest(
    "{name: db, port: 443, protocol: TLS, hostname: db.term.test, "
    "tls: {mode: Terminate, certificateRefs: [{name: db-cert}]}}") + """---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: db, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [db.term.test]
  rules:
  - backendRefs: [{name: tcpecho, port: 7000}]
"""


def _exchange(port: int, sni: str, ca: KeyPair) -> tuple[list[str], bytes]:
    """TLS to the gateway with ``sni`` (verified against ``ca``): (the certificate's
    names, the backend's answer to ``ping``)."""
    ctx = client_context(ca)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=sni) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        tls.sendall(b"ping")
        return names_of(x509.load_der_x509_certificate(der)), tls.recv(200)


def test_tls_listener_in_terminate_mode_through_envoy(
        manifests_dir: Path, tmp_path: Path, kxds_envoy: Callable[..., Gateway]) -> None:
    ca = make_ca("kxds terminate CA")
    echo = EchoBackend("tcpecho", tmp_path, kind="tcp")
    try:
        write_manifests(manifests_dir, "backends.yaml", _l4_service("tcpecho", echo, 7000))
        write_manifests(manifests_dir, "routes.yaml", "---\n".join([
            ROUTES, tls_secret_yaml("default", "db-cert", make_leaf(ca, ["db.term.test"]))]))
        gw = kxds_envoy(manifests_dir, wait=False)
        assert gw.envoy is not None
        gw.envoy.wait_listening(gw.https_port)
        names, answer = _exchange(gw.https_port, "db.term.test", ca)
        assert names == ["db.term.test"]  # the listener's certificate, served by Envoy
        assert answer.startswith(b"tcpecho ")  # the plain bytes reached the TCP backend
        assert refused(gw.https_port, "other.term.test", ca)
    finally:
        echo.stop()
