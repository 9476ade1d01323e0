"""TLS translation: certificate checks, SNI, SDS, redirects, passthrough, backend TLS."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import xds_support as xds_testing

from kxds import ir
from kxds.certs.check import (
    CertError,
    check_key_pair,
    covers,
    inspect_key_pair,
    next_validity_change,
)
from kxds.certs.make import KeyPair, make_ca, make_leaf, tls_secret_yaml
from kxds.diagnostics import Reason
from kxds.envoy.build import build_resources
from kxds.envoy.resource import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from kxds.kube.loader import load_text
from kxds.translators.config import TranslateConfig
from kxds.translators.edge import translate
from kxds.translators.translation import Translation
from kxds.xds.cache import SnapshotCache

NOW = dt.datetime(2030, 6, 1, tzinfo=dt.UTC)
LONG_AGO = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    return make_ca(not_before=LONG_AGO, days=365 * 30)


@pytest.fixture(scope="module")
def certs(ca: KeyPair) -> dict[str, KeyPair]:
    """Serving certificates by name, all valid at NOW except ``expired``."""
    return {
        "a": make_leaf(ca, ["a.example.com"], not_before=LONG_AGO, days=365 * 30),
        "a2": make_leaf(ca, ["a.example.com"], not_before=LONG_AGO, days=365 * 30),
        "b": make_leaf(ca, ["b.example.com"], not_before=LONG_AGO, days=365 * 30),
        "wild": make_leaf(ca, ["*.example.com"], not_before=LONG_AGO, days=365 * 30),
        "expired": make_leaf(ca, ["a.example.com"], not_before=LONG_AGO, days=30),
    }


# --- certificate checks ------------------------------------------------------


def test_key_pair_ok(certs: dict[str, KeyPair]) -> None:
    info = check_key_pair(certs["a"].cert_pem, certs["a"].key_pem, NOW)
    assert info.dns_names == ("a.example.com",)


def test_next_validity_change(ca: KeyPair, certs: dict[str, KeyPair]) -> None:
    """The next instant a certificate starts or ends: when the controller must rebuild."""
    later = make_leaf(ca, ["c.example.com"], not_before=NOW + dt.timedelta(days=2), days=10)
    found = [inspect_key_pair(c.cert_pem, c.key_pem) for c in (certs["a"], certs["expired"], later)]
    bounds = [b for f in found for b in (f.not_before, f.not_after) if b is not None]
    assert next_validity_change(bounds, NOW) == NOW + dt.timedelta(days=2)
    assert next_validity_change(bounds, NOW + dt.timedelta(days=3)) == NOW + dt.timedelta(days=12)
    assert next_validity_change(bounds, NOW + dt.timedelta(days=13)) == LONG_AGO + dt.timedelta(
        days=365 * 30)
    assert inspect_key_pair(b"garbage", b"").not_after is None
    assert next_validity_change(bounds, dt.datetime(2100, 1, 1, tzinfo=dt.UTC)) is None


def test_translation_reports_the_bounds_of_its_certificates(certs: dict[str, KeyPair]) -> None:
    """The edge translation says when its certificate checks expire (the controller's
    recheck instant), without the controller inspecting Secrets itself."""
    t = run(ingress("shop", ["a.example.com"], [(["a.example.com"], "a")]),
            secret("a", certs["a"]))
    leaf = inspect_key_pair(certs["a"].cert_pem, certs["a"].key_pem)
    assert t.bounds == {leaf.not_before, leaf.not_after}



def test_rsa_key_pair(ca: KeyPair) -> None:
    """RSA certificates are checked as well as ECDSA ones (signature round trip)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    ca_cert, ca_key = ca.load()
    keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]
    cert = (x509.CertificateBuilder().subject_name(x509.Name([]))
            .issuer_name(ca_cert.subject).public_key(keys[0].public_key())
            .serial_number(1).not_valid_before(LONG_AGO).not_valid_after(NOW.replace(year=2040))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("rsa.example.com")]), False)
            .sign(ca_key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(k: rsa.RSAPrivateKey) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM,
                               serialization.PrivateFormat.TraditionalOpenSSL,
                               serialization.NoEncryption())
    assert check_key_pair(pem, key_pem(keys[0]), NOW).dns_names == ("rsa.example.com",)
    with pytest.raises(CertError, match="does not match"):
        check_key_pair(pem, key_pem(keys[1]), NOW)
    with pytest.raises(CertError, match="does not match"):  # an ECDSA key for an RSA cert
        check_key_pair(pem, ca.key_pem, NOW)


