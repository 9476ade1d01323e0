"""Gateway HTTP and HTTPS listeners on ports beside the edge's own (pure translation).

Each such port is an Envoy listener of its own (``http/<port>``, ``https/<port>``)
with only the routes of the Gateway listeners on it; port clashes are
``PortUnavailable``; a RequestRedirect's ``Location`` port follows the listener's.
The golden case ``gateway-ports`` shows the whole output (and Envoy validates it).
"""

from __future__ import annotations

from typing import Any

import pytest

from kxds.certs.make import make_ca, make_leaf, tls_secret_yaml
from kxds.cli import _parser, config_from_args
from kxds.diagnostics import Reason
from kxds.ir import HttpListener, RouteTable, TlsListener
from kxds.kube.gateway_models import RequestRedirect
from kxds.kube.loader import load_text
from kxds.kube.models import Service
from kxds.translators import edge
from kxds.translators.config import TranslateConfig
from kxds.translators.edge import translate
from kxds.translators.gateway import PORT_FEATURES, SUPPORTED_FEATURES
from kxds.translators.gateway_filters import path_match, redirect
from kxds.translators.gateway_status import GatewayApiStatus
from kxds.translators.ingress import UNAVAILABLE
from kxds.translators.translation import Translation

CLASS = """apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kxds}
spec: {controllerName: kxds.io/gateway-controller}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{name: http, port: 80}]}
"""


def gateway(name: str, listeners: str, age: str = "2024-01-01T00:00:00Z") -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: default, creationTimestamp: "{age}"}}
spec:
  gatewayClassName: kxds
  listeners: {listeners}
"""


def route(name: str, parent: str, path: str = "/", hostnames: str = "[]") -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{parent}]
  hostnames: {hostnames}
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    backendRefs: [{{name: web, port: 80}}]
"""


def run(*docs: str, config: TranslateConfig | None = None) -> Translation:
    return translate(load_text("\n---\n".join([CLASS, *docs])), config or TranslateConfig())


def listener_conditions(status: GatewayApiStatus | None, gw: str, lis: str
                        ) -> dict[str, tuple[bool, str, str]]:
    assert status is not None
    (g,) = [g for g in status.gateways if g.ref.name == gw]
    (listener,) = [x for x in g.listeners if x.name == lis]
    return {c.type: (c.status, c.reason, c.message) for c in listener.conditions}


def table(result: Translation, name: str) -> RouteTable:
    (found,) = [t for t in result.ir.route_tables if t.name == name]
    return found


def served(result: Translation, name: str) -> dict[str, list[str]]:
    """Host -> the names of the Routes (kind/ns/name) a route table serves it with."""
    return {vh.domains[0]: [r.name.split("/rule/")[0] for r in vh.routes]
            for vh in table(result, name).virtual_hosts}


@pytest.mark.parametrize(("protocol", "port", "reason"), [
    ("HTTP", 8090, "Accepted"),
    ("HTTPS", 9443, "Accepted"),
    ("HTTP", 443, "PortUnavailable"),    # the edge HTTPS listener's published port
    ("HTTP", 8443, "PortUnavailable"),   # the edge HTTPS port
    ("HTTPS", 80, "PortUnavailable"),
    ("HTTPS", 8080, "PortUnavailable"),
    ("HTTP", 9901, "PortUnavailable"),   # the edge Envoys' admin port
    ("TCP", 9901, "PortUnavailable"),
    ("UDP", 9901, "Accepted"),           # another protocol family
    ("TLS", 9443, "Accepted"),           # a TLS listener of its own port
    ("TLS", 8080, "PortUnavailable"),    # the edge HTTP port
    ("TLS", 9901, "PortUnavailable"),
], ids=lambda v: str(v))
def test_which_ports_a_listener_may_take(protocol: str, port: int, reason: str) -> None:
    tls = ("{mode: Passthrough}" if protocol == "TLS" else
           "{certificateRefs: [{name: c}]}" if protocol == "HTTPS" else "null")
    result = run(gateway("gw", f"[{{name: l, port: {port}, protocol: {protocol}, tls: {tls}}}]"),
                 tls_secret_yaml("default", "c", make_leaf(make_ca(), ["a.test"])))
    conds = listener_conditions(result.gateway_status, "gw", "l")
    assert conds["Accepted"][1] == reason, conds
    assert conds["Programmed"][0] is (reason == "Accepted")


