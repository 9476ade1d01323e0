"""TLS through the real Envoy: SNI certificates over SDS, redirects, passthrough, rotation.

Certificates are made at test time by one test CA; clients are Python's
``ssl`` with ``server_hostname`` (the SNI) and trust only that CA, and read
the certificate Envoy served to tell which one was picked.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from e2e.harness import EchoBackend, Gateway, Process, ProcessExited, wait_for, write_manifests
from kxds.certs.make import KeyPair, make_ca, make_leaf, tls_secret_yaml

pytestmark = pytest.mark.e2e

BAD_HOSTS = ("missing.test", "opaque.test", "malformed.test", "mismatch.test",
             "expired.test", "uncovered.test")


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    return make_ca("kxds e2e CA")


@pytest.fixture(scope="module")
def certs(ca: KeyPair) -> dict[str, KeyPair]:
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    return {
        "a": make_leaf(ca, ["a.test"]),
        "a-rotated": make_leaf(ca, ["a.test"]),
        "b": make_leaf(ca, ["b.test"]),
        "wild": make_leaf(ca, ["*.wild.test"]),
        "fallback": make_leaf(ca, ["fallback.invalid"]),
        # The TLS backend: reached by passthrough (SNI pt.test) and by Envoy's
        # upstream TLS (SNI = the Service's DNS name).
        "tlsweb": make_leaf(ca, ["pt.test", "tlsweb.default.svc"]),
        "expired": make_leaf(ca, ["expired.test"], not_before=long_ago, days=30),
        "other": make_leaf(ca, ["other.test"]),
        "grpc": make_leaf(ca, ["grpc.test"]),
        # The gRPC backend, reached over TLS with SNI = the Service's DNS name.
        "grpcs": make_leaf(ca, ["grpcs.default.svc"]),
    }


# --- manifests -------------------------------------------------------------


def backend(name: str, echo: EchoBackend | GrpcsBackend, port_name: str = "http",
            app_protocol: str | None = None) -> str:
    extra = f", appProtocol: {app_protocol}" if app_protocol else ""
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: {port_name}, port: 443, targetPort: 8443{extra}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: {port_name}, port: {echo.port}}}]
endpoints: [{{addresses: ["{echo.host}"]}}]
"""


def ingress(name: str, host: str, service: str, secret: str | None = None,
            annotations: dict[str, str] | None = None) -> str:
    """An Ingress routing ``host`` to ``service``:443, with TLS when ``secret`` is given."""
    spec: dict[str, object] = {"ingressClassName": "kxds", "rules": [{"host": host, "http": {
        "paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {
            "name": service, "port": {"number": 443}}}}]}}]}
    if secret is not None:
        spec["tls"] = [{"hosts": [host], "secretName": secret}]
    return json.dumps({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                       "metadata": {"name": name, "namespace": "default",
                                    "annotations": annotations or {}}, "spec": spec})


def secret(name: str, pair: KeyPair, type_: str = "kubernetes.io/tls") -> str:
    return tls_secret_yaml("default", name, pair).replace("kubernetes.io/tls", type_)


