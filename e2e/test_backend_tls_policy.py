"""BackendTLSPolicy through a real Envoy to a real HTTPS backend.

Restates the intent of the upstream conformance test ``BackendTLSPolicy``: a
route whose backend Service a policy targets reaches it over TLS, sending
``validation.hostname`` as SNI and accepting only a certificate that chains to
the policy's CA and names that host; a policy whose host or CA the backend's
certificate does not meet makes the route fail rather than connect unverified.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from e2e.harness import (
    EchoBackend,
    Gateway,
    Process,
    gateway_manifest,
    service_manifest,
    wait_for,
    write_manifests,
)
from kxds.certs.make import KeyPair, make_ca, make_leaf

pytestmark = pytest.mark.e2e


def _service(name: str, echo: EchoBackend) -> str:
    return service_manifest(name, echo.host, echo.port, port=443, port_name="https")


def _ca_secret(name: str, ca: KeyPair) -> str:
    pem = "".join(f"    {line}\n" for line in ca.cert_pem.decode().splitlines())
    return (f"\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\n"
            f"type: Opaque\nstringData:\n  ca.crt: |\n{pem}")


def _ca_config_map(name: str, ca: KeyPair) -> str:
    pem = "".join(f"    {line}\n" for line in ca.cert_pem.decode().splitlines())
    return (f"\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default}}\n"
            f"data:\n  ca.crt: |\n{pem}")


def _policy(name: str, hostname: str, ca_kind: str, ca_name: str) -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  targetRefs: [{{group: "", kind: Service, name: {name}}}]
  validation:
    hostname: {hostname}
    caCertificateRefs: [{{group: "", kind: {ca_kind}, name: {ca_name}}}]
"""


ROUTES = gateway_manifest() + """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backends, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [btls.test]
  rules:
  - matches: [{path: {value: /good}}]
    backendRefs: [{name: good, port: 443}]
  - matches: [{path: {value: /wrong-host}}]
    backendRefs: [{name: wrong-host, port: 443}]
  - matches: [{path: {value: /wrong-ca}}]
    backendRefs: [{name: wrong-ca, port: 443}]
  - matches: [{path: {value: /configmap}}]
    backendRefs: [{name: configmap, port: 443}]
"""


def test_backend_tls_policy_sni_and_ca_check_through_envoy(
        manifests_dir: Path, tmp_path: Path, kxds_envoy: Callable[..., Gateway]) -> None:
    ca, other_ca = make_ca("kxds backend CA"), make_ca("kxds other CA")
    pair = make_leaf(ca, ["abc.example.com"])
    (tmp_path / "tls.crt").write_bytes(pair.cert_pem)
    (tmp_path / "tls.key").write_bytes(pair.key_pem)
    echo = EchoBackend("tlsweb", tmp_path, extra_args=[
        "--tls-cert", str(tmp_path / "tls.crt"), "--tls-key", str(tmp_path / "tls.key")])
    try:
        names = ("good", "wrong-host", "wrong-ca", "configmap")
        write_manifests(manifests_dir, "backends.yaml", "---".join(
            [*(_service(n, echo) for n in names),
             _ca_secret("backend-ca", ca), _ca_secret("other-ca", other_ca),
             _ca_config_map("backend-ca-bundle", ca)]))
        write_manifests(manifests_dir, "routes.yaml", "---".join([
            ROUTES,
            _policy("good", "abc.example.com", "Secret", "backend-ca"),
            _policy("wrong-host", "other.example.com", "Secret", "backend-ca"),
            _policy("wrong-ca", "abc.example.com", "Secret", "other-ca"),
            _policy("configmap", "abc.example.com", "ConfigMap", "backend-ca-bundle")]))
        gw = kxds_envoy(manifests_dir)
        gw.wait_backend("/good", "btls.test", (200, "tlsweb"))
        status, _, body = gw.get("/good", host="btls.test")
        assert status == 200
        assert json.loads(body)["sni"] == "abc.example.com"  # validation.hostname as SNI
        # The backend's certificate does not name the policy's host / chain to its CA.
        assert gw.backend("/wrong-host", host="btls.test") == (503, None)
        assert gw.backend("/wrong-ca", host="btls.test") == (503, None)
        # The CA bundle in a ConfigMap (as the upstream conformance test has it).
        assert gw.backend("/configmap", host="btls.test") == (200, "tlsweb")
    finally:
        echo.stop()


SAN_ROUTES = gateway_manifest() + """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: sans, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [btls.test]
  rules:
""" + "".join(f"""  - matches: [{{path: {{type: Exact, value: /{n}}}}}]
    backendRefs: [{{name: {n}, port: 443}}]
""" for n in ("san-dns", "san-dns-mismatch", "san-uri", "san-uri-mismatch", "multiple-sans",
              "multiple-mismatch-sans", "sni-not-checked"))


def _san_policy(name: str, hostname: str, sans: list[str]) -> str:
    entries = "".join(
        f"\n    - {{type: Hostname, hostname: {s}}}" if "://" not in s else
        f'\n    - {{type: URI, uri: "{s}"}}' for s in sans)
    return _policy(name, hostname, "Secret", "backend-ca") + f"    subjectAltNames:{entries}\n"