def test_reserved_ports_come_from_the_flag_and_are_named() -> None:
    args = _parser().parse_args(["translate", "-f", "x", "--reserved-ports", "7000, 9000"])
    config = config_from_args(args)
    assert config.reserved_ports == (7000, 9000)
    result = run(gateway("gw", "[{name: l, port: 7000, protocol: HTTP}]"), config=config)
    accepted = listener_conditions(result.gateway_status, "gw", "l")["Accepted"]
    assert accepted[1] == "PortUnavailable" and "port 7000 is reserved" in accepted[2]
    assert "--reserved-ports" in accepted[2]
    assert not any(isinstance(x, HttpListener) and x.port == 7000 for x in result.ir.listeners)


@pytest.mark.parametrize(("first", "second", "second_reason"), [
    ("HTTP", "TCP", "PortUnavailable"),
    ("TCP", "HTTP", "PortUnavailable"),
    ("HTTP", "HTTPS", "PortUnavailable"),
    ("HTTPS", "HTTP", "PortUnavailable"),
    ("HTTP", "UDP", "Accepted"),
    ("UDP", "HTTPS", "Accepted"),
], ids=lambda v: str(v))
def test_one_port_serves_one_protocol_family_the_older_listener_keeps_it(
        first: str, second: str, second_reason: str) -> None:
    def tls(protocol: str) -> str:
        return "{certificateRefs: [{name: c}]}" if protocol == "HTTPS" else "null"

    result = run(
        gateway("old", f"[{{name: l, port: 8090, protocol: {first}, tls: {tls(first)}}}]"),
        gateway("young", f"[{{name: l, port: 8090, protocol: {second}, tls: {tls(second)}}}]",
                "2024-01-02T00:00:00Z"),
        tls_secret_yaml("default", "c", make_leaf(make_ca(), ["a.test"])))
    assert listener_conditions(result.gateway_status, "old", "l")["Accepted"][1] == "Accepted"
    accepted = listener_conditions(result.gateway_status, "young", "l")["Accepted"]
    assert accepted[1] == second_reason, accepted
    if second_reason == "PortUnavailable":
        assert "listener l of Gateway default/old" in accepted[2]
        assert any(d.ref.name == "young" and "PortUnavailable" in d.message
                   for d in result.diagnostics)


def test_listeners_of_several_gateways_on_one_port_merge_or_conflict_by_hostname() -> None:
    result = run(
        gateway("old", "[{name: a, port: 8090, protocol: HTTP, hostname: a.test},"
                       " {name: any, port: 8090, protocol: HTTP}]"),
        gateway("young", "[{name: b, port: 8090, protocol: HTTP, hostname: b.test},"
                         " {name: a, port: 8090, protocol: HTTP, hostname: a.test}]",
                "2024-01-02T00:00:00Z"),
        route("to-old", "{name: old}"), route("to-young", "{name: young}"))
    status = result.gateway_status
    assert listener_conditions(status, "young", "b")["Accepted"][0] is True
    conflicted = listener_conditions(status, "young", "a")
    assert conflicted["Conflicted"][:2] == (True, "HostnameConflict")
    assert "also served by Gateway default/old" in conflicted["Conflicted"][2]
    # One Envoy listener for the port; each hostname with its own listener's Routes.
    (listener,) = [x for x in result.ir.listeners if x.name == "http/8090"]
    assert isinstance(listener, HttpListener) and listener.port == 8090
    assert served(result, "http/8090") == {
        "*": ["httproute/default/to-old"], "a.test": ["httproute/default/to-old"],
        "b.test": ["httproute/default/to-young"]}


def test_within_one_gateway_the_first_listener_of_a_port_keeps_its_protocol() -> None:
    # (Two listeners of one Gateway on one port, protocol and hostname are refused
    # by the API's own validation.)
    result = run(gateway("gw", "[{name: a, port: 8090, protocol: HTTP},"
                               " {name: b, port: 8090, protocol: TCP}]"))
    assert listener_conditions(result.gateway_status, "gw", "a")["Accepted"][0] is True
    accepted = listener_conditions(result.gateway_status, "gw", "b")["Accepted"]
    assert accepted[:2] == (False, "PortUnavailable")
    assert "port 8090 already serves HTTP (listener a of Gateway default/gw)" in accepted[2]
    assert [x.name for x in result.ir.listeners if x.port == 8090] == ["http/8090"]


