"""``kxds serve`` and the real Envoy over GRPC and DELTA_GRPC: churn, NACK, kill and restart.

Unlike ``test_xds_envoy.py`` (hand-built resources, in-process server), these
run the whole pipeline: manifests -> translation -> cache -> gRPC -> Envoy.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from e2e import harness
from e2e.harness import EchoBackend, Envoy, Gateway, Kxds, Traffic, free_port, wait_for

pytestmark = pytest.mark.e2e

PROTOCOLS = [pytest.param(False, id="sotw"), pytest.param(True, id="delta")]
WEB = "default/web/80"


def _manifests(port: int, *hosts: str, label: str = "a") -> str:
    addresses = ", ".join(f'{{addresses: ["{h}"]}}' for h in hosts)
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default, labels: {{rev: "{label}"}}}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP}}]
endpoints: [{addresses}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: web, namespace: default}}
spec:
  ingressClassName: kxds
  defaultBackend: {{service: {{name: web, port: {{number: 80}}}}}}
"""


def _update_counters(envoy: Envoy) -> dict[str, int]:
    stats = envoy.stats()
    return {k: stats.get(k, 0) for k in ("cluster_manager.cds.update_success",
                                         "listener_manager.lds.update_success",
                                         "cluster_manager.cds.update_rejected")}


def _backends(echo: Callable[..., EchoBackend]) -> tuple[int, EchoBackend, EchoBackend]:
    port = free_port("127.0.0.2")
    return port, echo("one", host="127.0.0.2", port=port), echo("two", host="127.0.0.3",
                                                                 port=port)


@pytest.mark.parametrize("delta", PROTOCOLS)
def test_endpoint_churn_through_kxds_zero_errors_no_cds_lds_update(
        delta: bool, manifests_dir: Path, echo: Callable[..., EchoBackend],
        kxds_envoy: Callable[..., Gateway]) -> None:
    port, _, _ = _backends(echo)
    (manifests_dir / "web.yaml").write_text(_manifests(port, "127.0.0.2"))
    gw = kxds_envoy(manifests_dir, delta=delta)
    assert gw.envoy is not None
    gw.wait_backend("/", None, (200, "one"))
    before = _update_counters(gw.envoy)
    with Traffic(functools.partial(gw.backend, "/")) as traffic:
        steps = [(("127.0.0.2", "127.0.0.3"), None), (("127.0.0.3",), "two"),
                 (("127.0.0.2",), "one")] * 3
        for hosts, expect in steps:
            seq = gw.kxds.rebuild_seq()
            gw.write("web.yaml", _manifests(port, *hosts))
            gw.kxds.wait_rebuild(seq + 1)
            if expect is not None:
                gw.wait_backend("/", None, (200, expect))
            traffic.wait_more(5)
    assert traffic.failures() == [], traffic.failures()[:5]
    assert _update_counters(gw.envoy) == before


@pytest.mark.parametrize("delta", PROTOCOLS)
def test_forced_nack_through_kxds_keeps_traffic_and_names_the_service(
        delta: bool, manifests_dir: Path, tmp_path: Path, echo: Callable[..., EchoBackend],
        kxds_envoy: Callable[..., Gateway], monkeypatch: pytest.MonkeyPatch) -> None:
    reject = tmp_path / "reject"
    # kxds runs with the fault injected from outside (see e2e/reject_clusters.py).
    monkeypatch.setattr(harness, "kxds_command", lambda: [
        sys.executable, str(Path(__file__).with_name("reject_clusters.py")), str(reject)])
    port, _, _ = _backends(echo)
    (manifests_dir / "web.yaml").write_text(_manifests(port, "127.0.0.2"))
    gw = kxds_envoy(manifests_dir, delta=delta)
    assert gw.envoy is not None
    gw.wait_backend("/", None, (200, "one"))
    reject.write_text(WEB + "\n")
    seq = gw.kxds.rebuild_seq()
    gw.write("web.yaml", _manifests(port, "127.0.0.2", label="b"))  # any change rebuilds
    gw.kxds.wait_rebuild(seq + 1)
    gw.envoy.wait_until(lambda e: e.stat("cluster_manager.cds.update_rejected") >= 1,
                        what="Envoy NACKs the cluster")
    assert gw.backend("/") == (200, "one")  # Envoy kept its last good cluster
    status, text = gw.kxds.get(f"/debug/config_dump?node={gw.envoy.node_id}")
    assert status == 200
    entry = json.loads(text)["types"]["clusters"]["resources"][WEB]
    assert "cluster provided LB" in entry["nacked"]["error"]
    assert entry["nacked"]["refs"] == ["Service default/web"]
    assert entry["nacked"]["kept_version"] == entry["acked_version"]
    assert (gw.kxds.metric("kxds_xds_nacks_total", {"type": "clusters"}) or 0) >= 1
    # Endpoint changes still flow while the cluster change stays rejected.
    seq = gw.kxds.rebuild_seq()
    gw.write("web.yaml", _manifests(port, "127.0.0.3", label="b"))
    gw.kxds.wait_rebuild(seq + 1)
    gw.wait_backend("/", None, (200, "two"))
    assert gw.envoy.stat("cluster_manager.cds.update_rejected") == 1  # never resent
    # Lift the hook: the served cluster is what Envoy already runs: nothing to send.
    reject.write_text("")
    seq = gw.kxds.rebuild_seq()
    gw.write("web.yaml", _manifests(port, "127.0.0.3", label="c"))
    gw.kxds.wait_rebuild(seq + 1)
    assert gw.backend("/") == (200, "two")
    assert gw.envoy.stat("cluster_manager.cds.update_rejected") == 1


