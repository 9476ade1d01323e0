"""Fake Kubernetes API -> ``kxds serve --kubeconfig`` -> real Envoy -> echo backends."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.harness import EchoBackend, Envoy, Kxds, Traffic, free_port, http_get, wait_for

# The in-test API server lives with the unit tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fakeapi import FakeApi, kubeconfig

pytestmark = pytest.mark.e2e

HOST = "web.example"


def objects() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
         "metadata": {"name": "kxds"}, "spec": {"controller": "kxds.io/ingress-controller"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
         "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
         "metadata": {"name": "web", "namespace": "default"},
         "spec": {"ingressClassName": "kxds", "rules": [{"host": HOST, "http": {"paths": [
             {"path": "/", "pathType": "Prefix",
              "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}},
    ]


def endpoint_slice(suffix: str, backend: EchoBackend) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"web-{suffix}", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": backend.port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [backend.host], "conditions": {"ready": True}}]}


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi().start()
    yield fake
    fake.stop()


def test_endpoint_changes_from_the_api_reach_envoy_while_traffic_flows(
        api: FakeApi, tmp_path: Path, echo: Any, started: list[Any]) -> None:
    a, b = echo("a"), echo("b")
    for obj in [*objects(), endpoint_slice("a", a)]:
        api.apply(obj)
    http_port = free_port()
    kxds = Kxds(tmp_path, ["--kubeconfig", kubeconfig(api.url, str(tmp_path / "kubeconfig")),
                           "--http-port", str(http_port), "--https-port", str(free_port()),
                           "--listen-address", "127.0.0.1", "--publish-address", "203.0.113.7"])
    started.append(kxds)
    kxds.wait_ready()
    envoy = Envoy(tmp_path, kxds.xds_address)
    started.append(envoy)
    envoy.wait_listening(http_port)
    url = f"http://127.0.0.1:{http_port}/"
    wait_for(lambda: http_get(url, host=HOST)[1].get("x-echo-backend") == "a", what="a serves")

    def request() -> tuple[int, str | None]:
        status, headers, _ = http_get(url, host=HOST, timeout=3.0)
        return status, headers.get("x-echo-backend")

    with Traffic(request, pause=0.01) as traffic:
        wait_for(lambda: len(traffic.results) >= 5, what="traffic")
        # Scale out to b, then drain a: the EndpointSlice changes travel
        # API watch -> kxds -> EDS -> Envoy while requests keep flowing.
        mark = len(traffic.results)
        started_at = time.monotonic()
        api.apply(endpoint_slice("b", b))
        wait_for(lambda: ("b" in {n for _, n in traffic.since(mark)}), what="b receives traffic")
        print(f"EndpointSlice added -> traffic at b: {time.monotonic() - started_at:.3f}s")
        api.delete("discovery.k8s.io/v1", "EndpointSlice", "default", "web-a")
        drained = len(traffic.results)
        wait_for(lambda: traffic.since(drained)[-20:].count((200, "b")) == 20, timeout=15,
                 what="only b after a's slice is deleted")

        # The API goes away: Envoy keeps its configuration and traffic keeps flowing.
        api.go_offline("refuse")
        outage = len(traffic.results)
        wait_for(lambda: len(traffic.results) >= outage + 30, what="traffic during the outage")
        api.apply(endpoint_slice("a", a))  # made while kxds cannot see it
        api.go_online()
        back = len(traffic.results)
        wait_for(lambda: "a" in {n for _, n in traffic.since(back)}, timeout=20,
                 what="a back after the outage")
    assert all(status == 200 for status, _ in traffic.results), sorted(set(traffic.results))
    ingress = api.get("networking.k8s.io/v1", "Ingress", "default", "web") or {}
    assert ingress["status"]["loadBalancer"]["ingress"] == [{"ip": "203.0.113.7"}]


def test_nothing_is_served_until_the_first_complete_sync(
        api: FakeApi, tmp_path: Path, echo: Any, started: list[Any]) -> None:
    a = echo("a")
    for obj in [*objects(), endpoint_slice("a", a)]:
        api.apply(obj)
    api.go_offline("refuse")
    http_port = free_port()
    kxds = Kxds(tmp_path, ["--kubeconfig", kubeconfig(api.url, str(tmp_path / "kubeconfig")),
                           "--http-port", str(http_port), "--https-port", str(free_port()),
                           "--listen-address", "127.0.0.1"])
    started.append(kxds)
    wait_for(lambda: kxds.get("/healthz")[0] == 200, what="kxds admin up")
    envoy = Envoy(tmp_path, kxds.xds_address)
    started.append(envoy)
    # Envoy's ADS stream is open: an empty configuration would reach it now.
    envoy.wait_until(lambda e: e.stat("control_plane.connected_state") == 1,
                     what="envoy connected to kxds")
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # the API is unreachable: no config, not ready
        assert kxds.get("/readyz")[0] != 200
        assert not envoy.listener_names()
        time.sleep(0.1)
    api.go_online()
    kxds.wait_ready()
    envoy.wait_listening(http_port)
    wait_for(lambda: http_get(f"http://127.0.0.1:{http_port}/", host=HOST)[1]
             .get("x-echo-backend") == "a", what="a serves")
