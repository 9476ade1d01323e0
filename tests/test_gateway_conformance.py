"""Upstream Gateway API conformance tests about status, restated here.

kubernetes-sigs/gateway-api ``conformance/tests`` checks status by reading the objects
back from the API server after changing them. So do these: the objects live in the fake
API server (:mod:`fakeapi`, which bumps ``metadata.generation`` on a spec change as the
API server does), kxds watches them, translates, and the status writer puts the result
on the objects' ``status`` subresource, the loop the leader runs, one step at a time.
Tests that need no write (which reason a Route's parent gets) translate manifests.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakeapi import FakeApi, SourceRunner
from test_api_source import OTHERS, eps, source, svc

from e2e.harness import gateway_manifest
from kxds.certs.make import make_ca, make_leaf, tls_secret_yaml
from kxds.gateway_status_writer import GatewayStatusWriter
from kxds.kube.client import KubeClient
from kxds.kube.loader import load_text
from kxds.kube.models import ClusterState
from kxds.translators.config import TranslateConfig
from kxds.translators.edge import translate
from kxds.translators.gateway import PORT_FEATURES, SUPPORTED_FEATURES
from kxds.translators.gateway_status import GatewayApiStatus

GROUP = "gateway.networking.k8s.io"
V1 = f"{GROUP}/v1"
Obj = dict[str, Any]

CLASS: Obj = {"apiVersion": V1, "kind": "GatewayClass", "metadata": {"name": "kxds"},
              "spec": {"controllerName": "kxds.io/gateway-controller"}}


def gateway(name: str, *listeners: Obj) -> Obj:
    return {"apiVersion": V1, "kind": "Gateway",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"gatewayClassName": "kxds", "listeners": list(listeners)}}


def route(name: str, *parents: Obj, backend: str = "web") -> Obj:
    return {"apiVersion": V1, "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"parentRefs": list(parents),
                     "rules": [{"backendRefs": [{"name": backend, "port": 80}]}]}}


HTTP: Obj = {"name": "http", "port": 80, "protocol": "HTTP"}
HTTPS: Obj = {"name": "https", "port": 443, "protocol": "HTTPS",
              "tls": {"certificateRefs": [{"name": "cert"}]}}


class Leader:
    """The fake API server, kxds's watch of it and the status writer."""

    def __init__(self, api: FakeApi, run: SourceRunner) -> None:
        self.api = api
        self.run = run
        self.writer = GatewayStatusWriter(KubeClient.for_url(api.url))

    def write(self, seen: Callable[[ClusterState], bool], what: str) -> GatewayApiStatus:
        """Once the watch has seen what ``seen`` looks for: translate, write the status."""
        status = translate(self.run.wait(seen, what=what)).gateway_status
        self.writer.reconcile(status)
        return status

    def get(self, kind: str, name: str, ns: str = "default") -> Obj:
        obj = self.api.get(V1, kind, ns if kind != "GatewayClass" else "", name)
        assert obj is not None
        return obj

    def update(self, obj: Obj, change: Callable[[Obj], None]) -> int:
        """Change ``obj``'s spec as a client would; returns the new generation."""
        changed = copy.deepcopy(obj)
        change(changed["spec"])
        stored = self.api.apply(changed)
        generation = stored["metadata"]["generation"]
        assert generation == obj["metadata"]["generation"] + 1  # as the API server bumps it
        return int(generation)


@pytest.fixture
def leader() -> Iterator[Leader]:
    api = FakeApi(bookmark_interval=0.1).start()
    pair = make_leaf(make_ca(), ["*.test.com"])
    for obj in [svc("web"), eps("web", ["10.1.0.5"]), *OTHERS, CLASS,
                yaml.safe_load(tls_secret_yaml("default", "cert", pair))]:
        api.apply(obj)
    try:
        with SourceRunner(source(api)) as run:
            yield Leader(api, run)
    finally:
        api.stop()


def generation_of(state: ClusterState, kind: str, name: str) -> int:
    objects: Any = {"GatewayClass": state.gateway_classes, "Gateway": state.gateways,
                    "HTTPRoute": state.http_routes}[kind]
    obj = objects.get(("" if kind == "GatewayClass" else "default", name))
    return 0 if obj is None else int(obj.meta.generation)


