"""The snapshot cache, node identity and protocol state machines, without gRPC."""

from __future__ import annotations

import asyncio

import pytest
import xds_support as t
from envoy.service.discovery.v3 import discovery_pb2
from hypothesis import given
from hypothesis import strategies as st

from kxds.envoy.resource import CLUSTER, ENDPOINT, LISTENER, ROUTE
from kxds.xds.cache import SnapshotCache, type_version
from kxds.xds.delta import DeltaStream
from kxds.xds.identity import InvalidNodeError, NodeIdentity, node_identity
from kxds.xds.protocol import blamed_names
from kxds.xds.sotw import SotwStream
from kxds.xds.tracker import NodeTracker

EDGE = NodeIdentity("envoy-1", "edge", "edge/default", None, None, "default")


# -- node identity ---------------------------------------------------------------

@pytest.mark.parametrize(("node", "expected"), [
    (t.make_node("e1"), NodeIdentity("e1", "edge", "edge/default", None, None, "default")),
    (t.make_node("e1", cluster="public"),
     NodeIdentity("e1", "edge", "edge/public", None, None, "public")),
    (t.make_node("p1", role="node", node_name="worker-1", zone="z1"),
     NodeIdentity("p1", "node", "node/worker-1", "worker-1", "z1", "default")),
    (t.make_node("worker-2", role="node"),
     NodeIdentity("worker-2", "node", "node/worker-2", "worker-2", None, "default")),
    (t.make_node("p3", role="node", node_name="w3", bind_address="10.0.0.3"),
     NodeIdentity("p3", "node", "node/w3", "w3", None, "default", "10.0.0.3")),
    (t.make_node("p4", role="node", node_name="w4", source_ip_mode="transparent"),
     NodeIdentity("p4", "node", "node/w4", "w4", None, "default", None, "transparent")),
], ids=["edge-default", "edge-cluster", "node-metadata", "node-from-id", "node-bind-address",
        "node-transparent"])
def test_node_identity(node: object, expected: NodeIdentity) -> None:
    assert node_identity(node) == expected


def test_zone_from_locality_when_metadata_has_none() -> None:
    node = t.make_node("p1", role="node")
    node.locality.zone = "eu-1a"
    assert node_identity(node).zone == "eu-1a"


@pytest.mark.parametrize(("node", "fragment"), [
    (t.make_node("x", role=None), "metadata 'role' is missing"),
    (t.make_node("x", role="mesh"), "unknown role 'mesh'"),
    (t.make_node("x", role="node", source_ip_mode="tproxy"), "unknown source_ip_mode 'tproxy'"),
], ids=["missing-role", "unknown-role", "unknown-source-ip-mode"])
def test_bad_role_is_refused(node: object, fragment: str) -> None:
    with pytest.raises(InvalidNodeError, match=fragment):
        node_identity(node)


def test_non_string_role_is_refused() -> None:
    node = t.make_node("x", role=None)
    node.metadata.fields["role"].number_value = 3
    with pytest.raises(InvalidNodeError, match="must be a string"):
        node_identity(node)


# -- cache -------------------------------------------------------------------------

def test_view_is_hidden_until_synced() -> None:
    cache = SnapshotCache()
    cache.set_view("edge/default", t.resources(t.cluster("a/b/80")))
    assert cache.view("edge/default") is None
    cache.mark_synced()
    view = cache.view("edge/default")
    assert view is not None
    assert list(view.of_type(CLUSTER)) == ["a/b/80"]


def test_set_view_wakes_only_the_groups_watches() -> None:
    async def scenario() -> None:
        cache = SnapshotCache()
        edge = cache.watch(EDGE)
        other = cache.watch(NodeIdentity("n", "node", "node/w1", "w1", None, "default"))
        cache.set_view("edge/default", t.resources(t.cluster("a/b/80")))
        assert edge.event.is_set()
        assert not other.event.is_set()
        cache.cancel(edge)
        assert cache.watched_groups() == {"node/w1"}
    asyncio.run(scenario())


def test_mark_synced_wakes_every_watch() -> None:
    async def scenario() -> None:
        cache = SnapshotCache()
        watch = cache.watch(EDGE)
        assert not watch.event.is_set()
        cache.mark_synced()
        assert watch.event.is_set()
    asyncio.run(scenario())