@pytest.mark.parametrize(("case", "message"), [
    ("mismatch", "does not match"),
    ("expired", "expired"),
    ("future", "not valid before"),
    ("garbage-cert", "not a PEM certificate"),
    ("garbage-key", "not an unencrypted PEM private key"),
])
def test_key_pair_rejected(certs: dict[str, KeyPair], case: str, message: str) -> None:
    crt, key, now = certs["a"].cert_pem, certs["a"].key_pem, NOW
    if case == "mismatch":
        key = certs["b"].key_pem
    elif case == "expired":
        crt, key = certs["expired"].cert_pem, certs["expired"].key_pem
    elif case == "future":
        now = dt.datetime(2019, 1, 1, tzinfo=dt.UTC)
    elif case == "garbage-cert":
        crt = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"
    else:
        key = b"hello"
    with pytest.raises(CertError, match=message):
        check_key_pair(crt, key, now)


@pytest.mark.parametrize(("names", "host", "expected"), [
    (("a.example.com",), "a.example.com", True),
    (("a.example.com",), "A.Example.com", True),
    (("*.example.com",), "a.example.com", True),
    (("*.example.com",), "example.com", False),
    (("*.example.com",), "x.a.example.com", False),
    (("*.example.com",), "*.example.com", True),
    (("a.example.com",), "*.example.com", False),
    (("a.example.com",), "b.example.com", False),
], ids=lambda v: str(v))
def test_covers(names: tuple[str, ...], host: str, expected: bool) -> None:
    assert covers(names, host) is expected


# --- translation -------------------------------------------------------------

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: https, port: 443, targetPort: 8443}
  - {name: app-tls, port: 9443, targetPort: 9443, appProtocol: https}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: https, port: 8443}, {name: app-tls, port: 9443}]