def test_routes_attach_by_port_or_section_and_are_served_on_that_port_only() -> None:
    result = run(
        """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: default}
spec:
  ingressClassName: kxds
  rules:
  - host: shop.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
""",
        gateway("gw", "[{name: edge, port: 80, protocol: HTTP},"
                      " {name: one, port: 8090, protocol: HTTP},"
                      " {name: two, port: 8091, protocol: HTTP}]"),
        route("by-port", "{name: gw, port: 8090}", "/one"),
        route("by-section", "{name: gw, sectionName: two}", "/two"),
        route("on-80", "{name: gw, port: 80}", "/edge"),
        route("everywhere", "{name: gw}", "/all"),
        route("no-such-port", "{name: gw, port: 8092}"))
    assert served(result, "http/8090") == {"*": ["httproute/default/by-port",
                                                 "httproute/default/everywhere"]}
    assert served(result, "http/8091") == {"*": ["httproute/default/by-section",
                                                 "httproute/default/everywhere"]}
    edge = served(result, "http/8080")
    assert edge["*"] == ["httproute/default/on-80", "httproute/default/everywhere"]
    assert "shop.test" in edge  # the Ingress stays on the edge listener only
    assert all("shop.test" not in served(result, f"http/{p}") for p in (8090, 8091))
    status = result.gateway_status
    assert status is not None
    (gw,) = status.gateways
    assert {x.name: x.attached_routes for x in gw.listeners} == {"edge": 2, "one": 2, "two": 2}
    (missing,) = [r for r in status.routes if r.ref.name == "no-such-port"]
    accepted = missing.parents[0].conditions[0]
    assert (accepted.type, accepted.reason) == ("Accepted", "NoMatchingParent")


def test_an_https_listener_on_its_own_port_has_its_own_tls_listener_beside_an_ingress() -> None:
    ca = make_ca()
    result = run(
        tls_secret_yaml("default", "c", make_leaf(ca, ["a.test"])),
        """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: default}
spec:
  ingressClassName: kxds
  tls: [{hosts: [a.test], secretName: c}]
  rules:
  - host: a.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
""",
        gateway("gw", "[{name: s, port: 9443, protocol: HTTPS, hostname: a.test,"
                      " tls: {certificateRefs: [{name: c}]}}]"),
        route("secure", "{name: gw}", "/secure"))
    # The Ingress keeps a.test on the edge TLS listener; port 9443 is the listener's.
    assert listener_conditions(result.gateway_status, "gw", "s")["Accepted"][0] is True
    listeners = {x.name: x for x in result.ir.listeners}
    own = listeners["https/9443"]
    assert isinstance(own, TlsListener) and own.port == 9443
    assert [(c.name, c.server_names) for c in own.chains] == [
        ("https/9443/gateway/default/gw/s", ("a.test",))]
    assert served(result, "https/9443/gateway/default/gw/s") == {
        "a.test": ["httproute/default/secure"]}
    edge = listeners["https/8443"]
    assert isinstance(edge, TlsListener)
    assert [ref.kind for c in edge.chains for ref in c.refs][:1] == ["Ingress"]
    assert not any("/gateway/" in c.name for c in edge.chains)


@pytest.mark.parametrize(("spec", "listener", "own_port", "scheme", "port"), [
    # The edge listeners (80 and the edge port are one): the request's port is kept.
    (RequestRedirect(), "http", None, None, None),
    (RequestRedirect(port=443), "https", None, None, None),
    # A listener on its own port: no scheme and no port writes the listener's port.
    (RequestRedirect(), "http", 8090, None, 8090),
    (RequestRedirect(), "https", 9443, None, 9443),
    (RequestRedirect(hostname="b.test"), "http", 8090, None, 8090),
    # A scheme alone: its well-known port; left out when the host is replaced too
    # (Envoy writes the new host without the request's port) ...
    (RequestRedirect(scheme="https", hostname="b.test"), "http", 8090, "https", None),
    (RequestRedirect(scheme="http", hostname="b.test"), "https", 9443, "http", None),
    (RequestRedirect(port=80, hostname="b.test"), "http", 8090, None, None),
    # ... and written when the request's host is kept (else its port would stay).
    (RequestRedirect(scheme="https"), "http", 8090, "https", 443),
    (RequestRedirect(port=80), "http", 8090, None, 80),
    (RequestRedirect(scheme="https", port=8443), "http", 8090, "https", 8443),
], ids=lambda v: str(v))
def test_a_redirect_port_follows_the_listener(spec: RequestRedirect, listener: str,
                                              own_port: int | None, scheme: str | None,
                                              port: int | None) -> None:
    r = redirect(spec, path_match("PathPrefix", "/"), listener, own_port)
    assert ("https" if r.https else r.scheme, r.port) == (scheme, port)


