"""Parsing raw Kubernetes objects into models: what is accepted, and what is named when not."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kxds.diagnostics import Reason
from kxds.kube import models as m
from kxds.kube.loader import load_documents, load_text
from kxds.kube.parse import parse_object


def service(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": spec}


def ingress_path(path: Any, path_type: Any = "Prefix", port: Any = None) -> dict[str, Any]:
    port = port if port is not None else {"number": 80}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "shop", "namespace": "store"},
        "spec": {"rules": [{"host": "shop.example.com", "http": {"paths": [
            {"path": path, "pathType": path_type,
             "backend": {"service": {"name": "web", "port": port}}}]}}]},
    }


BAD = [
    pytest.param(service(ports=[{"port": 0}]), "spec.ports[0].port", Reason.INVALID_VALUE,
                 id="port-zero"),
    pytest.param(service(ports=[{"port": 70000}]), "spec.ports[0].port", Reason.INVALID_VALUE,
                 id="port-too-big"),
    pytest.param(service(ports=[{"port": "eighty"}]), "spec.ports[0].port",
                 Reason.INVALID_VALUE, id="port-not-int"),
    pytest.param(service(ports=[{}]), "spec.ports[0].port", Reason.MISSING_FIELD,
                 id="port-missing"),
    pytest.param(service(ports=[{"port": 80, "protocol": "HTTP"}]), "spec.ports[0].protocol",
                 Reason.INVALID_VALUE, id="bad-protocol"),
    pytest.param(service(type="Weird"), "spec.type", Reason.INVALID_VALUE, id="bad-type"),
    pytest.param(service(type="ExternalName"), "spec.externalName", Reason.MISSING_FIELD,
                 id="externalname-missing"),
    pytest.param(service(ports=[{"port": 80}, {"port": 81}]), "spec.ports",
                 Reason.INVALID_VALUE, id="unnamed-multi-ports"),
    pytest.param({"apiVersion": "v1", "kind": "Service", "metadata": {}}, "metadata.name",
                 Reason.MISSING_FIELD, id="no-name"),
    pytest.param(ingress_path("shop"), "spec.rules[0].http.paths[0].path",
                 Reason.INVALID_VALUE, id="path-without-slash"),
    pytest.param(ingress_path("/", "Regex"), "spec.rules[0].http.paths[0].pathType",
                 Reason.INVALID_VALUE, id="unknown-path-type"),
    pytest.param(ingress_path("/", None), "spec.rules[0].http.paths[0].pathType",
                 Reason.MISSING_FIELD, id="missing-path-type"),
    pytest.param(ingress_path("/", port={"number": 80, "name": "http"}),
                 "spec.rules[0].http.paths[0].backend.service.port", Reason.MISSING_FIELD,
                 id="port-number-and-name"),
    pytest.param({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                  "metadata": {"name": "web-1"}, "addressType": "IPv4"},
                 "metadata.labels[kubernetes.io/service-name]", Reason.MISSING_FIELD,
                 id="slice-without-service"),
    pytest.param({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                  "metadata": {"name": "p"}, "spec": {"podSelector": {"matchExpressions": [
                      {"key": "app", "operator": "Near", "values": ["x"]}]}}},
                 "spec.podSelector.matchExpressions[0].operator", Reason.INVALID_VALUE,
                 id="selector-bad-operator"),
    pytest.param({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                  "data": {"tls.crt": "not base64!"}}, "data[tls.crt]", Reason.INVALID_VALUE,
                 id="secret-bad-base64"),
]


@pytest.mark.parametrize(("doc", "field", "reason"), BAD)
def test_bad_object_is_named_with_field_and_reason(
    doc: dict[str, Any], field: str, reason: Reason
) -> None:
    model, problem = parse_object(doc, "input.yaml")
    assert model is None
    assert problem is not None
    assert problem.field == field
    assert problem.reason is reason
    assert problem.ref.kind == doc["kind"]


def test_service_fields_are_read() -> None:
    model, problem = parse_object(service(
        type="LoadBalancer",
        ports=[{"name": "http", "port": 80, "targetPort": "web", "nodePort": 30080},
               {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "5353"}],
        selector={"app": "web"},
        externalTrafficPolicy="Local",
        sessionAffinity="ClientIP",
        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 600}},
    ), "")
    assert problem is None
    assert isinstance(model, m.Service)
    assert model.meta.namespace == "default"
    assert model.ports[0].target_port == "web"
    assert model.ports[1].target_port == 5353  # a numeric string is a number
    assert model.ports[1].protocol == "UDP"
    assert model.external_traffic_policy == "Local"
    assert model.session_affinity_timeout == 600


def test_load_balancer_status_splits_ips_and_hostnames() -> None:
    doc = service(type="LoadBalancer", ports=[{"port": 80}])
    doc["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"},
                                                  {"hostname": "lb.example.com"}]}}
    model, _ = parse_object(doc, "")
    assert isinstance(model, m.Service)
    assert model.load_balancer_ingress == ("192.0.2.1",)
    assert model.load_balancer_hostnames == ("lb.example.com",)


def test_ingress_host_is_lowercased_and_validated() -> None:
    doc = ingress_path("/cart")
    doc["spec"]["rules"][0]["host"] = "Shop.Example.COM"
    model, _ = parse_object(doc, "")
    assert isinstance(model, m.Ingress)
    assert model.rules[0].host == "shop.example.com"
    doc["spec"]["rules"][0]["host"] = "shop.example.com:8080"
    model, problem = parse_object(doc, "")
    assert model is None and problem is not None
    assert problem.field == "spec.rules[0].host"


def test_endpoint_conditions_default_as_the_api_says() -> None:
    doc = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
           "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
           "endpoints": [{"addresses": ["10.0.0.1"]},
                         {"addresses": ["10.0.0.2"],
                          "conditions": {"ready": False, "serving": True, "terminating": True}}]}
    model, _ = parse_object(doc, "")
    assert isinstance(model, m.EndpointSlice)
    first, second = model.endpoints
    assert (first.ready, first.serving, first.terminating) == (True, True, False)
    assert (second.ready, second.serving, second.terminating) == (False, True, True)


def test_network_policy_types_default_like_the_api() -> None:
    base = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p"}, "spec": {"podSelector": {}}}
    model, _ = parse_object(base, "")
    assert isinstance(model, m.NetworkPolicy) and model.policy_types == ("Ingress",)
    base["spec"]["egress"] = [{}]
    model, _ = parse_object(base, "")
    assert isinstance(model, m.NetworkPolicy) and model.policy_types == ("Ingress", "Egress")


def test_unknown_kinds_are_ignored_without_a_problem(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="kxds.kube.parse")
    model, problem = parse_object({"apiVersion": "apps/v1", "kind": "Deployment"}, "app.yaml")
    assert (model, problem) == (None, None)
    (record,) = caplog.records
    assert record.levelno == logging.DEBUG
    assert "apps/v1 Deployment" in record.getMessage() and "app.yaml" in record.getMessage()


def test_malformed_yaml_reports_the_line_and_keeps_nothing_of_that_file() -> None:
    docs, problems = load_documents("a: 1\nb: [1, 2\nc: 3\n", "bad.yaml")
    assert docs == []
    [problem] = problems
    assert problem.reason is Reason.INVALID_YAML
    assert problem.ref.name == "bad.yaml"
    assert problem.field.startswith("line ")


def test_list_kind_is_flattened_and_bad_items_do_not_hide_good_ones() -> None:
    state = load_text("""
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Service, metadata: {name: a}, spec: {ports: [{port: 80}]}}
- {apiVersion: v1, kind: Service, metadata: {name: b}, spec: {ports: [{port: -1}]}}
- {apiVersion: v1, kind: Namespace, metadata: {name: shop}}
""")
    assert set(state.services) == {("default", "a")}
    assert set(state.namespaces) == {("", "shop")}
    assert [str(p.ref) for p in state.problems] == ["Service default/b"]


def test_slices_are_grouped_by_service() -> None:
    state = load_text("""
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-b, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-a, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
""")
    assert [s.meta.name for s in state.slices_by_service[("default", "web")]] == ["web-a", "web-b"]


labels = st.dictionaries(st.sampled_from("abc"), st.sampled_from("xyz"), max_size=3)


@given(labels, labels)
def test_match_labels_selector_is_subset_match(selector: dict[str, str],
                                               pod: dict[str, str]) -> None:
    sel = m.LabelSelector(match_labels=tuple(sorted(selector.items())))
    assert sel.matches(pod) == (selector.items() <= pod.items())


@given(st.dictionaries(st.text(max_size=5), st.one_of(st.none(), st.integers(), st.text(),
                                                      st.lists(st.integers(), max_size=2)),
                       max_size=4))
def test_parser_never_raises_on_garbage_spec(spec: dict[str, Any]) -> None:
    for kind, api in (("Service", "v1"), ("Ingress", "networking.k8s.io/v1"),
                      ("NetworkPolicy", "networking.k8s.io/v1"),
                      ("EndpointSlice", "discovery.k8s.io/v1")):
        doc = {**spec, "apiVersion": api, "kind": kind, "metadata": {"name": "x"}, "spec": spec}
        model, problem = parse_object(doc, "")
        assert (model is None) != (problem is None)
