"""Hostile and odd input to the parser: never an exception, always a named, bounded problem."""

from __future__ import annotations

from typing import Any

import pytest

from kxds.diagnostics import Diagnostic, ObjectRef, Reason, show
from kxds.kube import models as m
from kxds.kube import parse
from kxds.kube.limits import Limits
from kxds.kube.loader import load_text
from kxds.kube.parse import parse_object


def service(name: Any = "web", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def problem_of(doc: Any) -> Diagnostic:
    model, problem = parse_object(doc, "in.yaml")
    assert model is None and problem is not None
    return problem


@pytest.mark.parametrize("target", ["²", "١٢", "\uff18\uff10", "80x²"])
def test_a_unicode_digit_target_port_is_a_problem_not_a_crash(target: str) -> None:
    problem = problem_of(service(ports=[{"port": 80, "targetPort": target}]))
    assert problem.field == "spec.ports[0].targetPort"
    assert problem.reason is Reason.INVALID_VALUE
    assert "neither a port number nor a port name" in problem.message


def test_ascii_numeric_target_port_is_still_a_number() -> None:
    model, _ = parse_object(service(ports=[{"port": 80, "targetPort": "8080"}]))
    assert isinstance(model, m.Service) and model.ports[0].target_port == 8080


def test_a_name_nested_a_thousand_levels_deep_is_reported_briefly() -> None:
    # libyaml stops at 1000 levels; just under that, the name is a 990-deep list.
    text = ("apiVersion: v1\nkind: Service\nmetadata:\n  name: " + "[" * 990 + "]" * 990
            + "\nspec: {ports: [{port: 80}]}\n")
    state = load_text(text, "deep.yaml")
    (problem,) = state.problems
    assert problem.field == "metadata.name"
    assert problem.ref == ObjectRef("Service", "default", "deep.yaml")
    assert len(problem.message) < 100 and "[[[[...]]]]" in problem.message


def test_deeper_than_libyaml_allows_is_a_yaml_error() -> None:
    text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: " + "[" * 2000 + "]" * 2000
    (problem,) = load_text(text, "deeper.yaml").problems
    assert problem.reason is Reason.INVALID_YAML and "depth" in problem.message


def test_an_unexpected_exception_is_an_internal_error_naming_the_object(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(doc: Any, limits: Limits) -> m.Model:
        raise KeyError("bug")

    monkeypatch.setitem(parse.PARSERS, ("v1", "Service"), broken)  # type: ignore[arg-type]
    state = load_text("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n"
                      "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
    (problem,) = state.problems
    assert (problem.ref, problem.reason) == (ObjectRef("Service", "default", "a"),
                                             Reason.INTERNAL_ERROR)
    assert set(state.namespaces) == {("", "shop")}  # the others still load


def test_a_newline_in_a_name_cannot_forge_a_line() -> None:
    problem = problem_of(service(name="web\n2024-01-01 ERROR forged"))
    assert problem.reason is Reason.INVALID_NAME
    assert "\n" not in str(problem)
    assert "\\n" in str(problem)


def test_long_values_are_cut_with_their_length() -> None:
    problem = problem_of(service(type="x" * 100_000))
    assert len(problem.message) < 400
    assert "(100000 chars)" in problem.message
    assert len(show("y" * 5000)) < 250


@pytest.mark.parametrize(("kind", "api", "name", "ok"), [
    ("Service", "v1", "web-1", True),
    ("Service", "v1", "1web", False),  # DNS-1035: a letter first
    ("Service", "v1", "Web", False),
    ("Service", "v1", "a" * 64, False),
    ("Namespace", "v1", "shop", True),
    ("Namespace", "v1", "shop.eu", False),  # a label: no dots
    ("Secret", "v1", "tls.example.com", True),  # a subdomain
    ("Secret", "v1", "tls..example", False),
    ("Secret", "v1", "x" * 254, False),
    ("Ingress", "networking.k8s.io/v1", "shop_1", False),
])
def test_names_follow_the_api_servers_rules(kind: str, api: str, name: str, ok: bool) -> None:
    doc: dict[str, Any] = {"apiVersion": api, "kind": kind, "metadata": {"name": name}}
    if kind == "Service":
        doc["spec"] = {"ports": [{"port": 80}]}
    model, problem = parse_object(doc)
    assert (model is not None) == ok, problem
    if not ok:
        assert problem is not None and problem.field == "metadata.name"
        assert problem.reason is Reason.INVALID_NAME


def test_a_bad_namespace_name_is_reported() -> None:
    doc = service(ports=[{"port": 80}])
    doc["metadata"]["namespace"] = "Shop"
    assert problem_of(doc).field == "metadata.namespace"


def test_service_port_count_is_bounded_by_the_flag() -> None:
    ports = [{"name": f"p{i}", "port": i + 1} for i in range(101)]
    problem = problem_of(service(ports=ports))
    assert (problem.field, problem.reason) == ("spec.ports", Reason.TOO_MANY)
    model, _ = parse_object(service(ports=ports), limits=Limits(max_service_ports=200))
    assert isinstance(model, m.Service) and len(model.ports) == 101


def test_repeated_service_ports_are_refused_as_the_api_refuses_them() -> None:
    same_name = service(ports=[{"name": "a", "port": 80}, {"name": "a", "port": 81}])
    assert problem_of(same_name).field == "spec.ports[1].name"
    same_port = service(ports=[{"name": "a", "port": 80}, {"name": "b", "port": 80}])
    assert problem_of(same_port).field == "spec.ports[1]"
    udp = service(ports=[{"name": "a", "port": 53}, {"name": "b", "port": 53,
                                                     "protocol": "UDP"}])
    assert isinstance(parse_object(udp)[0], m.Service)


def slice_doc(endpoints: int = 1, addresses: int = 1, ports: int = 1) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": f"p{i}", "port": 1000 + i} for i in range(ports)],
            "endpoints": [{"addresses": [f"10.0.{a // 250}.{a % 250}"
                                         for a in range(addresses)]}] * endpoints}


@pytest.mark.parametrize(("doc", "field"), [
    (slice_doc(endpoints=1001), "endpoints"),
    (slice_doc(ports=101), "ports"),
    (slice_doc(addresses=101), "endpoints[0].addresses"),
])
def test_endpoint_slice_cardinalities_follow_the_api(doc: dict[str, Any], field: str) -> None:
    problem = problem_of(doc)
    assert (problem.field, problem.reason) == (field, Reason.TOO_MANY)


def test_endpoint_slice_at_the_limits_is_fine() -> None:
    model, problem = parse_object(slice_doc(endpoints=1000, addresses=100, ports=100))
    assert problem is None and isinstance(model, m.EndpointSlice)


@pytest.mark.parametrize("value", [[["a"]], {"a": 1}, [[[[[]]]]]])
def test_list_items_that_are_not_text_are_named(value: Any) -> None:
    problem = problem_of(service(ports=[{"port": 80}], externalIPs=["192.0.2.1", value]))
    assert problem.field == "spec.externalIPs[1]"


def test_non_string_kind_or_api_version_is_ignored_quietly() -> None:
    deep: Any = []
    for _ in range(500):
        deep = [deep]
    assert parse_object({"apiVersion": deep, "kind": "Service"}) == (None, None)
    assert parse_object({"apiVersion": "v1", "kind": deep}) == (None, None)