def manifests(certs: dict[str, KeyPair], ca: KeyPair, web: EchoBackend,
              tls_backend: EchoBackend, grpcs: GrpcsBackend) -> dict[str, str]:
    """File name -> text: good hosts, one host per kind of bad certificate, passthrough."""
    malformed = KeyPair(cert_pem=b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                        key_pem=certs["a"].key_pem)
    ca_secret = json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "up-ca", "namespace": "default"}, "stringData": {"ca.crt": ca.cert_pem.decode()}})
    docs = [
        backend("web", web), backend("tlsweb", tls_backend, "https"),
        ingress("a", "a.test", "web", "a-cert"), secret("a-cert", certs["a"]),
        ingress("b", "b.test", "web", "b-cert"), secret("b-cert", certs["b"]),
        ingress("wild", "x.wild.test", "web", "wild-cert"), secret("wild-cert", certs["wild"]),
        ingress("plain", "plain.test", "web"),
        ingress("missing", "missing.test", "web", "nope"),
        ingress("opaque", "opaque.test", "web", "opaque"),
        secret("opaque", certs["other"], "Opaque"),
        ingress("malformed", "malformed.test", "web", "malformed"),
        secret("malformed", malformed),
        ingress("mismatch", "mismatch.test", "web", "mismatch"),
        secret("mismatch", KeyPair(cert_pem=certs["a"].cert_pem, key_pem=certs["b"].key_pem)),
        ingress("expired", "expired.test", "web", "expired"), secret("expired", certs["expired"]),
        ingress("uncovered", "uncovered.test", "web", "other"), secret("other", certs["other"]),
        ingress("pt", "pt.test", "tlsweb",
                annotations={"nginx.ingress.kubernetes.io/ssl-passthrough": "true"}),
        ingress("up", "up.test", "tlsweb", annotations={
            "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
            "kxds.io/backend-ca-secret": "up-ca"}),
        ingress("up-wrong-sni", "up-wrong.test", "tlsweb", annotations={
            "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
            "kxds.io/backend-sni": "someone-else.internal",
            "kxds.io/backend-ca-secret": "up-ca"}),
        backend("grpcs", grpcs, "grpc"),
        # appProtocol https on the Service port alone asks for TLS to the backend.
        backend("apptls", tls_backend, "web", app_protocol="https"),
        ingress("apptls", "apptls.test", "apptls"),
        ingress("grpc", "grpc.test", "grpcs", "grpc-cert", annotations={
            "nginx.ingress.kubernetes.io/backend-protocol": "GRPCS",
            "kxds.io/backend-ca-secret": "up-ca"}), secret("grpc-cert", certs["grpc"]),
        ca_secret,
    ]
    return {"all.yaml": "\n---\n".join(docs)}


# --- clients ---------------------------------------------------------------


def client_context(ca: KeyPair, **kwargs: object) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    for k, v in kwargs.items():
        setattr(ctx, k, v)
    return ctx


def handshake(port: int, sni: str | None, ca: KeyPair,
              **kwargs: object) -> tuple[x509.Certificate, str | None]:
    """Connect, handshake with ``sni``; (the server's certificate, the ALPN protocol)."""
    ctx = client_context(ca, **kwargs)
    if sni is None:
        ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=sni) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der), tls.selected_alpn_protocol()


def names_of(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n) for n in san.get_values_for_type(x509.DNSName)]


def https_get(port: int, host: str, ca: KeyPair, path: str = "/") -> tuple[int, dict[str, str]]:
    """GET over TLS with SNI ``host``, speaking HTTP/1.1 (ALPN): (status, headers)."""
    ctx = client_context(ca)
    ctx.set_alpn_protocols(["http/1.1"])
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
    try:
        # HTTPSConnection would send the connect address as SNI; wrap by hand.
        conn.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                                    server_hostname=host)
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def refused(port: int, sni: str | None, ca: KeyPair) -> bool:
    """Whether Envoy refuses the TLS handshake with ``sni`` (it has no chain for it).

    The client accepts any certificate here, so a chain wrongly serving some
    certificate (expired, for another host) completes the handshake and counts
    as served, not refused.
    """
    try:
        handshake(port, sni, ca, check_hostname=False, verify_mode=ssl.CERT_NONE)
    except (ssl.SSLError, ConnectionError):
        return True
    return False


GRPC_SERVER = """
import sys
from concurrent import futures

import grpc

def echo(request, context):
    return b"grpcs:" + request

cert, key = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
    "kxds.test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),))
port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
server.start()
print(f"listening port={port}", flush=True)
server.wait_for_termination()
"""


class GrpcsBackend(Process):
    """A gRPC server speaking only TLS (HTTP/2, ALPN h2): ``/kxds.test.Echo/Echo``
    answers ``b"grpcs:" + request``."""

    def __init__(self, tmp: Path, pair: KeyPair, timeout: float = 20.0) -> None:
        (tmp / "grpcs.crt").write_bytes(pair.cert_pem)
        (tmp / "grpcs.key").write_bytes(pair.key_pem)
        super().__init__("grpcs backend", [sys.executable, "-c", GRPC_SERVER,
                                           str(tmp / "grpcs.crt"), str(tmp / "grpcs.key")],
                         tmp / "grpcs.log")
        self.host = "127.0.0.1"

        def port() -> int | None:
            if not self.alive():
                raise ProcessExited(f"{self.name} exited:\n{self.log_tail()}")
            found = re.search(r"listening port=(\d+)", self.log_path.read_text(errors="replace"))
            return int(found.group(1)) if found else None
        try:
            self.port = wait_for(port, timeout, what="the gRPC backend to listen")
        except BaseException:
            self.stop()
            raise