def test_on_new_group_called_once_for_a_group_without_view() -> None:
    cache = SnapshotCache()
    seen: list[NodeIdentity] = []
    cache.on_new_group = seen.append
    cache.watch(EDGE)
    cache.set_view("edge/default", t.resources())
    cache.watch(EDGE)
    assert seen == [EDGE]
    assert cache.groups() == {"edge/default"}


def test_on_new_group_failure_does_not_break_the_watch() -> None:
    cache = SnapshotCache()

    def boom(identity: NodeIdentity) -> None:
        raise RuntimeError("controller bug")
    cache.on_new_group = boom
    watch = cache.watch(EDGE)
    assert watch.identity == EDGE


def test_shared_resource_object_is_not_copied() -> None:
    cache = SnapshotCache()
    shared = t.cluster("a/b/80")
    cache.set_view("edge/default", t.resources(shared))
    cache.set_view("edge/public", t.resources(shared))
    cache.mark_synced()
    one, two = cache.view("edge/default"), cache.view("edge/public")
    assert one is not None and two is not None
    assert one.of_type(CLUSTER)["a/b/80"] is two.of_type(CLUSTER)["a/b/80"] is shared


# -- versions and blame --------------------------------------------------------------

@given(st.permutations(["a", "b", "c", "d"]))
def test_type_version_ignores_order(names: list[str]) -> None:
    items = [t.cluster(n) for n in names]
    assert type_version(items) == type_version(sorted(items, key=lambda r: r.name))


def test_type_version_changes_with_content() -> None:
    assert type_version([t.cluster("a", 1000)]) != type_version([t.cluster("a", 2000)])


@given(st.lists(st.dictionaries(st.sampled_from("abcdef"), st.integers(1, 3), min_size=1),
                min_size=2, max_size=6))
def test_the_changes_a_view_remembers_are_the_names_whose_resource_changed(
        steps: list[dict[str, int]]) -> None:
    """Whether the names stayed in place (compared resource by resource, by identity
    first) or not (compared by name), the change history is the exact difference."""
    cache = SnapshotCache()
    cache.mark_synced()
    before = None
    for step in steps:
        endpoints = [t.endpoints(n, range(port)) for n, port in sorted(step.items())]
        cache.set_view("g", t.resources(t.cluster("a"), *endpoints))
        view = cache.view("g")
        assert view is not None
        now = view.of_type(ENDPOINT)
        if before is not None:
            expected = {n for n in {*before, *now}
                        if getattr(before.get(n), "version", None)
                        != getattr(now.get(n), "version", None)}
            assert now.changes_since(before) == expected
        before = now


@given(st.lists(st.dictionaries(st.sampled_from("abcdefgh"), st.integers(1, 3)), min_size=1,
                max_size=8),
       st.lists(st.booleans(), min_size=8, max_size=8),
       st.lists(st.booleans(), min_size=8, max_size=8))
def test_a_type_version_followed_across_views_is_the_one_computed_whole(
        steps: list[dict[str, int]], asked: list[bool], sized: list[bool]) -> None:
    """Each view's version and size are taken from the last one's when they were
    asked for (a stream, the metrics), patched with the change: they must equal
    those of the whole."""
    cache = SnapshotCache()
    cache.mark_synced()

    def whole_size() -> int:
        return sum(len(r.body) for m in view.resources.values() for r in m.values())

    for step, ask, size in zip(steps, asked, sized, strict=False):
        endpoints = [t.endpoints(n, range(port)) for n, port in sorted(step.items())]
        cache.set_view("g", t.resources(t.cluster("a"), *endpoints))
        view = cache.view("g")
        assert view is not None
        if ask:
            assert view.type_version(ENDPOINT) == type_version(view.of_type(ENDPOINT).values())
        if size:
            assert view.byte_size() == whole_size()
    assert view.type_version(ENDPOINT) == type_version(view.of_type(ENDPOINT).values())
    assert view.byte_size() == whole_size()


@pytest.mark.parametrize(("error", "expected"), [
    ("Error adding/updating cluster(s) default/web/80: bad", {"default/web/80"}),
    ("Error adding/updating cluster(s) default/web/8080: bad", set()),
    ("cluster(s) default/web/80, default/api/80: x", {"default/web/80", "default/api/80"}),
    ("something unrelated", set()),
], ids=["one", "no-prefix-match", "two", "none"])
def test_blamed_names(error: str, expected: set[str]) -> None:
    names = ["default/web/80", "default/api/80", "default/db/5432"]
    assert blamed_names(error, names) == expected


# -- state machines without a server --------------------------------------------------