endpoints: [{addresses: [10.0.0.1]}]
"""


def ingress(name: str, hosts: list[str], tls: list[tuple[list[str], str | None]] | None = None,
            annotations: dict[str, str] | None = None, port: int = 80,
            created: str = "2024-01-01T00:00:00Z") -> str:
    """An Ingress of class kxds routing ``/`` of each host to Service web:``port``."""
    spec: dict[str, Any] = {"ingressClassName": "kxds", "rules": [
        {"host": h, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
            "service": {"name": "web", "port": {"number": port}}}}]}} for h in hosts]}
    if tls is not None:
        spec["tls"] = [{"hosts": th, **({"secretName": s} if s else {})} for th, s in tls]
    doc = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": name, "namespace": "default", "creationTimestamp": created,
                        "annotations": annotations or {}}, "spec": spec}
    return json.dumps(doc)


def run(*docs: str, config: TranslateConfig | None = None) -> Translation:
    cfg = config or TranslateConfig()
    from dataclasses import replace

    return translate(load_text("\n---\n".join([SERVICE, *docs])), replace(cfg, tls_now=NOW))


def secret(name: str, pair: KeyPair, type_: str = "kubernetes.io/tls") -> str:
    return tls_secret_yaml("default", name, pair).replace("kubernetes.io/tls", type_)


def tls_listener(t: Translation) -> ir.TlsListener:
    (lis,) = [x for x in t.ir.listeners if isinstance(x, ir.TlsListener)]
    return lis


def table(t: Translation, name: str) -> dict[str, ir.VirtualHost]:
    (tab,) = [x for x in t.ir.route_tables if x.name == name]
    return {vh.name: vh for vh in tab.virtual_hosts}


def test_sni_chains_per_certificate(certs: dict[str, KeyPair]) -> None:
    t = run(ingress("shop", ["a.example.com", "x.example.com", "plain.test"],
                    [(["a.example.com"], "a"), (["*.example.com"], "wild")]),
            secret("a", certs["a"]), secret("wild", certs["wild"]))
    assert t.diagnostics == ()
    lis = tls_listener(t)
    assert lis.name == "https/8443" and lis.port == 8443
    chains = {c.name: c for c in lis.chains}
    assert set(chains) == {"https/8443/cert/default/a", "https/8443/cert/default/wild"}
    a = chains["https/8443/cert/default/a"]
    assert isinstance(a, ir.TerminatedChain)
    assert a.server_names == ("a.example.com",) and a.secret == "default/a"
    assert a.alpn == ("h2", "http/1.1") and a.min_tls_version == "1.2"
    assert chains["https/8443/cert/default/wild"].server_names == ("*.example.com",)
    assert {s.name for s in t.ir.secrets} == {"default/a", "default/wild"}
    # HTTPS serves the TLS hosts only; plain HTTP redirects them.
    assert set(table(t, "https/8443")) == {"a.example.com", "x.example.com"}
    http = table(t, "http/8080")
    assert http["a.example.com"].routes[0].action == ir.Redirect(https=True, port=8443)
    assert isinstance(http["plain.test"].routes[0].action, ir.Forward)


def test_no_default_chain_without_flag(certs: dict[str, KeyPair]) -> None:
    t = run(ingress("shop", ["a.example.com"], [(["a.example.com"], "a")]),
            secret("a", certs["a"]))
    assert all(c.server_names for c in tls_listener(t).chains)


def test_default_certificate_chain(certs: dict[str, KeyPair]) -> None:
    t = run(ingress("shop", ["a.example.com"], [(["a.example.com"], "a")]),
            secret("a", certs["a"]), secret("fallback", certs["b"]),
            config=TranslateConfig(default_certificate=("default", "fallback"),
                                   min_tls_version="1.3", https_port=443))
    (default,) = [c for c in tls_listener(t).chains if not c.server_names]
    assert isinstance(default, ir.TerminatedChain)
    assert default.secret == "default/fallback" and default.min_tls_version == "1.3"
    # Port 443: the redirect drops the port.
    http = table(t, "http/8080")
    assert http["a.example.com"].routes[0].action == ir.Redirect(https=True, port=None)


def test_bad_default_certificate_is_reported(certs: dict[str, KeyPair]) -> None:
    t = run(config=TranslateConfig(default_certificate=("default", "nope")))
    assert [(d.ref.kind, d.reason) for d in t.diagnostics] == [
        ("Secret", Reason.SECRET_NOT_FOUND)]
    assert not any(isinstance(x, ir.TlsListener) for x in t.ir.listeners)


def test_secrets_only_over_sds_and_rotation_touches_only_the_secret(
        certs: dict[str, KeyPair]) -> None:
    ing = ingress("shop", ["a.example.com"], [(["a.example.com"], "a")])
    before = build_resources(run(ing, secret("a", certs["a"])).ir)
    after = build_resources(run(ing, secret("a", certs["a2"])).ir)
    key_marker = b"PRIVATE KEY"
    assert not any(key_marker in r.body for r in before[LISTENER].values())
    assert key_marker in before[SECRET]["default/a"].body
    for type_url in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
        assert {n: r.version for n, r in before[type_url].items()} == {
            n: r.version for n, r in after[type_url].items()}, type_url
    assert before[SECRET]["default/a"].version != after[SECRET]["default/a"].version


@pytest.mark.parametrize(("annotations", "with_tls", "redirect"), [
    ({}, True, True),
    ({"nginx.ingress.kubernetes.io/ssl-redirect": "false"}, True, False),
    ({"kxds.io/ssl-redirect": "false"}, True, False),
    ({"kxds.io/ssl-redirect": "true",
      "nginx.ingress.kubernetes.io/ssl-redirect": "false"}, True, True),
    ({}, False, False),
    ({"nginx.ingress.kubernetes.io/force-ssl-redirect": "true"}, False, True),
    ({"kxds.io/force-ssl-redirect": "true"}, False, True),
    ({"nginx.ingress.kubernetes.io/force-ssl-redirect": "true",
      "nginx.ingress.kubernetes.io/ssl-redirect": "false"}, True, True),
], ids=["default", "nginx-off", "kxds-off", "kxds-wins", "no-tls", "force-nginx",
        "force-kxds", "force-beats-off"])
def test_redirect_annotations(certs: dict[str, KeyPair], annotations: dict[str, str],
                              with_tls: bool, redirect: bool) -> None:
    tls: list[tuple[list[str], str | None]] | None = (
        [(["a.example.com"], "a")] if with_tls else None)
    t = run(ingress("shop", ["a.example.com"], tls, annotations), secret("a", certs["a"]))
    action = table(t, "http/8080")["a.example.com"].routes[0].action
    assert isinstance(action, ir.Redirect) is redirect
    if redirect:
        assert action == ir.Redirect(https=True, port=8443, status=301)


def test_bad_boolean_annotation(certs: dict[str, KeyPair]) -> None:
    t = run(ingress("shop", ["a.example.com"], [(["a.example.com"], "a")],
                    {"nginx.ingress.kubernetes.io/ssl-redirect": "maybe"}),
            secret("a", certs["a"]))
    assert [d.reason for d in t.diagnostics] == [Reason.INVALID_VALUE]
    assert isinstance(table(t, "http/8080")["a.example.com"].routes[0].action, ir.Redirect)


def _bad(certs: dict[str, KeyPair], case: str) -> str:
    if case == "missing":
        return ""
    if case == "wrong-type":
        return secret("a", certs["a"], "Opaque")
    if case == "malformed":
        return secret("a", KeyPair(cert_pem=b"-----BEGIN CERTIFICATE-----\nAAAA\n"
                                   b"-----END CERTIFICATE-----\n", key_pem=certs["a"].key_pem))
    if case == "mismatch":
        return secret("a", KeyPair(cert_pem=certs["a"].cert_pem, key_pem=certs["b"].key_pem))
    if case == "expired":
        return secret("a", certs["expired"])
    return secret("a", certs["b"])  # "uncovered": a certificate for another host


@pytest.mark.parametrize(("case", "reason"), [
    ("missing", Reason.SECRET_NOT_FOUND), ("wrong-type", Reason.INVALID_SECRET),
    ("malformed", Reason.INVALID_SECRET), ("mismatch", Reason.INVALID_SECRET),
    ("expired", Reason.INVALID_SECRET), ("uncovered", Reason.INVALID_SECRET),
])
@pytest.mark.parametrize("ssl_redirect", ["true", "false"])
def test_bad_certificate_fails_closed(certs: dict[str, KeyPair], case: str, reason: Reason,
                                      ssl_redirect: str) -> None:
    t = run(ingress("shop", ["a.example.com"], [(["a.example.com"], "a")],
                    {"nginx.ingress.kubernetes.io/ssl-redirect": ssl_redirect}),
            ingress("other", ["b.example.com"], [(["b.example.com"], "b")]),
            _bad(certs, case), secret("b", certs["b"]))
    (diag,) = t.diagnostics
    assert diag.ref.name == "shop" and diag.reason is reason
    assert "default/a" in diag.message and "a.example.com" in diag.message
    # a.example.com has no chain and is never forwarded over plain HTTP ...
    names = {n for c in tls_listener(t).chains for n in c.server_names}
    assert names == {"b.example.com"}
    http = table(t, "http/8080")
    assert isinstance(http["a.example.com"].routes[0].action, ir.Redirect)
    assert "a.example.com" not in table(t, "https/8443")
    # ... and the other host is unaffected.
    assert isinstance(table(t, "https/8443")["b.example.com"].routes[0].action, ir.Forward)


def test_tls_entry_without_secret_name_needs_a_default_certificate() -> None:
    t = run(ingress("shop", ["a.example.com"], [(["a.example.com"], None)]))
    (diag,) = t.diagnostics
    assert diag.reason is Reason.MISSING_FIELD and diag.field == "spec.tls[0].secretName"
    assert not any(isinstance(x, ir.TlsListener) for x in t.ir.listeners)
    assert isinstance(table(t, "http/8080")["a.example.com"].routes[0].action, ir.Redirect)


def test_tls_entry_without_hosts_uses_covered_rule_hosts(certs: dict[str, KeyPair]) -> None:
    t = run(ingress("shop", ["a.example.com", "b.example.com"], [([], "wild")]),
            secret("wild", certs["wild"]))
    (chain,) = tls_listener(t).chains
    assert chain.server_names == ("a.example.com", "b.example.com")


def test_conflicting_certificates_oldest_wins(certs: dict[str, KeyPair]) -> None:
    t = run(ingress("new", ["a.example.com"], [(["a.example.com"], "a2")],
                    created="2025-01-01T00:00:00Z"),
            ingress("old", ["a.example.com"], [(["a.example.com"], "a")],
                    created="2023-01-01T00:00:00Z"),
            secret("a", certs["a"]), secret("a2", certs["a2"]))
    (chain,) = tls_listener(t).chains
    assert isinstance(chain, ir.TerminatedChain) and chain.secret == "default/a"
    assert [(d.ref.name, d.reason) for d in t.diagnostics
            if d.reason is Reason.CONFLICT and "TLS" in d.message] == [("new", Reason.CONFLICT)]


def test_passthrough_coexists_with_terminated(certs: dict[str, KeyPair]) -> None:
    t = run(ingress("shop", ["a.example.com"], [(["a.example.com"], "a")]),
            ingress("pt", ["pt.example.com"], annotations={
                "nginx.ingress.kubernetes.io/ssl-passthrough": "true"}, port=443),
            ingress("pt2", ["pt2.test"], annotations={"kxds.io/tls-passthrough": "true"},
                    port=443),
            secret("a", certs["a"]))
    chains = {c.name: c for c in tls_listener(t).chains}
    pt = chains["https/8443/passthrough/pt.example.com"]
    assert isinstance(pt, ir.PassthroughChain)
    assert pt.server_names == ("pt.example.com",) and pt.cluster == "default/web/443"
    assert "https/8443/passthrough/pt2.test" in chains
    assert "https/8443/cert/default/a" in chains
    # A passthrough host is not in the HTTPS route table (the wildcard-free cert
    # does not cover it) and its plain-HTTP routes redirect.
    assert "pt.example.com" not in table(t, "https/8443")
    assert isinstance(table(t, "http/8080")["pt.example.com"].routes[0].action, ir.Redirect)


def test_passthrough_needs_a_resolvable_backend() -> None:
    t = run(ingress("pt", ["pt.test"], annotations={"kxds.io/tls-passthrough": "true"},
                    port=1234))
    assert Reason.BACKEND_NOT_FOUND in {d.reason for d in t.diagnostics}
    assert not any(isinstance(x, ir.TlsListener) for x in t.ir.listeners)


def _clusters(t: Translation) -> dict[str, ir.Cluster]:
    return {c.name: c for c in t.ir.clusters}


def test_backend_protocol_https_uses_a_tls_twin() -> None:
    t = run(ingress("up", ["up.test"], annotations={
                "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS"}, port=443),
            ingress("plain", ["plain.test"], port=443))
    twin = _clusters(t)["default/web/443/tls"]
    assert twin.upstream_tls == ir.UpstreamTLS(sni="web.default.svc")
    assert twin.protocol is ir.UpstreamProtocol.HTTP1
    assert _clusters(t)["default/web/443"].upstream_tls is None
    assert {a.cluster for a in t.ir.load_assignments} >= {"default/web/443",
                                                         "default/web/443/tls"}
    http = table(t, "http/8080")
    assert _backends(http["up.test"].routes[0]) == ("default/web/443/tls",)
    assert _backends(http["plain.test"].routes[0]) == ("default/web/443",)


def test_backend_protocol_grpc_uses_a_plain_http2_twin() -> None:
    t = run(ingress("up", ["up.test"], annotations={
                "nginx.ingress.kubernetes.io/backend-protocol": "GRPC"}, port=443))
    twin = _clusters(t)["default/web/443/h2"]
    assert twin.protocol is ir.UpstreamProtocol.HTTP2 and twin.upstream_tls is None
    assert _backends(table(t, "http/8080")["up.test"].routes[0]) == ("default/web/443/h2",)


def _backends(route: ir.Route) -> tuple[str, ...]:
    assert isinstance(route.action, ir.Forward)
    return tuple(b.cluster for b in route.action.backends)


def test_grpcs_with_sni_and_ca(ca: KeyPair) -> None:
    ca_secret = json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "web-ca", "namespace": "default"}, "stringData": {
        "ca.crt": ca.cert_pem.decode()}})
    t = run(ingress("up", ["up.test"], annotations={
                "nginx.ingress.kubernetes.io/backend-protocol": "GRPCS",
                "kxds.io/backend-sni": "api.internal", "kxds.io/backend-ca-secret": "web-ca"},
                port=443), ca_secret)
    assert t.diagnostics == ()
    name = "default/web/443/tls/h2/sni=api.internal/ca=web-ca"
    twin = _clusters(t)[name]
    assert twin.protocol is ir.UpstreamProtocol.HTTP2
    assert twin.upstream_tls == ir.UpstreamTLS(sni="api.internal",
                                               validation_secret="default/web-ca/ca",
                                               alpn=("h2",))
    (vc,) = [s for s in t.ir.secrets if isinstance(s, ir.ValidationContext)]
    assert vc.name == "default/web-ca/ca" and "BEGIN CERTIFICATE" in vc.trusted_ca
    res = build_resources(t.ir)
    assert b"api.internal" in res[CLUSTER][name].body


def test_missing_ca_secret_fails_closed() -> None:
    t = run(ingress("up", ["up.test"], annotations={
        "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
        "kxds.io/backend-ca-secret": "nope"}, port=443))
    (diag,) = t.diagnostics
    assert diag.reason is Reason.SECRET_NOT_FOUND and "default/nope" in diag.message
    assert table(t, "http/8080")["up.test"].routes[0].action == ir.DirectResponse(status=503)


def test_service_app_protocol_https() -> None:
    t = run(ingress("up", ["up.test"], port=9443))
    assert _clusters(t)["default/web/9443/tls"].upstream_tls == ir.UpstreamTLS(
        sni="web.default.svc")
    action = table(t, "http/8080")["up.test"].routes[0].action
    assert isinstance(action, ir.Forward)
    assert action.backends == (ir.WeightedBackend(cluster="default/web/9443/tls"),)


@pytest.mark.parametrize(("value", "reason"), [
    ("HTTP", None), ("https", None), (" GRPCS ", None), ("GRPC", None), ("AUTO_HTTP", None),
    ("h2c", None), ("FCGI", Reason.UNSUPPORTED), ("HTTPZ", Reason.INVALID_VALUE),
    ("", Reason.INVALID_VALUE),
])
@pytest.mark.parametrize("key", ["nginx.ingress.kubernetes.io/backend-protocol",
                                 "kxds.io/backend-protocol"])
def test_backend_protocol_values(key: str, value: str, reason: Reason | None) -> None:
    """Values other than HTTP, HTTPS, GRPC(S), H2C and AUTO_HTTP are reported naming the annotation,
    and the backend is reached over plain HTTP, as ingress-nginx falls back to."""
    t = run(ingress("up", ["up.test"], annotations={key: value}, port=443))
    assert [(d.ref.name, d.field, d.reason) for d in t.diagnostics] == (
        [] if reason is None else [("up", f"metadata.annotations[{key}]", reason)])
    if reason is not None:
        assert repr(value) in t.diagnostics[0].message
        action = table(t, "http/8080")["up.test"].routes[0].action
        assert isinstance(action, ir.Forward)
        assert action.backends == (ir.WeightedBackend(cluster="default/web/443"),)


def test_other_classes_backend_protocol_is_not_ours() -> None:
    doc = json.loads(ingress("theirs", ["x.test"], annotations={
        "nginx.ingress.kubernetes.io/backend-protocol": "FCGI"}))
    doc["spec"]["ingressClassName"] = "nginx"
    assert run(json.dumps(doc)).diagnostics == ()


# --- the clock comes from the caller --------------------------------------------


def test_validity_is_checked_against_the_given_instant_only(certs: dict[str, KeyPair]) -> None:
    """Translation reads no clock: a certificate long expired by the wall clock is
    valid at a pinned instant inside its validity, and unchecked without one."""
    docs = "\n---\n".join([SERVICE, ingress("shop", ["a.example.com"], [(["a.example.com"], "a")]),
                            secret("a", certs["expired"])])
    state = load_text(docs)
    inside = LONG_AGO + dt.timedelta(days=10)
    assert translate(state, TranslateConfig(tls_now=inside)).diagnostics == ()
    assert translate(state, TranslateConfig()).diagnostics == ()
    (diag,) = translate(state, TranslateConfig(tls_now=NOW)).diagnostics
    assert diag.reason is Reason.INVALID_SECRET and "expired" in diag.message


def test_serve_checks_certificates_against_the_rebuild_time(certs: dict[str, KeyPair]) -> None:
    """The controller passes each rebuild its time: an expired certificate is refused."""
    import asyncio

    from kxds.controller import Controller

    state = load_text("\n---\n".join([
        SERVICE, ingress("shop", ["a.example.com"], [(["a.example.com"], "a")]),
        secret("a", certs["expired"])]))
    seen: list[set[Any]] = []
    ctl = Controller(SnapshotCache(), TranslateConfig(), in_thread=False)
    ctl.on_diagnostics = seen.append
    asyncio.run(ctl.rebuild(state))
    (diag,) = seen[-1]
    assert diag.reason is Reason.INVALID_SECRET and "expired" in diag.message


def test_validate_checks_certificates_against_the_time_of_the_run(
        certs: dict[str, KeyPair], tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from kxds.cli import main

    path = tmp_path / "in.yaml"
    path.write_text("\n---\n".join([
        SERVICE, ingress("shop", ["a.example.com"], [(["a.example.com"], "a")]),
        secret("a", certs["expired"])]))
    assert main(["validate", "-f", str(path)]) == 1
    out = capsys.readouterr().out
    assert "InvalidSecret" in out and "certificate expired" in out


# --- SDS over state-of-the-world ADS -------------------------------------------


@xds_testing.run_async
async def test_sotw_sds_subscription_growing_after_an_ack_is_answered() -> None:
    """Envoy asks for secrets in steps: the backend CA with the clusters, then the
    certificates with the listener, on the same stream and with the nonce it already
    ACKed (the xDS protocol: a request carries the last nonce received). The new names
    must be answered, or the listener warms forever."""
    cache = SnapshotCache()
    cache.set_view("edge/default", xds_testing.resources(
        xds_testing.secret("default/ca/ca"), xds_testing.secret("default/a")))
    cache.mark_synced()
    node = xds_testing.make_node()
    async with xds_testing.serving(cache) as (_, target), \
            xds_testing.XdsTestClient(target, node) as envoy:
        await envoy.send(SECRET, resource_names=["default/ca/ca"])
        first = await envoy.recv()
        assert len(first.resources) == 1
        await envoy.ack(first, ["default/ca/ca"])
        await envoy.send(SECRET, version_info=first.version_info,
                         response_nonce=first.nonce,
                         resource_names=["default/ca/ca", "default/a"])
        second = await envoy.recv()
        assert len(second.resources) == 1  # only the newly asked-for one
