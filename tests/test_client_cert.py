"""Client certificates (auth-tls-*): reading the annotations, the per-host checks, failing
closed, and the Envoy TLS context and headers built from them."""

from __future__ import annotations

import json

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from kxds import ir
from kxds.certs.make import KeyPair, make_ca, make_leaf
from kxds.diagnostics import Reason
from kxds.envoy.build import build_resources
from kxds.envoy.resource import LISTENER, ROUTE
from tests.test_tls import LONG_AGO, ingress, run, secret, table, tls_listener

AUTH = "nginx.ingress.kubernetes.io/auth-tls-"
CHECKED = "https/8443/client-cert/default/srv/ca=default/client-ca/ca"


@pytest.fixture(scope="module")
def pki() -> dict[str, KeyPair]:
    ca = make_ca(not_before=LONG_AGO, days=365 * 30)
    return {"server": make_leaf(ca, ["a.example.com", "b.example.com", "*.w.example.com"],
                                not_before=LONG_AGO, days=365 * 30),
            "client_ca": make_ca("client CA", not_before=LONG_AGO, days=365 * 30)}


def ca_secret(pki: dict[str, KeyPair], name: str = "client-ca", extra: dict[str, str] | None
              = None, ca_pem: str | None = None) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                       "metadata": {"name": name, "namespace": "default"},
                       "stringData": {"ca.crt": ca_pem if ca_pem is not None
                                      else pki["client_ca"].cert_pem.decode(), **(extra or {})}})


def asking(name: str, hosts: list[str], annotations: dict[str, str], *, tls: bool = True,
           created: str = "2024-01-01T00:00:00Z") -> str:
    return ingress(name, hosts, [(hosts, "srv")] if tls else None,
                   {f"{AUTH}{k}": v for k, v in annotations.items()}, created=created)


def chains(t: object) -> dict[str, ir.TerminatedChain | ir.PassthroughChain]:
    return {c.name: c for c in tls_listener(t).chains}  # type: ignore[arg-type]


def routes_of(t: object, table_name: str, host: str) -> list[ir.Route]:
    return list(table(t, table_name)[host].routes)  # type: ignore[arg-type]


@pytest.mark.parametrize(("annotations", "required", "untrusted", "depth", "forward"), [
    ({}, True, False, 1, False),
    ({"verify-client": "on", "verify-depth": "3"}, True, False, 3, False),
    ({"verify-client": "optional"}, False, False, 1, False),
    ({"verify-client": "optional_no_ca", "pass-certificate-to-upstream": "true"},
     False, True, 1, True),
], ids=["defaults", "on-depth", "optional", "optional-no-ca-pass"])
def test_checking_chain(pki: dict[str, KeyPair], annotations: dict[str, str], required: bool,
                        untrusted: bool, depth: int, forward: bool) -> None:
    t = run(asking("a", ["a.example.com"], {"secret": "client-ca", **annotations}),
            ingress("b", ["b.example.com"], [(["b.example.com"], "srv")]),
            secret("srv", pki["server"]), ca_secret(pki))
    assert t.diagnostics == ()
    found = {c.server_names: c for c in tls_listener(t).chains}
    plain, checked = found[("b.example.com",)], found[("a.example.com",)]
    assert isinstance(plain, ir.TerminatedChain) and plain.client_certificate is None
    assert isinstance(checked, ir.TerminatedChain)
    assert checked.client_certificate == ir.ClientCertificate(
        validation_secret="default/client-ca/ca", required=required,
        accept_untrusted=untrusted, max_verify_depth=depth, forward_certificate=forward)
    assert checked.route_table == checked.name and checked.name.startswith(CHECKED)
    (vh,) = table(t, checked.route_table).values()
    assert vh.client_certificate == checked.client_certificate
    assert isinstance(vh.routes[0].action, ir.Forward)
    # Reaching a.example.com through b.example.com's chain: misdirected.
    (refusal,) = routes_of(t, "https/8443", "a.example.com")
    assert isinstance(refusal.action, ir.DirectResponse) and refusal.action.status == 421
    # Plain HTTP redirects to HTTPS.
    assert isinstance(routes_of(t, "http/8080", "a.example.com")[0].action, ir.Redirect)