def _view(*items: object) -> object:
    cache = SnapshotCache()
    cache.set_view("edge/default", t.resources(*items))  # type: ignore[arg-type]
    cache.mark_synced()
    return cache.view("edge/default")


def _subscribed_sotw() -> SotwStream:
    machine = SotwStream(EDGE, NodeTracker())
    for type_url, names in ((CLUSTER, []), (ENDPOINT, ["c"]), (LISTENER, []), (ROUTE, ["r"])):
        machine.on_request(discovery_pb2.DiscoveryRequest(type_url=type_url,
                                                          resource_names=names))
    return machine


def test_sotw_machine_holds_listeners_and_routes_until_clusters_are_acked() -> None:
    machine = _subscribed_sotw()
    view = _view(t.cluster("c"), t.endpoints("c", [1]), t.listener("l", 1, "r"), t.route("r", "c"))
    first = machine.next_replies(view, now=100.0)  # type: ignore[arg-type]
    assert [r.type_url for r in first] == [CLUSTER, ENDPOINT]
    assert machine.wake_at == 105.0
    assert machine.next_replies(view, now=101.0) == []  # type: ignore[arg-type]
    machine.on_request(discovery_pb2.DiscoveryRequest(
        type_url=CLUSTER, version_info=first[0].version, response_nonce=first[0].nonce))
    second = machine.next_replies(view, now=102.0)  # type: ignore[arg-type]
    assert [r.type_url for r in second] == [LISTENER, ROUTE]


def test_sotw_machine_stops_holding_for_clusters_that_never_warm() -> None:
    machine = _subscribed_sotw()
    view = _view(t.cluster("c"), t.endpoints("c", [1]), t.listener("l", 1, "r"), t.route("r", "c"))
    machine.next_replies(view, now=100.0)  # type: ignore[arg-type]
    late = machine.next_replies(view, now=105.5)  # type: ignore[arg-type]
    assert [r.type_url for r in late] == [LISTENER, ROUTE]


def test_delta_machine_initial_versions_send_only_the_difference() -> None:
    machine = DeltaStream(EDGE, NodeTracker())
    a, b = t.cluster("a"), t.cluster("b")
    view = _view(a, b)
    machine.on_request(discovery_pb2.DeltaDiscoveryRequest(
        type_url=CLUSTER, initial_resource_versions={"a": a.version, "b": "old", "gone": "v"}))
    (reply,) = machine.next_replies(view)  # type: ignore[arg-type]
    assert [r.name for r in reply.resources] == ["b"]
    assert reply.removed == ["gone"]


def test_unchanged_type_keeps_its_mapping_and_version() -> None:
    cache = SnapshotCache()
    cache.mark_synced()
    cache.set_view("edge/default", t.resources(t.cluster("a"), t.endpoints("a", [1])))
    first = cache.view("edge/default")
    assert first is not None
    version = first.type_version(CLUSTER)
    # Equal content in new objects (as a rebuild produces) still counts as unchanged.
    cache.set_view("edge/default", t.resources(t.cluster("a"), t.endpoints("a", [2])))
    second = cache.view("edge/default")
    assert second is not None
    assert second.of_type(CLUSTER) is first.of_type(CLUSTER)
    assert second.versions[CLUSTER] == version
    assert second.of_type(ENDPOINT) is not first.of_type(ENDPOINT)


def test_type_map_remembers_what_changed_since_an_older_map() -> None:
    cache = SnapshotCache()
    cache.mark_synced()
    maps = []
    for port in range(1, 12):
        cache.set_view("edge/default", t.resources(
            t.endpoints("a", [1]), t.endpoints("b", [port]),
            *([t.endpoints("c", [1])] if port < 5 else [])))
        view = cache.view("edge/default")
        assert view is not None
        maps.append(view.of_type(ENDPOINT))
    assert maps[10].changes_since(maps[9]) == {"b"}
    assert maps[4].changes_since(maps[3]) == {"b", "c"}  # c removed
    assert maps[10].changes_since(maps[3]) == {"b", "c"}
    assert maps[10].changes_since(maps[10]) == set()
    # Past the remembered chain the answer is "unknown" (a full comparison); the
    # history keeps names only, never the older maps.
    assert maps[10].changes_since(maps[0]) is None
    assert maps[10].changes_since(maps[1]) is None
    assert maps[1].history.prev is None


