"""IR outlier detection and health checks -> a cluster's ``outlier_detection`` and
``health_checks`` (Envoy's passive and active health checking)."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.type.v3 import http_pb2
from google.protobuf import duration_pb2

from kxds import ir


def _fill_ms(duration: duration_pb2.Duration, ms: int) -> None:
    duration.seconds = ms // 1000
    duration.nanos = (ms % 1000) * 1_000_000


def fill_health(msg: cluster_pb2.Cluster, cluster: ir.Cluster) -> None:
    """Set ``msg``'s outlier detection and health check from ``cluster``'s, if any."""
    od = cluster.outlier_detection
    if od is not None:
        out = msg.outlier_detection
        out.consecutive_5xx.value = od.consecutive_5xx
        _fill_ms(out.interval, od.interval_ms)
        _fill_ms(out.base_ejection_time, od.base_ejection_time_ms)
        out.max_ejection_percent.value = od.max_ejection_percent
    hc = cluster.health_check
    if hc is not None:
        check = msg.health_checks.add()
        _fill_ms(check.interval, hc.interval_ms)
        # A cluster that no route has used yet is probed as often, so that an endpoint
        # is known healthy before its first request (Envoy's default is 60 s).
        _fill_ms(check.no_traffic_interval, hc.interval_ms)
        _fill_ms(check.timeout, hc.timeout_ms)
        check.healthy_threshold.value = hc.healthy_threshold
        check.unhealthy_threshold.value = hc.unhealthy_threshold
        check.http_health_check.path = hc.path
        if cluster.protocol is ir.UpstreamProtocol.HTTP2:
            check.http_health_check.codec_client_type = http_pb2.HTTP2