def test_envoy_context_and_headers(pki: dict[str, KeyPair]) -> None:
    t = run(asking("a", ["a.example.com"], {"secret": "client-ca",
                                            "verify-client": "optional_no_ca",
                                            "verify-depth": "2",
                                            "pass-certificate-to-upstream": "true"}),
            secret("srv", pki["server"]), ca_secret(pki))
    res = build_resources(t.ir)
    lis = listener_pb2.Listener.FromString(res[LISTENER]["https/8443"].body)
    (chain,) = lis.filter_chains
    ctx = tls_pb2.DownstreamTlsContext()
    chain.transport_socket.typed_config.Unpack(ctx)
    assert ctx.require_client_certificate.value is False
    combined = ctx.common_tls_context.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "default/client-ca/ca"
    assert combined.default_validation_context.max_verify_depth.value == 2
    assert combined.default_validation_context.trust_chain_verification == (
        common_pb2.CertificateValidationContext.ACCEPT_UNTRUSTED)
    (checked,) = tls_listener(t).chains
    assert isinstance(checked, ir.TerminatedChain)
    rc = route_pb2.RouteConfiguration.FromString(res[ROUTE][checked.route_table].body)
    (vh,) = rc.virtual_hosts
    assert "ssl-client-cert" in vh.request_headers_to_remove
    added = {h.header.key: h.header.value for h in vh.request_headers_to_add}
    assert added == {"ssl-client-cert": "%DOWNSTREAM_PEER_CERT%",
                     "ssl-client-subject-dn": "%DOWNSTREAM_PEER_SUBJECT%",
                     "ssl-client-issuer-dn": "%DOWNSTREAM_PEER_ISSUER%"}


@pytest.mark.parametrize(("annotations", "extra", "reason", "field"), [
    ({"secret": "nope"}, {}, Reason.SECRET_NOT_FOUND, "secret"),
    ({"secret": "client-ca", "verify-client": "maybe"}, {}, Reason.INVALID_VALUE,
     "verify-client"),
    ({"secret": "client-ca", "verify-depth": "0"}, {}, Reason.INVALID_VALUE, "verify-depth"),
    ({"secret": "client-ca", "verify-depth": "x"}, {}, Reason.INVALID_VALUE, "verify-depth"),
    ({"secret": "client-ca", "pass-certificate-to-upstream": "si"}, {},
     Reason.INVALID_VALUE, "pass-certificate-to-upstream"),
    ({"secret": "a/b/c"}, {}, Reason.INVALID_VALUE, "secret"),
    ({"secret": "client-ca"}, {"ca.crl": "x"}, Reason.INVALID_SECRET, "secret"),
    ({"secret": "bad-ca"}, {}, Reason.INVALID_SECRET, "secret"),
    ({"secret": "no-ca"}, {}, Reason.INVALID_SECRET, "secret"),
], ids=["missing", "mode", "depth-0", "depth-text", "pass", "ref", "crl", "malformed", "no-key"])
def test_unusable_settings_fail_closed(pki: dict[str, KeyPair], annotations: dict[str, str],
                                       extra: dict[str, str], reason: Reason,
                                       field: str) -> None:
    t = run(asking("a", ["a.example.com"], annotations),
            ingress("b", ["b.example.com"], [(["b.example.com"], "srv")]),
            secret("srv", pki["server"]), ca_secret(pki, extra=extra),
            ca_secret(pki, "bad-ca", ca_pem="-----BEGIN CERTIFICATE-----\nAAAA\n"
                      "-----END CERTIFICATE-----\n"),
            secret("no-ca", pki["server"]))
    (d,) = [d for d in t.diagnostics if d.ref.name == "a"]
    assert (d.reason, d.field) == (reason, f"metadata.annotations[{AUTH}{field}]")
    assert "fail closed" in d.message
    # No chain serves a.example.com: the handshake is refused; b is untouched.
    names = {n for c in tls_listener(t).chains for n in c.server_names}
    assert names == {"b.example.com"}
    (refusal,) = routes_of(t, "https/8443", "a.example.com")
    assert isinstance(refusal.action, ir.DirectResponse) and refusal.action.status == 503
    assert isinstance(routes_of(t, "http/8080", "a.example.com")[0].action, ir.Redirect)
    assert isinstance(routes_of(t, "https/8443", "b.example.com")[0].action, ir.Forward)


