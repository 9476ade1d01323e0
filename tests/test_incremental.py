"""Incremental translation gives exactly what a full translation gives.

A random sequence of changes (add, modify or remove Services of every type,
with node ports, load-balancer addresses, external IPs and traffic policies,
EndpointSlices, Ingresses, NetworkPolicies, Pods, Namespaces, TLS Secrets and
ConfigMaps; the clock crossing certificate validity bounds) is applied to a ClusterState
the way a source does it: unchanged objects keep their model object, a
changed one is a new model. After every step, the edge view and a per-node
view, each translated through its long-lived query store, must give the same
IR and diagnostics as translating from scratch, and building the resources
through the views' build caches must give byte-identical resources. Every
golden case also goes through the incremental path.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from golden_support import case_settings, cases, load_case_objects
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from kxds.certs.make import make_ca, make_leaf, tls_secret_yaml
from kxds.diagnostics import Diagnostic
from kxds.envoy import routes
from kxds.envoy.build import BuildCache, SharedBuilds, build_resources
from kxds.envoy.resource import ROUTE, Resources
from kxds.fleet import FleetMemo
from kxds.incremental import Store
from kxds.kube.manifests import ManifestSource
from kxds.kube.models import ClusterState, Model
from kxds.kube.parse import parse_object
from kxds.translators.config import NodeInfo, TranslateConfig
from kxds.translators.edge import translate
from kxds.translators.node import translate_node
from kxds.views import build_node

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NAMESPACES = ("a", "b")
SERVICES = ("s0", "s1", "s2")
HOSTS = ("foo.example.com", "*.example.com", "", "bar.example.com")
NOW_CHOICES = (T0 + dt.timedelta(hours=1), T0 + dt.timedelta(days=2),
               T0 - dt.timedelta(hours=2))

_CA = make_ca(not_before=T0)
_PAIRS = {
    "valid": make_leaf(_CA, ["foo.example.com", "*.example.com"], not_before=T0, days=30),
    "short": make_leaf(_CA, ["foo.example.com", "bar.example.com"], not_before=T0, days=1),
}


def _meta(name: str, ns: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": ns, **extra}


names = st.sampled_from
ns_st = names(("a", "a", "a", "b"))  # mostly one namespace: objects meet more often
labels_st = st.fixed_dictionaries({"app": names(SERVICES)}, optional={"tier": names(("x", "y"))})


@st.composite
def service_doc(draw: st.DrawFn) -> dict[str, Any]:
    ports = draw(st.lists(names((
        {"name": "http", "port": 80, "targetPort": 8080},
        {"name": "http", "port": 80, "targetPort": "web"},
        {"name": "h2", "port": 81, "appProtocol": "kubernetes.io/h2c"},
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "sctp", "port": 99, "protocol": "SCTP"},
        {"name": "tls", "port": 443, "appProtocol": "https"},
    )), min_size=1, max_size=3, unique_by=lambda p: (p["port"], p.get("protocol", "TCP"))))
    spec: dict[str, Any] = {"ports": ports}
    kind = draw(names(("ClusterIP", "ClusterIP", "ExternalName", "NodePort", "LoadBalancer")))
    status: dict[str, Any] = {}
    if kind == "ExternalName":
        spec |= {"type": "ExternalName",
                 "externalName": draw(names(("example.org", "localhost")))}
    else:
        spec["selector"] = {"app": draw(names(SERVICES))}
    if kind in ("NodePort", "LoadBalancer"):
        spec["type"] = kind
        for port in ports:  # shared port dicts: give each Service its own copy
            port = ports[ports.index(port)] = dict(port)
            if draw(st.integers(0, 4)):
                port["nodePort"] = draw(names((30080, 30081, 30053, 29999)))
        spec["externalTrafficPolicy"] = draw(names(("Cluster", "Local")))
        if spec["externalTrafficPolicy"] == "Local" and draw(st.booleans()):
            spec["healthCheckNodePort"] = draw(names((32000, 32001)))
        spec["internalTrafficPolicy"] = draw(names(("Cluster", "Local")))
    if kind == "LoadBalancer" and draw(st.booleans()):
        status = {"loadBalancer": {"ingress": [{"ip": draw(names(("192.0.2.10", "::1")))}]}}
    if kind != "ExternalName" and draw(st.integers(0, 3)) == 0:
        spec["externalIPs"] = [draw(names(("198.51.100.7", "203.0.113.9")))]
    if draw(st.booleans()):
        spec["loadBalancerSourceRanges"] = draw(st.lists(
            names(("10.0.0.0/8", "192.168.1.1", "nope")), min_size=1, max_size=2))
    annotations = draw(names(({}, {"kxds.io/upstream-proxy-protocol": "v2"})))
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(draw(names(SERVICES)), draw(ns_st), annotations=annotations,
                              creationTimestamp=draw(names(("2024-01-01T00:00:00Z", "")))),
            "spec": spec, "status": status}


@st.composite
def slice_doc(draw: st.DrawFn) -> dict[str, Any]:
    svc = draw(names(SERVICES))
    endpoints = []
    for _ in range(draw(st.integers(0, 3))):
        ep: dict[str, Any] = {
            "addresses": [draw(names(("10.1.0.1", "10.1.0.2", "10.1.0.3", "010.1.0.4")))],
            "conditions": {"ready": draw(st.booleans()), "serving": draw(st.booleans()),
                           "terminating": draw(st.booleans())},
            "zone": draw(names(("z1", "z2"))), "nodeName": draw(names(("n1", "n2")))}
        if draw(st.booleans()):
            ep["targetRef"] = {"kind": "Pod", "name": draw(names(("p0", "p1", "p2")))}
        endpoints.append(ep)
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": _meta(f"{svc}-{draw(names(('x', 'y')))}", draw(ns_st),
                              labels={"kubernetes.io/service-name": svc}),
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": draw(st.lists(names((
                {"name": "http", "port": 8080, "protocol": "TCP"},
                {"name": "h2", "port": 8081, "protocol": "TCP"},
                {"name": "dns", "port": 5353, "protocol": "UDP"})), max_size=2))}


@st.composite
def pod_doc(draw: st.DrawFn) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": _meta(draw(names(("p0", "p1", "p2"))), draw(ns_st),
                              labels=draw(labels_st)),
            "spec": {"containers": [{"name": "c", "ports": [
                {"name": "web", "containerPort": draw(names((8080, 9090)))}]}]},
            "status": {"phase": draw(names(("Running", "Running", "Succeeded"))),
                       "podIP": draw(names(("10.1.0.1", "10.1.0.2", "10.2.0.9")))}}


@st.composite
def policy_doc(draw: st.DrawFn) -> dict[str, Any]:
    peer = draw(names((
        {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}},
        {"ipBlock": {"cidr": "10.0.0.0/8"}},
        {"ipBlock": {"cidr": "bad"}},
        {"podSelector": {"matchLabels": {"app": "s1"}}},
        {"namespaceSelector": {"matchLabels": {"team": "red"}}},
    )))
    rule: dict[str, Any] = {"from": [peer]}
    if draw(st.booleans()):
        rule["ports"] = [{"port": draw(names((8080, "web", 9999)))}]
    selector = draw(names(({}, {"matchLabels": {"app": "s0"}}, {"matchLabels": {"tier": "x"}})))
    annotations = draw(names(({}, {"kxds.io/policy-mode": "shadow"},
                              {"kxds.io/policy-mode": "maybe"})))
    spec: Any = {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": [rule]}
    if draw(st.integers(0, 5)) == 0:
        spec = {"podSelector": "not a selector"}  # rejected: a problem that still selects
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _meta(draw(names(("np0", "np1"))), draw(ns_st),
                              annotations=annotations), "spec": spec}


@st.composite
def namespace_doc(draw: st.DrawFn) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": draw(ns_st),
                         "labels": draw(names(({}, {"team": "red"}, {"team": "blue"})))}}


@st.composite
def secret_doc(draw: st.DrawFn) -> dict[str, Any]:
    name, ns = draw(names(("cert0", "cert1"))), draw(ns_st)
    which = draw(names(("valid", "short", "broken")))
    if which == "broken":
        return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": _meta(name, ns), "stringData": {"tls.crt": "x", "tls.key": "y"}}
    doc: dict[str, Any] = yaml.safe_load(tls_secret_yaml(ns, name, _PAIRS[which]))
    return doc


@st.composite
def config_map_doc(draw: st.DrawFn) -> dict[str, Any]:
    """A ConfigMap of response headers (custom-headers) or check headers."""
    data = draw(names(({"X-A": "1"}, {"X-A": "2", "X-B": "$host"}, {"bad name": "x"}, {})))
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(draw(names(("cm0", "cm1"))), draw(ns_st)), "data": data}


@st.composite
def ingress_doc(draw: st.DrawFn) -> dict[str, Any]:
    def backend() -> dict[str, Any]:
        port = draw(names(({"number": 80}, {"name": "http"}, {"number": 53}, {"number": 7})))
        return {"service": {"name": draw(names(SERVICES)), "port": port}}

    rules = []
    for _ in range(draw(st.integers(0, 2))):
        paths = [{"path": draw(names(("/", "/x", "/x/", "/y", "/a//b"))),
                  "pathType": draw(names(("Prefix", "Exact", "ImplementationSpecific"))),
                  "backend": backend()} for _ in range(draw(st.integers(1, 3)))]
        rule: dict[str, Any] = {"http": {"paths": paths}}
        host = draw(names(HOSTS))
        if host:
            rule["host"] = host
        rules.append(rule)
    spec: dict[str, Any] = {"ingressClassName": draw(names(("kxds", "kxds", "other"))),
                            "rules": rules}
    if draw(st.booleans()):
        spec["defaultBackend"] = backend()
    if draw(st.booleans()):
        spec["tls"] = [{"hosts": [draw(names(HOSTS[:2] + HOSTS[3:]))],
                        "secretName": draw(names(("cert0", "cert1")))}]
    annotations = draw(st.fixed_dictionaries({}, optional={
        "nginx.ingress.kubernetes.io/whitelist-source-range": names(("10.0.0.0/8", "x")),
        "kxds.io/denylist-source-range": names(("10.9.0.0/16",)),
        "kxds.io/tls-passthrough": names(("true", "false")),
        "kxds.io/ssl-redirect": names(("false", "maybe")),
        "kxds.io/backend-protocol": names(("HTTPS", "GRPC")),
        # Route policies, canaries and rewrites (kxds.translators.annotations).
        "nginx.ingress.kubernetes.io/canary": names(("true", "false")),
        "nginx.ingress.kubernetes.io/canary-weight": names(("30", "200", "x")),
        "nginx.ingress.kubernetes.io/canary-by-header": names(("x-canary",)),
        "nginx.ingress.kubernetes.io/rewrite-target": names(("/$1", "/")),
        "nginx.ingress.kubernetes.io/use-regex": names(("true",)),
        "nginx.ingress.kubernetes.io/proxy-read-timeout": names(("5", "soon")),
        "nginx.ingress.kubernetes.io/enable-cors": names(("true",)),
        "nginx.ingress.kubernetes.io/affinity": names(("cookie",)),
        "nginx.ingress.kubernetes.io/limit-rps": names(("2",)),
        "nginx.ingress.kubernetes.io/permanent-redirect": names(("https://x.test/",)),
        "nginx.ingress.kubernetes.io/mirror-target": names(("http://m/",)),
        "nginx.ingress.kubernetes.io/custom-headers": names(("cm0", "b/cm1")),
        # The passes over the Ingresses carrying their annotations (kxds.translators.edge).
        "nginx.ingress.kubernetes.io/server-alias": names(("bar.example.com", "x.test")),
        "nginx.ingress.kubernetes.io/service-upstream": names(("true",)),
        "nginx.ingress.kubernetes.io/auth-tls-secret": names(("a/cert0",)),
        # The passes over the routes that carry what they act on.
        "nginx.ingress.kubernetes.io/load-balance": names(("ewma",)),
        "nginx.ingress.kubernetes.io/auth-url": names((
            "http://s0.a.svc.cluster.local/check", "https://auth.example.org/check")),
    }))
    stamp = draw(names(("2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z")))
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": _meta(draw(names(("i0", "i1", "i2"))), draw(ns_st),
                              annotations=annotations, creationTimestamp=stamp),
            "spec": spec}


any_doc = st.one_of(service_doc(), slice_doc(), ingress_doc(), policy_doc(), pod_doc(),
                    namespace_doc(), secret_doc(), config_map_doc())


def _key(doc: dict[str, Any]) -> tuple[str, str, str]:
    meta = doc["metadata"]
    return (doc["kind"], meta.get("namespace", ""), meta["name"])


def _bytes(resources: Resources) -> dict[str, dict[str, tuple[str, bytes]]]:
    return {t: {n: (r.version, r.body) for n, r in by_name.items()}
            for t, by_name in resources.items()}


NODE = NodeInfo(name="n1", zone="z1")
FLEET = (("node/n1", NODE), ("node/n2", NodeInfo(name="n2", zone="z1")),
         ("node/n3", NodeInfo(name="n3")))
"""Node views built through :class:`~kxds.fleet.FleetMemo`: two of one class, one alone."""


def assert_same(state: ClusterState, config: TranslateConfig, store: Store,
                build: BuildCache) -> None:
    """The incremental edge view gives the full translation's IR, diagnostics and bytes."""
    full = translate(state, config)
    incremental = translate(state, config, store)
    assert incremental == full
    assert _bytes(build_resources(incremental.ir, build)) == _bytes(build_resources(full.ir))


