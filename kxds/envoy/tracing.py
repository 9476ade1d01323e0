"""IR tracing -> the connection managers' OpenTelemetry tracer and the routes'
``tracing`` and ``decorator``.

The tracer sends spans over OTLP/gRPC to the collector cluster. Which requests are
traced: the connection manager's sampling for routes without their own, the route's
``tracing`` (client, random and overall sampling) for the others. A traced request
carrying a ``traceparent`` continues that trace; on a route not traced it is passed on
marked not sampled.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.trace.v3 import opentelemetry_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.v3 import percent_pb2

from kxds import ir
from kxds.envoy.common import pack
from kxds.envoy.filter_names import OPENTELEMETRY_TRACER


def _fill_percent(p: percent_pb2.Percent, value: float) -> None:
    p.value = value


def fill_tracing(hcm: hcm_pb2.HttpConnectionManager, tracing: ir.Tracing) -> None:
    """The connection manager's tracer and its default sampling."""
    config = opentelemetry_pb2.OpenTelemetryConfig(service_name=tracing.service_name)
    config.grpc_service.envoy_grpc.cluster_name = tracing.collector_cluster
    t = hcm.tracing
    t.provider.name = OPENTELEMETRY_TRACER
    t.provider.typed_config.CopyFrom(pack(config))
    # Forced traces (x-client-trace-id) are sampled like the others: a route not
    # asking for tracing is not traced because a client asks.
    _fill_percent(t.client_sampling, tracing.sampling_percent)
    _fill_percent(t.random_sampling, tracing.sampling_percent)


def _fill_fraction(f: percent_pb2.FractionalPercent, per_million: int) -> None:
    f.numerator = per_million
    f.denominator = percent_pb2.FractionalPercent.MILLION


def fill_route_tracing(msg: rc_pb2.Route, tracing: ir.RouteTracing) -> None:
    """The route's sampling (all of it off when disabled) and span name."""
    t = msg.tracing
    sampled = round(tracing.sampling_percent * 10_000) if tracing.enabled else 0
    _fill_fraction(t.client_sampling, sampled)
    _fill_fraction(t.random_sampling, sampled)
    _fill_fraction(t.overall_sampling, 1_000_000 if tracing.enabled else 0)
    if tracing.enabled and tracing.operation is not None:
        msg.decorator.operation = tracing.operation
