"""Gateway API L4 Routes (TLSRoute, TCPRoute, UDPRoute): attachment, status and the IR.

Restates the intent of upstream conformance tests that check status and
attachment (the traffic of each is checked through Envoy in e2e/):
TLSRouteInvalidNoMatchingListener, TCPRouteParentRefPortAndSectionName,
TLSRouteModeMixed and UDPRouteWeightedRouting.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.harness import GATEWAY_CLASS, gateway_manifest
from kxds import ir
from kxds.certs.make import make_ca, make_leaf, tls_secret_yaml
from kxds.incremental import Store
from kxds.kube.loader import load_text
from kxds.kube.models import ClusterState
from kxds.translators.config import TranslateConfig
from kxds.translators.edge import translate


def _service(name: str, port: int, protocol: str = "TCP", address: str = "10.0.0.1",
             external: str | None = None) -> str:
    if external is not None:
        return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  type: ExternalName
  externalName: {external}
  ports: [{{name: p, port: {port}, protocol: {protocol}}}]
"""
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec: {{ports: [{{name: p, port: {port}, protocol: {protocol}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: p, port: {port}, protocol: {protocol}}}]
endpoints: [{{addresses: ["{address}"]}}]
"""


def _translate(*docs: str) -> Any:
    return translate(load_text("\n---\n".join([GATEWAY_CLASS, *docs])), TranslateConfig())


def _route_conditions(result: Any, name: str) -> dict[str, dict[str, tuple[bool, str]]]:
    """Gateway name -> the Route's conditions there (type -> (status, reason))."""
    (route,) = [r for r in result.gateway_status.routes if r.ref.name == name]
    return {p.parent.name: {c.type: (c.status, c.reason) for c in p.conditions}
            for p in route.parents}


def _attached(result: Any, gateway: str) -> dict[str, int]:
    (gw,) = [g for g in result.gateway_status.gateways if g.ref.name == gateway]
    return {lis.name: lis.attached_routes for lis in gw.listeners}


# --- TLSRouteInvalidNoMatchingListener -------------------------------------------------

_NO_TLS_LISTENER = "---".join([
    gateway_manifest("{name: http, port: 80, protocol: HTTP, "
                     "allowedRoutes: {kinds: [{kind: TLSRoute}]}}",
                     name="http-only", gateway_class=False),
    gateway_manifest("{name: http, port: 80, protocol: HTTP, "
                     "allowedRoutes: {kinds: [{kind: HTTPRoute}]}}",
                     name="httproutes-only", gateway_class=False),
    gateway_manifest("{name: https, port: 443, protocol: HTTPS, hostname: tls.example.com, "
                     "allowedRoutes: {kinds: [{kind: TLSRoute}]}, "
                     "tls: {certificateRefs: [{name: cert}]}}",
                     name="https-only", gateway_class=False),
    gateway_manifest("{name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}}",
                     name="passthrough", gateway_class=False)])


def _tls_route(name: str, parent: str) -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{parent}]
  hostnames: [tls.example.com]
  rules: [{{backendRefs: [{{name: tls-backend, port: 443}}]}}]
"""


@pytest.mark.parametrize(("parent", "reason"), [
    ("{name: http-only}", "NotAllowedByListeners"),
    ("{name: httproutes-only}", "NotAllowedByListeners"),
    ("{name: https-only}", "NotAllowedByListeners"),
    ("{name: passthrough, sectionName: nonexistent}", "NoMatchingParent"),
    ("{name: passthrough, port: 8443}", "NoMatchingParent"),
], ids=["http-listener", "http-listener-for-httproutes", "https-listener", "no-such-section",
        "no-such-port"])
def test_a_tls_route_without_a_matching_tls_listener_is_not_accepted(
        parent: str, reason: str) -> None:
    cert = tls_secret_yaml("default", "cert", make_leaf(make_ca(), ["tls.example.com"]))
    result = _translate(_NO_TLS_LISTENER, cert, _service("tls-backend", 443),
                        _tls_route("r", parent))
    (conditions,) = _route_conditions(result, "r").values()
    assert conditions["Accepted"] == (False, reason)
    gateway = parent.split(",")[0].split(": ")[1].rstrip("}")
    assert set(_attached(result, gateway).values()) == {0}
    chains = [c for lis in result.ir.listeners if isinstance(lis, ir.TlsListener)
              for c in lis.chains if isinstance(c, ir.PassthroughChain)]
    assert chains == []  # nothing forwards to the Route's backend
    assert not any(c.name.startswith("default/tls-backend") for c in result.ir.clusters)


# --- TCPRouteParentRefPortAndSectionName -------------------------------------------------

_THREE_TCP_LISTENERS = gateway_manifest(
    *(f"{{name: {n}, port: {port}, protocol: TCP}}"
      for n, port in (("one", 7001), ("two", 7002), ("three", 7003))),
    name="tcp", gateway_class=False)


def tcp_route(name: str, parent: str, backend: str) -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{parent}]
  rules: [{{backendRefs: [{{name: {backend}, port: 9000}}]}}]
"""


PARENT_REF_ROUTES = [
    tcp_route("by-port", "{name: tcp, port: 7001}", "echo-one"),
    tcp_route("by-section", "{name: tcp, sectionName: two}", "echo-two"),
    tcp_route("by-both", "{name: tcp, sectionName: three, port: 7003}", "echo-three"),
    tcp_route("mismatched", "{name: tcp, sectionName: three, port: 7001}", "echo-one"),
]
"""Three TCPRoutes each attached to one listener by port, by sectionName or by
both; a fourth whose sectionName and port name different listeners."""


def test_tcp_routes_attach_by_port_by_section_name_and_by_both() -> None:
    result = _translate(_THREE_TCP_LISTENERS, *PARENT_REF_ROUTES, *(
        _service(f"echo-{n}", 9000, address=f"10.0.0.{i}")
        for i, n in enumerate(("one", "two", "three"), 1)))
    for name in ("by-port", "by-section", "by-both"):
        assert _route_conditions(result, name)["tcp"]["Accepted"] == (True, "Accepted"), name
    assert _route_conditions(result, "mismatched")["tcp"]["Accepted"] == (
        False, "NoMatchingParent")
    assert _attached(result, "tcp") == {"one": 1, "two": 1, "three": 1}
    clusters = {lis.port: lis.cluster for lis in result.ir.listeners
                if isinstance(lis, ir.TcpListener)}
    assert clusters == {7001: "default/echo-one/9000", 7002: "default/echo-two/9000",
                        7003: "default/echo-three/9000"}


# --- TLSRouteModeMixed -------------------------------------------------------------------

MIXED = gateway_manifest(
    "{name: pt, port: 443, protocol: TLS, hostname: pt.example.com, tls: {mode: Passthrough}}",
    "{name: term, port: 443, protocol: TLS, hostname: term.example.com, "
    "tls: {mode: Terminate, certificateRefs: [{name: cert}]}}", gateway_class=False) + """---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: pt, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: pt}]
  rules: [{backendRefs: [{name: tls-backend, port: 443}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: term, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: term}]
  rules: [{backendRefs: [{name: tcp-backend, port: 7000}]}]
"""


def test_passthrough_and_terminate_listeners_on_one_port_are_both_served() -> None:
    cert = tls_secret_yaml("default", "cert", make_leaf(make_ca(), ["term.example.com"]))
    result = _translate(MIXED, cert, _service("tls-backend", 443),
                        _service("tcp-backend", 7000, address="10.0.0.2"))
    (gw,) = result.gateway_status.gateways
    for lis in gw.listeners:
        conditions = {c.type: (c.status, c.reason) for c in lis.conditions}
        assert conditions["Accepted"] == (True, "Accepted"), lis.name
        assert conditions["Conflicted"] == (False, "NoConflicts"), lis.name
        assert lis.attached_routes == 1
    for name in ("pt", "term"):
        assert _route_conditions(result, name)["gw"]["Accepted"] == (True, "Accepted")
    (tls,) = [lis for lis in result.ir.listeners if isinstance(lis, ir.TlsListener)]
    chains = {c.server_names: c for c in tls.chains if isinstance(c, ir.PassthroughChain)}
    assert chains[("pt.example.com",)].secret is None  # passed through
    assert chains[("pt.example.com",)].cluster == "default/tls-backend/443"
    assert chains[("term.example.com",)].secret is not None  # terminated by Envoy
    assert chains[("term.example.com",)].cluster == "default/tcp-backend/7000"


# --- UDPRouteWeightedRouting ---------------------------------------------------------------

def _udp(backends: str) -> str:
    return gateway_manifest("{name: dns, port: 5353, protocol: UDP}", gateway_class=False) + f"""---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {{name: dns, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: {backends}}}]
"""


def _udp_listener(result: Any) -> ir.UdpListener | None:
    found = [lis for lis in result.ir.listeners if isinstance(lis, ir.UdpListener)]
    return found[0] if found else None


def test_a_udp_split_is_one_cluster_with_a_weighted_locality_per_backend() -> None:
    result = _translate(_udp("[{name: a, port: 53, weight: 3}, {name: b, port: 53, weight: 1}]"),
                        _service("a", 53, "UDP"), _service("b", 53, "UDP", "10.0.0.2"))
    listener = _udp_listener(result)
    assert listener is not None and listener.cluster == "udproute/default/dns/split"
    clusters = {c.name: c for c in result.ir.clusters}
    assert clusters[listener.cluster].locality_weighted
    (split,) = [a for a in result.ir.load_assignments if a.cluster == listener.cluster]
    assert [(g.name, g.weight, [e.address for e in g.endpoints]) for g in split.groups] == [
        ("default/a/53/udp", 3, ["10.0.0.1"]), ("default/b/53/udp", 1, ["10.0.0.2"])]


def test_a_udp_split_follows_its_backends_endpoints() -> None:
    docs = [_udp("[{name: a, port: 53, weight: 1}, {name: b, port: 53, weight: 1}]"),
            _service("a", 53, "UDP")]
    before = _translate(*docs, _service("b", 53, "UDP", "10.0.0.2"))
    after = _translate(*docs, _service("b", 53, "UDP", "10.0.0.9"))

    def split(result: Any) -> ir.LoadAssignment:
        return next(a for a in result.ir.load_assignments if a.cluster.startswith("udproute/"))
    assert split(before).groups[1].endpoints[0].address == "10.0.0.2"
    assert split(after).groups[1].endpoints[0].address == "10.0.0.9"
    assert before.ir.clusters == after.ir.clusters  # only the endpoints moved (EDS)


@pytest.mark.parametrize(("backends", "cluster"), [
    ("[{name: a, port: 53, weight: 1}, {name: b, port: 53, weight: 0}]", "default/a/53/udp"),
    ("[{name: a, port: 53, weight: 1}, {name: a, port: 53, weight: 2}]", "default/a/53/udp"),
], ids=["weight-0-left-out", "one-backend-twice"])
def test_a_udp_route_with_one_backend_that_has_a_share_needs_no_split(
        backends: str, cluster: str) -> None:
    result = _translate(_udp(backends), _service("a", 53, "UDP"),
                        _service("b", 53, "UDP", "10.0.0.2"))
    listener = _udp_listener(result)
    assert listener is not None and listener.cluster == cluster
    assert not any(c.locality_weighted for c in result.ir.clusters)


def test_a_udp_split_to_a_backend_resolved_by_dns_is_refused() -> None:
    result = _translate(_udp("[{name: a, port: 53, weight: 1}, {name: ext, port: 53, weight: 1}]"),
                        _service("a", 53, "UDP"), _service("ext", 53, "UDP",
                                                           external="dns.example.net"))
    assert _udp_listener(result) is None  # fail closed: no listener
    assert any(d.ref.name == "dns" and "refused" in d.message
               and "default/ext/53/udp" in d.message for d in result.diagnostics)
    assert not any(c.name.startswith("udproute/") for c in result.ir.clusters)


def test_a_udp_split_is_rebuilt_when_only_an_endpoint_slice_changes() -> None:
    """The edge view patches load assignments in place when only EndpointSlices move
    (the other objects stay the same model objects); a split's own assignment must
    move with its backends' then too."""
    docs = [GATEWAY_CLASS, _udp("[{name: a, port: 53, weight: 1}, {name: b, port: 53, weight: 1}]"),
            _service("a", 53, "UDP")]
    before = load_text("\n---\n".join([*docs, _service("b", 53, "UDP", "10.0.0.2")]))
    moved = load_text(_service("b", 53, "UDP", "10.0.0.9")).endpoint_slices[("default", "b-1")]
    state = ClusterState.from_objects(
        [o for o in before.objects() if o is not before.endpoint_slices[("default", "b-1")]]
        + [moved])
    store = Store()
    translate(before, TranslateConfig(), store)
    patched = translate(state, TranslateConfig(), store)
    assert patched.ir == translate(state, TranslateConfig()).ir
    split = next(a for a in patched.ir.load_assignments if a.cluster.startswith("udproute/"))
    assert split.groups[1].endpoints[0].address == "10.0.0.9"
