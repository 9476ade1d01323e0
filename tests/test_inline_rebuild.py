"""Endpoint changes rebuilt on the event loop (no worker thread): the same views.

The controller builds a change of at most ``SMALL_CHANGE`` EndpointSlices, and
nothing else, on the loop (:func:`kxds.state_changes.only_slices_changed` says
which); every other change goes to a worker thread. Either way each group's
view must be what a full build of the state gives, and an endpoint change
must reach only the streams subscribed to it, as endpoints only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
import xds_support as t

from bench import fleet as F
from bench import scenario
from bench.scenario import Spec
from kxds import controller as controller_module
from kxds.controller import EDGE_DEFAULT, SMALL_CHANGE, Controller
from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.envoy.resource import CLUSTER, ENDPOINT, Resources
from kxds.kube.models import ClusterState, EndpointSlice, Service
from kxds.state_changes import changed_reads, only_slices_changed
from kxds.translators.config import NodeInfo, TranslateConfig
from kxds.views import build_edge, build_node
from kxds.xds.cache import SnapshotCache
from kxds.xds.identity import NodeIdentity

SPEC = Spec(services=30)
FEW_NODES = 4

FLEET = F.Fleet(services=24, nodes=3)
CONFIG = TranslateConfig(tls_now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
"""A pinned instant: the controller then builds with this very config."""


def _slices(state: ClusterState, first: int, count: int, generation: int) -> ClusterState:
    """``state`` with ``count`` EndpointSlices from Service ``first`` on moved."""
    for i in range(first, first + count):
        new = scenario.parse(scenario.slice_doc(SPEC, i % SPEC.services, generation=generation))
        assert isinstance(new, EndpointSlice)
        state = scenario.with_slice(state, new)
    return state


def _service(state: ClusterState, i: int) -> ClusterState:
    doc = scenario.service_doc(SPEC, i)
    doc["metadata"]["labels"] = {"moved": "yes"}
    svc = scenario.parse(doc)
    assert isinstance(svc, Service)
    return scenario.with_objects(state, svc)


BASE = scenario.build_state(SPEC)


def _reordered(state: ClusterState) -> ClusterState:
    return dataclasses.replace(state, endpoint_slices=dict(
        reversed(list(state.endpoint_slices.items()))))


def _problem(state: ClusterState) -> ClusterState:
    ref = ObjectRef("Service", "default", "x")
    problem = Diagnostic(ref, "spec", Reason.INVALID_VALUE, "bad")
    return dataclasses.replace(state, problems=(problem,))


def _added(state: ClusterState) -> ClusterState:
    doc = scenario.slice_doc(SPEC, 0, generation=5)
    doc["metadata"]["name"] += "-extra"
    new = scenario.parse(doc)
    assert isinstance(new, EndpointSlice)
    return scenario.with_slice(state, new)


CHANGES: dict[str, tuple[Callable[[ClusterState], ClusterState], bool]] = {
    "same": (lambda s: s, True),
    "one-slice": (lambda s: _slices(s, 0, 1, 7), True),
    "limit-slices": (lambda s: _slices(s, 3, SMALL_CHANGE, 7), True),
    "over-limit": (lambda s: _slices(s, 3, SMALL_CHANGE + 1, 7), False),
    "a-service": (lambda s: _service(s, 4), False),
    "slice-and-service": (lambda s: _service(_slices(s, 0, 1, 7), 4), False),
    "a-problem": (_problem, False),
    "slice-added": (_added, False),
    # The same slices in another order: not told apart from a change of each.
    "reordered": (_reordered, False),
}
"""Changes of BASE, and whether only_slices_changed calls each small."""


@pytest.mark.parametrize(("change", "small"), CHANGES.values(), ids=CHANGES.keys())
def test_only_slices_changed(change: Callable[[ClusterState], ClusterState],
                             small: bool) -> None:
    assert only_slices_changed(BASE, change(BASE), SMALL_CHANGE) is small


@pytest.mark.parametrize("fields", [("services", "endpoint_slices", "slices_by_service"),
                                    ("endpoint_slices", "slices_by_service"), ("problems",)])
@pytest.mark.parametrize(("change", "small"), CHANGES.values(), ids=CHANGES.keys())
def test_changed_reads_of_some_fields_are_those_of_every_field(
        change: Callable[[ClusterState], ClusterState], small: bool,
        fields: tuple[str, ...]) -> None:
    new = change(BASE)
    every = [read for read in changed_reads(BASE, new, None, None) if read[0] in fields]
    assert list(changed_reads(BASE, new, None, None, fields)) == every


def _versions(resources: Resources | None) -> dict[str, dict[str, str]]:
    assert resources is not None
    return {t: {n: r.version for n, r in m.items()} for t, m in resources.items()}


def _served(cache: SnapshotCache, group: str) -> dict[str, dict[str, str]]:
    view = cache.view(group)
    assert view is not None
    return {t: {n: r.version for n, r in view.of_type(t).items()} for t in view.resources}


class _Hops:
    """Records each worker-thread call the controller makes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        real = asyncio.to_thread

        async def to_thread(fn: Callable[..., Any], /, *args: Any) -> Any:
            self.calls.append(getattr(fn, "__name__", "?"))
            return await real(fn, *args)
        monkeypatch.setattr(controller_module.asyncio, "to_thread", to_thread)

    def take(self) -> list[str]:
        out, self.calls = self.calls, []
        return out