def grpc_echo(port: int, host: str, ca: KeyPair, message: bytes) -> bytes:
    """One unary gRPC call over TLS (SNI and authority ``host``) to the gateway."""
    options = [("grpc.ssl_target_name_override", host), ("grpc.default_authority", host)]
    creds = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem)
    with grpc.secure_channel(f"127.0.0.1:{port}", creds, options=options) as channel:
        call = channel.unary_unary("/kxds.test.Echo/Echo")
        reply = call(message, timeout=5)
    assert isinstance(reply, bytes)
    return reply


def curl_http2(port: int, host: str, ca_file: Path, path: str) -> tuple[str, int, dict[str, str]]:
    """GET with curl over TLS offering only HTTP/2: (HTTP version, status, JSON body)."""
    curl = shutil.which("curl")
    assert curl is not None
    done = subprocess.run(
        [curl, "-sS", "--http2", "--max-time", "5", "--cacert", str(ca_file),
         "--resolve", f"{host}:{port}:127.0.0.1", "-w", "\n%{http_version} %{http_code}",
         f"https://{host}:{port}{path}"],
        capture_output=True, text=True, timeout=15, check=False)
    assert done.returncode == 0, done.stderr
    body, _, last = done.stdout.rpartition("\n")
    version, code = last.split()
    return version, int(code), json.loads(body)


def curl_has_http2() -> bool:
    curl = shutil.which("curl")
    if curl is None:
        return False
    features = subprocess.run([curl, "-V"], capture_output=True, text=True, timeout=10).stdout
    return "HTTP2" in features


# --- fixtures --------------------------------------------------------------


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory,
             certs: dict[str, KeyPair]) -> Iterator[dict[str, EchoBackend]]:
    """An HTTP echo backend, and one terminating TLS itself (passthrough and upstream TLS)."""
    tmp = tmp_path_factory.mktemp("tls-backends")
    (tmp / "tls.crt").write_bytes(certs["tlsweb"].cert_pem)
    (tmp / "tls.key").write_bytes(certs["tlsweb"].key_pem)
    started: dict[str, EchoBackend] = {}
    try:
        started["web"] = EchoBackend("web", tmp)
        started["tlsweb"] = EchoBackend("tlsweb", tmp, extra_args=[
            "--tls-cert", str(tmp / "tls.crt"), "--tls-key", str(tmp / "tls.key")])
        yield started
    finally:
        for b in started.values():
            b.stop()


@pytest.fixture(scope="module")
def grpcs_backend(tmp_path_factory: pytest.TempPathFactory,
                  certs: dict[str, KeyPair]) -> Iterator[GrpcsBackend]:
    server = GrpcsBackend(tmp_path_factory.mktemp("grpcs"), certs["grpcs"])
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["sotw", "delta"])
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            certs: dict[str, KeyPair], ca: KeyPair, backends: dict[str, EchoBackend],
            grpcs_backend: GrpcsBackend) -> Iterator[Gateway]:
    """kxds and an Envoy speaking state-of-the-world or delta xDS (secrets both ways).

    Envoy asks for secrets in steps (the backend CA with the clusters, then the
    certificates with the listener), so the SDS subscription grows on a live stream.
    """
    tmp = tmp_path_factory.mktemp(f"tls-{request.param}")
    directory = tmp / "manifests"
    for name, text in manifests(certs, ca, backends["web"], backends["tlsweb"],
                                grpcs_backend).items():
        write_manifests(directory, name, text)
    gw = Gateway(tmp, directory, delta=request.param == "delta")
    try:
        assert gw.envoy is not None
        gw.envoy.wait_listening(gw.https_port)
        wait_for(lambda: https_get(gw.https_port, "a.test", ca)[0] == 200,
                 what="a.test over HTTPS")
        yield gw
    finally:
        gw.stop()


# --- tests -----------------------------------------------------------------


@pytest.mark.parametrize(("sni", "served"), [
    ("a.test", "a.test"), ("b.test", "b.test"), ("x.wild.test", "*.wild.test"),
])
def test_sni_picks_the_certificate(gateway: Gateway, ca: KeyPair, sni: str, served: str) -> None:
    cert, alpn = handshake(gateway.https_port, sni, ca)
    assert names_of(cert) == [served]
    assert alpn == "h2"
    status, headers = https_get(gateway.https_port, sni, ca)
    assert (status, headers.get("x-echo-backend")) == (200, "web")


