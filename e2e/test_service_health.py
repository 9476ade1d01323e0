"""Outlier detection and active health checks (kxds.io/ annotations on the Service)
through the real Envoy: an endpoint that answers 500s, or fails its health path, stops
getting traffic while another keeps serving."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from e2e.harness import EchoBackend, Gateway, LoopbackHttp, QuietHandler, wait_for
from e2e.test_annotations import _ingress, _service

pytestmark = pytest.mark.e2e


class Sick(LoopbackHttp):
    """An HTTP server on loopback answering ``status(path)`` with ``x-echo-backend: name``."""

    def __init__(self, name: str, status: Callable[[str], int]) -> None:
        self.hits: list[str] = []
        sick = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                sick.hits.append(self.path)
                self.send_response(status(self.path))
                self.send_header("content-length", "0")
                self.send_header("x-echo-backend", name)
                self.end_headers()

        super().__init__(Handler)


def _annotated(name: str, ports: list[EchoBackend] | list[int],
               annotations: dict[str, str]) -> str:
    """:func:`_service` with ``annotations`` on the Service."""
    head = f"metadata: {{name: {name}, namespace: default}}"
    return _service(name, ports).replace(
        head, f"metadata: {{name: {name}, namespace: default, "
              f"annotations: {json.dumps(annotations)}}}", 1)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Sick]]:
    made = {"broken": Sick("broken", lambda path: 500),
            "sick": Sick("sick", lambda path: 500 if path == "/healthz" else 200)}
    yield made
    for s in made.values():
        s.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory,
       servers: dict[str, Sick]) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("service-health")
    echoes = {n: EchoBackend(n, tmp) for n in ("good", "well", "plain")}
    docs = [
        _annotated("flaky", [echoes["good"], servers["broken"].port], {
            "kxds.io/outlier-consecutive-5xx": "2", "kxds.io/outlier-interval": "1s",
            "kxds.io/outlier-base-ejection-time": "5m",
            "kxds.io/outlier-max-ejection-percent": "50"}),
        _annotated("probed", [echoes["well"], servers["sick"].port], {
            "kxds.io/health-check-path": "/healthz", "kxds.io/health-check-interval": "1s",
            "kxds.io/health-check-unhealthy-threshold": "1"}),
        _service("unprobed", [echoes["plain"], servers["sick"].port]),
        _ingress("flaky", "flaky.test", "flaky", {}),
        _ingress("probed", "probed.test", "probed", {}),
        _ingress("unprobed", "unprobed.test", "unprobed", {}),
    ]
    manifests = tmp / "manifests"
    manifests.mkdir()
    (manifests / "all.yaml").write_text("".join(docs))
    g = Gateway(tmp, manifests)
    try:
        g.wait_backend("/", "unprobed.test", (200, "plain"))
        yield g
    finally:
        g.stop()
        for e in echoes.values():
            e.stop()


def test_endpoint_answering_500s_is_ejected(gw: Gateway) -> None:
    seen = [gw.backend("/", host="flaky.test") for _ in range(12)]
    # Round robin: the broken endpoint answers at most its two 500s, then is ejected.
    assert seen.count((500, "broken")) <= 2, seen
    assert seen[-6:] == [(200, "good")] * 6, seen
    assert gw.envoy is not None
    assert gw.envoy.stat("cluster.default/flaky/80.outlier_detection.ejections_enforced_total") >= 1


def test_endpoint_failing_its_health_path_gets_no_traffic(
        gw: Gateway, servers: dict[str, Sick]) -> None:
    assert gw.envoy is not None
    envoy = gw.envoy
    # Both endpoints checked: one passed, one failed (until then Envoy, with no healthy
    # endpoint, would balance over both: its panic mode).
    prefix = "cluster.default/probed/80.health_check."
    wait_for(lambda: envoy.stat(prefix + "success") >= 1 and envoy.stat(prefix + "failure") >= 1,
             what="a passed and a failed health check")
    assert "/healthz" in servers["sick"].hits
    seen = {gw.backend("/", host="probed.test") for _ in range(10)}
    assert seen == {(200, "well")}
    # Without the annotation the same endpoint serves: the health check is what kept it out.
    unprobed = {gw.backend("/", host="unprobed.test") for _ in range(10)}
    assert unprobed == {(200, "plain"), (200, "sick")}
