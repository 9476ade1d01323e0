"""UDPRoute backends split by weight, through the real Envoy.

Conformance intent restated (kubernetes-sigs/gateway-api conformance/tests,
UDPRouteWeightedRouting): a UDPRoute with several weighted ``backendRefs`` shares
the traffic between them in proportion to their weights, and a backend of weight 0
gets none. Envoy's ``udp_proxy`` picks a host per session (a client address and
port), so the test sends from many client sockets and counts which backend
answers each; the split follows the backends' endpoints as their EndpointSlices
change (an EDS update of the split's cluster).
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from e2e.harness import EchoBackend, Gateway, free_port, gateway_manifest, wait_for, write_manifests

pytestmark = pytest.mark.e2e

SESSIONS = 80


def _service(name: str, echo: EchoBackend) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: dns, port: 53, targetPort: {echo.port}, protocol: UDP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: dns, port: {echo.port}, protocol: UDP}}]
endpoints:
- addresses: ["{echo.host}"]
"""


def _routes(port: int) -> str:
    return gateway_manifest(f"{{name: dns, port: {port}, protocol: UDP}}") + """---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {name: dns, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: dns}]
  rules:
  - backendRefs:
    - {name: ua, port: 53, weight: 3}
    - {name: ub, port: 53, weight: 1}
    - {name: uz, port: 53, weight: 0}
"""


def _answers(port: int, sessions: int = SESSIONS, source: str = "127.0.0.1") -> Counter[str]:
    """Which backend answers one datagram from each of ``sessions`` client sockets
    (on ``source``)."""
    seen: Counter[str] = Counter()
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(sessions)]
    try:
        for s in socks:
            s.settimeout(2)
            s.bind((source, 0))
            s.sendto(b"ping", ("127.0.0.1", port))
        for s in socks:
            try:
                seen[s.recv(200).split(b" ")[0].decode()] += 1
            except OSError:
                seen["(none)"] += 1
    finally:
        for s in socks:
            s.close()
    return seen


def test_udproute_splits_sessions_by_weight_through_envoy(
        manifests_dir: Path, tmp_path: Path, kxds_envoy: Callable[..., Gateway]) -> None:
    echoes = {n: EchoBackend(n, tmp_path, kind="udp") for n in ("ua", "ub", "uz", "uc")}
    try:
        write_manifests(manifests_dir, "backends.yaml", "---".join(
            _service(n, echoes[n]) for n in ("ua", "ub", "uz")))
        port = free_port(kind=socket.SOCK_DGRAM)
        write_manifests(manifests_dir, "routes.yaml", _routes(port))
        gw = kxds_envoy(manifests_dir, wait=False)
        assert gw.envoy is not None
        wait_for(lambda: _answers(port, 1)["(none)"] == 0, what="a UDP answer")
        seen = _answers(port)
        # 3:1 of 80 sessions is 60:20; Envoy's locality scheduler is weighted
        # round robin, so the split is close to exact.
        assert set(seen) == {"ua", "ub"}, seen  # uz (weight 0) gets nothing, none lost
        assert 50 <= seen["ua"] <= 70 and 10 <= seen["ub"] <= 30, seen
        # ub's endpoint moves to another process: the split's endpoints follow over
        # EDS, and new sessions (from another source address, so that none reuses
        # an earlier session's address and port) reach it.
        write_manifests(manifests_dir, "backends.yaml", "---".join(
            [_service("ua", echoes["ua"]), _service("ub", echoes["uc"]),
             _service("uz", echoes["uz"])]))
        split = "udproute/default/dns/split::127.0.0.1:"
        gw.envoy.wait_until(lambda e: (lambda text: f"{split}{echoes['uc'].port}:" in text
                                       and f"{split}{echoes['ub'].port}:" not in text)(
            e.admin("/clusters")) or None)
        moved = _answers(port, source="127.0.0.3")
        assert set(moved) == {"ua", "uc"}, moved
    finally:
        for e in echoes.values():
            e.stop()
