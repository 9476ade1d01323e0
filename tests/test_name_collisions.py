"""Two objects producing one resource name: the older keeps it, the younger is reported
(``Conflict``) and fails closed; no route ever reaches another object's endpoints.

Kubernetes names cannot hold the ``/`` between the parts of a resource name, so
collisions take a long name's capped hash; they are made here by collapsing the
name functions from outside.
"""

from __future__ import annotations

from typing import Any

import pytest

from kxds import ir, names
from kxds.diagnostics import ObjectRef, Reason
from kxds.kube.loader import load_text
from kxds.translators import ingress
from kxds.translators.config import NodeInfo, TranslateConfig
from kxds.translators.edge import translate
from kxds.translators.node import translate_node
from kxds.translators.translation import Translation

TWO = """
apiVersion: v1
kind: Service
metadata: {name: a, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec: {type: NodePort, ports: [{name: http, port: 80, nodePort: 30080}]}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: default, creationTimestamp: "2024-02-01T00:00:00Z"}
spec: {type: NodePort, ports: [{name: http, port: 80, nodePort: 30081}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: a-1, namespace: default, labels: {kubernetes.io/service-name: a}}
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.0.0.1]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: b-1, namespace: default, labels: {kubernetes.io/service-name: b}}
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.0.0.2]}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: default}
spec:
  ingressClassName: kxds
  rules:
  - http:
      paths:
      - {path: /a, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}
      - {path: /b, pathType: Prefix, backend: {service: {name: b, port: {number: 80}}}}
"""


@pytest.fixture
def collapsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Services a and b get one cluster name, as a capped name's hash could give them."""
    real_node, real_service = names.node_cluster, names.service_cluster

    def node_cluster(namespace: str, service: str, *args: Any, **kwargs: Any) -> str:
        return real_node(namespace, "x" if service in "ab" else service, *args, **kwargs)

    def service_cluster(namespace: str, service: str, port: int) -> str:
        return real_service(namespace, "x" if service in "ab" else service, port)

    monkeypatch.setattr(names, "node_cluster", node_cluster)
    monkeypatch.setattr(names, "service_cluster", service_cluster)


def _conflicts(result: Translation) -> list[ObjectRef]:
    return [d.ref for d in result.diagnostics if d.reason is Reason.CONFLICT]


@pytest.mark.usefixtures("collapsed")
def test_edge_the_older_service_keeps_the_name() -> None:
    result = translate(load_text(TWO))
    assert _conflicts(result) == [ObjectRef("Service", "default", "b")]
    (assignment,) = result.ir.load_assignments
    assert assignment.cluster == "default/x/80"
    assert [e.address for e in assignment.endpoints] == ["10.0.0.1"]  # a's, never b's
    (vh,) = result.ir.route_tables[0].virtual_hosts
    actions = {r.match.path: r.action for r in vh.routes}
    forward = actions["/a"]
    assert isinstance(forward, ir.Forward)
    assert forward.backends == (ir.WeightedBackend(cluster="default/x/80"),)
    assert actions["/b"] == ingress.UNAVAILABLE  # b's route must not reach a's endpoints
    assert ir.consistency_problems(result.ir) == []


@pytest.mark.usefixtures("collapsed")
def test_node_the_older_service_keeps_the_name() -> None:
    result = translate_node(load_text(TWO), TranslateConfig(), NodeInfo(name="n1"))
    assert _conflicts(result) == [ObjectRef("Service", "default", "b")]
    assert [(lis.ref.name, lis.port) for lis in result.ir.listeners] == [("a", 30080)]
    (assignment,) = result.ir.load_assignments
    assert [e.address for e in assignment.endpoints] == ["10.0.0.1"]


def test_without_collision_both_serve() -> None:
    result = translate(load_text(TWO))
    assert _conflicts(result) == []
    assert [c.name for c in result.ir.clusters] == ["default/a/80", "default/b/80"]


SNI = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{name: https, port: 443}]}
---
apiVersion: v1
kind: Secret
metadata: {name: b, namespace: default}
type: Opaque
stringData: {ca.crt: "not used"}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: unverified
  namespace: default
  annotations: {kxds.io/backend-protocol: HTTPS, kxds.io/backend-sni: "a/ca=b"}
spec:
  ingressClassName: kxds
  rules:
  - host: one.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 443}}}}
"""


def test_a_backend_sni_that_is_no_dns_name_fails_closed() -> None:
    """``sni=a/ca=b`` would name the twin of SNI ``a`` verified by CA Secret ``b``."""
    result = translate(load_text(SNI))
    (problem,) = [d for d in result.diagnostics if d.reason is Reason.INVALID_VALUE]
    assert problem.field == "metadata.annotations[kxds.io/backend-sni]"
    (vh,) = result.ir.route_tables[0].virtual_hosts
    assert vh.routes[0].action == ir.DirectResponse(status=503)
    assert not any("/tls" in c.name for c in result.ir.clusters)
