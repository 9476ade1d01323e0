"""The node tracker keeps a bounded number of disconnected nodes, the latest gone."""

from __future__ import annotations

from kxds.xds.identity import NodeIdentity
from kxds.xds.tracker import MAX_DISCONNECTED, NodeTracker


def identity(i: int) -> NodeIdentity:
    return NodeIdentity(f"envoy-{i}", "edge", "edge/default", None, None, "default")


def test_only_the_latest_disconnected_nodes_are_remembered() -> None:
    tracker = NodeTracker()
    count = MAX_DISCONNECTED + 50
    for i in range(count):
        tracker.connect(identity(i), "sotw", {})
    for i in range(count):
        tracker.disconnect(identity(i))
    remembered = {rec.identity.node_id for rec in tracker.all()}
    assert remembered == {f"envoy-{i}" for i in range(50, count)}


def test_connected_nodes_are_never_forgotten() -> None:
    tracker = NodeTracker()
    tracker.connect(identity(0), "sotw", {})
    tracker.connect(identity(1), "sotw", {})
    tracker.disconnect(identity(1))
    tracker.connect(identity(1), "sotw", {})  # back: no longer among the disconnected
    for i in range(2, MAX_DISCONNECTED + 10):
        tracker.connect(identity(i), "sotw", {})
        tracker.disconnect(identity(i))
    assert tracker.get("envoy-0") is not None and tracker.get("envoy-1") is not None
    assert tracker.get("envoy-2") is None
    assert len(tracker.all()) == MAX_DISCONNECTED + 2
