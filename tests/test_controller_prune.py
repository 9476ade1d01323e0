"""Node groups of per-node proxies that left are forgotten after a grace period.

A ``node/<name>`` group keeps a view, a memo and the node's info in the
controller. Once none of its streams has been connected for ``node_grace``
seconds they are dropped (and the group's metric series with them); a proxy
that reconnects within the grace period keeps everything; other node groups
are never touched. Edge groups go the same way, except ``edge/default``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from kxds.controller import EDGE_DEFAULT, Controller
from kxds.kube.loader import load_text
from kxds.kube.models import ClusterState
from kxds.translators.config import TranslateConfig
from kxds.xds.cache import SnapshotCache, Watch
from kxds.xds.identity import NodeIdentity
from kxds.xds.metrics import XdsMetrics

GRACE = 30.0


def state() -> ClusterState:
    return load_text("apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: default}\n"
                     "spec:\n  ports: [{name: http, port: 80}]\n")


def node(name: str) -> NodeIdentity:
    return NodeIdentity(f"envoy-{name}", "node", f"node/{name}", name, None, "default")


def edge(node_id: str) -> NodeIdentity:
    return NodeIdentity(node_id, "edge", EDGE_DEFAULT, None, None, "default")


def run(scenario: Callable[[Controller, SnapshotCache, XdsMetrics], Awaitable[None]],
        grace: float = GRACE) -> None:
    cache = SnapshotCache()
    metrics = XdsMetrics()
    metrics.attach(cache)
    ctl = Controller(cache, TranslateConfig(), metrics=metrics, in_thread=False,
                     node_grace=grace)

    async def main() -> None:
        task = asyncio.create_task(ctl.run())
        try:
            ctl.publish(state())
            await until(lambda: ctl.rebuild_seq >= 1, "first rebuild")
            await scenario(ctl, cache, metrics)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


async def until(pred: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"{what}: not reached in {timeout}s"
        await asyncio.sleep(0.005)


async def connect(ctl: Controller, cache: SnapshotCache, identity: NodeIdentity) -> Watch:
    watch = cache.watch(identity)
    await until(lambda: cache.view(identity.group) is not None, f"view of {identity.group}")
    return watch


def view_series(metrics: XdsMetrics, group: str) -> float | None:
    return metrics.registry.get_sample_value("kxds_view_bytes", {"group": group})


def test_a_departed_node_group_is_forgotten_after_the_grace_period() -> None:
    async def scenario(ctl: Controller, cache: SnapshotCache, metrics: XdsMetrics) -> None:
        gone = await connect(ctl, cache, node("n1"))
        stays = await connect(ctl, cache, node("n2"))
        await connect(ctl, cache, edge("edge-1"))
        assert ctl.node_groups == {"node/n1", "node/n2"}
        assert view_series(metrics, "node/n1") is not None
        cache.cancel(gone)
        left = time.monotonic()
        # Within the grace period nothing is forgotten.
        assert await ctl.prune(left + GRACE - 1) == []
        assert cache.view("node/n1") is not None and "node/n1" in ctl.node_groups
        # After it, the departed group goes: view, memo, node info, metric series.
        assert await ctl.prune(left + GRACE + 1) == ["node/n1"]
        assert cache.view("node/n1") is None
        assert ctl.node_groups == {"node/n2"}
        assert "node/n1" not in cache.groups()
        assert view_series(metrics, "node/n1") is None
        # The connected node group and the edge group are untouched.
        assert cache.view("node/n2") is not None
        assert cache.view(EDGE_DEFAULT) is not None
        # Later rebuilds do not bring the departed group back.
        seq = ctl.rebuild_seq
        ctl.publish(state())
        await until(lambda: ctl.rebuild_seq > seq, "rebuild")
        assert cache.view("node/n1") is None and ctl.node_groups == {"node/n2"}
        # A proxy of the forgotten node that comes back is served a fresh view.
        await connect(ctl, cache, node("n1"))
        assert ctl.node_groups == {"node/n1", "node/n2"}
        # Its series too, although its view is the size it was (the gauges are set
        # only when a group's size changes: forgotten, it is set again).
        assert view_series(metrics, "node/n1") is not None
        cache.cancel(stays)

    run(scenario)


def test_a_node_that_reconnects_within_the_grace_period_keeps_its_group() -> None:
    async def scenario(ctl: Controller, cache: SnapshotCache, metrics: XdsMetrics) -> None:
        first = await connect(ctl, cache, node("n1"))
        view = cache.view("node/n1")
        cache.cancel(first)
        left = time.monotonic()
        await asyncio.sleep(0.01)
        again = cache.watch(node("n1"))  # back before the grace period ends
        assert cache.idle_since("node/n1") is None
        assert await ctl.prune(left + GRACE * 10) == []
        assert ctl.node_groups == {"node/n1"} and cache.view("node/n1") is view
        # Its idle time starts again from its next departure only.
        cache.cancel(again)
        since = cache.idle_since("node/n1")
        assert since is not None and since > left
        assert await ctl.prune(since + GRACE - 1) == []

    run(scenario)


def test_edge_groups_without_streams_are_forgotten_but_the_default_stays() -> None:
    """The issue's reproducer: 2,000 streams with distinct ``node.cluster`` (whatever a
    client sends) must not leave 2,000 edge groups behind."""
    async def scenario(ctl: Controller, cache: SnapshotCache, metrics: XdsMetrics) -> None:
        watches = [await connect(ctl, cache, NodeIdentity(
            f"edge-{i}", "edge", f"edge/g{i}", None, None, f"g{i}")) for i in range(2000)]
        default = await connect(ctl, cache, edge("edge-d"))
        kept = watches.pop()
        for watch in [*watches, default]:
            cache.cancel(watch)
        left = time.monotonic()
        assert await ctl.prune(left + GRACE - 1) == []
        gone = await ctl.prune(left + GRACE + 1)
        assert sorted(gone) == sorted(f"edge/g{i}" for i in range(1999))
        assert cache.groups() == {EDGE_DEFAULT, "edge/g1999"}
        assert view_series(metrics, "edge/g0") is None
        assert cache.view(EDGE_DEFAULT) is not None and cache.view("edge/g1999") is not None
        # Rebuilds serve only the groups left; a returning proxy gets its group back.
        seq = ctl.rebuild_seq
        ctl.publish(state())
        await until(lambda: ctl.rebuild_seq > seq, "rebuild")
        assert cache.groups() == {EDGE_DEFAULT, "edge/g1999"}
        await connect(ctl, cache, NodeIdentity("edge-0", "edge", "edge/g0", None, None, "g0"))
        assert cache.view("edge/g0") is not None
        cache.cancel(kept)

    run(scenario)


def test_the_controller_prunes_on_its_own() -> None:
    """With a short grace period, the running controller forgets a departed group itself."""
    async def scenario(ctl: Controller, cache: SnapshotCache, metrics: XdsMetrics) -> None:
        watch = await connect(ctl, cache, node("n1"))
        cache.cancel(watch)
        await until(lambda: not ctl.node_groups and cache.view("node/n1") is None, "pruned")

    run(scenario, grace=0.05)