def _check_views(ctl: Controller, cache: SnapshotCache, state: ClusterState,
                 nodes: dict[str, NodeInfo]) -> None:
    """Every group serves what a build from scratch (no memo) gives."""
    assert _served(cache, EDGE_DEFAULT) == _versions(build_edge(state, CONFIG).resources)
    for group, node in nodes.items():
        assert _served(cache, group) == _versions(build_node(state, CONFIG, node).resources)


@pytest.mark.parametrize("nodes", [0, 3, FEW_NODES + 1], ids=["edge", "nodes", "many-nodes"])
def test_endpoint_changes_on_the_loop_serve_what_a_full_rebuild_gives(
        monkeypatch: pytest.MonkeyPatch, nodes: int) -> None:
    fleet = dataclasses.replace(FLEET, nodes=max(nodes, 1))
    hops = _Hops(monkeypatch)
    # The bound lowered, so that "more node groups than it" stays a small test.
    monkeypatch.setattr(controller_module, "SMALL_NODES", FEW_NODES)

    async def main() -> None:
        cache = SnapshotCache()
        ctl = Controller(cache, CONFIG, in_thread=True)
        infos = {}
        for n in range(nodes):
            name = F.node_name(n)
            cache.watch(NodeIdentity(name, "node", f"node/{name}", name, None, "node"))
            infos[f"node/{name}"] = NodeInfo(name=name)
        state = F.build_state(fleet)
        await ctl.rebuild(state)
        assert hops.take()  # the first build is never inline
        _check_views(ctl, cache, state, infos)
        for r, count in enumerate([1, 2, SMALL_CHANGE, SMALL_CHANGE + 1, 1, 3], start=1):
            for k in range(count):
                state = F.with_slice(state, fleet, (r + k) % fleet.services, r)
            await ctl.rebuild(state)
            small = count <= SMALL_CHANGE
            expected = [] if small else ["build_edge"]
            if nodes and not (small and nodes <= FEW_NODES):
                expected.append("_build_nodes")
            assert hops.take() == expected, (r, count)
            _check_views(ctl, cache, state, infos)
        state = F.with_service(state, fleet, 1, F.FREE_PORT_BASE)
        await ctl.rebuild(state)  # not an endpoint change: off the loop
        assert hops.take()[0] == "build_edge"
        _check_views(ctl, cache, state, infos)

    asyncio.run(main())


@t.run_async
async def test_an_endpoint_change_on_the_loop_sends_only_eds_to_its_subscribers() -> None:
    cache = SnapshotCache()
    ctl = Controller(cache, CONFIG, in_thread=True)
    state = scenario.build_state(SPEC)
    await ctl.rebuild(state)
    view = cache.view(EDGE_DEFAULT)
    assert view is not None
    names = sorted(view.of_type(ENDPOINT))
    changed = names[0]  # Service 0's cluster
    async with t.serving(cache) as (server, target), \
            t.XdsTestClient(target, t.make_node("a")) as subscribed, \
            t.XdsTestClient(target, t.make_node("b")) as other:
        for envoy, eds in ((subscribed, names), (other, names[1:])):
            await envoy.send(CLUSTER)
            await envoy.ack(await envoy.recv())
            await envoy.send(ENDPOINT, resource_names=eds)
            await envoy.ack(await envoy.recv(), eds)
        state = _slices(state, 0, 1, 9)
        await ctl.rebuild(state)
        reply = await subscribed.recv()
        assert reply.type_url == ENDPOINT and len(reply.resources) == 1
        now = cache.view(EDGE_DEFAULT)
        assert now is not None
        new, old = now.of_type(ENDPOINT)[changed], view.of_type(ENDPOINT)[changed]
        assert reply.resources[0].value == new.body and new.version != old.version
        await subscribed.ack(reply, names)
        await subscribed.nothing()
        await other.nothing()  # not subscribed to the changed name: nothing at all
        assert server.metrics.responses.labels("clusters", "sotw")._value.get() == 2
