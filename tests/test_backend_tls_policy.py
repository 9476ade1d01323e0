"""BackendTLSPolicy: parsing (with the CRD's CEL rules), translation, status and its writing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeApi, SourceRunner
from test_api_gateway_crds import GROUP, gateway_objects
from test_api_source import OTHERS, eps, source, svc

from kxds import ir, names
from kxds.gateway_status_writer import GatewayStatusWriter
from kxds.kube.client import KubeClient
from kxds.kube.loader import load_text
from kxds.kube.models import Secret
from kxds.kube.store_index import referenced_secrets
from kxds.translators.config import TranslateConfig
from kxds.translators.edge import translate

GOLDEN = Path(__file__).parent / "golden" / "gateway-backend-tls"
HEAD = ("apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\n"
        "metadata: {name: p, namespace: default}\nspec:\n")


@pytest.mark.parametrize(("spec", "message"), [
    ("  validation: {hostname: a.example.com, wellKnownCACertificates: System}\n",
     "spec.targetRefs"),
    ("  targetRefs: [{group: '', kind: Service, name: s}]\n"
     "  validation: {hostname: a.example.com}\n",
     "either caCertificateRefs or wellKnownCACertificates"),
    ("  targetRefs: [{group: '', kind: Service, name: s}]\n"
     "  validation: {hostname: a.example.com, wellKnownCACertificates: System,\n"
     "               caCertificateRefs: [{group: '', kind: ConfigMap, name: c}]}\n",
     "either caCertificateRefs or wellKnownCACertificates"),
    ("  targetRefs: [{group: '', kind: Service, name: s}]\n"
     "  validation: {hostname: '*.example.com', wellKnownCACertificates: System}\n",
     "without a wildcard"),
    ("  targetRefs: [{group: '', kind: Service, name: s}]\n", "spec.validation"),
], ids=["no-targets", "no-ca", "both-cas", "wildcard", "no-validation"])
def test_policy_rules_are_checked_for_manifests(spec: str, message: str) -> None:
    state = load_text(HEAD + spec)
    assert not state.backend_tls_policies
    (problem,) = state.problems
    assert message in str(problem), problem


def test_a_policy_is_parsed_with_its_section_name() -> None:
    state = load_text(HEAD + "  targetRefs: [{group: '', kind: Service, name: s, sectionName: "
                      "https}]\n  validation:\n    hostname: A.example.com\n"
                      "    caCertificateRefs: [{group: '', kind: Secret, name: ca}]\n")
    (pol,) = state.backend_tls_policies.values()
    assert pol.hostname == "a.example.com"
    assert pol.target_refs[0].section_name == "https"
    assert referenced_secrets([], [], [], [pol]) == {("default", "ca")}


def _golden() -> Any:
    return translate(load_text((GOLDEN / "input.yaml").read_text()), TranslateConfig())


def test_targeted_backends_go_to_tls_twins_and_unhonoured_policies_fail_closed() -> None:
    result = _golden()
    actions = {r.match.path: r.action for t in result.ir.route_tables
               for vh in t.virtual_hosts for r in vh.routes}
    clusters = {c.name: c for c in result.ir.clusters}

    def tls_of(path: str) -> ir.UpstreamTLS | None:
        action = actions[path]
        assert isinstance(action, ir.Forward)
        (backend,) = action.backends
        return clusters[backend.cluster].upstream_tls

    assert tls_of("/api") == ir.UpstreamTLS(sni="api.example.com",
                                            validation_secret="default/api-ca/ca")
    # The policy naming the port wins over the older one naming the whole Service.
    admin = tls_of("/admin")
    assert admin is not None and admin.sni == "admin.example.com"
    for refused in ("/cm", "/system"):  # ConfigMap CA, wellKnownCACertificates
        assert actions[refused] == ir.DirectResponse(status=503)
    # subjectAltNames are checked instead of the hostname, which stays the SNI.
    assert tls_of("/spiffe") == ir.UpstreamTLS(
        sni="spiffe.example.com", validation_secret="default/api-ca/ca",
        dns_names=("spiffe.internal.example.com",),
        uris=("spiffe://example.com/ns/default/sa/spiffe",))
    grpc = [a for p, a in actions.items()
            if p not in ("/api", "/admin", "/cm", "/system", "/spiffe")]
    assert len(grpc) == 1 and isinstance(grpc[0], ir.Forward)
    twin = clusters[grpc[0].backends[0].cluster]
    assert twin.protocol is ir.UpstreamProtocol.HTTP2 and twin.upstream_tls is not None
    assert twin.upstream_tls.alpn == ("h2",)


def test_policy_status_names_the_gateway_as_ancestor_with_the_specs_reasons() -> None:
    statuses = {s.ref.name: s for s in _golden().gateway_status.routes
                if s.ref.kind == "BackendTLSPolicy"}
    got = {name: {c.type: (c.status, c.reason) for p in s.parents for c in p.conditions}
           for name, s in statuses.items()}
    assert got == {
        "admin": {"Accepted": (True, "Accepted"), "ResolvedRefs": (True, "ResolvedRefs")},
        "api": {"Accepted": (True, "Accepted"), "ResolvedRefs": (True, "ResolvedRefs")},
        "cm": {"Accepted": (False, "NoValidCACertificate"),
               "ResolvedRefs": (False, "InvalidCACertificateRef")},
        "spiffe": {"Accepted": (True, "Accepted"), "ResolvedRefs": (True, "ResolvedRefs")},
        "system": {"Accepted": (False, "Invalid"), "ResolvedRefs": (True, "ResolvedRefs")},
    }
    assert [(p.parent.kind, p.parent.name) for p in statuses["api"].parents] == [
        ("Gateway", "gw")]


def test_a_secret_without_ca_crt_and_a_wrong_kind_are_unresolved() -> None:
    text = (GOLDEN / "input.yaml").read_text().replace(
        "caCertificateRefs: [{group: \"\", kind: ConfigMap, name: cm-ca}]",
        "caCertificateRefs: [{group: example.com, kind: Bundle, name: cm-ca}]")
    state = load_text(text)
    result = translate(state, TranslateConfig())
    (cm,) = [s for s in result.gateway_status.routes if s.ref.name == "cm"]
    conds = {c.type: (c.status, c.reason) for c in cm.parents[0].conditions}
    assert conds["ResolvedRefs"] == (False, "InvalidKind")
    assert any(d.ref.name == "cm" and "Bundle" in d.message for d in result.diagnostics)
    assert isinstance(state.secrets[("default", "api-ca")], Secret)


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi(bookmark_interval=0.1).start()
    for obj in [svc("web"), eps("web", ["10.1.0.5"]), *OTHERS, *gateway_objects()]:
        fake.apply(obj)
    fake.apply({"apiVersion": f"{GROUP}/v1", "kind": "BackendTLSPolicy",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "web"}],
                         "validation": {"hostname": "web.example.com",
                                        "caCertificateRefs": [
                                            {"group": "", "kind": "ConfigMap",
                                             "name": "web-ca"}]}}})
    yield fake
    fake.stop()


def test_policy_status_is_written_as_ancestors(api: FakeApi) -> None:
    with SourceRunner(source(api)) as run:
        state = run.wait(lambda s: s.backend_tls_policies and s.http_routes and s.gateways,
                         what="objects")
    writer = GatewayStatusWriter(KubeClient.for_url(api.url))
    assert writer.reconcile(translate(state).gateway_status) == 4
    obj = api.get(f"{GROUP}/v1", "BackendTLSPolicy", "default", "web")
    assert obj is not None
    (ancestor,) = obj["status"]["ancestors"]
    assert ancestor["ancestorRef"] == {"group": GROUP, "kind": "Gateway", "name": "gw",
                                       "namespace": "default"}
    assert ancestor["controllerName"] == "kxds.io/gateway-controller"
    conds = {c["type"]: (c["status"], c["reason"]) for c in ancestor["conditions"]}
    assert conds == {"Accepted": ("False", "NoValidCACertificate"),
                     "ResolvedRefs": ("False", "InvalidCACertificateRef")}
    assert writer.reconcile(translate(state).gateway_status) == 0


def test_two_policies_as_specific_conflict_and_the_older_applies() -> None:
    """BackendTLSPolicyConflictResolution (restated): same Service without a section
    name, then the same section name: the second is Conflicted; a policy naming the port
    and one naming the Service are both accepted, each applying where it is the most
    specific."""
    def policy(name: str, section: str | None, host: str) -> str:
        target = "{group: '', kind: Service, name: solo" + (
            f", sectionName: {section}}}" if section else "}")
        return (f"---\napiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\n"
                f"metadata: {{name: {name}, namespace: default}}\nspec:\n"
                f"  targetRefs: [{target}]\n  validation:\n    hostname: {host}\n"
                "    caCertificateRefs: [{group: '', kind: Secret, name: api-ca}]\n")

    base = (GOLDEN / "input.yaml").read_text() + (
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: solo, namespace: default}\n"
        "spec: {ports: [{name: https, port: 443}]}\n---\n"
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
        "metadata: {name: solo, namespace: default}\n"
        "spec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: solo, port: 443}]}]}\n")
    for section in (None, "https"):
        text = base + policy("c-1", section, "one.example.com") + policy(
            "c-2", section, "two.example.com")
        result = translate(load_text(text), TranslateConfig())
        accepted = {s.ref.name: {c.type: (c.status, c.reason) for c in s.parents[0].conditions}
                    ["Accepted"] for s in result.gateway_status.routes
                    if s.ref.kind == "BackendTLSPolicy" and s.parents}
        assert accepted["c-1"] == (True, "Accepted")
        assert accepted["c-2"] == (False, "Conflicted")
        assert any(d.ref.name == "c-2" and d.reason.value == "Conflict"
                   for d in result.diagnostics)
    # The golden case: "admin" names port 8443, the older "api" the whole Service.
    assert not any(d.reason.value == "Conflict" for d in _golden().diagnostics)


def test_subject_alt_names_make_the_tls_twin_distinct() -> None:
    """An Ingress asking for the same SNI and CA must never share a cluster with a
    policy that checks other names (one would connect as the other asked)."""
    plain = names.upstream_tls_cluster("default/api/443", http2=False, sni="api.example.com",
                                       ca_secret="api-ca")
    dns = names.upstream_tls_cluster("default/api/443", http2=False, sni="api.example.com",
                                     ca_secret="api-ca", sans=("DNS:api.example.com",))
    uri = names.upstream_tls_cluster("default/api/443", http2=False, sni="api.example.com",
                                     ca_secret="api-ca", sans=("URI:api.example.com",))
    assert len({plain, dns, uri}) == 3 and dns.startswith(plain + "/san=")


def test_too_many_subject_alt_names_are_a_parse_problem() -> None:
    text = (GOLDEN / "input.yaml").read_text().replace(
        "    - {type: Hostname, hostname: spiffe.internal.example.com}\n",
        "".join(f"    - {{type: Hostname, hostname: h{i}.example.com}}\n" for i in range(6)))
    state = load_text(text)
    assert ("default", "spiffe") not in state.backend_tls_policies
    assert any(p.field == "spec.validation.subjectAltNames" for p in state.problems)