@pytest.mark.parametrize(("http", "https", "reserved", "claimed"), [
    (8080, 8443, (9901,), False),   # 80 and 8080 are one listener: not distinct
    (10080, 8090, (9901,), False),  # 8090 is the edge HTTPS port
    (10080, 10443, (8090,), False),
    (10080, 10443, (9901,), True),
], ids=lambda v: str(v))
def test_the_port_features_are_claimed_when_8080_and_8090_are_free(
        http: int, https: int, reserved: tuple[int, ...], claimed: bool) -> None:
    config = TranslateConfig(http_port=http, https_port=https, reserved_ports=reserved)
    status = run(gateway("gw", "[{name: l, port: 80, protocol: HTTP}]"),
                 config=config).gateway_status
    assert status is not None
    (cls,) = status.classes
    features = set(cls.supported_features)
    assert set(SUPPORTED_FEATURES) <= features
    assert (set(PORT_FEATURES) <= features) is claimed
    assert (set(PORT_FEATURES) & features == set()) is not claimed
    assert list(cls.supported_features) == sorted(features)


def test_with_free_8080_and_8090_listeners_on_80_8080_8090_are_distinct() -> None:
    """HTTPRouteListenerPortMatching and GatewayWithAttachedRoutesWithPort8080 as the
    suite writes them (ports 80, 8080 and 8090), with the edge on other ports."""
    config = TranslateConfig(http_port=10080, https_port=10443)
    result = run(gateway("gw", "[{name: http-unattached, port: 8080, protocol: HTTP},"
                               " {name: http, port: 80, protocol: HTTP},"
                               " {name: other, port: 8090, protocol: HTTP}]"),
                 route("on-8080", "{name: gw, port: 8080}", "/a"),
                 route("on-80", "{name: gw, sectionName: http}", "/b"),
                 route("on-8090", "{name: gw, port: 8090}", "/c"), config=config)
    status = result.gateway_status
    assert status is not None
    (gw,) = status.gateways
    assert {x.name: x.attached_routes for x in gw.listeners} == {
        "http-unattached": 1, "http": 1, "other": 1}
    assert all(c.status for x in gw.listeners for c in x.conditions if c.type == "Programmed")
    assert served(result, "http/8080") == {"*": ["httproute/default/on-8080"]}
    assert served(result, "http/10080") == {"*": ["httproute/default/on-80"]}
    assert served(result, "http/8090") == {"*": ["httproute/default/on-8090"]}


def test_a_route_to_a_failing_service_answers_503_on_a_port_of_its_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = edge.translate_service

    def failing(service: Service, *args: Any) -> Any:
        if service.meta.name == "web":
            raise RuntimeError("injected fault")
        return real(service, *args)

    monkeypatch.setattr(edge, "translate_service", failing)
    ca = make_ca()
    result = run(tls_secret_yaml("default", "c", make_leaf(ca, ["a.test"])),
                 gateway("gw", "[{name: plain, port: 8090, protocol: HTTP},"
                               " {name: s, port: 9443, protocol: HTTPS, hostname: a.test,"
                               " tls: {certificateRefs: [{name: c}]}}]"),
                 route("to-web", "{name: gw}"))
    assert any(d.reason is Reason.INTERNAL_ERROR for d in result.diagnostics)
    for name in ("http/8090", "https/9443/gateway/default/gw/s"):
        (vh,) = table(result, name).virtual_hosts
        assert [r.action for r in vh.routes] == [UNAVAILABLE], name  # fails closed