def seen(kind: str, name: str, generation: int) -> Callable[[ClusterState], bool]:
    return lambda s: generation_of(s, kind, name) == generation


def observed(conditions: list[Obj]) -> set[int]:
    return {c["observedGeneration"] for c in conditions}


def conds(conditions: list[Obj]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in conditions}


def listeners(gw: Obj) -> dict[str, Obj]:
    return {lis["name"]: lis for lis in gw["status"]["listeners"]}


def test_gatewayclass_observed_generation_follows_its_spec(leader: Leader) -> None:
    """GatewayClassObservedGenerationBump."""
    leader.write(seen("GatewayClass", "kxds", 1), "the class")
    cls = leader.get("GatewayClass", "kxds")
    assert observed(cls["status"]["conditions"]) == {1}
    bumped = leader.update(cls, lambda spec: spec.update(description="bumped"))
    leader.write(seen("GatewayClass", "kxds", bumped), "the class's new generation")
    after = leader.get("GatewayClass", "kxds")["status"]["conditions"]
    assert observed(after) == {2}
    assert conds(after)["Accepted"] == ("True", "Accepted")


def test_gateway_observed_generation_follows_its_spec(leader: Leader) -> None:
    """GatewayObservedGenerationBump: every condition, the listeners' too."""
    leader.api.apply(gateway("gw", HTTP))
    leader.write(seen("Gateway", "gw", 1), "the Gateway")
    gw = leader.get("Gateway", "gw")
    assert observed(gw["status"]["conditions"]) == {1}
    bumped = leader.update(gw, lambda spec: spec["listeners"].append(
        {"name": "other", "port": 80, "protocol": "HTTP", "hostname": "other.test.com"}))
    leader.write(seen("Gateway", "gw", bumped), "the Gateway's new generation")
    after = leader.get("Gateway", "gw")["status"]
    assert observed(after["conditions"]) == {2}
    assert conds(after["conditions"])["Accepted"] == ("True", "Accepted")
    assert set(listeners({"status": after})) == {"http", "other"}
    for lis in after["listeners"]:
        assert observed(lis["conditions"]) == {2}


def test_httproute_observed_generation_follows_its_spec(leader: Leader) -> None:
    """HTTPRouteObservedGenerationBump: the parent's conditions carry the new generation."""
    leader.api.apply(gateway("gw", HTTP))
    leader.api.apply(route("r", {"name": "gw"}))
    leader.write(seen("HTTPRoute", "r", 1), "the HTTPRoute")
    r = leader.get("HTTPRoute", "r")
    [parent] = r["status"]["parents"]
    assert observed(parent["conditions"]) == {1}
    bumped = leader.update(r, lambda spec: spec["rules"][0].update(
        matches=[{"path": {"type": "PathPrefix", "value": "/bumped"}}]))
    leader.write(seen("HTTPRoute", "r", bumped), "the HTTPRoute's new generation")
    [parent] = leader.get("HTTPRoute", "r")["status"]["parents"]
    assert observed(parent["conditions"]) == {2}
    assert conds(parent["conditions"]) == {"Accepted": ("True", "Accepted"),
                                           "ResolvedRefs": ("True", "ResolvedRefs")}


def test_a_listener_added_is_written_with_its_attached_routes(leader: Leader) -> None:
    """GatewayModifyListeners, adding: an HTTP listener beside an HTTPS one; the Route
    (no sectionName) attaches to both."""
    leader.api.apply(gateway("gw", HTTPS))
    leader.api.apply(route("r", {"name": "gw"}))
    leader.write(lambda s: generation_of(s, "HTTPRoute", "r") == 1
                 and generation_of(s, "Gateway", "gw") == 1, "the Gateway and Route")
    gw = leader.get("Gateway", "gw")
    assert set(listeners(gw)) == {"https"}
    bumped = leader.update(gw, lambda spec: spec["listeners"].append(
        {"name": "http", "port": 80, "protocol": "HTTP", "hostname": "data.test.com",
         "allowedRoutes": {"namespaces": {"from": "All"}}}))
    leader.write(seen("Gateway", "gw", bumped), "the listener added")
    after = leader.get("Gateway", "gw")
    for name in ("https", "http"):
        lis = listeners(after)[name]
        assert lis["attachedRoutes"] == 1, name
        assert lis["supportedKinds"][0] == {"group": GROUP, "kind": "HTTPRoute"}
        assert conds(lis["conditions"])["Accepted"][0] == "True"
        assert conds(lis["conditions"])["ResolvedRefs"][0] == "True"
        assert observed(lis["conditions"]) == {bumped}
    assert observed(after["status"]["conditions"]) == {bumped}