def assert_same_node(state: ClusterState, config: TranslateConfig, store: Store,
                     build: BuildCache) -> None:
    """The same for a per-node view."""
    full = translate_node(state, config, NODE)
    incremental = translate_node(state, config, NODE, store)
    assert incremental == full
    assert _bytes(build_resources(incremental.ir, build)) == _bytes(build_resources(full.ir))


class IncrementalMatchesFull(RuleBasedStateMachine):
    """Random changes to a state: the memoized translation never drifts from a full one."""

    def __init__(self) -> None:
        super().__init__()
        self.objects: dict[tuple[str, str, str], Model] = {}
        self.problems: dict[tuple[str, str, str], Diagnostic] = {}
        self.now = NOW_CHOICES[0]
        self.default_cert = False
        self.store = Store()
        self.build = BuildCache()
        self.node_store = Store()
        self.shared = SharedBuilds()
        self.node_build = BuildCache(self.shared)
        self.fleet = FleetMemo(self.shared)

    @rule(doc=any_doc)
    def put(self, doc: dict[str, Any]) -> None:
        """Add or replace an object (a new model even when its content is the same)."""
        key = _key(doc)
        model, problem = parse_object(doc, "test")
        self.objects.pop(key, None)
        self.problems.pop(key, None)
        if model is not None:
            self.objects[key] = model
        if problem is not None:
            self.problems[key] = problem

    @rule(doc=st.one_of(ingress_doc(), any_doc))  # Ingresses most: most memos are theirs
    def change_in_place(self, doc: dict[str, Any]) -> None:
        """Replace an object where it stands, as a source does when one changes: the
        state's mapping keeps its keys in their order (what the memos that patch their
        last value from the objects changed in place rely on)."""
        key = _key(doc)
        model, problem = parse_object(doc, "test")
        if key not in self.objects or model is None or problem is not None:
            self.put(doc)
        else:
            self.objects[key] = model

    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        keys = sorted(self.objects.keys() | self.problems.keys())
        if keys:
            key = data.draw(st.sampled_from(keys))
            self.objects.pop(key, None)
            self.problems.pop(key, None)

    @rule(now=st.sampled_from(NOW_CHOICES), default_cert=st.booleans())
    def tick(self, now: dt.datetime, default_cert: bool) -> None:
        """The clock moves (certificates expire or are not yet valid); the config changes."""
        self.now, self.default_cert = now, default_cert

    @invariant()
    def memo_path_is_exact(self) -> None:
        state = ClusterState.from_objects(self.objects.values(), self.problems.values())
        config = TranslateConfig(tls_now=self.now, default_certificate=(
            ("a", "cert0") if self.default_cert else None),
            external_ip_cidrs=("198.51.100.0/24",), cluster_cidrs=("10.1.0.0/16",))
        assert_same(state, config, self.store, self.build)
        assert_same_node(state, config, self.node_store, self.node_build)
        for group, node in FLEET:
            # A node view from its class's template and its own local parts is the
            # node's own full translation.
            got = self.fleet.build(state, config, group, node)
            want = build_node(state, config, node)
            assert got.diagnostics == want.diagnostics
            assert (got.resources is None) == (want.resources is None)
            if got.resources is not None and want.resources is not None:
                assert _bytes(got.resources) == _bytes(want.resources)
        self.fleet.sweep()
        self.shared.sweep()
        # Bounded: only what the last translation used remains: per Service its
        # clusters, its wanted ports, its names and those it keeps, per Ingress
        # its routes, passthrough targets and the passes that read it, per TLS Secret
        # its check, and the few whole-view queries.
        used = (4 * len(state.services) + 3 * len(state.ingresses) + len(state.secrets)
                + 2 * len(state.ingresses) + 24)  # an Ingress may name missing Services
        assert len(self.store) <= used
        # A node view: itself, its join, its Services, its policy index, and per
        # Service its share.
        assert len(self.node_store) <= 4 + len(state.services)


