"""Outlier detection and health checks from kxds.io/ annotations on Services."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kxds.diagnostics import Reason
from kxds.envoy.clusters import build_cluster
from kxds.ir import Cluster, HealthCheck, OutlierDetection, UpstreamProtocol
from kxds.kube.loader import load_text
from kxds.translators import service_health as sh
from kxds.translators.annotations.values import BadValue
from kxds.translators.config import NodeInfo, TranslateConfig
from kxds.translators.node import translate_node
from kxds.translators.services import translate_services

DOC = Path(__file__).parent.parent / "docs" / "service-annotations.md"


@pytest.mark.parametrize(("text", "ms"), [
    pytest.param("10", 10_000, id="bare-seconds"),
    pytest.param("10s", 10_000, id="seconds"),
    pytest.param("500ms", 500, id="millis"),
    pytest.param("2m", 120_000, id="minutes"),
    pytest.param(" 3s ", 3_000, id="spaces"),
])
def test_duration(text: str, ms: int) -> None:
    assert sh.duration(100, 3_600_000)(text) == ms


@pytest.mark.parametrize("text", ["", "s", "1.5s", "-1", "10h", "1ms", "2h", "10 s"])
def test_bad_duration(text: str) -> None:
    with pytest.raises(BadValue):
        sh.duration(100, 3_600_000)(text)


@pytest.mark.parametrize("text", ["healthz", "/a b", "", "/x\x01"])
def test_bad_path(text: str) -> None:
    with pytest.raises(BadValue):
        sh.path(text)


def _service(annotations: dict[str, str], ports: str = "[{name: http, port: 80}]") -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop, annotations: {json.dumps(annotations)}}}
spec:
  ports: {ports}
"""


def test_no_annotations_no_health() -> None:
    out = translate_services(load_text(_service({"kxds.io/other": "x"})))
    assert not out.diagnostics
    assert out.clusters[0].outlier_detection is None and out.clusters[0].health_check is None


def test_outlier_defaults_fill_what_is_not_set() -> None:
    out = translate_services(load_text(_service({"kxds.io/outlier-consecutive-5xx": "2"})))
    assert not out.diagnostics
    assert out.clusters[0].outlier_detection == OutlierDetection(consecutive_5xx=2)
    assert out.clusters[0].health_check is None


def test_health_check_on_every_tcp_port_not_udp() -> None:
    ports = "[{name: http, port: 80}, {name: dns, port: 53, protocol: UDP}]"
    out = translate_services(load_text(_service({
        "kxds.io/health-check-path": "/healthz", "kxds.io/health-check-timeout": "250ms",
        "kxds.io/outlier-max-ejection-percent": "100"}, ports)))
    assert not out.diagnostics
    by_name = {c.name: c for c in out.clusters}
    check = HealthCheck(path="/healthz", timeout_ms=250)
    assert by_name["shop/web/80"].health_check == check
    assert by_name["shop/web/53/udp"].health_check is None
    assert all(c.outlier_detection == OutlierDetection(max_ejection_percent=100)
               for c in out.clusters)


@pytest.mark.parametrize(("annotations", "field", "reason", "words"), [
    pytest.param({"kxds.io/outlier-interval": "soon"}, "kxds.io/outlier-interval",
                 Reason.INVALID_VALUE, "is not a duration", id="bad-duration"),
    pytest.param({"kxds.io/outlier-max-ejection-percent": "150"},
                 "kxds.io/outlier-max-ejection-percent", Reason.INVALID_VALUE, "outside",
                 id="percent-too-high"),
    pytest.param({"kxds.io/health-check-path": "healthz"}, "kxds.io/health-check-path",
                 Reason.INVALID_VALUE, "absolute path", id="relative-path"),
    pytest.param({"kxds.io/health-check-interval": "5"}, "kxds.io/health-check-path",
                 Reason.INVALID_VALUE, "need a usable", id="no-path"),
    pytest.param({"kxds.io/outlier-consecutive-gateway-failure": "5"},
                 "kxds.io/outlier-consecutive-gateway-failure", Reason.UNSUPPORTED, "unknown",
                 id="unknown"),
])
def test_bad_values_name_service_and_annotation(
        annotations: dict[str, str], field: str, reason: Reason, words: str) -> None:
    out = translate_services(load_text(_service(annotations)))
    (diag,) = out.diagnostics
    assert str(diag.ref) == "Service shop/web"
    assert diag.field == f"metadata.annotations[{field}]"
    assert diag.reason is reason and words in diag.message
    assert out.clusters[0].health_check is None  # the bad annotation alone is left out


def test_envoy_cluster_fields() -> None:
    cluster = Cluster(
        name="c", ref=load_text(_service({})).services[("shop", "web")].meta.ref,
        protocol=UpstreamProtocol.HTTP2,
        outlier_detection=OutlierDetection(consecutive_5xx=2, interval_ms=1500),
        health_check=HealthCheck(path="/hz", interval_ms=3000, timeout_ms=500))
    msg = build_cluster(cluster)
    assert msg.outlier_detection.consecutive_5xx.value == 2
    assert (msg.outlier_detection.interval.seconds, msg.outlier_detection.interval.nanos) == (
        1, 500_000_000)
    (hc,) = msg.health_checks
    assert hc.http_health_check.path == "/hz"
    assert hc.http_health_check.codec_client_type == 1  # HTTP2
    assert hc.interval.seconds == 3 and hc.no_traffic_interval.seconds == 3
    assert hc.timeout.nanos == 500_000_000 and hc.unhealthy_threshold.value == 3


def test_doc_is_current() -> None:
    assert DOC.read_text() == sh.render_doc(), (
        "docs/service-annotations.md is stale: python -m kxds.translators.service_health "
        "> docs/service-annotations.md")


def test_per_node_proxy_clusters_carry_them_too() -> None:
    state = load_text(_service({"kxds.io/outlier-consecutive-5xx": "4",
                                "kxds.io/health-check-path": "/ready"})
                      .replace("spec:\n", "spec:\n  type: NodePort\n")
                      .replace("port: 80}", "port: 80, nodePort: 30080}"))
    out = translate_node(state, TranslateConfig(), NodeInfo(name="n1"))
    assert out.ir.clusters
    assert all(c.outlier_detection == OutlierDetection(consecutive_5xx=4)
               and c.health_check == HealthCheck(path="/ready") for c in out.ir.clusters)