def test_a_listener_removed_leaves_the_written_status(leader: Leader) -> None:
    """GatewayModifyListeners, removing: the HTTPS listener goes, the HTTP one stays."""
    leader.api.apply(gateway("gw", HTTPS, {**HTTP, "hostname": "data.test.com"}))
    leader.api.apply(route("r", {"name": "gw"}))
    leader.write(lambda s: generation_of(s, "HTTPRoute", "r") == 1
                 and generation_of(s, "Gateway", "gw") == 1, "the Gateway and Route")
    gw = leader.get("Gateway", "gw")
    assert {n: lis["attachedRoutes"] for n, lis in listeners(gw).items()} == {
        "https": 1, "http": 1}
    bumped = leader.update(gw, lambda spec: spec.update(
        listeners=[lis for lis in spec["listeners"] if lis["name"] == "http"]))
    leader.write(seen("Gateway", "gw", bumped), "the listener removed")
    after = leader.get("Gateway", "gw")
    assert list(listeners(after)) == ["http"]
    lis = listeners(after)["http"]
    assert lis["attachedRoutes"] == 1
    assert conds(lis["conditions"])["Accepted"][0] == "True"
    assert observed(after["status"]["conditions"]) == {bumped}


def test_attached_routes_are_written_per_listener(leader: Leader) -> None:
    """GatewayWithAttachedRoutes: one Route, two Routes, a Route naming one of two
    listeners (a UDP listener beside, which admits no HTTPRoute), and a Route whose
    backend does not resolve (attached all the same: attachment depends only on the
    listener's allowedRoutes and the Route's parentRefs). Every Gateway is served on the
    one edge HTTP listener, so each gets a hostname of its own (the suite's have none:
    they would be one listener, and the younger Gateways' Conflicted)."""
    def http(name: str) -> Obj:
        return {**HTTP, "hostname": f"{name}.test.com"}

    for obj in [gateway("one", http("one")), route("r1", {"name": "one"}),
                gateway("two", http("two")), route("r2", {"name": "two"}),
                route("r3", {"name": "two"}),
                gateway("pair", {"name": "udp", "port": 5300, "protocol": "UDP"}, http("pair")),
                route("r4", {"name": "pair", "sectionName": "http"}),
                gateway("unresolved", http("unresolved")),
                route("r5", {"name": "unresolved"}, backend="missing")]:
        leader.api.apply(obj)
    leader.write(lambda s: len(s.http_routes) == 5 and len(s.gateways) == 4, "the objects")
    attached = {name: {n: lis["attachedRoutes"]
                       for n, lis in listeners(leader.get("Gateway", name)).items()}
                for name in ("one", "two", "pair", "unresolved")}
    assert attached == {"one": {"http": 1}, "two": {"http": 2},
                        "pair": {"udp": 0, "http": 1}, "unresolved": {"http": 1}}
    pair = listeners(leader.get("Gateway", "pair"))
    assert pair["udp"]["supportedKinds"] == [{"group": GROUP, "kind": "UDPRoute"}]
    assert conds(pair["udp"]["conditions"])["Accepted"][0] == "True"
    [r5] = leader.get("HTTPRoute", "r5")["status"]["parents"]
    assert conds(r5["conditions"]) == {"Accepted": ("True", "Accepted"),
                                       "ResolvedRefs": ("False", "BackendNotFound")}