IncrementalMatchesFull.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TestIncrementalMatchesFull = IncrementalMatchesFull.TestCase


@pytest.mark.parametrize("case", [c for c in cases() if case_settings(c)[1] is None])
def test_golden_cases_through_memo(case: str) -> None:
    """Every edge golden case: cold, warm (same objects) and re-parsed (new objects)."""
    config, _ = case_settings(case)
    store, build = Store(), BuildCache()
    for _ in range(2):
        objects, problems = load_case_objects(case)
        state = ClusterState.from_objects(objects, problems)
        assert_same(state, config, store, build)
        runs = store.runs
        assert_same(state, config, store, build)
        assert store.runs == runs  # the same objects: nothing runs again
    # Route tables are spliced from per-virtual-host bytes: the same bytes as
    # serializing the whole message.
    tables = translate(state, config).ir.route_tables
    built = build_resources(translate(state, config).ir)[ROUTE]
    for table in tables:
        assert built[table.name].body == \
            routes.build_route_table(table).SerializeToString(deterministic=True)


def test_store_reuses_unchanged_work() -> None:
    """A second translation of the same objects runs no query again; a change runs its own
    (the Service's clusters, and the whole-view queries that list every Service)."""
    store = Store()
    docs = [{"apiVersion": "v1", "kind": "Service", "metadata": _meta(f"s{i}", "a"),
             "spec": {"ports": [{"name": "http", "port": 80}]}} for i in range(3)]
    models = [parse_object(d)[0] for d in docs]
    state = ClusterState.from_objects([m for m in models if m is not None])
    translate(state, TranslateConfig(), store)
    runs = store.runs
    translate(state, TranslateConfig(), store)
    assert store.runs == runs
    changed = parse_object(docs[0])[0]
    assert changed is not None
    state = ClusterState.from_objects([changed, *[m for m in models[1:] if m is not None]])
    translate(state, TranslateConfig(), store)
    # Service s0 (its clusters and its names), the whole-view queries that list
    # every Service (their clusters, the contested names) and the view; no other
    # Service ran again.
    assert store.runs == runs + 5


