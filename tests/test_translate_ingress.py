"""Ingress translation rules, table-driven: class selection, path matches, precedence."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kxds.diagnostics import ObjectRef, Reason
from kxds.ir import DirectResponse, Forward, MatchKind, PathMatch, Route
from kxds.kube.ingress_class import is_ours, our_ingresses
from kxds.kube.loader import load_text
from kxds.kube.models import IngressBackend, IngressPath
from kxds.translators.edge import translate
from kxds.translators.ingress import path_match, precedence

REF = ObjectRef("Ingress", "default", "x")

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{name: http, port: 80}]}
"""


def ingress(meta: str = "", spec: str = "", name: str = "x") -> str:
    return f"""
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
{meta}
spec:
  {spec}
  defaultBackend: {{service: {{name: web, port: {{number: 80}}}}}}
"""


OUR_CLASS = """
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: mine, annotations: {ingressclass.kubernetes.io/is-default-class: "true"}}
spec: {controller: kxds.io/ingress-controller}
"""


@pytest.mark.parametrize(("text", "ours"), [
    pytest.param(ingress(spec="ingressClassName: kxds"), True, id="class-name-flag"),
    pytest.param(ingress(spec="ingressClassName: other"), False, id="class-name-other"),
    pytest.param(OUR_CLASS + ingress(spec="ingressClassName: mine"), True, id="class-ours"),
    pytest.param(ingress(meta="  annotations: {kubernetes.io/ingress.class: kxds}"), True,
                 id="annotation"),
    pytest.param(ingress(meta="  annotations: {kubernetes.io/ingress.class: nginx}"), False,
                 id="annotation-other"),
    pytest.param(OUR_CLASS + ingress(), True, id="default-class"),
    pytest.param(ingress(), False, id="no-class-no-default"),
    pytest.param(OUR_CLASS + ingress(meta="  annotations: {kubernetes.io/ingress.class: nginx}"),
                 False, id="annotation-beats-default"),
])
def test_class_selection(text: str, ours: bool) -> None:
    state = load_text(SERVICE + text)
    assert not state.problems
    (ing,) = state.ingresses.values()
    assert is_ours(ing, state, "kxds") is ours
    assert (our_ingresses(state, "kxds") == [ing]) is ours


def test_ingress_class_flag() -> None:
    state = load_text(SERVICE + ingress(spec="ingressClassName: edge"))
    assert our_ingresses(state, "edge")
    assert not our_ingresses(state, "kxds")


def _path(value: str, kind: str) -> IngressPath:
    return IngressPath(path=value, path_type=kind,  # type: ignore[arg-type]
                       backend=IngressBackend(service="web", port_number=80))


@pytest.mark.parametrize(("path", "kind", "expected"), [
    ("/", "Prefix", PathMatch(kind=MatchKind.PREFIX, path="/")),
    ("/foo", "Prefix", PathMatch(kind=MatchKind.PATH_PREFIX, path="/foo")),
    ("/foo/", "Prefix", PathMatch(kind=MatchKind.PATH_PREFIX, path="/foo")),
    ("/foo/", "Exact", PathMatch(kind=MatchKind.EXACT, path="/foo/")),
    ("/foo", "ImplementationSpecific", PathMatch(kind=MatchKind.PATH_PREFIX, path="/foo")),
    ("/", "ImplementationSpecific", PathMatch(kind=MatchKind.PREFIX, path="/")),
    ("/a//b", "Prefix", None),
    ("/a/./b", "Exact", None),
    ("/a/..", "Prefix", None),
    ("/a%2Fb", "Prefix", None),
    ("/a#b", "Exact", None),
])
def test_path_match(path: str, kind: str, expected: PathMatch | None) -> None:
    problems: list = []  # type: ignore[type-arg]
    assert path_match(_path(path, kind), REF, "spec.rules[0]", problems) == expected
    assert len(problems) == (expected is None)
    if problems:
        assert problems[0].reason is Reason.INVALID_VALUE
        assert problems[0].field == "spec.rules[0].path"


def _route(kind: MatchKind, path: str) -> Route:
    return Route(name=path, ref=REF, match=PathMatch(kind=kind, path=path),
                 action=DirectResponse(status=200))


def test_precedence_exact_then_longest_prefix() -> None:
    routes = [_route(MatchKind.PREFIX, "/"), _route(MatchKind.PATH_PREFIX, "/a"),
              _route(MatchKind.EXACT, "/a"), _route(MatchKind.PATH_PREFIX, "/a/b"),
              _route(MatchKind.PATH_PREFIX, "/zz"), _route(MatchKind.EXACT, "/")]
    ordered = [(r.match.kind.value, r.match.path) for r in sorted(routes, key=precedence)]
    assert ordered == [("exact", "/"), ("exact", "/a"), ("path_prefix", "/a/b"),
                       ("path_prefix", "/zz"), ("path_prefix", "/a"), ("prefix", "/")]


