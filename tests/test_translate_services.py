"""Service and EndpointSlice translation: readiness, port matching, protocols, DNS clusters."""

from __future__ import annotations

import pytest

from kxds.ir import ClusterKind, Endpoint, UpstreamProtocol
from kxds.kube.loader import load_text
from kxds.translators.services import select_endpoints, translate_services


def _e(address: str) -> Endpoint:
    return Endpoint(address=address, port=80)


@pytest.mark.parametrize(("candidates", "expected"), [
    pytest.param([(_e("10.0.0.2"), True, False), (_e("10.0.0.1"), False, True)],
                 [_e("10.0.0.2")], id="ready-only"),
    pytest.param([(_e("10.0.0.1"), False, True), (_e("10.0.0.2"), False, False)],
                 [Endpoint(address="10.0.0.1", port=80, draining=True)],
                 id="terminating-when-none-ready"),
    pytest.param([(_e("10.0.0.1"), False, False)], [], id="nothing-serving"),
    pytest.param([(_e("10.0.0.1"), True, False), (_e("10.0.0.1"), True, False)],
                 [_e("10.0.0.1")], id="duplicate-across-slices"),
])
def test_select_endpoints(candidates: list[tuple[Endpoint, bool, bool]],
                          expected: list[Endpoint]) -> None:
    assert list(select_endpoints(candidates)) == expected


SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports:
  - {name: http, port: 80, targetPort: web}
  - {name: grpc, port: 81, appProtocol: kubernetes.io/h2c}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports:
- {name: http, port: 8080}
- {name: grpc, port: 9090}
- {name: dns, port: 5353, protocol: UDP}
- {name: http, port: 7070, protocol: UDP}
endpoints:
- {addresses: [10.0.0.1, 10.0.0.9], zone: z1, nodeName: n1}
"""


def test_ports_matched_by_name_and_protocol() -> None:
    out = translate_services(load_text(SERVICE))
    assert not out.diagnostics
    by_name = {a.cluster: a.endpoints for a in out.load_assignments}
    assert by_name == {
        "shop/web/80": (Endpoint(address="10.0.0.1", port=8080, zone="z1", node="n1"),),
        "shop/web/81": (Endpoint(address="10.0.0.1", port=9090, zone="z1", node="n1"),),
        "shop/web/53/udp": (Endpoint(address="10.0.0.1", port=5353, zone="z1", node="n1"),),
    }
    protocols = {c.name: c.protocol for c in out.clusters}
    assert protocols == {"shop/web/53/udp": UpstreamProtocol.UDP,
                         "shop/web/80": UpstreamProtocol.HTTP1,
                         "shop/web/81": UpstreamProtocol.HTTP2}
    assert [c.name for c in out.clusters] == sorted(protocols)


def test_external_name_is_a_dns_cluster_on_the_service_port() -> None:
    state = load_text("""
apiVersion: v1
kind: Service
metadata: {name: ext}
spec: {type: ExternalName, externalName: api.example.net, ports: [{port: 443, targetPort: 8443}]}
""")
    (cluster,) = translate_services(state).clusters
    assert cluster.kind is ClusterKind.STRICT_DNS
    assert (cluster.dns_host, cluster.dns_port) == ("api.example.net", 443)


def test_invalid_address_is_reported_and_skipped() -> None:
    state = load_text(SERVICE.replace("10.0.0.1, 10.0.0.9", "300.1.1.1"))
    out = translate_services(state)
    assert all(not a.endpoints for a in out.load_assignments)
    (diag,) = out.diagnostics
    assert str(diag.ref) == "EndpointSlice shop/web-1"
    assert diag.field == "endpoints[0].addresses[0]"
    assert "300.1.1.1" in diag.message
