"""TCPRoutes attached by parentRef port, sectionName or both, through a real Envoy.

Restates the intent of the upstream conformance test
``TCPRouteParentRefPortAndSectionName``: a Gateway with three TCP listeners; one
TCPRoute attaches by ``port``, one by ``sectionName``, one by both, and each
listener's connections reach its own Route's backend (and no other's).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from e2e.harness import EchoBackend, Gateway, free_port, gateway_manifest, write_manifests
from e2e.test_gateway_api import _l4_service, _tcp_echo

pytestmark = pytest.mark.e2e


def _route(name: str, parent: str, backend: str) -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{parent}]
  rules: [{{backendRefs: [{{name: {backend}, port: 7000}}]}}]
"""


def test_tcp_routes_attach_by_port_section_name_or_both_through_envoy(
        manifests_dir: Path, tmp_path: Path, kxds_envoy: Callable[..., Gateway]) -> None:
    names = ("one", "two", "three")
    echoes = {n: EchoBackend(n, tmp_path, kind="tcp") for n in names}
    try:
        ports = {n: free_port() for n in names}
        listeners = [f"{{name: {n}, port: {ports[n]}, protocol: TCP}}" for n in names]
        write_manifests(manifests_dir, "backends.yaml", "---".join(
            _l4_service(n, echoes[n], 7000) for n in names))
        write_manifests(manifests_dir, "routes.yaml", "---".join([
            gateway_manifest(*listeners),
            _route("by-port", f"{{name: gw, port: {ports['one']}}}", "one"),
            _route("by-section", "{name: gw, sectionName: two}", "two"),
            _route("by-both", f"{{name: gw, sectionName: three, port: {ports['three']}}}",
                   "three")]))
        gw = kxds_envoy(manifests_dir, wait=False)
        assert gw.envoy is not None
        for n in names:
            gw.envoy.wait_listening(ports[n])
        for n in names:
            answers = {_tcp_echo(ports[n]).split(b" ")[0] for _ in range(5)}
            assert answers == {n.encode()}, (n, answers)
    finally:
        for e in echoes.values():
            e.stop()
