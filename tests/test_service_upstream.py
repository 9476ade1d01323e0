"""service-upstream: routes of an Ingress asking for it reach the Service's cluster IP."""

from __future__ import annotations

import json

import pytest

from kxds import ir
from kxds.diagnostics import Reason
from kxds.kube.loader import load_text
from kxds.translators.edge import translate

N = "nginx.ingress.kubernetes.io/"


def _input(cluster_ip: str | None, annotations: dict[str, str], *, ingresses: int = 1) -> str:
    ip = f"\n  clusterIP: {json.dumps(cluster_ip)}" if cluster_ip is not None else ""
    docs = [f"""
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:{ip}
  ports: [{{name: http, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints: [{{addresses: ["10.0.0.1"]}}]
"""]
    docs += [json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": f"ing{i}", "namespace": "shop", "annotations": annotations},
        "spec": {"ingressClassName": "kxds", "rules": [{"host": f"h{i}.test", "http": {
            "paths": [{"path": "/", "pathType": "Prefix", "backend": {
                "service": {"name": "web", "port": {"number": 80}}}}]}}]}})
             for i in range(ingresses)]
    return "\n---\n".join(docs)


def _backends(model: ir.IR) -> set[str]:
    return {b.cluster for t in model.route_tables for vh in t.virtual_hosts
            for r in vh.routes if isinstance(r.action, ir.Forward) for b in r.action.backends}


def test_twin_has_the_cluster_ip_as_its_one_endpoint() -> None:
    out = translate(load_text(_input("10.96.0.7", {N + "service-upstream": "true"})))
    assert _backends(out.ir) == {"shop/web/80/service-upstream"}
    (la,) = [a for a in out.ir.load_assignments if a.cluster == "shop/web/80/service-upstream"]
    assert la.endpoints == (ir.Endpoint(address="10.96.0.7", port=80),)
    assert not [d for d in out.diagnostics if "service-upstream" in d.field]


@pytest.mark.parametrize("value", ["false", "nonsense"])
def test_not_asked_keeps_the_endpoints(value: str) -> None:
    out = translate(load_text(_input("10.96.0.7", {N + "service-upstream": value})))
    assert _backends(out.ir) == {"shop/web/80"}
    assert not any(c.name.endswith("/service-upstream") for c in out.ir.clusters)


@pytest.mark.parametrize(("cluster_ip", "words"), [
    pytest.param("None", "headless", id="headless"),
    pytest.param(None, "no clusterIP", id="absent"),
    pytest.param("10.96.0.300", "not an IP address", id="garbage"),
])
def test_unusable_cluster_ip_is_reported_once_per_ingress(cluster_ip: str | None,
                                                          words: str) -> None:
    out = translate(load_text(_input(cluster_ip, {N + "service-upstream": "true"},
                                     ingresses=2)))
    assert _backends(out.ir) == {"shop/web/80"}
    found = [d for d in out.diagnostics if "service-upstream" in d.field]
    assert sorted(str(d.ref) for d in found) == ["Ingress shop/ing0", "Ingress shop/ing1"]
    assert all(d.reason is Reason.UNSUPPORTED and words in d.message
               and "Service shop/web" in d.message for d in found)