def test_a_change_larger_than_its_map_is_not_remembered() -> None:
    """After (almost) everything is deleted, the history holds none of the deleted names."""
    from kxds.xds.cache import MAX_CHANGE_SLACK

    cache = SnapshotCache()
    cache.mark_synced()
    many = [t.endpoints(f"e{i}", [1]) for i in range(MAX_CHANGE_SLACK + 10)]
    cache.set_view("edge/default", t.resources(*many))
    full = cache.view("edge/default")
    cache.set_view("edge/default", t.resources(*many[:-1]))
    one_less = cache.view("edge/default")
    cache.set_view("edge/default", t.resources(many[0]))
    empty = cache.view("edge/default")
    assert full is not None and one_less is not None and empty is not None
    assert one_less.of_type(ENDPOINT).changes_since(full.of_type(ENDPOINT)) == {many[-1].name}
    history = empty.of_type(ENDPOINT).history
    assert history.changed is None and history.prev is None
    assert empty.of_type(ENDPOINT).changes_since(one_less.of_type(ENDPOINT)) is None


def test_nack_records_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from kxds.xds import retry, tracker

    monkeypatch.setattr(retry, "MAX_REJECTED_NAMES", 2)
    monkeypatch.setattr(retry, "MAX_REJECTED_VERSIONS", 2)
    monkeypatch.setattr(tracker, "MAX_NACKED_RESOURCES", 2)
    machine = DeltaStream(EDGE, NodeTracker())
    machine.on_request(discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER))
    st = machine.states[CLUSTER]
    for name, ms in (("a", 1001), ("a", 1002), ("a", 1003), ("b", 1001), ("c", 1001)):
        bad = t.cluster(name, ms)
        (reply,) = machine.next_replies(_view(bad))  # type: ignore[arg-type]
        assert [r.version for r in reply.resources] == [bad.version]  # never one rejected
        req = discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce=reply.nonce)
        req.error_detail.message = f"Error adding/updating cluster(s) {name}: no"
        machine.on_request(req)
        if name == "a":
            assert st.rejected["a"][-1] == bad.version and len(st.rejected["a"]) <= 2
    assert list(st.rejected) == ["b", "c"]
    assert list(machine.record.nacked) == [(CLUSTER, "b"), (CLUSTER, "c")]


NODE_PORT_WEB = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {type: NodePort, ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.0.0.1], nodeName: n1}, {addresses: [10.0.0.2], nodeName: n2}]
"""


def test_node_groups_share_serialized_resources() -> None:
    from kxds.envoy.build import BuildCache, SharedBuilds
    from kxds.kube.loader import load_text
    from kxds.translators.config import NodeInfo, TranslateConfig
    from kxds.views import ViewMemo, build_node

    state, config = load_text(NODE_PORT_WEB), TranslateConfig()
    shared = SharedBuilds()  # the controller's, for all its node views
    one = build_node(state, config, NodeInfo(name="n1"),
                     ViewMemo(build=BuildCache(shared))).resources
    two = build_node(state, config, NodeInfo(name="n2"),
                     ViewMemo(build=BuildCache(shared))).resources
    assert one is not None and two is not None and one[CLUSTER]
    # Equal resources of two groups are one object: serialized once, bytes shared.
    for type_url in (CLUSTER, ENDPOINT):
        assert one[type_url].keys() == two[type_url].keys()
        for name, res in one[type_url].items():
            assert two[type_url][name] is res


def test_the_cache_counts_the_resources_of_every_view_as_views_come_and_go() -> None:
    cache = SnapshotCache()
    cache.set_view("a", t.resources(t.cluster("x"), t.endpoints("x", [1])))
    cache.set_view("b", t.resources(t.cluster("x")))
    assert cache.count() == 3
    cache.set_view("a", t.resources(t.cluster("x"), t.cluster("y"), t.endpoints("y", [1])))
    assert cache.count() == 4
    cache.remove_view("b")
    cache.remove_view("b")  # already gone: counted once
    assert cache.count() == 3 == sum(view.count() for _, view in cache)
    # Counted from the types that changed: a type left out, a type kept unchanged.
    clusters_only = {CLUSTER: t.resources(t.cluster("x"), t.cluster("y"))[CLUSTER]}
    cache.set_view("a", clusters_only)
    assert cache.count() == 2 == sum(view.count() for _, view in cache)
    cache.set_view("a", t.resources(t.cluster("x"), t.cluster("y"), t.endpoints("y", [1])))
    cache.set_view("a", t.resources(t.cluster("x"), t.cluster("y"), t.endpoints("y", [1, 2])))
    assert cache.count() == 3 == sum(view.count() for _, view in cache)