@pytest.mark.skipif(not curl_has_http2(), reason="no curl with HTTP/2 support")
def test_http2_request_over_tls(gateway: Gateway, ca: KeyPair, tmp_path: Path) -> None:
    """A real HTTP/2 exchange (curl, ALPN h2) through the TLS listener to the backend."""
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    version, status, body = curl_http2(gateway.https_port, "a.test", ca_file, "/h2?x=1")
    assert (version, status) == ("2", 200)
    assert (body["backend"], body["path"], body["host"]) == (
        "web", "/h2?x=1", f"a.test:{gateway.https_port}")


def test_service_app_protocol_https_speaks_tls_to_the_backend(gateway: Gateway) -> None:
    # The backend accepts only TLS: an answer from it means Envoy spoke TLS.
    assert gateway.backend("/", host="apptls.test") == (200, "tlsweb")
    assert gateway.backend("/", host="plain.test") == (200, "web")


def test_grpcs_to_a_tls_backend(gateway: Gateway, ca: KeyPair) -> None:
    """gRPC over TLS in, and over TLS again (HTTP/2, SNI, CA-verified) to a gRPC
    server that accepts nothing else (backend-protocol GRPCS)."""
    assert grpc_echo(gateway.https_port, "grpc.test", ca, b"hello") == b"grpcs:hello"


def test_no_sni_or_unknown_sni_is_refused_without_default(gateway: Gateway,
                                                           ca: KeyPair) -> None:
    assert refused(gateway.https_port, None, ca)
    assert refused(gateway.https_port, "unknown.test", ca)
    assert refused(gateway.https_port, "plain.test", ca)


def test_http_redirects_tls_hosts_only(gateway: Gateway) -> None:
    status, headers, _ = gateway.get("/some/path?q=1", host="a.test")
    assert status == 301
    assert headers["location"] == f"https://a.test:{gateway.https_port}/some/path?q=1"
    assert gateway.backend("/", host="plain.test") == (200, "web")


@pytest.mark.parametrize("host", BAD_HOSTS)
def test_bad_certificate_is_not_served_in_plaintext(gateway: Gateway, ca: KeyPair,
                                                    host: str) -> None:
    assert refused(gateway.https_port, host, ca)
    status, headers, _ = gateway.get("/", host=host)
    assert status == 301 and headers["location"].startswith(f"https://{host}:")
    # The hosts with good certificates beside it are unaffected.
    assert names_of(handshake(gateway.https_port, "a.test", ca)[0]) == ["a.test"]


def test_bad_certificates_are_reported(gateway: Gateway) -> None:
    text = gateway.kxds.log_path.read_text()
    for name, reason in [("missing", "SecretNotFound"), ("opaque", "InvalidSecret"),
                         ("malformed", "InvalidSecret"), ("mismatch", "InvalidSecret"),
                         ("expired", "InvalidSecret"), ("uncovered", "InvalidSecret")]:
        assert f"event=diagnostic Ingress default/{name}: spec.tls[0]" in text
        line = next(x for x in text.splitlines() if f"Ingress default/{name}: spec.tls" in x)
        assert reason in line and "Secret default/" in line


def test_passthrough_reaches_a_backend_terminating_tls(gateway: Gateway, ca: KeyPair) -> None:
    cert, _ = handshake(gateway.https_port, "pt.test", ca)
    assert names_of(cert) == ["pt.test", "tlsweb.default.svc"]  # the backend's own
    status, headers = https_get(gateway.https_port, "pt.test", ca)
    assert (status, headers.get("x-echo-backend")) == (200, "tlsweb")
    # Plain HTTP for a passthrough host redirects rather than reaching the backend.
    assert gateway.get("/", host="pt.test")[0] == 301


def test_upstream_tls_verifies_the_backend(gateway: Gateway) -> None:
    # SNI tlsweb.default.svc, certificate checked against the CA Secret.
    assert gateway.backend("/", host="up.test") == (200, "tlsweb")
    # The backend's certificate does not name the SNI asked for: refused (503).
    assert gateway.backend("/", host="up-wrong.test")[0] == 503