@pytest.mark.parametrize("delta", PROTOCOLS)
def test_kxds_killed_and_restarted_envoy_keeps_serving_without_repush(
        delta: bool, manifests_dir: Path, tmp_path: Path, echo: Callable[..., EchoBackend],
        kxds_envoy: Callable[..., Gateway], started: list[Any]) -> None:
    gw, envoy, _ = _serving_web(delta, manifests_dir, echo, kxds_envoy)
    before = _update_counters(envoy)
    os.kill(gw.kxds.pid, signal.SIGKILL)
    gw.kxds.stop()
    envoy.wait_until(lambda e: e.stat("control_plane.connected_state") == 0,
                     what="Envoy sees kxds gone")
    assert gw.backend("/") == (200, "one")  # serving without a control plane
    again = _restarted(gw, tmp_path, started)
    envoy.wait_until(lambda e: e.stat("control_plane.connected_state") == 1, timeout=30,
                     what="Envoy reconnected")
    wait_for(lambda: again.get(f"/debug/config_dump?node={envoy.node_id}")[0] == 200,
             what="stream known to the new kxds")
    assert gw.backend("/") == (200, "one")
    assert _update_counters(envoy) == before
    protocol = "delta" if delta else "sotw"
    for kind in ("clusters", "listeners", "routes", "endpoints"):
        sent = again.metric("kxds_xds_responses_total", {"type": kind, "protocol": protocol})
        assert not sent, f"{kind} re-pushed after restart"


def _serving_web(delta: bool, manifests_dir: Path, echo: Callable[..., EchoBackend],
                 kxds_envoy: Callable[..., Gateway]) -> tuple[Gateway, Envoy, int]:
    """kxds and an edge Envoy serving web (backend "one"); the backends' port."""
    port, _, _ = _backends(echo)
    (manifests_dir / "web.yaml").write_text(_manifests(port, "127.0.0.2"))
    gw = kxds_envoy(manifests_dir, delta=delta)
    assert gw.envoy is not None
    gw.wait_backend("/", None, (200, "one"))
    return gw, gw.envoy, port


def _restarted(gw: Gateway, tmp_path: Path, started: list[Any]) -> Kxds:
    """A new ``kxds serve`` with the stopped one's arguments and ports, ready."""
    again = Kxds(tmp_path, _serve_args(gw.kxds), xds_port=gw.kxds.xds_port,
                 admin_port=gw.kxds.admin_port, name="kxds-restarted")
    started.append(again)
    again.wait_ready(30)
    return again


def _serve_args(kxds: Kxds) -> list[str]:
    """The arguments of a running ``kxds serve`` minus what :class:`Kxds` adds itself."""
    args = kxds.argv[kxds.argv.index("serve") + 1:]
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--xds-address", "--admin-address", "--log-level"):
            skip = True
        else:
            out.append(arg)
    return out


