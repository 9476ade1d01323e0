"""Memory follows the state: once objects are deleted, kxds keeps nothing of them.

Deleting everything must give the memory back (bench M6); anything the
controller, its memos or the snapshot cache still reach for a deleted object
is a leak, whatever its size.
"""

from __future__ import annotations

import asyncio
import gc
import types
from collections.abc import Iterator

import pytest
import xds_support as t

from kxds import controller as controller_module
from kxds.controller import Controller
from kxds.envoy.resource import CLUSTER, ENDPOINT
from kxds.kube.loader import load_text
from kxds.kube.models import ClusterState
from kxds.memory import ShrinkWatch, release_free_memory
from kxds.translators.config import TranslateConfig
from kxds.xds.cache import MAX_CHANGE_SLACK, SnapshotCache
from kxds.xds.identity import NodeIdentity
from kxds.xds.metrics import XdsMetrics


def _state(*services: str) -> ClusterState:
    """NodePort Services (so node views serve them too), their EndpointSlices, and an
    Ingress routing to each (so the edge view does)."""
    docs = []
    for i, s in enumerate(services):
        docs.append(f"apiVersion: v1\nkind: Service\nmetadata: {{name: {s}, namespace: default}}\n"
                    f"spec:\n  type: NodePort\n  ports: [{{name: http, port: 80, "
                    f"nodePort: {30000 + i}}}]\n")
        docs.append("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
                    f"metadata: {{name: {s}-1, namespace: default, labels: "
                    f"{{kubernetes.io/service-name: {s}}}}}\naddressType: IPv4\n"
                    f"ports: [{{name: http, port: 8080}}]\nendpoints:\n"
                    f"- {{addresses: [10.0.0.{i + 1}], nodeName: n1}}\n")
    if services:
        paths = "".join(f"      - {{path: /{s}, pathType: Prefix, backend: {{service: "
                        f"{{name: {s}, port: {{number: 80}}}}}}}}\n" for s in services)
        docs.append("apiVersion: networking.k8s.io/v1\nkind: Ingress\n"
                    "metadata: {name: routes, namespace: default}\nspec:\n"
                    "  ingressClassName: kxds\n  rules:\n  - http:\n      paths:\n" + paths)
    return load_text("---\n".join(docs))


def _reachable_strings(root: object) -> Iterator[str]:
    """Every string reachable from ``root`` through object references (not through
    modules, classes or functions: module-level memo caches are bounded on their own)."""
    seen = {id(root)}
    stack = [root]
    while stack:
        for ref in gc.get_referents(stack.pop()):
            if id(ref) in seen or isinstance(ref, types.ModuleType | type | types.FunctionType
                                             | types.BuiltinFunctionType):
                continue
            seen.add(id(ref))
            if isinstance(ref, str):
                yield ref
            else:
                stack.append(ref)


GONE = 2 * MAX_CHANGE_SLACK + 20
"""Services deleted: more than a history of changes keeps names for (the rest is bounded
by the number of rounds it remembers, not by what is deleted)."""


def test_nothing_of_deleted_objects_stays_reachable() -> None:
    cache = SnapshotCache()
    ctl = Controller(cache, TranslateConfig(), metrics=XdsMetrics(), in_thread=False)

    async def main() -> None:
        task = asyncio.create_task(ctl.run())
        try:
            ctl.publish(_state("kept"))
            await _wait(ctl, 1)
            cache.watch(NodeIdentity("n1", "node", "node/n1", "n1", None, "default"))
            await _wait_view(cache, "node/n1")
            # Two rebuilds with many Services, then all of them but one deleted.
            ctl.publish(_state("kept", *(f"gone-{i}" for i in range(GONE))))
            await _wait(ctl, 2)
            ctl.publish(_state("kept", *(f"gone-{i}" for i in range(0, GONE, 2))))
            await _wait(ctl, 3)
            ctl.publish(_state("kept"))
            await _wait(ctl, 4)
            left = sorted({s for s in _reachable_strings(ctl) if "gone-" in s})
            assert left == []
            # The histories dropped are not missed: the next change is served whole.
            ctl.publish(_state("kept", "back"))
            await _wait(ctl, 5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    view = cache.view("node/n1")
    assert view is not None
    served = {name for _, by_name in view.resources.items() for name in by_name}
    assert any("/kept/" in n for n in served) and any("/back/" in n for n in served)


async def _wait(ctl: Controller, seq: int) -> None:
    for _ in range(3000):
        if ctl.rebuild_seq >= seq:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"rebuild {seq} not reached ({ctl.rebuild_seq})")


