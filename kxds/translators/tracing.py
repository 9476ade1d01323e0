"""OpenTelemetry tracing: the collector (``kxds serve --otel-*`` flags, as
ingress-nginx's ConfigMap ``otlp-collector-host``/``-port``, ``otel-service-name``,
``otel-sampler-ratio``) and, per Ingress, ``enable-opentelemetry``,
``opentelemetry-operation-name`` and ``opentelemetry-trust-incoming-span``
(https://kubernetes.github.io/ingress-nginx/user-guide/third-party-addons/opentelemetry/).

With a collector, every HTTP connection manager (plain and TLS listeners) carries
Envoy's OpenTelemetry tracer and a cluster reaches the collector over HTTP/2. As
ingress-nginx (whose
``enable-opentelemetry`` defaults to false), only the routes of Ingresses saying
``enable-opentelemetry: "true"`` are traced; ``--otel-trace-all`` traces every route
(Ingress and Gateway API) but those of Ingresses saying ``"false"``. A traced route
samples ``--otel-sampler-ratio`` of its requests, and continues the trace of a request
arriving with a ``traceparent`` (ingress-nginx's ``opentelemetry-trust-incoming-span``
default); ``"false"`` is reported: Envoy cannot ignore the incoming context per route.
A route not traced sends no span, even for a sampled ``traceparent``: the context goes
on to the backend marked not sampled. ``opentelemetry-operation-name`` is the span
name (Envoy's route ``decorator``; Envoy's own is ``ingress``), literal text: nginx
variables are reported.

Without a collector, an Ingress asking for tracing is reported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from kxds import ir
from kxds.diagnostics import Diagnostic, ObjectRef, Reason, show
from kxds.kube.models import Ingress
from kxds.translators import annotations as ann
from kxds.translators.annotations import registry as r
from kxds.translators.config import TracingConfig, TranslateConfig

COLLECTOR_CLUSTER = "otel/collector"
"""The collector's cluster (no Service cluster has two parts)."""
_FLAG_REF = ObjectRef("Flag", "", "--otel-collector")
_SUFFIXES = tuple("/" + a.name for a in (
    r.ENABLE_OPENTELEMETRY, r.OPENTELEMETRY_OPERATION_NAME, r.OPENTELEMETRY_TRUST_INCOMING_SPAN))


def asks(ing: Ingress) -> bool:
    """Whether ``ing`` has a tracing annotation (:func:`apply_tracing` reads no other)."""
    return any(k.endswith(_SUFFIXES) for k in ing.meta.annotations)


def tracer(config: TracingConfig | None) -> ir.Tracing | None:
    """The connection managers' tracer for ``config``: routes without their own tracing
    sample as ``--otel-trace-all`` says."""
    if config is None:
        return None
    percent = config.sampler_ratio * 100 if config.all_routes else 0.0
    return ir.Tracing(collector_cluster=COLLECTOR_CLUSTER, service_name=config.service_name,
                      sampling_percent=percent)


def collector_cluster(config: TracingConfig) -> ir.Cluster:
    """The cluster of the collector: Envoy resolves its name; OTLP/gRPC is HTTP/2."""
    return ir.Cluster(name=COLLECTOR_CLUSTER, ref=_FLAG_REF, kind=ir.ClusterKind.STRICT_DNS,
                      protocol=ir.UpstreamProtocol.HTTP2, dns_host=config.collector_host,
                      dns_port=config.collector_port)


def _route_tracing(ing: Ingress, config: TracingConfig | None,
                   diags: list[Diagnostic]) -> ir.RouteTracing | None:
    """What ``ing``'s annotations ask (None: as the connection manager samples)."""
    parsed = ann.parse(ing)  # parse problems are reported with the route's policies
    enabled = parsed.get(r.ENABLE_OPENTELEMETRY)
    operation = parsed.get(r.OPENTELEMETRY_OPERATION_NAME)
    if parsed.get(r.OPENTELEMETRY_TRUST_INCOMING_SPAN) is False:
        diags.append(parsed.problem(
            r.OPENTELEMETRY_TRUST_INCOMING_SPAN, "Envoy continues the trace a request "
            "carries (traceparent); it cannot ignore it per route", Reason.UNSUPPORTED))
    if operation is not None and "$" in operation:
        diags.append(parsed.problem(
            r.OPENTELEMETRY_OPERATION_NAME, f"{show(operation)}: nginx variables have no "
            "Envoy equivalent in a span name; the annotation is not applied"))
        operation = None
    if config is None:
        if enabled:
            diags.append(parsed.problem(
                r.ENABLE_OPENTELEMETRY, "no collector is configured (kxds serve "
                "--otel-collector): requests are not traced", Reason.UNSUPPORTED))
        return None
    on = config.all_routes if enabled is None else enabled
    if on == config.all_routes and operation is None:
        return None  # the connection manager's sampling says it
    return ir.RouteTracing(enabled=on, sampling_percent=config.sampler_ratio * 100,
                           operation=operation)


def _with_tracing(route: ir.Route, tracing: ir.RouteTracing) -> ir.Route:
    policy = route.policy or ir.RoutePolicy()
    return dataclasses.replace(route, policy=dataclasses.replace(policy, tracing=tracing))


def apply_tracing(base: ir.IR, config: TranslateConfig, ingresses: Iterable[Ingress]
                  ) -> tuple[ir.IR, list[Diagnostic]]:
    """The collector's cluster, and the routes of Ingresses whose annotations ask other
    tracing than the connection manager's."""
    tracing = config.tracing
    diags: list[Diagnostic] = []
    asking: dict[ObjectRef, ir.RouteTracing] = {}
    for ing in ingresses:
        if asks(ing):
            wanted = _route_tracing(ing, tracing, diags)
            if wanted is not None:
                asking[ing.meta.ref] = wanted
    if tracing is None:
        return base, diags
    tables = tuple(dataclasses.replace(t, virtual_hosts=tuple(
        dataclasses.replace(vh, routes=tuple(
            _with_tracing(rt, asking[rt.ref]) if rt.ref in asking else rt
            for rt in vh.routes))
        if any(rt.ref in asking for rt in vh.routes) else vh
        for vh in t.virtual_hosts)) for t in base.route_tables)
    clusters = {c.name: c for c in base.clusters}
    clusters[COLLECTOR_CLUSTER] = collector_cluster(tracing)
    http_tracer = tracer(tracing)
    listeners = tuple(
        dataclasses.replace(lis, http=dataclasses.replace(lis.http, tracing=http_tracer))
        if isinstance(lis, (ir.HttpListener, ir.TlsListener)) else lis
        for lis in base.listeners)
    return dataclasses.replace(base, clusters=tuple(clusters[k] for k in sorted(clusters)),
                               listeners=listeners, route_tables=tables), diags