def test_rotation_keeps_connections_and_serves_the_new_certificate(
        gateway: Gateway, ca: KeyPair, certs: dict[str, KeyPair]) -> None:
    assert gateway.envoy is not None
    old_serial = certs["a"].load()[0].serial_number
    new_serial = certs["a-rotated"].load()[0].serial_number
    ctx = client_context(ca)
    ctx.set_alpn_protocols(["http/1.1"])
    conn = http.client.HTTPSConnection("127.0.0.1", gateway.https_port, timeout=5, context=ctx)
    conn.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", gateway.https_port),
                                                         timeout=5), server_hostname="a.test")
    kept = conn.sock
    listeners_before = gateway.envoy.stat("listener_manager.listener_modified")
    # The Secret is edited where it is defined (a second definition in another
    # file would be a Duplicate, and the first file's would stay in use).
    original = (gateway.manifests / "all.yaml").read_text()
    rotated = original.replace(secret("a-cert", certs["a"]), secret("a-cert", certs["a-rotated"]))
    assert rotated != original
    try:
        conn.request("GET", "/", headers={"Host": "a.test"})
        first = conn.getresponse()
        first.read()
        assert first.status == 200
        write_manifests(gateway.manifests, "all.yaml", rotated)

        def serial() -> int:
            return handshake(gateway.https_port, "a.test", ca)[0].serial_number
        wait_for(lambda: serial() == new_serial, what="the rotated certificate")
        # The connection opened before the rotation still works, on the same socket
        # and TLS session, with the old certificate.
        conn.request("GET", "/after", headers={"Host": "a.test"})
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["path"] == "/after"
        assert conn.sock is kept
        der = kept.getpeercert(binary_form=True)
        assert der is not None
        assert x509.load_der_x509_certificate(der).serial_number == old_serial
        # Only the secret changed: Envoy did not replace any listener.
        assert gateway.envoy.stat("listener_manager.listener_modified") == listeners_before
    finally:
        conn.close()
        write_manifests(gateway.manifests, "all.yaml", original)


def test_fixing_a_missing_secret_serves_the_host(gateway: Gateway, ca: KeyPair) -> None:
    port = gateway.https_port
    fixed = make_leaf(ca, ["missing.test"])
    write_manifests(gateway.manifests, "fix.yaml", secret("nope", fixed))
    try:
        wait_for(lambda: not refused(port, "missing.test", ca), what="missing.test served")
        assert names_of(handshake(port, "missing.test", ca)[0]) == ["missing.test"]
        assert https_get(port, "missing.test", ca)[0] == 200
    finally:
        write_manifests(gateway.manifests, "fix.yaml", "")
    wait_for(lambda: refused(port, "missing.test", ca), what="missing.test refused again")


@pytest.fixture(scope="module")
def default_gateway(tmp_path_factory: pytest.TempPathFactory, certs: dict[str, KeyPair],
                    ca: KeyPair, backends: dict[str, EchoBackend]) -> Iterator[Gateway]:
    """A gateway with --default-certificate and --min-tls-version 1.3."""
    tmp = tmp_path_factory.mktemp("tls-default")
    directory = tmp / "manifests"
    write_manifests(directory, "all.yaml", "\n---\n".join([
        backend("web", backends["web"]),
        ingress("a", "a.test", "web", "a-cert"), secret("a-cert", certs["a"]),
        secret("fallback", certs["fallback"])]))
    gw = Gateway(tmp, directory, ["--default-certificate", "default/fallback",
                                  "--min-tls-version", "1.3"])
    try:
        assert gw.envoy is not None
        gw.envoy.wait_listening(gw.https_port)
        yield gw
    finally:
        gw.stop()


def test_default_certificate_for_clients_without_sni(default_gateway: Gateway,
                                                     ca: KeyPair) -> None:
    port = default_gateway.https_port
    assert names_of(wait_for(lambda: handshake(port, None, ca)[0],
                             what="a handshake without SNI")) == ["fallback.invalid"]
    assert names_of(handshake(port, "unknown.test", ca, check_hostname=False)[0]) == [
        "fallback.invalid"]
    assert names_of(handshake(port, "a.test", ca)[0]) == ["a.test"]


def test_min_tls_version(default_gateway: Gateway, ca: KeyPair) -> None:
    port = default_gateway.https_port
    wait_for(lambda: handshake(port, "a.test", ca), what="a TLS 1.3 handshake")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        handshake(port, "a.test", ca, maximum_version=ssl.TLSVersion.TLSv1_2)