async def _wait_view(cache: SnapshotCache, group: str) -> None:
    for _ in range(3000):
        if cache.view(group) is not None:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"no view for {group}")


@pytest.mark.parametrize(("served", "trims"), [
    ([10, 5000, 4000, 2600], [False, False, False, False]),
    ([5000, 2400, 2300, 1000], [False, True, False, True]),
    ([5000, 0, 0, 0], [False, True, False, False]),
    ([500, 0, 300, 0], [False, False, False, False]),  # small: never worth a trim
], ids=["shrinking-less-than-half", "halved-twice", "all-deleted-once", "small"])
def test_a_trim_follows_a_large_shrink_only(served: list[int], trims: list[bool]) -> None:
    watch = ShrinkWatch(min_drop=1000)
    assert [watch.shrank(n) for n in served] == trims


def test_releasing_free_memory_answers_whether_it_could() -> None:
    """glibc here (the call goes through ctypes); elsewhere it says it could not."""
    garbage = [str(i) * 20 for i in range(200_000)]
    del garbage
    assert release_free_memory() in (True, False)


def test_the_controller_gives_memory_back_after_most_is_deleted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(controller_module, "release_free_memory",
                        lambda: calls.append(1) is None)
    cache = SnapshotCache()
    ctl = Controller(cache, TranslateConfig(), metrics=XdsMetrics(), in_thread=False)
    ctl._shrink.min_drop = 10

    async def main() -> None:
        task = asyncio.create_task(ctl.run())
        try:
            ctl.publish(_state(*(f"s-{i}" for i in range(20))))
            await _wait(ctl, 1)
            ctl.publish(_state(*(f"s-{i}" for i in range(15))))
            await _wait(ctl, 2)
            assert calls == []  # a quarter less: not worth it
            ctl.publish(_state("s-0"))
            await _wait(ctl, 3)
            assert calls == [1]
            ctl.publish(_state())
            await _wait(ctl, 4)
            assert calls == [1]  # a few resources less: not again
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_streams_and_the_tracker_forget_deleted_resources(delta: bool) -> None:
    """A proxy that held many clusters and endpoints, all but one deleted and the
    deletion ACKed: neither the server's streams nor the cache's per-node tracker
    keep anything of the deleted ones."""
    gone = [f"gone-{i}" for i in range(GONE)]
    cache = SnapshotCache()
    cache.set_view("edge/default", t.resources(
        *(t.cluster(n) for n in ["kept", *gone]), *(t.endpoints(n, [1]) for n in ["kept", *gone])))
    cache.mark_synced()

    async def main() -> None:
        async with t.serving(cache) as (server, target), t.XdsTestClient(
                target, t.make_node("envoy-1"), delta=delta) as envoy:
            await envoy.send(CLUSTER)
            await envoy.ack(await envoy.recv())
            names = ["kept", *gone]
            if delta:
                await envoy.send(ENDPOINT, resource_names_subscribe=names)
            else:
                await envoy.send(ENDPOINT, resource_names=names)
            await envoy.ack(await envoy.recv(), names)
            cache.set_view("edge/default", t.resources(t.cluster("kept"),
                                                       t.endpoints("kept", [1])))
            cache.end_batch()  # as the controller does after a rebuild's views
            await _drain(envoy, names)
            # Envoy then asks for the endpoints of the clusters it has left.
            if delta:
                await envoy.send(ENDPOINT, resource_names_unsubscribe=gone)
            else:
                await envoy.send(ENDPOINT, resource_names=["kept"])
            await _drain(envoy, ["kept"])
            left = sorted({s for root in (server, cache) for s in _reachable_strings(root)
                           if "gone-" in s})
            assert left == []

    asyncio.run(asyncio.wait_for(main(), 60))


async def _drain(envoy: t.XdsTestClient, endpoint_names: list[str]) -> None:
    """ACK every response until none comes (SotW EDS: with the names still wanted)."""
    while True:
        try:
            resp = await envoy.recv(0.5)
        except TimeoutError:
            return
        await envoy.ack(resp, endpoint_names if resp.type_url == ENDPOINT else ())
