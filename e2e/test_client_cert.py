"""Client certificates (auth-tls-*) through the real Envoy.

One server certificate covers every host; clients hold a certificate from the
client CA the Ingresses name, one from another CA, or none. With TLS 1.3 a
refused client certificate shows as an alert on the first read, after the
client's side of the handshake: :func:`call` counts both as refused.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from e2e.harness import EchoBackend, Gateway, wait_for, write_manifests
from kxds.certs.make import KeyPair, _pem_key, make_ca, make_leaf, sign_leaf, tls_secret_yaml

pytestmark = pytest.mark.e2e

HOSTS = ("on.test", "opt.test", "noca.test", "missing.test", "open.test", "noredirect.test",
         "errpage.test", "opterr.test", "cn.test")
ERROR_PAGE = "https://errors.example/denied?why=cert"
REFUSED = -1


def client_cert(ca: KeyPair, cn: str) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    chain = sign_leaf(ca, key.public_key(), cn, [x509.DNSName(cn)],
                      [ExtendedKeyUsageOID.CLIENT_AUTH], start, start + dt.timedelta(days=1))
    return KeyPair(cert_pem=chain, key_pem=_pem_key(key))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("client-cert-pki")
    server_ca, client_ca, other_ca = make_ca("server CA"), make_ca("client CA"), make_ca("other")
    out: dict[str, object] = {"server_ca": server_ca, "client_ca": client_ca,
                              "server": make_leaf(server_ca, list(HOSTS))}
    for name, ca in (("good", client_ca), ("bad", other_ca), ("other", client_ca)):
        pair = client_cert(ca, f"{name}-client")
        (tmp / f"{name}.crt").write_bytes(pair.cert_pem)
        (tmp / f"{name}.key").write_bytes(pair.key_pem)
        out[name] = (tmp / f"{name}.crt", tmp / f"{name}.key")
    return out


def ingress(name: str, host: str, annotations: dict[str, str]) -> str:
    return json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"ingressClassName": "kxds", "tls": [{"hosts": [host], "secretName": "srv"}],
                 "rules": [{"host": host, "http": {"paths": [{
                     "path": "/", "pathType": "Prefix",
                     "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}})


def manifests(pki: dict[str, object], web: EchoBackend) -> str:
    client_ca = pki["client_ca"]
    server = pki["server"]
    assert isinstance(client_ca, KeyPair) and isinstance(server, KeyPair)
    auth = "nginx.ingress.kubernetes.io/auth-tls-"
    docs = [
        f"""apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{{name: http, port: {web.port}}}]