def test_manifest_source_keeps_unchanged_models(tmp_path: Path) -> None:
    """Editing one object of a manifest file leaves its other objects the same models,
    so translation reuses their results."""
    def service(name: str, port: int) -> str:
        return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: a}}\n"
                f"spec: {{ports: [{{name: http, port: {port}}}]}}\n")

    path = tmp_path / "services.yaml"
    path.write_text(service("web", 80) + "---\n" + service("api", 80))
    source = ManifestSource(tmp_path)
    first = source.refresh()
    path.write_text(service("web", 81) + "---\n" + service("api", 80))
    os.utime(path, ns=(1, 1))  # a different stat key even within the clock's resolution
    second = source.refresh()
    assert first is not None and second is not None
    assert second.services[("a", "api")] is first.services[("a", "api")]
    assert second.services[("a", "web")] is not first.services[("a", "web")]
    assert second.services[("a", "web")].ports[0].port == 81


def test_a_cached_answer_still_records_what_it_was_computed_from() -> None:
    """Two Ingresses behind one NetworkPolicy whose peers are pods: the policy index
    computes the peers' addresses once per translation and shares them. The second
    Ingress gets them from that cache, and must still depend on the pods: when a
    client pod moves, both routes change. (The backends' own lookup reads the pods
    too; the cache records the dependency itself, so this stays true without it.)"""
    def manifests(client_ip: str) -> str:
        docs = ["apiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: a, labels: "
                f"{{app: client}}}}\nspec: {{}}\nstatus: {{podIP: {client_ip}}}\n",
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, "
                "namespace: a}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n"
                "  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]\n"]
        for name in ("one", "two"):
            docs += [f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: a}}\n"
                     "spec: {selector: {app: x}, ports: [{name: http, port: 80}]}\n",
                     "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: "
                     f"{{name: {name}-1, namespace: a, labels: {{kubernetes.io/service-name: "
                     f"{name}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\n"
                     f"endpoints: [{{addresses: [10.1.0.{len(docs)}], targetRef: {{kind: Pod, "
                     f"name: {name}-pod}}}}]\n",
                     f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}-pod, namespace: a, "
                     f"labels: {{app: x}}}}\nspec: {{}}\nstatus: {{podIP: 10.1.0.{len(docs)}}}\n",
                     "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: "
                     f"{{name: {name}, namespace: a}}\nspec:\n  ingressClassName: kxds\n  rules:\n"
                     f"  - host: {name}.example.com\n    http: {{paths: [{{path: /, pathType: "
                     f"Prefix, backend: {{service: {{name: {name}, port: {{number: 80}}}}}}}}]}}\n"]
        return "---\n".join(docs)

    from kxds.kube.loader import load_text

    store, config = Store(), TranslateConfig()
    before = load_text(manifests("10.9.0.1"))
    assert translate(before, config, store) == translate(before, config)
    keep = {(type(o), o.meta.key): o for o in before.objects()}
    moved = {(type(o), o.meta.key): o for o in load_text(manifests("10.9.0.2")).objects()
             if o.meta.name == "client"}
    after = ClusterState.from_objects({**keep, **moved}.values())
    full = translate(after, config)
    assert full != translate(before, config)  # the client's address is in both routes' rules
    assert translate(after, config, store) == full