def test_backend_tls_policy_subject_alt_names_through_envoy(
        manifests_dir: Path, tmp_path: Path, kxds_envoy: Callable[..., Gateway]) -> None:
    """BackendTLSPolicySANValidation restated: with ``subjectAltNames`` the backend's
    certificate must carry one of them (a Hostname as a DNS SAN, a URI as a URI SAN)
    instead of ``validation.hostname``, which stays the SNI sent."""
    ca = make_ca("kxds backend CA")
    uri = "spiffe://abc.example.com/test-identity"
    pair = make_leaf(ca, ["abc.example.com"], uris=(uri,))
    (tmp_path / "tls.crt").write_bytes(pair.cert_pem)
    (tmp_path / "tls.key").write_bytes(pair.key_pem)
    echo = EchoBackend("tlsweb", tmp_path, extra_args=[
        "--tls-cert", str(tmp_path / "tls.crt"), "--tls-key", str(tmp_path / "tls.key")])
    other = "spiffe://def.example.com/test-identity"
    policies = {
        "san-dns": ("abc.example.com", ["abc.example.com"]),
        "san-dns-mismatch": ("abc.example.com", ["dce.example.com"]),
        "san-uri": ("abc.example.com", [uri]),
        "san-uri-mismatch": ("abc.example.com", [other]),
        "multiple-sans": ("abc.example.com", [uri, "abc.example.com"]),
        "multiple-mismatch-sans": ("abc.example.com", [other, "def.example.com"]),
        # The certificate does not name the hostname: only the SAN is checked.
        "sni-not-checked": ("other.example.com", ["abc.example.com"]),
    }
    try:
        write_manifests(manifests_dir, "backends.yaml", "---".join(
            [*(_service(n, echo) for n in policies), _ca_secret("backend-ca", ca)]))
        write_manifests(manifests_dir, "routes.yaml", "---".join([
            SAN_ROUTES, *(_san_policy(n, h, s) for n, (h, s) in policies.items())]))
        gw = kxds_envoy(manifests_dir)
        gw.wait_backend("/san-dns", "btls.test", (200, "tlsweb"))
        for name in ("san-uri", "multiple-sans", "sni-not-checked"):
            assert gw.backend(f"/{name}", host="btls.test") == (200, "tlsweb"), name
        status, _, body = gw.get("/sni-not-checked", host="btls.test")
        assert status == 200 and json.loads(body)["sni"] == "other.example.com"
        for name in ("san-dns-mismatch", "san-uri-mismatch", "multiple-mismatch-sans"):
            assert gw.backend(f"/{name}", host="btls.test") == (503, None), name
    finally:
        echo.stop()


GRPC_ROUTES = gateway_manifest() + """---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: greeter, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [grpc.test]
  rules:
  - matches: [{method: {service: good.Greeter}}]
    backendRefs: [{name: good, port: 443}]
  - matches: [{method: {service: wrong.Greeter}}]
    backendRefs: [{name: wrong-host, port: 443}]
"""


def _grpc_call(gw: Gateway, method: str) -> tuple[str, Any]:
    """One unary call through Envoy's HTTP listener: ("OK", the answer) or (the
    status code's name, None)."""
    with grpc.insecure_channel(f"127.0.0.1:{gw.http_port}",
                               options=[("grpc.default_authority", "grpc.test")]) as ch:
        try:
            answer = ch.unary_unary(method)(b"{}", timeout=5)
        except grpc.RpcError as e:
            return e.code().name, None  # type: ignore[attr-defined]
    return "OK", json.loads(answer)


def test_backend_tls_policy_for_a_grpc_route_through_envoy(
        manifests_dir: Path, tmp_path: Path, kxds_envoy: Callable[..., Gateway]) -> None:
    """BackendTLSPolicyGRPCRoute restated: a GRPCRoute's backend that a policy targets
    is reached over TLS (HTTP/2, ALPN h2) and verified; a policy whose hostname the
    backend's certificate does not carry fails the calls."""
    ca = make_ca("kxds backend CA")
    pair = make_leaf(ca, ["abc.example.com"])
    (tmp_path / "tls.crt").write_bytes(pair.cert_pem)
    (tmp_path / "tls.key").write_bytes(pair.key_pem)
    script = str(Path(__file__).parent / "grpc_backend.py")
    backend = Process("grpc tls", [sys.executable, script, "grpc-tls", str(tmp_path / "tls.crt"),
                                   str(tmp_path / "tls.key")], tmp_path / "grpc-tls.log")
    try:
        port = int(wait_for(lambda: _first_line(backend), 15.0, what="grpc backend"))
        write_manifests(manifests_dir, "backends.yaml", "---".join(
            [*(service_manifest(n, "127.0.0.1", port, port=443, port_name="grpc")
               for n in ("good", "wrong-host")), _ca_secret("backend-ca", ca)]))
        write_manifests(manifests_dir, "routes.yaml", "---".join([
            GRPC_ROUTES, _policy("good", "abc.example.com", "Secret", "backend-ca"),
            _policy("wrong-host", "other.example.com", "Secret", "backend-ca")]))
        gw = kxds_envoy(manifests_dir)
        wait_for(lambda: _grpc_call(gw, "/good.Greeter/SayHello")[0] == "OK", 30.0,
                 what="a call over TLS")
        status, answer = _grpc_call(gw, "/good.Greeter/SayHello")
        assert status == "OK"
        assert answer["backend"] == "grpc-tls" and answer["method"] == "/good.Greeter/SayHello"
        # The certificate does not name other.example.com: no call gets through.
        assert _grpc_call(gw, "/wrong.Greeter/SayHello")[0] == "UNAVAILABLE"
    finally:
        backend.stop()


def _first_line(proc: Process) -> str | None:
    text = proc.log_path.read_text(errors="replace")
    return text.split("\n", 1)[0] if "\n" in text else None
