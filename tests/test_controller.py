"""The controller: debounce, consistency gate, views per group, rebuild sequence."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from kxds import gc_policy
from kxds import views as views_module
from kxds.certs.make import make_ca, make_leaf, tls_secret_yaml
from kxds.controller import EDGE_DEFAULT, Controller
from kxds.diagnostics import ObjectRef
from kxds.envoy.resource import CLUSTER, ROUTE, SECRET
from kxds.ir import (
    IR,
    Forward,
    MatchKind,
    PathMatch,
    Route,
    RouteTable,
    VirtualHost,
    WeightedBackend,
)
from kxds.kube.loader import load_text
from kxds.kube.models import ClusterState
from kxds.translators.config import NodeInfo, TranslateConfig
from kxds.translators.translation import Translation
from kxds.xds.cache import SnapshotCache
from kxds.xds.identity import NodeIdentity
from kxds.xds.metrics import XdsMetrics


def state(*services: str, bad_ingress: bool = False) -> ClusterState:
    docs = [f"apiVersion: v1\nkind: Service\nmetadata: {{name: {s}, namespace: default}}\n"
            "spec:\n  ports: [{name: http, port: 80}]\n" for s in services]
    if services:  # the edge builds the clusters that something routes to
        paths = "".join(f"      - {{path: /{s}, pathType: Prefix, backend: {{service: "
                        f"{{name: {s}, port: {{number: 80}}}}}}}}\n" for s in services)
        docs.append("apiVersion: networking.k8s.io/v1\nkind: Ingress\n"
                    "metadata: {name: routes, namespace: default}\nspec:\n"
                    "  ingressClassName: kxds\n  rules:\n  - http:\n      paths:\n" + paths)
    if bad_ingress:
        docs.append("apiVersion: networking.k8s.io/v1\nkind: Ingress\n"
                    "metadata: {name: i, namespace: default}\nspec:\n  ingressClassName: kxds\n"
                    "  defaultBackend: {service: {name: missing, port: {number: 80}}}\n")
    return load_text("---\n".join(docs))


def clusters(cache: SnapshotCache, group: str = EDGE_DEFAULT) -> set[str]:
    view = cache.view(group)
    assert view is not None
    return set(view.of_type(CLUSTER))


def run(scenario: Callable[[Controller, SnapshotCache], Awaitable[None]],
        **kwargs: Any) -> Controller:
    """Run ``scenario`` with a running controller; returns the controller afterwards."""
    cache = SnapshotCache()
    ctl = Controller(cache, TranslateConfig(), metrics=XdsMetrics(), **kwargs)

    async def main() -> None:
        task = asyncio.create_task(ctl.run())
        try:
            await scenario(ctl, cache)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    return ctl


async def wait_seq(ctl: Controller, seq: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while ctl.rebuild_seq < seq:
        assert time.monotonic() < deadline, f"rebuild {seq} not reached ({ctl.rebuild_seq})"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("in_thread", [True, False], ids=["thread", "loop"])
def test_first_state_publishes_and_syncs(in_thread: bool) -> None:
    async def scenario(ctl: Controller, cache: SnapshotCache) -> None:
        assert not cache.synced
        ctl.publish(state("web"))
        await wait_seq(ctl, 1)
        assert cache.synced
        assert clusters(cache) == {"default/web/80"}

    run(scenario, in_thread=in_thread)


def test_a_burst_of_states_is_one_rebuild_of_the_last() -> None:
    # The holdoffs are long next to the burst's pauses, so a loaded machine
    # stalling the loop for a while cannot split the burst.
    async def scenario(ctl: Controller, cache: SnapshotCache) -> None:
        ctl.publish(state("first"))  # after a calm: at once
        await wait_seq(ctl, 1)
        assert clusters(cache) == {"default/first/80"}
        for i in range(10):  # hard on its heels: held, then one rebuild of the last
            ctl.publish(state(f"s{i}"))
            await asyncio.sleep(0.002)
        await wait_seq(ctl, 2)
        assert clusters(cache) == {"default/s9/80"}
        await asyncio.sleep(0.2)  # nothing is pending: no third rebuild may come
        assert ctl.rebuild_seq == 2

    run(scenario, holdoff=0.2, max_holdoff=5.0)


def test_the_first_change_after_a_calm_is_not_held() -> None:
    async def scenario(ctl: Controller, cache: SnapshotCache) -> None:
        start = time.monotonic()
        ctl.publish(state("a"))
        await wait_seq(ctl, 1)
        assert time.monotonic() - start < 0.8  # not after the 1 s holdoff
        await asyncio.sleep(1.0)  # a calm, as long as the holdoff
        start = time.monotonic()
        ctl.publish(state("b"))
        await wait_seq(ctl, 2)
        assert time.monotonic() - start < 0.8

    run(scenario, holdoff=1.0, max_holdoff=10.0)


def test_holdoff_is_capped_under_continuous_changes() -> None:
    # An event every 10 ms for a second never leaves the 10 s of calm the
    # holdoff asks for (not even on a loaded machine): only the cap can rebuild.
    async def scenario(ctl: Controller, cache: SnapshotCache) -> None:
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < 1.0:
            ctl.publish(state(f"s{i}"))
            i += 1
            await asyncio.sleep(0.01)
        assert ctl.rebuild_seq >= 2

    run(scenario, holdoff=10.0, max_holdoff=0.1)


def test_holdoff_waits_for_calm() -> None:
    async def scenario(ctl: Controller, cache: SnapshotCache) -> None:
        ctl.publish(state("a"))  # at once (after a calm)
        await wait_seq(ctl, 1)
        start = time.monotonic()
        ctl.publish(state("b"))  # right after: held until the calm
        await wait_seq(ctl, 2)
        elapsed = time.monotonic() - start
        assert 0.1 <= elapsed < 5.0, elapsed

    run(scenario, holdoff=0.1, max_holdoff=0.5)


def test_rebuild_sequence_is_exported() -> None:
    async def scenario(ctl: Controller, cache: SnapshotCache) -> None:
        ctl.publish(state("a"))
        await wait_seq(ctl, 1)
        ctl.publish(state("b"))
        await wait_seq(ctl, 2)
        assert ctl.metrics is not None
        text = ctl.metrics.registry.get_sample_value("kxds_rebuild_sequence")
        assert text == 2.0

    run(scenario)


def _inconsistent(*args: object) -> Translation:
    route = Route(name="r", ref=ObjectRef("Ingress", "default", "i"),
                  match=PathMatch(kind=MatchKind.PREFIX, path="/"),
                  action=Forward(backends=(WeightedBackend(cluster="nowhere", weight=1),)))
    table = RouteTable(name="t", virtual_hosts=(
        VirtualHost(name="vh", domains=("*",), routes=(route,)),))
    return Translation(ir=IR(route_tables=(table,)))


def _raises(*args: object) -> Translation:
    raise RuntimeError("translator bug")


@pytest.mark.parametrize("bad", [_inconsistent, _raises], ids=["inconsistent", "raises"])
def test_a_bad_snapshot_keeps_the_last_good(bad: Callable[..., Translation],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(ctl: Controller, cache: SnapshotCache) -> None:
        ctl.publish(state("good"))
        await wait_seq(ctl, 1)
        good = cache.view(EDGE_DEFAULT)
        monkeypatch.setattr(views_module, "translate", bad)
        ctl.publish(state("other"))
        await wait_seq(ctl, 2)
        assert cache.view(EDGE_DEFAULT) is good
        assert ctl.metrics is not None
        rejected = ctl.metrics.registry.get_sample_value(
            "kxds_snapshots_rejected_total", {"group": EDGE_DEFAULT})
        assert rejected == 1.0

    run(scenario)


def test_nothing_is_served_until_a_good_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(ctl: Controller, cache: SnapshotCache) -> None:
        monkeypatch.setattr(views_module, "translate", _inconsistent)
        ctl.publish(state("a"))
        await wait_seq(ctl, 1)
        assert not cache.synced and cache.view(EDGE_DEFAULT) is None

    run(scenario)


def test_edge_groups_share_one_view() -> None:
    async def scenario(ctl: Controller, cache: SnapshotCache) -> None:
        ctl.publish(state("a"))
        await wait_seq(ctl, 1)
        gw2 = NodeIdentity("e2", "edge", "edge/internal", None, None, "internal")
        cache.watch(gw2)  # a proxy of a new group connects
        internal = cache.view("edge/internal")
        default = cache.view(EDGE_DEFAULT)
        assert internal is not None and default is not None
        assert internal.resources[CLUSTER] == default.resources[CLUSTER]
        ctl.publish(state("a", "b"))
        await wait_seq(ctl, 2)
        assert clusters(cache, "edge/internal") == {"default/a/80", "default/b/80"}

    run(scenario)


def test_node_groups_get_their_own_view() -> None:
    async def scenario(ctl: Controller, cache: SnapshotCache) -> None:
        ctl.publish(state("a"))
        await wait_seq(ctl, 1)
        node = NodeIdentity("n1", "node", "node/n1", "n1", "z1", "default")
        cache.watch(node)
        deadline = time.monotonic() + 15
        while cache.view("node/n1") is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        # ClusterIP Services expose nothing on a node: no listeners, and no routes.
        view = cache.view("node/n1")
        assert view is not None and not view.of_type(ROUTE)
        seq = view.seq
        ctl.publish(state("a", "b"))
        await wait_seq(ctl, 2)
        again = cache.view("node/n1")
        # A ClusterIP Service changes nothing on a node: its view is not set again
        # (kxds.fleet gives back the very same view, which the controller skips).
        assert again is not None and again.seq == seq

    run(scenario)


def test_diagnostics_are_logged_once_and_counted_while_current(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kxds.controller")

    def counted(ctl: Controller) -> dict[str, float]:
        assert ctl.metrics is not None
        return {s.labels["reason"]: s.value for m in ctl.metrics.registry.collect()
                if m.name == "kxds_diagnostics" for s in m.samples}

    async def scenario(ctl: Controller, cache: SnapshotCache) -> None:
        ctl.publish(state("a", bad_ingress=True))
        await wait_seq(ctl, 1)
        assert list(counted(ctl).values()) == [1.0]
        ctl.publish(state("a", "b", bad_ingress=True))
        await wait_seq(ctl, 2)
        assert list(counted(ctl).values()) == [1.0]
        ctl.publish(state("a"))
        await wait_seq(ctl, 3)
        assert counted(ctl) == {}

    run(scenario)
    new = [r.getMessage() for r in caplog.records if "event=diagnostic " in r.getMessage()]
    resolved = [r.getMessage() for r in caplog.records if "diagnostic_resolved" in r.getMessage()]
    assert len(new) == 1 and "Ingress default/i" in new[0]
    assert len(resolved) == 1


def test_an_expiring_certificate_fails_closed_on_time() -> None:
    """No new state comes, yet the controller rebuilds when the certificate expires."""
    ca = make_ca()
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=2)
    leaf = make_leaf(ca, ["secure.example.com"], not_before=expires - dt.timedelta(days=1),
                     days=1)
    manifests = "---\n".join([
        tls_secret_yaml("default", "cert", leaf),
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n"
        "spec:\n  ports: [{name: http, port: 80}]\n",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\n"
        "metadata: {name: secure, namespace: default}\nspec:\n  ingressClassName: kxds\n"
        "  tls: [{hosts: [secure.example.com], secretName: cert}]\n"
        "  defaultBackend: {service: {name: web, port: {number: 80}}}\n"])

    def secrets(cache: SnapshotCache) -> set[str]:
        view = cache.view(EDGE_DEFAULT)
        assert view is not None
        return set(view.of_type(SECRET))

    async def scenario(ctl: Controller, cache: SnapshotCache) -> None:
        ctl.publish(load_text(manifests))
        await wait_seq(ctl, 1)
        assert secrets(cache) == {"default/cert"}
        await wait_seq(ctl, 2, timeout=10)  # nothing published: the expiry woke it
        assert dt.datetime.now(dt.UTC) > expires
        assert secrets(cache) == set()

    run(scenario)


def test_gc_pause_counts_overlapping_builds() -> None:
    pause = gc_policy.GcPause()
    assert gc.isenabled()
    try:
        with pause:
            with pause:
                assert not gc.isenabled()
            assert not gc.isenabled()  # the outer build still runs
        assert gc.isenabled()
        gc.disable()
        with pause:
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()


def test_only_the_first_rebuild_pauses_the_collector_and_each_freezes_the_state(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before anything is served the collector is paused; later rebuilds run with it
    on, and each leaves the state it built frozen until the next thaw."""
    seen: list[bool] = []
    real = views_module.translate

    def spy(*args: Any, **kwargs: Any) -> Translation:
        seen.append(gc.isenabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(views_module, "translate", spy)
    gc.unfreeze()

    async def scenario(ctl: Controller, cache: SnapshotCache) -> None:
        await ctl.rebuild(state("web"))
        assert gc.get_freeze_count() > 0
        gc.unfreeze()
        await ctl.rebuild(state("web", "api"))
        assert gc.get_freeze_count() > 0

    try:
        run(scenario, in_thread=False)
    finally:
        gc.unfreeze()
    assert seen == [False, True] and gc.isenabled()


def test_a_node_view_is_rebuilt_only_when_what_it_serves_changed() -> None:
    """Per-node views are rebuilt on every change: the memo skips those that
    cannot differ (a ClusterIP Service's endpoints, say), and only those."""
    def service(name: str, kind: str, ip: str) -> str:
        node_port = ", nodePort: 30080" if kind == "NodePort" else ""
        return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  type: {kind}
  ports: [{{name: http, port: 80{node_port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints: [{{addresses: [{ip}], nodeName: n1}}]
"""

    def objects(text: str) -> dict[tuple[type, tuple[str, str]], Any]:
        return {(type(o), o.meta.key): o for o in load_text(text).objects()}

    base = objects(service("internal", "ClusterIP", "10.0.0.1")
                   + "---\n" + service("exposed", "NodePort", "10.0.1.1"))
    steps = [  # (what changes, whether the node view must be rebuilt)
        (objects(service("internal", "ClusterIP", "10.0.0.2")), False),
        (objects(service("exposed", "NodePort", "10.0.1.2")), True),
        # A policy that selects no pod of the served Service (it selects none: no
        # selector) is read, and changes nothing this node serves.
        (objects("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                 "metadata: {name: deny, namespace: default}\n"
                 "spec: {podSelector: {}, policyTypes: [Ingress]}\n"), False),
        (objects(service("internal", "ClusterIP", "10.0.0.3")), False),
    ]
    node, config = NodeInfo(name="n1"), TranslateConfig()
    memo = views_module.ViewMemo()
    last = views_module.build_node(ClusterState.from_objects(base.values()), config,
                                        node, memo)
    for change, rebuilt in steps:
        base |= change
        state = ClusterState.from_objects(base.values())
        runs = memo.store.runs_by_query.get("node", 0) + memo.store.updates
        built = views_module.build_node(state, config, node, memo)
        assert built.resources is not None and last.resources is not None
        assert (memo.store.runs_by_query["node"] + memo.store.updates > runs) == rebuilt
        if not rebuilt:  # the very same resource mappings: the xDS cache skips them unseen
            assert all(built.resources[t] is last.resources[t] for t in built.resources)
        fresh = views_module.build_node(state, config, node)
        assert built.resources is not None and fresh.resources is not None
        assert {t: {n: r.version for n, r in m.items()} for t, m in built.resources.items()} == {
            t: {n: r.version for n, r in m.items()} for t, m in fresh.resources.items()}
        last = built


def test_the_frozen_state_is_thawed_so_cyclic_garbage_is_collected(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc_policy, "UNFREEZE_INTERVAL", 0.0)

    async def scenario(ctl: Controller, cache: SnapshotCache) -> None:
        await ctl.rebuild(state("web"))
        assert gc.get_freeze_count() > 0
        deadline = time.monotonic() + 5
        while gc.get_freeze_count() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert gc.get_freeze_count() == 0

    try:
        run(scenario, in_thread=False, node_grace=0.04)
    finally:
        gc.unfreeze()


def test_ingresses_of_another_class_are_logged_once_at_debug(
        caplog: pytest.LogCaptureFixture) -> None:
    other = load_text("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
                      "spec: {ports: [{name: http, port: 80}]}\n---\n"
                      "apiVersion: networking.k8s.io/v1\nkind: Ingress\n"
                      "metadata: {name: theirs}\nspec:\n  ingressClassName: nginx\n"
                      "  defaultBackend: {service: {name: web, port: {number: 80}}}\n")

    async def scenario(ctl: Controller, cache: SnapshotCache) -> None:
        await ctl.rebuild(other)
        await ctl.rebuild(dataclasses.replace(other))

    with caplog.at_level(logging.DEBUG, logger="kxds.controller"):
        run(scenario, in_thread=False)
    lines = [r.getMessage() for r in caplog.records if "skipped_not_ours" in r.getMessage()]
    assert lines == ["event=skipped_not_ours object=Ingress default/theirs "
                     "reason=another_ingress_class"]


def _pinned_state(pinned: bool) -> ClusterState:
    """A Gateway of ours routing to Service ``b``, pinned to ``edge/internal`` or not,
    beside an Ingress to ``a``."""
    annotations = "{kxds.io/edge-group: internal}" if pinned else "{}"
    return load_text("\n---\n".join([
        state_text("a", "b"),
        "{apiVersion: gateway.networking.k8s.io/v1, kind: GatewayClass, metadata: {name: k},"
        " spec: {controllerName: kxds.io/gateway-controller}}",
        "{apiVersion: gateway.networking.k8s.io/v1, kind: Gateway, metadata: {name: gw,"
        f" namespace: default, annotations: {annotations}}}, spec: {{gatewayClassName: k,"
        " listeners: [{name: db, port: 5432, protocol: TCP}]}}",
        "{apiVersion: gateway.networking.k8s.io/v1alpha2, kind: TCPRoute, metadata: {name: db,"
        " namespace: default}, spec: {parentRefs: [{name: gw}], rules: [{backendRefs:"
        " [{name: b, port: 80}]}]}}"]))


def state_text(*services: str) -> str:
    return "---\n".join(f"apiVersion: v1\nkind: Service\nmetadata: {{name: {s}, namespace: "
                        "default}\nspec:\n  ports: [{name: http, port: 80}]\n" for s in services)


def test_a_gateway_pinned_to_an_edge_group_is_served_by_that_group_only() -> None:
    async def scenario(ctl: Controller, cache: SnapshotCache) -> None:
        internal = NodeIdentity("e2", "edge", "edge/internal", None, None, "internal")
        ctl.publish(_pinned_state(pinned=False))
        await wait_seq(ctl, 1)
        cache.watch(internal)
        assert "default/b/80" in clusters(cache) and "default/b/80" in clusters(
            cache, "edge/internal")  # unpinned: every group serves it
        ctl.publish(_pinned_state(pinned=True))
        await wait_seq(ctl, 2)
        assert "default/b/80" not in clusters(cache)
        assert "default/b/80" in clusters(cache, "edge/internal")
        assert ctl.gateway_status is not None  # computed with every Gateway
        (gw,) = ctl.gateway_status.gateways
        assert "edge/internal" in {c.type: c.message for c in gw.conditions}["Programmed"]
        late = NodeIdentity("e3", "edge", "edge/late", None, None, "late")
        cache.watch(late)  # a new group gets the view without the pinned Gateway
        assert "default/b/80" not in clusters(cache, "edge/late")
        ctl.publish(_pinned_state(pinned=False))
        await wait_seq(ctl, 3)
        assert "default/b/80" in clusters(cache) and "default/b/80" in clusters(
            cache, "edge/late")

    run(scenario)