def test_off_asks_nothing(pki: dict[str, KeyPair]) -> None:
    t = run(asking("a", ["a.example.com"], {"secret": "nope", "verify-client": "off"}),
            secret("srv", pki["server"]))
    assert t.diagnostics == ()
    (chain,) = tls_listener(t).chains
    assert isinstance(chain, ir.TerminatedChain) and chain.client_certificate is None


def test_settings_without_secret_are_reported(pki: dict[str, KeyPair]) -> None:
    t = run(asking("a", ["a.example.com"], {"verify-client": "on"}), secret("srv", pki["server"]))
    (d,) = t.diagnostics
    assert d.reason is Reason.MISSING_FIELD and "auth-tls-secret" in d.message


def test_disagreeing_ingresses_fail_the_host(pki: dict[str, KeyPair]) -> None:
    t = run(asking("a", ["a.example.com"], {"secret": "client-ca"}),
            asking("a2", ["a.example.com"], {"secret": "client-ca", "verify-client": "optional"},
                   created="2024-02-01T00:00:00Z"),
            secret("srv", pki["server"]), ca_secret(pki))
    (d,) = [d for d in t.diagnostics if d.reason is Reason.CONFLICT and "client" in d.message]
    assert d.ref.name == "a2" and "Ingress default/a" in d.message
    # Neither Ingress has a usable check: no chain serves the host (no TLS listener left).
    assert not any(isinstance(x, ir.TlsListener) for x in t.ir.listeners)


def test_same_settings_share_the_check(pki: dict[str, KeyPair]) -> None:
    t = run(asking("a", ["a.example.com"], {"secret": "client-ca"}),
            asking("b", ["b.example.com"], {"secret": "default/client-ca"},
                   created="2024-02-01T00:00:00Z"),
            secret("srv", pki["server"]), ca_secret(pki))
    assert t.diagnostics == ()
    (chain,) = tls_listener(t).chains
    assert chain.server_names == ("a.example.com", "b.example.com")


def test_an_ingress_without_the_annotation_on_a_checked_host_is_checked(
        pki: dict[str, KeyPair]) -> None:
    """The check belongs to the host: another Ingress's paths there are checked too."""
    other = json.loads(ingress("z", ["a.example.com"], None,
                               {"nginx.ingress.kubernetes.io/ssl-redirect": "false"}))
    other["spec"]["rules"][0]["http"]["paths"][0]["path"] = "/z"
    t = run(asking("a", ["a.example.com"], {"secret": "client-ca"}), json.dumps(other),
            secret("srv", pki["server"]), ca_secret(pki))
    plain = {r.ref.name: r.action for r in routes_of(t, "http/8080", "a.example.com")}
    assert isinstance(plain["a"], ir.Redirect)
    assert isinstance(plain["z"], ir.DirectResponse) and plain["z"].status == 403
    (chain,) = tls_listener(t).chains
    assert isinstance(chain, ir.TerminatedChain)
    checked = {r.ref.name for r in routes_of(t, chain.route_table, "a.example.com")}
    assert checked == {"a", "z"}


def test_wildcard_tls_host_serves_a_checked_host(pki: dict[str, KeyPair]) -> None:
    """A host covered by a ``*.`` TLS entry gets an exact-SNI checking chain."""
    t = run(ingress("w", ["*.w.example.com"], [(["*.w.example.com"], "srv")]),
            asking("x", ["x.w.example.com"], {"secret": "client-ca"}, tls=False,
                   created="2024-02-01T00:00:00Z"),
            secret("srv", pki["server"]), ca_secret(pki))
    found = {c.server_names: c for c in tls_listener(t).chains}
    assert set(found) == {("*.w.example.com",), ("x.w.example.com",)}
    checked = found[("x.w.example.com",)]
    assert isinstance(checked, ir.TerminatedChain) and checked.client_certificate is not None


