"""service-upstream through the real Envoy: an Ingress asking for it reaches the
Service's clusterIP:port, another Ingress on the same Service its endpoints.

On loopback the "cluster IP" is 127.0.0.1 and the Service port is the port of an
echo backend standing in for kube-proxy's virtual address; the EndpointSlice names
another echo backend (the pod)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from e2e.harness import EchoBackend, Gateway
from e2e.test_annotations import N

pytestmark = pytest.mark.e2e


def _ingress(name: str, host: str, port: int, annotations: dict[str, str]) -> str:
    return "---\n" + json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"ingressClassName": "kxds", "rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"number": port}}}}]}}]},
    }) + "\n"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("service-upstream")
    vip, pod = EchoBackend("vip", tmp), EchoBackend("pod", tmp)
    docs = [f"""---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  clusterIP: 127.0.0.1
  ports: [{{name: http, port: {vip.port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: default, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: {pod.port}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
""",
            _ingress("via-ip", "via-ip.test", vip.port, {N + "service-upstream": "true"}),
            _ingress("hashed", "hashed.test", vip.port, {
                N + "service-upstream": "true", N + "upstream-hash-by": "$remote_addr"}),
            _ingress("endpoints", "endpoints.test", vip.port, {})]
    manifests = tmp / "manifests"
    manifests.mkdir()
    (manifests / "all.yaml").write_text("".join(docs))
    g = Gateway(tmp, manifests)
    try:
        g.wait_backend("/", "endpoints.test", (200, "pod"))
        yield g
    finally:
        g.stop()
        vip.stop()
        pod.stop()


def test_service_upstream_reaches_the_cluster_ip(gw: Gateway) -> None:
    gw.wait_backend("/", "via-ip.test", (200, "vip"))
    assert {gw.backend("/x", host="via-ip.test") for _ in range(5)} == {(200, "vip")}
    # A balancing twin moves to the cluster IP too.
    assert gw.backend("/", host="hashed.test") == (200, "vip")


def test_other_ingresses_keep_the_endpoints(gw: Gateway) -> None:
    assert {gw.backend("/", host="endpoints.test") for _ in range(5)} == {(200, "pod")}
