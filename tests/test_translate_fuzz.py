"""Untrusted Ingress input never makes translation raise, and what it builds stays valid."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kxds.envoy.build import build_resources
from kxds.ir import MatchKind, consistency_problems
from kxds.kube.models import ClusterState
from kxds.kube.parse import parse_object
from kxds.translators.edge import translate

# Envoy's own constraint on ``path_separated_prefix`` (route_components.proto).
_PATH_SEPARATED = re.compile(r"^[^?#]+[^?#/]$")

_TEXT = st.text(alphabet="/ab.-*?#%2fF", max_size=10)
_PORT = st.one_of(st.integers(min_value=-1, max_value=70000), st.sampled_from(["http", "", "x"]))


def _backend(service: str, port: Any) -> dict[str, Any]:
    key = "number" if isinstance(port, int) else "name"
    return {"service": {"name": service, "port": {key: port}}}


_PATH = st.builds(
    lambda path, kind, svc, port: {"path": path, "pathType": kind, "backend": _backend(svc, port)},
    st.one_of(_TEXT, st.just("/")), st.sampled_from(["Exact", "Prefix", "ImplementationSpecific",
                                                    "Regex"]),
    st.sampled_from(["web", "ext", "gone"]), _PORT)
_RULE = st.builds(lambda host, paths: {"host": host, "http": {"paths": paths}},
                  st.one_of(st.none(), st.sampled_from(["a.example.com", "*.example.com",
                                                        "A.Example.com", "bad_host", "*"])),
                  st.lists(_PATH, max_size=4))

SERVICES: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
     "spec": {"ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53,
                                                      "protocol": "UDP"}]}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
     "spec": {"type": "ExternalName", "externalName": "localhost", "ports": [{"port": 80}]}},
]


@settings(max_examples=80, deadline=None)
@given(ingresses=st.lists(st.tuples(st.lists(_RULE, max_size=3), st.booleans()), max_size=4))
def test_random_ingresses_translate_to_valid_resources(
        ingresses: list[tuple[list[dict[str, Any]], bool]]) -> None:
    docs = list(SERVICES)
    for i, (rules, default) in enumerate(ingresses):
        spec: dict[str, Any] = {"ingressClassName": "kxds", "rules": rules}
        if default:
            spec["defaultBackend"] = _backend("web", 80)
        docs.append({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                     "metadata": {"name": f"i{i}"}, "spec": spec})
    objects, problems = [], []
    for doc in docs:
        model, problem = parse_object(doc)
        if model is not None:
            objects.append(model)
        if problem is not None:
            problems.append(problem)
    result = translate(ClusterState.from_objects(objects, problems))
    assert consistency_problems(result.ir) == []
    build_resources(result.ir)
    for table in result.ir.route_tables:
        for vhost in table.virtual_hosts:
            for route in vhost.routes:
                assert route.match.path.startswith("/")
                if route.match.kind is MatchKind.PATH_PREFIX:
                    assert _PATH_SEPARATED.match(route.match.path), route.match.path