def test_ingresses_sharing_a_ref_are_merged_in_full() -> None:
    """Two Ingresses whose names differ only past the characters a ref keeps
    (:class:`~kxds.diagnostics.ObjectRef`) cannot be told apart by their ref: a change
    of either merges every Ingress again, and no path of the other is lost."""
    stem = ".".join(["a" * 60] * 3) + "." + "a" * 17  # 200 characters, then "x1" or "x2"

    def ingress_doc(suffix: str, path: str, created: str) -> dict[str, Any]:
        backend = {"service": {"name": "web", "port": {"number": 80}}}
        return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": _meta(stem + suffix, "a", creationTimestamp=created),
                "spec": {"ingressClassName": "kxds", "rules": [{"host": "h.example.com", "http": {
                    "paths": [{"path": path, "pathType": "Prefix", "backend": backend}]}}]}}

    def state_of(first: str, second: str) -> ClusterState:
        docs = [{"apiVersion": "v1", "kind": "Service", "metadata": _meta("web", "a"),
                 "spec": {"ports": [{"name": "http", "port": 80}]}},
                ingress_doc("x1", first, "2024-01-01T00:00:00Z"),
                ingress_doc("x2", second, "2024-02-01T00:00:00Z")]
        models = [parse_object(d)[0] for d in docs]
        return ClusterState.from_objects([m for m in models if m is not None])

    store, build, config = Store(), BuildCache(), TranslateConfig()
    for first, second in (("/one", "/two"), ("/one", "/three"), ("/four", "/three")):
        state = state_of(first, second)
        assert len({i.meta.ref for i in state.ingresses.values()}) == 1
        assert_same(state, config, store, build)
        vhosts = translate(state, config).ir.route_tables[0].virtual_hosts
        assert sorted(r.match.path for r in vhosts[0].routes) == sorted((first, second))