def test_backend_tls_policy_observed_generation_follows_its_spec(leader: Leader) -> None:
    """BackendTLSPolicyObservedGenerationBump (a later release's test): the policy's
    ancestor conditions carry the generation of its latest spec."""
    ca = make_ca()
    policy: Obj = {
        "apiVersion": V1, "kind": "BackendTLSPolicy",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "web"}],
                 "validation": {"hostname": "web.test.com", "caCertificateRefs": [
                     {"group": "", "kind": "ConfigMap", "name": "web-ca"}]}}}
    for obj in [{"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "web-ca", "namespace": "default"},
                 "data": {"ca.crt": ca.cert_pem.decode()}},
                gateway("gw", HTTP), route("r", {"name": "gw"}), policy]:
        leader.api.apply(obj)

    def policy_generation(s: ClusterState) -> int:
        found = s.backend_tls_policies.get(("default", "web"))
        return 0 if found is None else int(found.meta.generation)

    leader.write(lambda s: policy_generation(s) == 1 and bool(s.http_routes), "the policy")
    [ancestor] = leader.get("BackendTLSPolicy", "web")["status"]["ancestors"]
    assert conds(ancestor["conditions"]) == {"Accepted": ("True", "Accepted"),
                                             "ResolvedRefs": ("True", "ResolvedRefs")}
    assert observed(ancestor["conditions"]) == {1}
    bumped = leader.update(leader.get("BackendTLSPolicy", "web"), lambda spec: spec[
        "validation"].update(hostname="other.test.com"))
    leader.write(lambda s: policy_generation(s) == bumped, "the policy's new generation")
    [ancestor] = leader.get("BackendTLSPolicy", "web")["status"]["ancestors"]
    assert observed(ancestor["conditions"]) == {2}


def test_a_route_moved_to_another_controllers_gateway_loses_our_status_entry(
        leader: Leader) -> None:
    """Beyond the suite: the entries of ``status.parents`` are each controller's own, so
    when a Route leaves our Gateway for another controller's, kxds takes its entry back
    (and leaves the other controller's)."""
    theirs_class = {**CLASS, "metadata": {"name": "other"},
                    "spec": {"controllerName": "example.com/other"}}
    theirs = {**gateway("theirs", HTTP), "spec": {"gatewayClassName": "other",
                                                  "listeners": [HTTP]}}
    for obj in [theirs_class, theirs, gateway("gw", HTTP), route("r", {"name": "gw"})]:
        leader.api.apply(obj)
    leader.write(seen("HTTPRoute", "r", 1), "the HTTPRoute")
    r = leader.get("HTTPRoute", "r")
    assert [p["parentRef"]["name"] for p in r["status"]["parents"]] == ["gw"]
    their_entry = {"parentRef": {"group": GROUP, "kind": "Gateway", "name": "theirs"},
                   "controllerName": "example.com/other",
                   "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                   "message": "", "observedGeneration": 2,
                                   "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    bumped = leader.update(r, lambda spec: spec.update(parentRefs=[{"name": "theirs"}]))
    moved = leader.get("HTTPRoute", "r")
    moved["status"]["parents"].append(their_entry)  # the other controller writes its own
    leader.api.apply(moved)
    leader.write(lambda s: generation_of(s, "HTTPRoute", "r") == bumped
                 and "example.com/other" in s.http_routes[("default", "r")].status_controllers,
                 "the Route moved")
    assert leader.get("HTTPRoute", "r")["status"]["parents"] == [their_entry]
    # Nothing of ours left: nothing more to write.
    assert leader.writer.reconcile(translate(leader.run.wait(
        lambda s: True)).gateway_status) == 0


# --- Route parents, from manifests -------------------------------------------------------

BASE = """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kxds}
spec: {controllerName: kxds.io/gateway-controller}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{name: http, port: 80}]}
"""


def parent_status(docs: str) -> tuple[dict[str, tuple[bool, str]], dict[str, int]]:
    """The one Route's one parent's conditions and the Gateway's attached routes."""
    status = translate(load_text(BASE + docs), TranslateConfig()).gateway_status
    [r] = status.routes
    [parent] = r.parents
    [gw] = status.gateways
    return ({c.type: (c.status, c.reason) for c in parent.conditions},
            {lis.name: lis.attached_routes for lis in gw.listeners})


def test_an_httproute_on_a_gateway_for_tlsroutes_only_is_not_allowed() -> None:
    """HTTPRouteDisallowedKind: a Gateway whose one listener admits TLSRoutes only."""
    conditions, attached = parent_status("""
---""" + gateway_manifest("{name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}, "
                          "allowedRoutes: {kinds: [{kind: TLSRoute}]}}",
                          name="tlsroutes-only", gateway_class=False) + """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: disallowed-kind, namespace: default}
spec:
  parentRefs: [{name: tlsroutes-only}]
  rules:
  - backendRefs: [{name: web, port: 80}]
""")
    assert conditions == {"Accepted": (False, "NotAllowedByListeners"),
                          "ResolvedRefs": (True, "ResolvedRefs")}
    assert attached == {"tls": 0}


@pytest.mark.parametrize(("section", "port", "reason", "attached"), [
    ("http", 81, "NoMatchingParent", 0),  # the listener named is not on that port
    ("http", 80, "Accepted", 1),
    ("nope", 80, "NoMatchingParent", 0),
], ids=["port-not-the-sections", "both-match", "no-such-section"])
def test_a_parent_ref_section_name_and_port_must_name_the_same_listener(
        section: str, port: int, reason: str, attached: int) -> None:
    """HTTPRouteInvalidParentRefSectionNameNotMatchingPort."""
    conditions, listener_routes = parent_status("""
---""" + gateway_manifest(gateway_class=False) + f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default}}
spec:
  parentRefs: [{{name: gw, sectionName: {section}, port: {port}}}]
  rules:
  - backendRefs: [{{name: web, port: 80}}]