def test_no_tls_refuses_plain_http_and_hostless_rules(pki: dict[str, KeyPair]) -> None:
    doc = json.loads(asking("a", ["a.example.com"], {"secret": "client-ca"}, tls=False))
    doc["spec"]["rules"].append({"http": {"paths": [{"path": "/open", "pathType": "Prefix",
                                                     "backend": {"service": {
                                                         "name": "web",
                                                         "port": {"number": 80}}}}]}})
    t = run(json.dumps(doc), ca_secret(pki))
    reasons = {(d.field, d.reason) for d in t.diagnostics}
    assert ("spec.tls", Reason.MISSING_FIELD) in reasons
    assert ("spec.rules[1].host", Reason.MISSING_FIELD) in reasons
    for vh in table(t, "http/8080").values():
        for r in vh.routes:
            if r.ref.name == "a":
                assert isinstance(r.action, ir.DirectResponse) and r.action.status == 403


def test_passthrough_host_is_refused(pki: dict[str, KeyPair]) -> None:
    t = run(ingress("pt", ["a.example.com"], None, {
                "nginx.ingress.kubernetes.io/ssl-passthrough": "true",
                f"{AUTH}secret": "client-ca"}, port=443),
            ingress("b", ["b.example.com"], [(["b.example.com"], "srv")]),
            secret("srv", pki["server"]), ca_secret(pki))
    assert any(d.reason is Reason.CONFLICT and "passthrough" in d.message
               for d in t.diagnostics)
    assert {n for c in tls_listener(t).chains for n in c.server_names} == {"b.example.com"}


@pytest.mark.parametrize("mode", ["on", "optional"])
def test_match_cn_denies_other_subjects(pki: dict[str, KeyPair], mode: str) -> None:
    t = run(asking("a", ["a.example.com"], {"secret": "client-ca", "verify-client": mode,
                                            "match-cn": "CN=(alice|bob)$"},
                   created="2024-02-01T00:00:00Z"),
            secret("srv", pki["server"]), ca_secret(pki))
    assert t.diagnostics == ()
    (chain,) = tls_listener(t).chains
    assert isinstance(chain, ir.TerminatedChain) and chain.client_certificate is not None
    assert chain.client_certificate.subject_pattern == "CN=(alice|bob)$"
    rc = route_pb2.RouteConfiguration.FromString(
        build_resources(t.ir)[ROUTE][chain.route_table].body)
    (route,) = rc.virtual_hosts[0].routes
    config = http_rbac_pb2.RBACPerRoute()
    route.typed_per_filter_config["envoy.filters.http.rbac"].Unpack(config)
    policy = config.rbac.rules.policies["client-certificate-subject"]
    assert config.rbac.rules.action == rbac_pb2.RBAC.DENY
    text = str(policy.condition)
    assert "subject_peer_certificate" in text and "mtls" in text and "CN=(alice|bob)$" in text


def test_match_cn_keeps_client_ip_rules(pki: dict[str, KeyPair]) -> None:
    t = run(asking("a", ["a.example.com"], {
        "secret": "client-ca", "match-cn": "CN=alice"}) .replace(
            '"annotations": {', '"annotations": {"nginx.ingress.kubernetes.io/'
            'whitelist-source-range": "10.0.0.0/8", '),
        secret("srv", pki["server"]), ca_secret(pki))
    (chain,) = tls_listener(t).chains
    assert isinstance(chain, ir.TerminatedChain)
    rc = route_pb2.RouteConfiguration.FromString(
        build_resources(t.ir)[ROUTE][chain.route_table].body)
    config = http_rbac_pb2.RBACPerRoute()
    rc.virtual_hosts[0].routes[0].typed_per_filter_config[
        "envoy.filters.http.rbac"].Unpack(config)
    assert len(config.rbac.rules.policies) == 2  # the allowlist and the subject