def test_the_http_listener_on_a_held_port_binds_once_the_port_is_free(
        manifests_dir: Path, echo: Callable[..., EchoBackend],
        kxds_envoy: Callable[..., Gateway]) -> None:
    """kxds serve's own listener, its port held by another process when Envoy gets it."""
    port, _, _ = _backends(echo)
    (manifests_dir / "web.yaml").write_text(_manifests(port, "127.0.0.2"))
    held = socket.socket()
    try:
        held.bind(("127.0.0.1", 0))
        held.listen()
        http_port = held.getsockname()[1]
        gw = kxds_envoy(manifests_dir, ["--http-port", str(http_port)], wait=False)
        envoy = gw.envoy
        assert envoy is not None
        envoy.wait_until(lambda e: e.stat("listener_manager.lds.update_rejected") >= 1,
                         what="LDS NACK for the held port")
        wait_for(lambda: (gw.kxds.metric("kxds_xds_nacks_total", {"type": "listeners"})
                          or 0) >= 1, what="the NACK seen by kxds")
        seq = gw.kxds.rebuild_seq()
    finally:
        held.close()
    envoy.wait_listening(http_port, timeout=20)
    wait_for(lambda: harness.http_get(f"http://127.0.0.1:{http_port}/")[1].get(
        "x-echo-backend") == "one", what="traffic through the healed listener")
    assert gw.kxds.rebuild_seq() == seq  # healed without any new input
    assert (gw.kxds.metric("kxds_xds_nack_retries_total", {"type": "listeners"}) or 0) >= 1


def _many(count: int, port: int) -> str:
    """``count`` Services with endpoints, each routed to by a host of one Ingress."""
    docs, rules = [], []
    for i in range(count):
        docs.append(f"""
apiVersion: v1
kind: Service
metadata: {{name: s{i}, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: s{i}-1
  namespace: default
  labels: {{kubernetes.io/service-name: s{i}}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP}}]
endpoints: [{{addresses: ["127.0.0.3"]}}]
""")
        rules.append(f"  - host: s{i}.example.com\n    http: {{paths: [{{path: /, pathType: "
                     f"Prefix, backend: {{service: {{name: s{i}, port: {{number: 80}}}}}}}}]}}")
    docs.append("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: many, "
                "namespace: default}\nspec:\n  ingressClassName: kxds\n  rules:\n"
                + "\n".join(rules) + "\n")
    return "\n---\n".join(docs)


@pytest.mark.parametrize("delta", PROTOCOLS)
def test_kxds_killed_during_a_push_envoy_keeps_serving_and_converges_after_restart(
        delta: bool, manifests_dir: Path, tmp_path: Path, echo: Callable[..., EchoBackend],
        kxds_envoy: Callable[..., Gateway], started: list[Any]) -> None:
    gw, envoy, port = _serving_web(delta, manifests_dir, echo, kxds_envoy)
    clusters = envoy.stat("cluster_manager.active_clusters")
    with Traffic(functools.partial(gw.backend, "/")) as traffic:
        # One change that moves web and adds 100 routed Services: a push of a few
        # hundred resources, cut by SIGKILL as soon as its rebuild is published.
        seq = gw.kxds.rebuild_seq()
        gw.write("many.yaml", _many(100, port))
        gw.write("web.yaml", _manifests(port, "127.0.0.3"))
        gw.kxds.wait_rebuild(seq + 1, timeout=30)
        os.kill(gw.kxds.pid, signal.SIGKILL)
        gw.kxds.stop()
        again = _restarted(gw, tmp_path, started)
        # Envoy reconnects within its own backoff (0.5 s doubling, jittered).
        envoy.wait_until(lambda e: e.stat("control_plane.connected_state") == 1, timeout=30,
                         what="Envoy reconnected")
        envoy.wait_until(lambda e: e.stat("cluster_manager.active_clusters") >= clusters + 100
                         and e.stat("cluster_manager.warming_clusters") == 0, timeout=10,
                         what="Envoy converged on the new configuration")
        gw.wait_backend("/", None, (200, "two"))
        gw.wait_backend("/", "s99.example.com", (200, "two"))
        traffic.wait_more(5)
    assert traffic.failures() == [], traffic.failures()[:5]
    assert again.get(f"/debug/config_dump?node={envoy.node_id}")[0] == 200