def test_unresolved_backend_stays_503_and_never_falls_through() -> None:
    text = SERVICE + ingress(spec="""ingressClassName: kxds
  rules:
  - host: a.example.com
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: gone, port: {number: 80}}}}
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}""")
    result = translate(load_text(text))
    (vhost,) = [v for v in result.ir.route_tables[0].virtual_hosts if v.name == "a.example.com"]
    api, root = vhost.routes
    assert api.match.path == "/api" and isinstance(api.action, DirectResponse)
    assert api.action.status == 503
    assert isinstance(root.action, Forward)
    (diag,) = result.diagnostics
    assert diag.reason is Reason.BACKEND_NOT_FOUND
    assert diag.field == "spec.rules[0].http.paths[0].backend.service.name"
    assert "default/gone" in diag.message


def test_default_backend_ends_every_virtual_host() -> None:
    text = SERVICE + ingress(spec="""ingressClassName: kxds
  rules:
  - host: a.example.com
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}""")
    vhosts = translate(load_text(text)).ir.route_tables[0].virtual_hosts
    assert [v.name for v in vhosts] == ["*", "a.example.com"]
    for vhost in vhosts:
        last = vhost.routes[-1]
        assert last.name == "ingress/default/x/default"
        assert last.match == PathMatch(kind=MatchKind.PREFIX, path="/")


# --- property: Envoy's first match is the route Kubernetes says should win ---------

_SEGMENTS = st.lists(st.sampled_from(["a", "b", "ab"]), max_size=3)
_PATHS = st.builds(lambda segs, slash: "/" + "/".join(segs) + ("/" if slash and segs else ""),
                   _SEGMENTS, st.booleans())


def _envoy_matches(match: PathMatch, request: str) -> bool:
    if match.kind is MatchKind.EXACT:
        return request == match.path
    if match.kind is MatchKind.PATH_PREFIX:
        return request == match.path or request.startswith(match.path + "/")
    return request.startswith(match.path)


def _kubernetes_matches(path: str, kind: str, request: str) -> bool:
    if kind == "Exact":
        return request == path
    elements = [e for e in path.split("/") if e]
    return [e for e in request.split("/") if e][: len(elements)] == elements


@given(rules=st.lists(st.tuples(_PATHS, st.sampled_from(["Exact", "Prefix"])), max_size=8),
       requests=st.lists(_PATHS, min_size=1, max_size=5))
def test_first_envoy_match_is_the_kubernetes_winner(
        rules: list[tuple[str, str]], requests: list[str]) -> None:
    routes: dict[PathMatch, tuple[str, str]] = {}
    for path, kind in rules:
        match = path_match(_path(path, kind), REF, "f", [])
        assert match is not None
        routes.setdefault(match, (path, kind))
    ordered = sorted((_route(m.kind, m.path) for m in routes), key=precedence)
    for request in requests:
        first = next((r.match for r in ordered if _envoy_matches(r.match, request)), None)
        candidates = [(len(m.path), kind == "Exact", m) for m, (path, kind) in routes.items()
                      if _kubernetes_matches(path, kind, request)]
        best = max(candidates, key=lambda c: c[:2])[2] if candidates else None
        assert first == best, (request, ordered)


def test_wildcard_host_keeps_its_one_label_hosts_from_host_less_rules() -> None:
    """``x.a.test`` is the ``*.a.test`` rule's host; ``x.y.a.test`` is not (one label only)."""
    text = SERVICE + ingress(spec="""ingressClassName: kxds
  rules:
  - host: "*.a.test"
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
  - http:
      paths:
      - {path: /shared, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}""")
    vhosts = {v.name: v for v in translate(load_text(text)).ir.route_tables[0].virtual_hosts}
    api, shared, default = vhosts["*.a.test"].routes
    assert (api.match.path, api.wildcard_host, api.below_wildcard_host) == (
        "/api", "*.a.test", None)
    assert (shared.match.path, shared.wildcard_host, shared.below_wildcard_host) == (
        "/shared", None, "*.a.test")
    assert default.name == "ingress/default/x/default"
    assert default.wildcard_host is None and default.below_wildcard_host is None
    # The host-less rule itself is unchanged where it belongs.
    assert [r.below_wildcard_host for r in vhosts["*"].routes] == [None, None]
