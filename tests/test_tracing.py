"""OpenTelemetry tracing: the --otel-* flags, the tracer on the connection managers,
and per-Ingress route tracing (enable-opentelemetry, opentelemetry-operation-name)."""

from __future__ import annotations

import argparse
import json

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2

from kxds import cli, ir
from kxds.diagnostics import Reason
from kxds.envoy.build import build_resources
from kxds.envoy.resource import ROUTE
from kxds.kube.loader import load_text
from kxds.translators.config import TracingConfig, TranslateConfig
from kxds.translators.edge import translate
from kxds.translators.tracing import COLLECTOR_CLUSTER

N = "nginx.ingress.kubernetes.io/"


def _args(*flags: str) -> TranslateConfig:
    p = argparse.ArgumentParser()
    cli.add_translate_flags(p)
    return cli.config_from_args(p.parse_args(list(flags)))


def test_flags_make_the_tracing_config() -> None:
    assert _args().tracing is None
    config = _args("--otel-collector", "otel.observability.svc:4317", "--otel-service-name",
                   "edge", "--otel-sampler-ratio", "0.1", "--otel-trace-all")
    assert config.tracing == TracingConfig(
        collector_host="otel.observability.svc", collector_port=4317, service_name="edge",
        sampler_ratio=0.1, all_routes=True)
    assert _args("--otel-collector", "[::1]:4317").tracing == TracingConfig(
        collector_host="::1", collector_port=4317)


@pytest.mark.parametrize("flags", [
    ["--otel-collector", "otel"], ["--otel-collector", "otel:0"],
    ["--otel-collector", "ot el:4317"], ["--otel-sampler-ratio", "1.5"],
    ["--otel-sampler-ratio", "x"],
])
def test_bad_flags_are_refused(flags: list[str]) -> None:
    with pytest.raises(SystemExit):
        _args(*flags)


def _input(annotations: dict[str, dict[str, str]]) -> str:
    docs = ["""
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{name: http, port: 80}]
"""]
    docs += [json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "shop", "annotations": a},
        "spec": {"ingressClassName": "kxds", "rules": [{"host": f"{name}.test", "http": {
            "paths": [{"path": "/", "pathType": "Prefix", "backend": {
                "service": {"name": "web", "port": {"number": 80}}}}]}}]}})
             for name, a in annotations.items()]
    return "\n---\n".join(docs)


def _tracing_of(model: ir.IR) -> dict[str, ir.RouteTracing | None]:
    return {r.ref.name: r.policy.tracing if r.policy is not None else None
            for t in model.route_tables for vh in t.virtual_hosts for r in vh.routes}


def _envoy_route(model: ir.IR, prefix: str) -> rc_pb2.Route:
    for res in build_resources(model)[ROUTE].values():
        table = route_pb2.RouteConfiguration.FromString(res.body)
        for vh in table.virtual_hosts:
            for r in vh.routes:
                if r.name.startswith(prefix):
                    return r
    raise AssertionError(f"no route {prefix}*")


def test_without_a_collector_asking_is_reported_and_nothing_traced() -> None:
    out = translate(load_text(_input({"a": {N + "enable-opentelemetry": "true"}})))
    assert COLLECTOR_CLUSTER not in {c.name for c in out.ir.clusters}
    (diag,) = [d for d in out.diagnostics if "opentelemetry" in d.field]
    assert diag.reason is Reason.UNSUPPORTED and "--otel-collector" in diag.message
    assert _tracing_of(out.ir) == {"a": None}


def test_only_where_asked_by_default() -> None:
    config = TranslateConfig(tracing=TracingConfig(collector_host="10.0.0.9",
                                                   collector_port=4317, sampler_ratio=0.5))
    out = translate(load_text(_input({
        "on": {N + "enable-opentelemetry": "true", N + "opentelemetry-operation-name": "op"},
        "off": {N + "enable-opentelemetry": "false"}, "plain": {}})), config)
    assert _tracing_of(out.ir) == {
        "on": ir.RouteTracing(enabled=True, sampling_percent=50.0, operation="op"),
        "off": None, "plain": None}
    (listener,) = out.ir.listeners
    assert isinstance(listener, ir.HttpListener) and listener.http.tracing == ir.Tracing(
        collector_cluster=COLLECTOR_CLUSTER, service_name="kxds", sampling_percent=0.0)
    route = _envoy_route(out.ir, "ingress/shop/on/")
    assert route.decorator.operation == "op"
    assert route.tracing.random_sampling.numerator == 500_000


def test_trace_all_turns_off_only_the_opted_out() -> None:
    config = TranslateConfig(tracing=TracingConfig(collector_host="10.0.0.9",
                                                   collector_port=4317, all_routes=True))
    out = translate(load_text(_input({
        "off": {N + "enable-opentelemetry": "false"}, "plain": {}})), config)
    assert _tracing_of(out.ir) == {"off": ir.RouteTracing(enabled=False), "plain": None}
    (listener,) = out.ir.listeners
    assert isinstance(listener, ir.HttpListener)
    assert listener.http.tracing is not None and listener.http.tracing.sampling_percent == 100
    route = _envoy_route(out.ir, "ingress/shop/off/")
    assert route.tracing.overall_sampling.numerator == 0
    assert not route.HasField("decorator")
