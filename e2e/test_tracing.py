"""OpenTelemetry tracing through the real Envoy: kxds serve --otel-collector points the
connection managers' tracer at a small OTLP/gRPC collector started here; a route of an
Ingress with enable-opentelemetry sends a span named by opentelemetry-operation-name,
a route without it sends none."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts_pb2

from e2e.harness import EchoBackend, Gateway, wait_for
from e2e.test_annotations import N, _ingress, _service

pytestmark = pytest.mark.e2e

_EXPORT = "opentelemetry.proto.collector.trace.v1.TraceService"


class Collector:
    """An OTLP/gRPC trace collector on loopback that keeps every span it is sent, as
    (service.name, span name, {attribute: value}); the trace id (hex) is kept as the
    attribute ``trace_id``."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        handler = grpc.method_handlers_generic_handler(_EXPORT, {
            "Export": grpc.unary_unary_rpc_method_handler(
                self._export, request_deserializer=ts_pb2.ExportTraceServiceRequest.FromString,
                response_serializer=ts_pb2.ExportTraceServiceResponse.SerializeToString)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _export(self, request: ts_pb2.ExportTraceServiceRequest,
                context: Any) -> ts_pb2.ExportTraceServiceResponse:
        for rs in request.resource_spans:
            service = next((a.value.string_value for a in rs.resource.attributes
                            if a.key == "service.name"), "")
            # The OTLP protos xds-protos ships name field 2 by its old name
            # (InstrumentationLibrarySpans, now ScopeSpans: the same wire shape).
            for ss in rs.instrumentation_library_spans:
                for span in ss.spans:
                    attrs = {a.key: a.value.string_value for a in span.attributes}
                    attrs["trace_id"] = span.trace_id.hex()
                    with self._lock:
                        self.spans.append((service, span.name, attrs))
        return ts_pb2.ExportTraceServiceResponse()

    def seen(self) -> list[tuple[str, str, dict[str, str]]]:
        with self._lock:
            return list(self.spans)

    def close(self) -> None:
        self.server.stop(grace=None)


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, collector: Collector) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("tracing")
    echo = EchoBackend("main", tmp)
    docs = [_service("main", [echo]),
            _ingress("traced", "traced.test", "main", {
                N + "enable-opentelemetry": "true",
                N + "opentelemetry-operation-name": "shop-checkout"}),
            _ingress("untraced", "untraced.test", "main", {})]
    manifests = tmp / "manifests"
    manifests.mkdir()
    (manifests / "all.yaml").write_text("".join(docs))
    g = Gateway(tmp, manifests, ["--otel-collector", f"127.0.0.1:{collector.port}",
                                 "--otel-service-name", "edge-under-test"])
    try:
        g.wait_backend("/", "untraced.test", (200, "main"))
        g.wait_backend("/", "traced.test", (200, "main"))
        yield g
    finally:
        g.stop()
        echo.stop()


def _mentions(attrs: dict[str, str], text: str) -> bool:
    return any(text in v for v in attrs.values())


def test_traced_route_sends_a_span_and_an_untraced_one_none(
        gw: Gateway, collector: Collector) -> None:
    for i in range(3):
        assert gw.backend(f"/quiet/{i}", host="untraced.test") == (200, "main")
    assert gw.backend("/checkout/1", host="traced.test") == (200, "main")

    def span() -> tuple[str, str, dict[str, str]] | None:
        return next((s for s in collector.seen() if _mentions(s[2], "/checkout/1")), None)
    # Envoy batches spans and flushes them every few seconds.
    service, name, attrs = wait_for(span, timeout=60, what="the span of /checkout/1")
    assert service == "edge-under-test"
    assert name == "shop-checkout"
    assert attrs.get("http.status_code") == "200"
    # The untraced requests were made first: had they been traced, their spans would
    # have been flushed with (or before) this one.
    assert not [s for s in collector.seen() if _mentions(s[2], "/quiet/")]


_TRACE = "0af7651916cd43dd8448eb211c80319c"
_PARENT = f"00-{_TRACE}-b7ad6b7169203331-01"
"""A sampled W3C trace context, as a traced caller sends it."""


def test_incoming_trace_is_continued_where_traced_and_not_sampled_elsewhere(
        gw: Gateway, collector: Collector) -> None:
    status, _, body = gw.get("/parent/quiet", host="untraced.test",
                             headers={"traceparent": _PARENT})
    assert status == 200
    # The context goes on to the backend (same trace), but not sampled: no span here.
    seen_by_backend = json.loads(body)["headers"]["traceparent"]
    assert seen_by_backend.startswith(f"00-{_TRACE}-") and seen_by_backend.endswith("-00")
    status, _, _ = gw.get("/parent/traced", host="traced.test",
                          headers={"traceparent": _PARENT})
    assert status == 200

    def span() -> tuple[str, str, dict[str, str]] | None:
        return next((s for s in collector.seen() if _mentions(s[2], "/parent/traced")), None)
    _, _, attrs = wait_for(span, timeout=60, what="the span of /parent/traced")
    assert attrs["trace_id"] == _TRACE  # opentelemetry-trust-incoming-span's default
    assert not [s for s in collector.seen() if _mentions(s[2], "/parent/quiet")]


@pytest.fixture(scope="module")
def gw_all(tmp_path_factory: pytest.TempPathFactory,
           collector: Collector) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("tracing-all")
    echo = EchoBackend("main", tmp)
    docs = [_service("main", [echo]),
            _ingress("plain", "plain.test", "main", {}),
            _ingress("opted-out", "opted-out.test", "main", {
                N + "enable-opentelemetry": "false"})]
    manifests = tmp / "manifests"
    manifests.mkdir()
    (manifests / "all.yaml").write_text("".join(docs))
    g = Gateway(tmp, manifests, ["--otel-collector", f"127.0.0.1:{collector.port}",
                                 "--otel-trace-all"])
    try:
        g.wait_backend("/", "plain.test", (200, "main"))
        g.wait_backend("/", "opted-out.test", (200, "main"))
        yield g
    finally:
        g.stop()
        echo.stop()


def test_trace_all_traces_every_route_but_those_opted_out(
        gw_all: Gateway, collector: Collector) -> None:
    for i in range(3):
        assert gw_all.backend(f"/opted-out/{i}", host="opted-out.test") == (200, "main")
    assert gw_all.backend("/everyone/1", host="plain.test") == (200, "main")

    def span() -> tuple[str, str, dict[str, str]] | None:
        return next((s for s in collector.seen() if _mentions(s[2], "/everyone/1")), None)
    service, _, _ = wait_for(span, timeout=60, what="the span of /everyone/1")
    assert service == "kxds"  # the default --otel-service-name
    assert not [s for s in collector.seen() if _mentions(s[2], "/opted-out/")]
