"""Node views of a fleet (kxds.fleet): shared templates, per-node local parts.

A node view put together from its class's template and its own local parts
must equal the node's own full translation (every per-node golden case, with
EndpointSlice changes moving endpoints onto and off the node); and an
EndpointSlice change of an ``externalTrafficPolicy: Local`` Service must
re-assemble only the views of the nodes its endpoints were or are on, the
others keeping the very same view object; in the controller, the fleet looks
at those nodes only and the cache is given their changed views only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest
from golden_support import case_settings, cases, load_case_objects
from test_node_patch import CHANGES, _versions

from kxds.controller import Controller
from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.envoy.resource import ENDPOINT, LISTENER
from kxds.fleet import FleetMemo
from kxds.kube.models import ClusterState, EndpointSlice, Model
from kxds.kube.parse import parse_object
from kxds.translators.config import NodeInfo, TranslateConfig
from kxds.translators.gateway_status import GatewayApiStatus
from kxds.views import Built, build_node
from kxds.xds.cache import SnapshotCache
from kxds.xds.identity import NodeIdentity

NODE_CASES = [c for c in cases() if case_settings(c)[1] is not None]


@pytest.mark.parametrize("case", NODE_CASES)
def test_fleet_views_equal_full_translation(case: str) -> None:
    objects, problems = load_case_objects(case)
    config, node = case_settings(case)
    assert node is not None
    others = [dataclasses.replace(node, name="elsewhere"), dataclasses.replace(node, zone="z9")]
    fleet = FleetMemo()
    base: dict[tuple[type, tuple[str, str]], Model] = {(type(o), o.meta.key): o for o in objects}

    def check(state: ClusterState, what: str) -> None:
        for i, n in enumerate((node, *others)):
            got = fleet.build(state, config, f"node/{i}", n)
            assert _versions(got) == _versions(build_node(state, config, n)), f"{case}: {what}"
        fleet.sweep()

    check(ClusterState.from_objects(base.values(), problems), "initial")
    for sl in [o for o in objects if isinstance(o, EndpointSlice)]:
        for name, change in CHANGES.items():
            moved = dataclasses.replace(sl, endpoints=tuple(change(ep, node)
                                                            for ep in sl.endpoints))
            for step in (moved, dataclasses.replace(sl, endpoints=()), sl):
                state = ClusterState.from_objects(
                    {**base, (EndpointSlice, sl.meta.key): step}.values(), problems)
                check(state, f"slice {sl.meta.key} {name}")


def _service(name: str, node_port: int, local: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "NodePort", "selector": {"app": name},
                            "ports": [{"port": 80, "targetPort": 8080, "nodePort": node_port}]}
    if local:
        spec.update(externalTrafficPolicy="Local", healthCheckNodePort=node_port + 1000)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def _slice(name: str, nodes: list[str]) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-x", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [f"10.0.{i}.{len(name)}"], "nodeName": n,
                           "conditions": {"ready": True}} for i, n in enumerate(nodes)]}


def _state(docs: list[dict[str, Any]]) -> ClusterState:
    models = []
    for doc in docs:
        model, problem = parse_object(doc, "test")
        assert model is not None, problem
        models.append(model)
    return ClusterState.from_objects(models)


def _kept_states() -> Callable[[list[dict[str, Any]]], ClusterState]:
    """States of documents in which an unchanged object is the very same model as in the
    last state, as sources keep it (what the memos tell changes by)."""
    parsed: dict[str, Model] = {}

    def state(docs: list[dict[str, Any]]) -> ClusterState:
        for doc in docs:
            if repr(doc) not in parsed:
                model, problem = parse_object(doc, "test")
                assert model is not None, problem
                parsed[repr(doc)] = model
        return ClusterState.from_objects(parsed[repr(doc)] for doc in docs)
    return state


def test_a_local_endpoint_change_reassembles_only_the_nodes_concerned() -> None:
    nodes = {f"node/n{i}": NodeInfo(name=f"n{i}") for i in range(8)}
    services = [_service("web", 30080, True), _service("api", 30081, False),
                _service("db", 30082, True)]
    docs = [*services, _slice("web", ["n1", "n2"]), _slice("api", ["n3"]),
            _slice("db", ["n4"])]
    config, fleet = TranslateConfig(), FleetMemo()

    def build(state: ClusterState) -> dict[str, Any]:
        out = {g: fleet.build(state, config, g, n) for g, n in nodes.items()}
        fleet.sweep()
        for g, n in nodes.items():
            assert _versions(out[g]) == _versions(build_node(state, config, n)), g
        return out

    first = build(_state(docs))
    assert fleet.templates_built == 1  # one class of nodes: one translation
    # Nodes without local endpoints serve the template's very mappings.
    assert first["node/n0"].resources is first["node/n5"].resources
    # n1 has web's endpoints: its own load assignments (and health-check answer), the
    # template's listeners (a health check's count is in its route table, not its listener).
    assert first["node/n1"].resources[ENDPOINT] is not first["node/n0"].resources[ENDPOINT]
    assert first["node/n1"].resources[LISTENER] is first["node/n0"].resources[LISTENER]

    # web's endpoint moves from n2 to n5: n2 and n5 change, nobody else.
    before = fleet.assembled
    second = build(_state([*services, _slice("web", ["n1", "n5"]), _slice("api", ["n3"]),
                           _slice("db", ["n4"])]))
    assert fleet.assembled - before == 2
    assert fleet.templates_built == 2  # the shared part is looked at once, not per node
    changed = {g for g in nodes if second[g] is not first[g]}
    assert changed == {"node/n2", "node/n5"}
    assert second["node/n2"].resources is second["node/n0"].resources  # back to the template
    web = "default/web/80/local"
    assert [e.address for e in _endpoints(second["node/n5"], web)] == ["10.0.1.3"]

    # A Cluster Service's endpoints change: every node's view changes, from one
    # translation of the template (not one per node).
    third = build(_state([*services, _slice("web", ["n1", "n5"]), _slice("api", ["n3", "n6"]),
                          _slice("db", ["n4"])]))
    assert fleet.templates_built == 3
    assert all(third[g] is not second[g] for g in nodes)
    api = _endpoints(third["node/n0"], "default/api/80")
    assert [e.address for e in api] == ["10.0.0.3", "10.0.1.3"]


def _endpoints(built: Any, cluster: str) -> list[Any]:
    from envoy.config.endpoint.v3 import endpoint_pb2

    cla = endpoint_pb2.ClusterLoadAssignment.FromString(built.resources[ENDPOINT][cluster].body)
    return [lb.endpoint.address.socket_address for loc in cla.endpoints
            for lb in loc.lb_endpoints]


def test_a_local_endpoint_change_sets_the_views_of_the_nodes_concerned_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The controller's side: of 8 watched node groups, a Local Service's endpoint moving
    # from n2 to n5 has the fleet look at the nodes of its endpoints (before and after)
    # and no other, and the cache's views set for the two that changed; the problems of
    # the node views not looked at are still told.
    names = [f"n{i}" for i in range(8)]
    services = [_service("web", 30080, True), _service("api", 30081, False),
                _service("bad", 40000, False)]  # nodePort outside the range: a problem
    fixed = [_slice("api", ["n3"]), _slice("bad", ["n4"])]
    looked_at: list[set[str]] = []
    build_all = FleetMemo.build_all

    def counted(self: FleetMemo, *args: Any) -> dict[str, Any]:
        out = build_all(self, *args)
        looked_at.append(set(out))
        return out
    monkeypatch.setattr(FleetMemo, "build_all", counted)

    state = _kept_states()

    async def scenario() -> None:
        cache = SnapshotCache()
        ctl = Controller(cache, TranslateConfig(), in_thread=False)
        told: list[set[Diagnostic]] = []
        ctl.on_diagnostics = told.append
        set_views: list[str] = []
        cache.view_listeners.append(lambda group, view: set_views.append(group))
        await ctl.rebuild(state([*services, _slice("web", ["n1", "n2"]), *fixed]))
        for name in names:
            cache.watch(NodeIdentity(f"envoy-{name}", "node", f"node/{name}", name, None,
                                     "node"))
        await ctl.rebuild(state([*services, _slice("web", ["n1", "n2"]), *fixed]))
        assert looked_at[-1] == {f"node/{n}" for n in names}
        bad_port = {d for d in told[-1] if d.message.startswith("nodePort 40000")}
        assert bad_port, told[-1]
        before = {g: cache.view(g) for g in (f"node/{n}" for n in names)}

        set_views.clear()
        await ctl.rebuild(state([*services, _slice("web", ["n1", "n5"]), *fixed]))
        assert looked_at[-1] == {"node/n1", "node/n2", "node/n5"}
        assert sorted(g for g in set_views if g.startswith("node/")) == ["node/n2", "node/n5"]
        assert all(cache.view(g) is before[g] for g in before if g not in {"node/n2", "node/n5"})

        # Its endpoint moves between nodes without a proxy: no node view is looked at,
        # and the problems of every node view are still told.
        await ctl.rebuild(state([*services, _slice("web", ["n1", "n5", "x1"]), *fixed]))
        await ctl.rebuild(state([*services, _slice("web", ["n1", "n5", "x2"]), *fixed]))
        assert looked_at[-1] == {"node/n1", "node/n5"}  # the nodes of its endpoints
        await ctl.rebuild(state([*services, _slice("web", ["x2"]), *fixed]))
        await ctl.rebuild(state([*services, _slice("web", ["x3"]), *fixed]))
        assert looked_at[-1] == set()
        assert bad_port <= told[-1]

        # A Cluster Service's endpoints: every node's view changes, and is set.
        set_views.clear()
        await ctl.rebuild(state([*services, _slice("web", ["n1", "n5"]),
                                  _slice("api", ["n3", "n6"]), fixed[1]]))
        assert looked_at[-1] == {f"node/{n}" for n in names}
        assert sorted(g for g in set_views if g.startswith("node/")) == sorted(before)

    asyncio.run(scenario())


def test_a_built_with_other_resources_keeps_every_other_field() -> None:
    # Built.with_resources names every field (dataclasses.replace at half the cost, once
    # per node view): one added to Built must be added there too.
    ref = ObjectRef("Service", "default", "web")
    built = Built(None, (Diagnostic(ref, "spec", Reason.INVALID_VALUE, "bad"),), "why",
                  frozenset({dt.datetime(2030, 1, 1, tzinfo=dt.UTC)}), (ref,),
                  GatewayApiStatus())
    assert all(getattr(built, f.name) != f.default for f in dataclasses.fields(Built))
    resources = MappingProxyType({ENDPOINT: MappingProxyType({})})
    assert built.with_resources(resources) == dataclasses.replace(built, resources=resources)


def _cluster_ip(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}}


def test_a_cluster_ip_endpoint_change_visits_no_node() -> None:
    # A ClusterIP Service has no part in any node view: its endpoints moving between
    # nodes with a proxy makes no node due, and every view (its last one) still equals
    # a build from scratch; made Local on a nodePort, it reaches the nodes of its
    # endpoints again.
    nodes = {f"node/n{i}": NodeInfo(name=f"n{i}") for i in range(6)}
    services = [_service("web", 30080, True), _service("api", 30081, False)]
    fixed = [_slice("web", ["n1"]), _slice("api", ["n4"])]
    config, fleet = TranslateConfig(), FleetMemo()
    for group, node in nodes.items():
        fleet.join(group, node)
    views: dict[str, Built] = {}
    state = _kept_states()

    def build_all(docs: list[dict[str, Any]]) -> set[str]:
        state_now = state(docs)
        got = fleet.build_all(state_now, config)
        fleet.sweep()
        views.update(got)
        for group, node in nodes.items():
            want = build_node(state_now, config, node)
            assert _versions(views[group]) == _versions(want), group
        return set(got)

    assert build_all([*services, _cluster_ip("db"), *fixed, _slice("db", ["n2", "n3"])]) == set(
        nodes)
    for db in (["n3", "n5"], ["n1"], []):
        assert build_all([*services, _cluster_ip("db"), *fixed, _slice("db", db)]) == set()
    assert build_all([*services, _service("db", 30082, True), *fixed,
                      _slice("db", ["n3"])]) == set(nodes)  # a Service more: every node
    assert build_all([*services, _service("db", 30082, True), *fixed,
                      _slice("db", ["n2"])]) == {"node/n2", "node/n3"}
