"""Upstream Gateway API conformance tests about routing, restated through the real Envoy.

kubernetes-sigs/gateway-api ``conformance/tests``: a request is served by the Routes of
the listener whose hostname matches it most specifically only (GatewayHTTPListenerIsolation);
a backend in another namespace is
reached only with a ReferenceGrant there (HTTPRouteReferenceGrant); headless Services and
Services whose EndpointSlices were written by hand are routed to like any other
(HTTPRouteServiceTypes); each backend's own request header changes reach that backend
only (HTTPRouteRequestHeaderModifierBackendWeights); a rule's name changes nothing of
its routing (HTTPRouteNamedRule); a rule whose backends all weigh 0 answers 500
(HTTPRouteAllBackendsWeightZero).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from e2e.harness import EchoBackend, Gateway, service_manifest, write_manifests

pytestmark = pytest.mark.e2e


def app_backend_service(name: str, echo: EchoBackend) -> str:
    """A Service of the ``app-backend`` namespace whose one endpoint is ``echo``."""
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: app-backend}}
spec: {{ports: [{{name: http, port: 8080, targetPort: {echo.port}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: app-backend, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {echo.port}, protocol: TCP}}]
endpoints: [{{addresses: ["{echo.host}"]}}]
"""


def headless_service(name: str, echo: EchoBackend) -> str:
    """A headless Service (``clusterIP: None``) with a selector, and the EndpointSlice the
    EndpointSlice controller would write for its one Pod."""
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  clusterIP: None
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: {echo.port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-x1
  namespace: default
  labels:
    kubernetes.io/service-name: {name}
    endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io
addressType: IPv4
ports: [{{name: http, port: {echo.port}, protocol: TCP}}]
endpoints: [{{addresses: ["{echo.host}"], conditions: {{ready: true}}}}]
"""


GRANT = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: reference-grant, namespace: app-backend}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
  to: [{group: "", kind: Service, name: app-backend-v1}]
"""

ROUTES = """
apiVersion: v1
kind: Namespace
metadata: {name: app-backend}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kxds}
spec: {controllerName: kxds.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: same-namespace, namespace: default}
spec:
  gatewayClassName: kxds
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: wildcard-example-com, port: 80, protocol: HTTP, hostname: "*.example.com"}
  - {name: wildcard-foo-example-com, port: 80, protocol: HTTP, hostname: "*.foo.example.com"}
  - {name: abc-foo-example-com, port: 80, protocol: HTTP, hostname: abc.foo.example.com}
  - {name: quiet, port: 80, protocol: HTTP, hostname: quiet.example.org}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reference-grant, namespace: default}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [grant.test]
  rules:
  - matches: [{path: {value: /v2}}]
    backendRefs: [{name: app-backend-v2, namespace: app-backend, port: 8080}]
  - backendRefs: [{name: app-backend-v1, namespace: app-backend, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: service-types, namespace: default}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [types.test]
  rules:
  - matches: [{path: {value: /headless}}]
    backendRefs: [{name: headless, port: 80}]
  - matches: [{path: {value: /manual-endpointslices}}]
    backendRefs: [{name: manual, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: all-backends-weight-zero, namespace: default}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [zero.test]
  rules:
  - backendRefs: [{name: a, port: 80, weight: 0}, {name: b, port: 80, weight: 0}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-named-rules, namespace: default}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [named.test]
  rules:
  - name: named-rule
    matches: [{path: {value: /named}}]
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {value: /unnamed}}]
    backendRefs: [{name: b, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: request-header-modifier-backend-weights, namespace: default}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [weights.test]
  rules:
  - backendRefs:
    - name: a
      port: 80
      weight: 1
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: backend, value: a}]}
    - name: b
      port: 80
      weight: 1
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: backend, value: b}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attaches-to-empty-hostname, namespace: default}
spec:
  parentRefs: [{name: same-namespace, sectionName: http}]
  rules:
  - matches: [{path: {value: /empty-hostname}}]
    backendRefs: [{name: a, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attaches-to-wildcard-example-com, namespace: default}
spec:
  parentRefs: [{name: same-namespace, sectionName: wildcard-example-com}]
  rules:
  - matches: [{path: {value: /wildcard-example-com}}]
    backendRefs: [{name: a, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attaches-to-wildcard-foo-example-com, namespace: default}
spec:
  parentRefs: [{name: same-namespace, sectionName: wildcard-foo-example-com}]
  rules:
  - matches: [{path: {value: /wildcard-foo-example-com}}]
    backendRefs: [{name: a, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attaches-to-abc-foo-example-com, namespace: default}
spec:
  parentRefs: [{name: same-namespace, sectionName: abc-foo-example-com}]
  rules:
  - matches: [{path: {value: /abc-foo-example-com}}]
    backendRefs: [{name: a, port: 80}]
---
# Beyond the suite: the listener without a hostname names a host that the listener
# "quiet" owns; "quiet" has no Route, so those requests find none (404).
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wider-listener, namespace: default}
spec:
  parentRefs: [{name: same-namespace, sectionName: http}]
  hostnames: [quiet.example.org, bar.com]
  rules:
  - matches: [{path: {value: /wider}}]
    backendRefs: [{name: b, port: 80}]
"""

ISOLATION = {  # host -> the one path its listener's Route serves
    "bar.com": "/empty-hostname", "bar.example.com": "/wildcard-example-com",
    "bar.foo.example.com": "/wildcard-foo-example-com",
    "abc.foo.example.com": "/abc-foo-example-com"}


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[dict[str, EchoBackend]]:
    started = {name: EchoBackend(name, tmp_path) for name in ("a", "b")}
    try:
        yield started
    finally:
        for b in started.values():
            b.stop()


def test_reference_grants_service_types_and_backend_header_changes_through_envoy(
        manifests_dir: Path, backends: dict[str, EchoBackend],
        kxds_envoy: Callable[..., Gateway]) -> None:
    a, b = backends["a"], backends["b"]
    write_manifests(manifests_dir, "backends.yaml", "---".join([
        service_manifest("a", a.host, a.port), service_manifest("b", b.host, b.port),
        app_backend_service("app-backend-v1", a), app_backend_service("app-backend-v2", b),
        headless_service("headless", a),
        # No selector, its EndpointSlice written by hand (or mirrored from a hand-written
        # Endpoints object by Kubernetes): what the suite calls manual EndpointSlices.
        service_manifest("manual", b.host, b.port)]))
    write_manifests(manifests_dir, "grant.yaml", GRANT)
    write_manifests(manifests_dir, "routes.yaml", ROUTES)
    gw = kxds_envoy(manifests_dir, wait=False)

    # HTTPRouteReferenceGrant: the granted Service answers; the other one of that
    # namespace, which the grant does not name, is refused (the rule's 500).
    gw.wait_backend("/", "grant.test", (200, "a"))
    assert gw.backend("/v2", host="grant.test")[0] == 500
    # HTTPRouteServiceTypes.
    assert gw.backend("/headless", host="types.test") == (200, "a")
    assert gw.backend("/manual-endpointslices", host="types.test") == (200, "b")
    # GatewayHTTPListenerIsolation: each request is served by the Routes of the listener
    # whose hostname matches it most specifically, never by a wider listener's.
    for host, own in ISOLATION.items():
        for path in ISOLATION.values():
            assert gw.backend(path, host=host)[0] == (200 if path == own else 404), (host, path)
    assert gw.backend("/wider", host="bar.com") == (200, "b")
    assert gw.backend("/wider", host="quiet.example.org")[0] == 404
    # HTTPRouteAllBackendsWeightZero (a later release's test): no share for anyone, 500.
    assert gw.backend("/", host="zero.test") == (500, None)
    # HTTPRouteNamedRule.
    assert gw.backend("/named", host="named.test") == (200, "a")
    assert gw.backend("/unnamed", host="named.test") == (200, "b")
    # HTTPRouteRequestHeaderModifierBackendWeights: each request carries the header of
    # the backend that got it, never the other's.
    seen: Counter[str] = Counter()
    for _ in range(40):
        status, headers, body = gw.get("/", host="weights.test")
        assert status == 200
        assert json.loads(body)["headers"]["backend"] == headers["x-echo-backend"]
        seen[headers["x-echo-backend"]] += 1
    assert set(seen) == {"a", "b"}, seen

    # The grant withdrawn: the Service in the other namespace is refused again.
    write_manifests(manifests_dir, "grant.yaml", "")
    gw.wait_backend("/", "grant.test", (500, None))