""")
    assert conditions["Accepted"] == (reason == "Accepted", reason)
    assert listener_routes == {"http": attached}


def test_a_host_is_served_by_the_routes_of_its_most_specific_listener_only() -> None:
    """GatewayHTTPListenerIsolation, beyond the suite's manifests: Routes of a wider
    listener naming hosts a narrower listener owns (one exact, one wildcard) are not
    served there, and a listener hostname no Route serves is an empty host."""
    docs = BASE + """
---""" + gateway_manifest(
        "{name: any, port: 80, protocol: HTTP}",
        '{name: wide, port: 80, protocol: HTTP, hostname: "*.example.com"}',
        '{name: foo, port: 80, protocol: HTTP, hostname: "*.foo.example.com"}',
        "{name: quiet, port: 80, protocol: HTTP, hostname: quiet.example.com}",
        gateway_class=False) + """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: from-any, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: any}]
  hostnames: [a.example.com, b.example.org]
  rules:
  - backendRefs: [{name: web, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: from-wide, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: wide}]
  hostnames: ["*.foo.example.com", quiet.example.com, a.example.com]
  rules:
  - backendRefs: [{name: web, port: 80}]
"""
    result = translate(load_text(docs), TranslateConfig())
    served = {vh.name: sorted({r.ref.name for r in vh.routes if r.ref is not None})
              for t in result.ir.route_tables for vh in t.virtual_hosts}
    assert served == {
        "b.example.org": ["from-any"],  # no listener but "any" covers it
        "a.example.com": ["from-wide"],  # "wide" owns it, not "any"
        "*.example.com": [],
        "*.foo.example.com": [],  # "foo" owns it, and has no Route
        "quiet.example.com": [],
    }
    wide = {p.parent.section_name: p for r in result.gateway_status.routes
            if r.ref.name == "from-wide" for p in r.parents}
    assert wide["wide"].conditions[0].reason == "Accepted"  # attached all the same


def test_every_claimed_feature_is_documented() -> None:
    """docs/gateway-api.md's "Supported features" names every feature kxds may claim,
    so the page and the GatewayClass status never disagree."""
    doc = (Path(__file__).parent.parent / "docs" / "gateway-api.md").read_text()
    start = doc.index("Supported features (the suite's names")
    paragraph = doc[start:doc.index("\n\n", start)]
    assert [f for f in (*SUPPORTED_FEATURES, *PORT_FEATURES) if f"`{f}`" not in paragraph] == []