def test_match_cn_not_re2_fails_closed(pki: dict[str, KeyPair]) -> None:
    t = run(asking("a", ["a.example.com"], {"secret": "client-ca", "match-cn": "CN=(?=x)"}),
            secret("srv", pki["server"]), ca_secret(pki))
    (d,) = t.diagnostics
    assert (d.reason, d.field) == (Reason.INVALID_VALUE, f"metadata.annotations[{AUTH}match-cn]")
    assert not any(isinstance(x, ir.TlsListener) for x in t.ir.listeners)


@pytest.mark.parametrize(("mode", "required", "presented"), [
    ("on", True, None), ("optional", False, True)])
def test_error_page_redirects_failed_checks(pki: dict[str, KeyPair], mode: str,
                                            required: bool, presented: bool | None) -> None:
    t = run(asking("a", ["a.example.com"], {"secret": "client-ca", "verify-client": mode,
                                            "error-page": "https://err.example/x?y=1"}),
            secret("srv", pki["server"]), ca_secret(pki))
    assert t.diagnostics == ()
    (chain,) = tls_listener(t).chains
    assert isinstance(chain, ir.TerminatedChain) and chain.client_certificate is not None
    assert chain.client_certificate.error_redirect == ir.Redirect(
        https=True, host="err.example", status=302, path="/x?y=1", strip_query=True)
    res = build_resources(t.ir)
    lis = listener_pb2.Listener.FromString(res[LISTENER]["https/8443"].body)
    ctx = tls_pb2.DownstreamTlsContext()
    lis.filter_chains[0].transport_socket.typed_config.Unpack(ctx)
    # The handshake lets everyone in; the first route sends failed checks away.
    assert ctx.require_client_certificate.value is False
    assert ctx.common_tls_context.combined_validation_context.default_validation_context \
        .trust_chain_verification == common_pb2.CertificateValidationContext.ACCEPT_UNTRUSTED
    rc = route_pb2.RouteConfiguration.FromString(res[ROUTE][chain.route_table].body)
    first = rc.virtual_hosts[0].routes[0]
    assert first.match.tls_context.validated.value is False
    assert first.match.tls_context.HasField("presented") is (presented is not None)
    assert first.redirect.host_redirect == "err.example"
    assert first.redirect.path_redirect == "/x?y=1"
    assert len(rc.virtual_hosts[0].routes) == 2


@pytest.mark.parametrize(("mode", "page", "reason"), [
    ("on", "/denied", Reason.UNSUPPORTED),
    ("on", "ftp://x/denied", Reason.UNSUPPORTED),
    ("optional_no_ca", "https://err.example/", Reason.INVALID_VALUE),
], ids=["path", "scheme", "no-ca"])
def test_error_page_not_applied(pki: dict[str, KeyPair], mode: str, page: str,
                                reason: Reason) -> None:
    t = run(asking("a", ["a.example.com"], {"secret": "client-ca", "verify-client": mode,
                                            "error-page": page}),
            secret("srv", pki["server"]), ca_secret(pki))
    (d,) = t.diagnostics
    assert (d.reason, d.field) == (reason, f"metadata.annotations[{AUTH}error-page]")
    (chain,) = tls_listener(t).chains
    assert isinstance(chain, ir.TerminatedChain) and chain.client_certificate is not None
    assert chain.client_certificate.error_redirect is None


def test_different_error_pages_get_different_chains(pki: dict[str, KeyPair]) -> None:
    t = run(asking("a", ["a.example.com"], {"secret": "client-ca",
                                            "error-page": "https://err.example/a"}),
            asking("b", ["b.example.com"], {"secret": "client-ca",
                                            "error-page": "https://err.example/b"},
                   created="2024-02-01T00:00:00Z"),
            secret("srv", pki["server"]), ca_secret(pki))
    pages = {c.server_names: c.client_certificate.error_redirect.path  # type: ignore[union-attr]
             for c in tls_listener(t).chains}
    assert pages == {("a.example.com",): "/a", ("b.example.com",): "/b"}