endpoints: [{{addresses: ["{web.host}"]}}]""",
        tls_secret_yaml("default", "srv", server),
        # The CA in a kubernetes.io/tls Secret (the API source watches those today).
        json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                    "metadata": {"name": "client-ca", "namespace": "default"},
                    "stringData": {"tls.crt": client_ca.cert_pem.decode(),
                                   "tls.key": client_ca.key_pem.decode(),
                                   "ca.crt": client_ca.cert_pem.decode()}}),
        ingress("on", "on.test", {f"{auth}secret": "client-ca",
                                  f"{auth}pass-certificate-to-upstream": "true"}),
        ingress("opt", "opt.test", {f"{auth}secret": "default/client-ca",
                                    f"{auth}verify-client": "optional"}),
        ingress("noca", "noca.test", {f"{auth}secret": "client-ca",
                                      f"{auth}verify-client": "optional_no_ca"}),
        ingress("missing", "missing.test", {f"{auth}secret": "nope"}),
        ingress("open", "open.test", {}),
        ingress("cn", "cn.test", {f"{auth}secret": "client-ca",
                                  f"{auth}verify-client": "optional",
                                  f"{auth}match-cn": "CN=good-client$"}),
        ingress("errpage", "errpage.test", {f"{auth}secret": "client-ca",
                                            f"{auth}error-page": ERROR_PAGE}),
        ingress("opterr", "opterr.test", {f"{auth}secret": "client-ca",
                                          f"{auth}verify-client": "optional",
                                          f"{auth}error-page": ERROR_PAGE}),
        ingress("noredirect", "noredirect.test", {
            f"{auth}secret": "client-ca", "nginx.ingress.kubernetes.io/ssl-redirect": "false"}),
    ]
    return "\n---\n".join(docs)


@pytest.fixture(scope="module", params=["sotw", "delta"])
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            pki: dict[str, object]) -> Iterator[Gateway]:
    """kxds and an Envoy speaking state-of-the-world or delta xDS: the checking chains'
    route tables and CA secrets are asked for as the listener brings them."""
    tmp = tmp_path_factory.mktemp(f"client-cert-{request.param}")
    web = EchoBackend("web", tmp)
    gw: Gateway | None = None
    try:
        write_manifests(tmp / "manifests", "all.yaml", manifests(pki, web))
        gw = Gateway(tmp, tmp / "manifests", delta=request.param == "delta")
        assert gw.envoy is not None
        gw.envoy.wait_listening(gw.https_port)
        ready = gw
        wait_for(lambda: call(ready.https_port, "on.test", pki, "good")[0] == 200,
                 what="on.test with a client certificate")
        yield gw
    finally:
        if gw is not None:
            gw.stop()
        web.stop()


def call(port: int, sni: str, pki: dict[str, object], cert: str | None,
         host: str | None = None, headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, str]]:
    """GET / over TLS with SNI ``sni`` and client certificate ``cert`` (good, bad or None):
    (status, the headers the backend saw), or (REFUSED, {}) when TLS refused it."""
    server_ca = pki["server_ca"]
    assert isinstance(server_ca, KeyPair)
    ctx = ssl.create_default_context(cadata=server_ca.cert_pem.decode())
    ctx.set_alpn_protocols(["http/1.1"])
    if cert is not None:
        files = pki[cert]
        assert isinstance(files, tuple)
        ctx.load_cert_chain(str(files[0]), str(files[1]))
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
    try:
        conn.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                                    server_hostname=sni)
        conn.request("GET", "/", headers={"Host": host or sni, **(headers or {})})
        resp = conn.getresponse()
        body = resp.read()
    except (ssl.SSLError, ConnectionError):
        return REFUSED, {}
    finally:
        conn.close()
    if resp.status == 200:
        return 200, json.loads(body)["headers"]
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}


def test_required_certificate(gateway: Gateway, pki: dict[str, object]) -> None:
    port = gateway.https_port
    assert call(port, "on.test", pki, None)[0] == REFUSED
    assert call(port, "on.test", pki, "bad")[0] == REFUSED
    status, seen = call(port, "on.test", pki, "good")
    assert status == 200
    assert seen["ssl-client-verify"] == "SUCCESS"
    assert seen["ssl-client-verify"] == "SUCCESS"
    assert "CN=good-client" in seen["ssl-client-subject-dn"]
    assert "CN=client CA" in seen["ssl-client-issuer-dn"]


def test_certificate_passed_to_the_backend(gateway: Gateway, pki: dict[str, object]) -> None:
    good = pki["good"]
    assert isinstance(good, tuple)
    leaf = Path(good[0]).read_bytes().split(b"-----END CERTIFICATE-----")[0]
    _, seen = call(gateway.https_port, "on.test", pki, "good",
                   headers={"ssl-client-cert": "forged"})
    # URL-encoded PEM, as nginx's $ssl_client_escaped_cert.
    assert unquote(seen["ssl-client-cert"]).startswith(leaf.decode())


def test_optional_certificate(gateway: Gateway, pki: dict[str, object]) -> None:
    port = gateway.https_port
    status, seen = call(port, "opt.test", pki, None,
                        headers={"ssl-client-cert": "forged", "ssl-client-verify": "SUCCESS",
                                 "x-forwarded-client-cert": "forged"})
    assert status == 200
    # Not asked to pass the certificate, and none was given: nothing forged gets through.
    assert not {"ssl-client-cert", "ssl-client-verify", "x-forwarded-client-cert"} & set(seen)
    assert call(port, "opt.test", pki, "good")[0] == 200
    assert call(port, "opt.test", pki, "bad")[0] == REFUSED
    # optional_no_ca lets a certificate of another CA in.
    assert call(port, "noca.test", pki, "bad")[0] == 200
    assert call(port, "noca.test", pki, None)[0] == 200


def test_other_sni_does_not_bypass(gateway: Gateway, pki: dict[str, object]) -> None:
    # A connection made for open.test (no check) asking for on.test's content.
    assert call(gateway.https_port, "open.test", pki, None, host="on.test")[0] == 421
    # A host without the check: what a client claims about certificates never gets through.
    status, seen = call(gateway.https_port, "open.test", pki, None, headers={
        "ssl-client-cert": "forged", "ssl-client-verify": "SUCCESS",
        "ssl-client-subject-dn": "CN=admin", "x-forwarded-client-cert": "forged"})
    assert status == 200
    assert not {"ssl-client-cert", "ssl-client-verify", "ssl-client-subject-dn",
                "x-forwarded-client-cert"} & set(seen)


def test_missing_ca_refuses_that_host_only(gateway: Gateway, pki: dict[str, object]) -> None:
    port = gateway.https_port
    assert call(port, "missing.test", pki, "good")[0] == REFUSED
    assert call(port, "missing.test", pki, None)[0] == REFUSED
    assert call(port, "open.test", pki, None)[0] == 200
    text = gateway.kxds.log_path.read_text()
    assert ("Ingress default/missing: metadata.annotations"
            "[nginx.ingress.kubernetes.io/auth-tls-secret]: SecretNotFound") in text


def test_plain_http_does_not_bypass(gateway: Gateway, pki: dict[str, object]) -> None:
    status, headers, _ = gateway.get("/x", host="on.test")
    assert status == 301 and headers["location"].startswith("https://on.test:")
    assert gateway.get("/", host="missing.test")[0] == 301
    # ssl-redirect off: plain HTTP cannot carry a certificate, so it is refused.
    assert gateway.get("/", host="noredirect.test")[0] == 403
    assert call(gateway.https_port, "noredirect.test", pki, "good")[0] == 200



def test_error_page(gateway: Gateway, pki: dict[str, object]) -> None:
    """A failed check is redirected to the error page (302) instead of refused."""
    port = gateway.https_port
    for cert in (None, "bad"):
        status, headers = call(port, "errpage.test", pki, cert)
        assert (status, headers.get("location")) == (302, ERROR_PAGE), cert
    status, seen = call(port, "errpage.test", pki, "good")
    assert status == 200 and seen["ssl-client-verify"] == "SUCCESS"
    # optional: no certificate is fine, an invalid one goes to the error page.
    assert call(port, "opterr.test", pki, None)[0] == 200
    assert call(port, "opterr.test", pki, "good")[0] == 200
    status, headers = call(port, "opterr.test", pki, "bad")
    assert (status, headers.get("location")) == (302, ERROR_PAGE)


def test_match_cn(gateway: Gateway, pki: dict[str, object]) -> None:
    """Only a certificate whose subject matches gets through; others are answered 403."""
    port = gateway.https_port
    assert call(port, "cn.test", pki, "good")[0] == 200
    assert call(port, "cn.test", pki, "other")[0] == 403  # same CA, another CN
    assert call(port, "cn.test", pki, None)[0] == 403  # optional, but no subject to match
    assert call(port, "cn.test", pki, "bad")[0] == REFUSED


def test_the_ca_secret_appearing_turns_the_check_on(gateway: Gateway,
                                                    pki: dict[str, object]) -> None:
    """Last (it changes the gateway): once the missing CA Secret exists, its host serves
    clients with a certificate from it, and still refuses the others."""
    client_ca = pki["client_ca"]
    assert isinstance(client_ca, KeyPair)
    write_manifests(gateway.manifests, "nope.yaml", json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "nope", "namespace": "default"},
        "stringData": {"ca.crt": client_ca.cert_pem.decode()}}))
    port = gateway.https_port
    wait_for(lambda: call(port, "missing.test", pki, "good")[0] == 200,
             what="missing.test to serve once its CA exists")
    assert call(port, "missing.test", pki, None)[0] == REFUSED
    assert call(port, "missing.test", pki, "bad")[0] == REFUSED
    assert call(port, "on.test", pki, "good")[0] == 200
