"""Gateway API through the real Envoy: a Gateway and HTTPRoutes served beside an Ingress.

Conformance intent restated (kubernetes-sigs/gateway-api conformance/tests): a route
attached to a Gateway listener serves its hostnames and paths (HTTPRouteSimpleSameNamespace,
HTTPRouteMatching), weighted backendRefs split traffic (HTTPRouteWeight), and a backendRef
that does not resolve answers 500 (HTTPRouteInvalidNonExistentBackendRef); an Ingress and
an HTTPRoute share a host.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from e2e.harness import EchoBackend, Gateway, write_manifests

pytestmark = pytest.mark.e2e


def service(name: str, echo: EchoBackend) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec: {{ports: [{{name: http, port: 80, targetPort: {echo.port}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {echo.port}, protocol: TCP}}]
endpoints: [{{addresses: ["{echo.host}"]}}]
"""


ROUTES = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: default}
spec:
  ingressClassName: kxds
  rules:
  - host: shop.test
    http:
      paths:
      - {path: /ingress, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kxds}
spec: {controllerName: kxds.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: kxds
  listeners:
  - {name: http, port: 80, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [shop.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /gateway}}]
    backendRefs: [{name: b, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /split}}]
    backendRefs: [{name: a, port: 80, weight: 1}, {name: b, port: 80, weight: 1}]
  - matches: [{path: {type: Exact, value: /missing}}]
    backendRefs: [{name: nowhere, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [api.test]
  rules:
  - backendRefs: [{name: a, port: 80}]
"""


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[dict[str, EchoBackend]]:
    started = {name: EchoBackend(name, tmp_path) for name in ("a", "b")}
    try:
        yield started
    finally:
        for b in started.values():
            b.stop()


def test_gateway_routes_beside_an_ingress(manifests_dir: Path, backends: dict[str, EchoBackend],
                                          kxds_envoy: Callable[..., Gateway]) -> None:
    write_manifests(manifests_dir, "backends.yaml",
                    "---".join(service(n, e) for n, e in sorted(backends.items())))
    write_manifests(manifests_dir, "routes.yaml", ROUTES)
    gw = kxds_envoy(manifests_dir)
    gw.wait_backend("/gateway", "shop.test", (200, "b"))
    assert gw.backend("/ingress/x", host="shop.test") == (200, "a")  # the Ingress, same host
    assert gw.backend("/", host="api.test") == (200, "a")  # a route of its own hostname
    assert gw.backend("/missing", host="shop.test")[0] == 500  # the spec's answer
    assert gw.backend("/other", host="shop.test")[0] == 404  # nothing matches
    seen = Counter(gw.backend("/split", host="shop.test")[1] for _ in range(80))
    # Equal weights: each backend's share of 80 requests within ~4.5 standard deviations.
    assert set(seen) == {"a", "b"} and all(20 <= n <= 60 for n in seen.values()), seen
    # The status kxds computed, on its debug page (the API source also writes it).
    status, page = gw.kxds.get("/debug/gateway-api")
    assert status == 200
    assert "GatewayClass kxds: Accepted=True" in page
    assert "Gateway default/gw: Accepted=True" in page
    assert "HTTPRoute default/shop: parent" in page and "BackendNotFound" in page