def test_a_bug_reading_the_settings_fails_closed(pki: dict[str, KeyPair],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from kxds.translators import client_cert

    def broken(*_: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(client_cert, "_read", broken)
    t = run(asking("a", ["a.example.com"], {"secret": "client-ca"}),
            ingress("b", ["b.example.com"], [(["b.example.com"], "srv")]),
            secret("srv", pki["server"]), ca_secret(pki))
    assert any(d.reason is Reason.INTERNAL_ERROR and d.ref.name == "a" for d in t.diagnostics)
    assert {n for c in tls_listener(t).chains for n in c.server_names} == {"b.example.com"}
    (refusal,) = routes_of(t, "https/8443", "a.example.com")
    assert isinstance(refusal.action, ir.DirectResponse) and refusal.action.status == 503


def test_default_backend_of_an_asking_ingress_is_checked_only_on_its_hosts(
        pki: dict[str, KeyPair]) -> None:
    """Its default backend answers other hosts' unmatched paths: there it cannot be
    checked, so it answers 403; on its own host it is behind the check."""
    doc = json.loads(asking("a", ["a.example.com"], {"secret": "client-ca"}))
    doc["spec"]["defaultBackend"] = {"service": {"name": "web", "port": {"number": 80}}}
    other = json.loads(ingress("b", ["b.example.com"], [(["b.example.com"], "srv")],
                               created="2024-02-01T00:00:00Z"))
    other["spec"]["rules"][0]["http"]["paths"][0]["path"] = "/b"
    t = run(json.dumps(doc), json.dumps(other), secret("srv", pki["server"]), ca_secret(pki))
    for name in ("http/8080", "https/8443"):
        defaults = [r for r in routes_of(t, name, "b.example.com") if r.ref.name == "a"]
        assert defaults and all(isinstance(r.action, (ir.DirectResponse, ir.Redirect))
                                for r in defaults), name
        assert all(r.action.status == 403 for r in defaults
                   if isinstance(r.action, ir.DirectResponse)), name
    checked = next(c for c in tls_listener(t).chains if c.server_names == ("a.example.com",))
    assert isinstance(checked, ir.TerminatedChain)
    assert all(isinstance(r.action, ir.Forward)
               for r in routes_of(t, checked.route_table, "a.example.com"))


def test_error_pages_of_a_checked_host_stay_behind_the_check(pki: dict[str, KeyPair]) -> None:
    """custom-http-errors' error route on a checked host: served in the checking chain's
    table (where the internal redirect lands), never over plain HTTP."""
    t = run(asking("a", ["a.example.com"], {"secret": "client-ca"}).replace(
                '"annotations": {', '"annotations": {'
                '"nginx.ingress.kubernetes.io/custom-http-errors": "404", '
                '"nginx.ingress.kubernetes.io/default-backend": "web", '
                '"nginx.ingress.kubernetes.io/ssl-redirect": "false", '),
            secret("srv", pki["server"]), ca_secret(pki))
    (chain,) = tls_listener(t).chains
    assert isinstance(chain, ir.TerminatedChain)
    checked = routes_of(t, chain.route_table, "a.example.com")
    assert len(checked) >= 2 and all(isinstance(r.action, ir.Forward) for r in checked)
    plain = routes_of(t, "http/8080", "a.example.com")
    assert len(plain) == len(checked)
    assert all(isinstance(r.action, ir.DirectResponse) and r.action.status == 403
               for r in plain)


def test_every_connection_manager_drops_client_sent_certificate_headers(
        pki: dict[str, KeyPair]) -> None:
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )
    from envoy.extensions.http.early_header_mutation.header_mutation.v3 import (
        header_mutation_pb2,
    )

    t = run(ingress("b", ["b.example.com"], [(["b.example.com"], "srv")]),
            secret("srv", pki["server"]))
    res = build_resources(t.ir)
    for name in ("http/8080", "https/8443"):
        lis = listener_pb2.Listener.FromString(res[LISTENER][name].body)
        hcm = hcm_pb2.HttpConnectionManager()
        lis.filter_chains[0].filters[-1].typed_config.Unpack(hcm)
        (early,) = hcm.early_header_mutation_extensions
        mutation = header_mutation_pb2.HeaderMutation()
        early.typed_config.Unpack(mutation)
        assert {m.remove for m in mutation.mutations} == {
            "ssl-client-cert", "ssl-client-verify", "ssl-client-subject-dn",
            "ssl-client-issuer-dn"}
