"""Gateway API rules as tables: hostname intersection, precedence, status reasons, CEL checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from kxds.ir import Forward, MatchKind
from kxds.kube.loader import load_text
from kxds.translators.config import TranslateConfig
from kxds.translators.edge import translate
from kxds.translators.gateway_routes import intersect, path_match, precedence

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize(("listener", "route", "expected"), [
    (None, "a.example.com", "a.example.com"),
    ("a.example.com", "a.example.com", "a.example.com"),
    ("a.example.com", "b.example.com", None),
    ("*.example.com", "a.example.com", "a.example.com"),
    ("*.example.com", "a.b.example.com", "a.b.example.com"),  # wildcards span labels
    ("*.example.com", "example.com", None),
    ("a.example.com", "*.example.com", "a.example.com"),
    ("*.example.com", "*.b.example.com", "*.b.example.com"),
    ("*.b.example.com", "*.example.com", "*.b.example.com"),
    ("*.example.com", "*.example.org", None),
    ("*.example.com", "*.example.com", "*.example.com"),
], ids=lambda v: str(v))
def test_hostname_intersection(listener: str | None, route: str, expected: str | None) -> None:
    assert intersect(listener, route) == expected


@pytest.mark.parametrize(("kind", "value", "match_kind", "path"), [
    ("Exact", "/a/", MatchKind.EXACT, "/a/"),
    ("PathPrefix", "/a/", MatchKind.PATH_PREFIX, "/a"),
    ("PathPrefix", "/", MatchKind.PREFIX, "/"),
])
def test_path_match(kind: str, value: str, match_kind: MatchKind, path: str) -> None:
    m = path_match(kind, value)
    assert (m.kind, m.path) == (match_kind, path)


def test_precedence_exact_then_longest_prefix_then_oldest_route_then_rule_order() -> None:
    entries = {
        "old-prefix-short": precedence(path_match("PathPrefix", "/a"), 0, 0, 0),
        "new-prefix-long": precedence(path_match("PathPrefix", "/a/b"), 5, 0, 0),
        "new-exact": precedence(path_match("Exact", "/z"), 5, 0, 0),
        "old-root": precedence(path_match("PathPrefix", "/"), 0, 1, 0),
        "tie-older": precedence(path_match("PathPrefix", "/a/c"), 1, 3, 0),
        "tie-newer": precedence(path_match("PathPrefix", "/a/c"), 2, 0, 0),
        "tie-older-later-rule": precedence(path_match("PathPrefix", "/a/c"), 1, 4, 0),
    }
    assert sorted(entries, key=entries.__getitem__) == [
        "new-exact", "tie-older", "tie-older-later-rule", "tie-newer", "new-prefix-long",
        "old-prefix-short", "old-root"]


def _status(case: str) -> dict[str, str]:
    state = load_text((GOLDEN / case / "input.yaml").read_text())
    status = translate(state, TranslateConfig()).gateway_status
    out = {}
    for r in status.routes:
        for p in r.parents:
            key = f"{r.ref.key} -> {p.parent.name}/{p.parent.section_name or '*'}"
            out[key] = " ".join(f"{c.type}={c.status}:{c.reason}" for c in p.conditions)
    return out


def test_route_parent_conditions_name_the_specs_reasons() -> None:
    assert _status("gateway-invalid-refs") == {
        "default/header-match -> gw/same":
            "Accepted=False:UnsupportedValue ResolvedRefs=True:ResolvedRefs",
        "default/odd-refs -> gw/nope":
            "Accepted=False:NoMatchingParent ResolvedRefs=False:InvalidKind",
        "default/odd-refs -> gw/same": "Accepted=True:Accepted ResolvedRefs=False:InvalidKind",
        "default/wrong-host -> gw/same":
            "Accepted=False:NoMatchingListenerHostname ResolvedRefs=True:ResolvedRefs",
        "team-a/no-grant -> gw/selected":
            "Accepted=True:Accepted ResolvedRefs=False:RefNotPermitted",
        "team-b/not-allowed -> gw/*":
            "Accepted=False:NotAllowedByListeners ResolvedRefs=True:ResolvedRefs",
    }


def test_gateway_and_listener_status() -> None:
    state = load_text((GOLDEN / "gateway-basic" / "input.yaml").read_text())
    status = translate(state, TranslateConfig()).gateway_status
    assert [c.ref.name for c in status.classes] == ["kxds"]  # not the other controller's
    (gw,) = status.gateways
    assert gw.generation == 3
    assert [(c.type, c.status, c.reason) for c in gw.conditions] == [
        ("Accepted", True, "ListenersNotValid"), ("Programmed", True, "Programmed")]
    by_name = {lis.name: lis for lis in gw.listeners}
    assert by_name["http"].attached_routes == 2
    assert {c.type: c.reason for c in by_name["tcp"].conditions}["Accepted"] == \
        "UnsupportedProtocol"
    assert {c.type: c.reason for c in by_name["odd-port"].conditions}["Accepted"] == \
        "PortUnavailable"
    (shop,) = [r for r in status.routes if r.ref.name == "shop"]
    assert [p.parent.name for p in shop.parents] == ["gw"]  # "theirs" is not ours to report
    assert shop.generation == 2


def test_listeners_of_two_gateways_on_one_hostname_conflict_and_the_older_keeps_it() -> None:
    docs = "\n---\n".join([
        "{apiVersion: gateway.networking.k8s.io/v1, kind: GatewayClass, metadata: {name: k},"
        " spec: {controllerName: kxds.io/gateway-controller}}",
        *(f"{{apiVersion: gateway.networking.k8s.io/v1, kind: Gateway, metadata: {{name: {n},"
          f" namespace: default, creationTimestamp: '{ts}'}}, spec: {{gatewayClassName: k,"
          " listeners: [{name: http, port: 80, protocol: HTTP, hostname: a.example.com}]}}"
          for n, ts in (("young", "2024-01-02T00:00:00Z"), ("old", "2024-01-01T00:00:00Z")))])
    status = translate(load_text(docs), TranslateConfig()).gateway_status
    conds = {g.ref.name: {c.type: (c.status, c.reason) for c in g.listeners[0].conditions}
             for g in status.gateways}
    assert conds["old"]["Conflicted"] == (False, "NoConflicts")
    assert conds["young"]["Conflicted"] == (True, "HostnameConflict")
    assert conds["young"]["Accepted"][0] is False


@pytest.mark.parametrize(("spec", "message"), [
    ("listeners: [{name: a, port: 80, protocol: HTTP}, {name: a, port: 81, protocol: HTTP}]",
     "Listener name must be unique"),
    ("listeners: [{name: a, port: 80, protocol: HTTP}, {name: b, port: 80, protocol: HTTP}]",
     "Combination of port, protocol and hostname must be unique"),
    ("listeners: [{name: a, port: 443, protocol: HTTPS, tls: {mode: Terminate}}]",
     "certificateRefs or options must be specified"),
    ("listeners: [{name: a, port: 9, protocol: TCP, hostname: a.example.com}]",
     "hostname must not be specified"),
    ("listeners: []", "at least one listener"),
], ids=["name", "distinct", "certs", "tcp-hostname", "empty"])
def test_gateway_cel_rules_are_checked_for_manifests(spec: str, message: str) -> None:
    state = load_text("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n"
                      f"metadata: {{name: g}}\nspec:\n  gatewayClassName: k\n  {spec}\n")
    assert not state.gateways
    (problem,) = state.problems
    assert message in problem.message


@pytest.mark.parametrize(("rule", "message"), [
    ("{matches: [{path: {type: Exact, value: a}}]}", "must be an absolute path"),
    ("{matches: [{path: {value: /a//b}}]}", "must not contain '//'"),
    ("{matches: [{path: {value: '/a b'}}]}", "must only contain valid characters"),
    ("{backendRefs: [{name: web}]}", "Must have port for Service reference"),
    ("{timeouts: {request: 1s, backendRequest: 2s}}", "cannot be longer than request"),
    ("{filters: [{type: RequestRedirect}], backendRefs: [{name: web, port: 80}]}",
     "RequestRedirect filter must not be used together with backendRefs"),
], ids=["relative", "double-slash", "space", "port", "timeouts", "redirect-backends"])
def test_httproute_cel_rules_are_checked_for_manifests(rule: str, message: str) -> None:
    state = load_text("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
                      f"metadata: {{name: r}}\nspec:\n  rules: [{rule}]\n")
    (problem,) = state.problems
    assert message in problem.message


def test_weights_are_kept_and_a_zero_weight_backend_gets_no_share() -> None:
    state = load_text((GOLDEN / "gateway-basic" / "input.yaml").read_text().replace(
        "weight: 1}", "weight: 0}"))
    table = translate(state, TranslateConfig()).ir.route_tables[0]
    (vh,) = [v for v in table.virtual_hosts if v.name == "shop.example.com"]
    action = vh.routes[0].action
    assert isinstance(action, Forward)
    assert [(b.cluster, b.weight) for b in action.backends] == [("default/web/80", 3)]
