"""Ingress status writes and diagnostics as Events, against the in-test API server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeApi, kubeconfig
from test_api_source import FAST, OTHERS, ingress, svc

from e2e.harness import Kxds, wait_for
from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.kube.api import ApiOptions, ApiSource
from kxds.kube.client import KubeClient
from kxds.kube.events import EventRecorder
from kxds.kube.status import LeaderReconciler, StatusConfig, StatusWriter, address_entry

NET = "networking.k8s.io/v1"


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi(bookmark_interval=0.1).start()
    for obj in [svc("web"), *OTHERS]:
        fake.apply(obj)
    yield fake
    fake.stop()


def lb(api: FakeApi, name: str) -> list[dict[str, str]] | None:
    obj = api.get(NET, "Ingress", "default", name)
    assert obj is not None
    return ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")  # type: ignore[no-any-return]


def puts(api: FakeApi) -> int:
    return api.count("PUT", "/apis/networking.k8s.io/v1/namespaces/default/ingresses/")


async def until(pred: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def run_with_writer(api: FakeApi, config: StatusConfig,
                    scenario: Callable[[StatusWriter], Any],
                    is_leader: Callable[[], bool] = lambda: True, resync: float = 0.5) -> None:
    client = KubeClient.for_url(api.url)
    source = ApiSource(client, ApiOptions(**FAST))
    writer = StatusWriter(client, config, "kxds", resync=resync, is_leader=is_leader)
    source.subscribe(writer.update)

    async def main() -> None:
        tasks = [asyncio.create_task(source.run(lambda s: None)),
                 asyncio.create_task(writer.run())]
        try:
            await scenario(writer)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def test_address_entry() -> None:
    assert address_entry("203.0.113.7") == {"ip": "203.0.113.7"}
    assert address_entry("2001:db8::1") == {"ip": "2001:db8::1"}
    assert address_entry("lb.example.com") == {"hostname": "lb.example.com"}


def test_publish_address_written_once_and_cleared_when_class_changes(api: FakeApi) -> None:
    api.apply(ingress("shop"))
    other = ingress("theirs")
    other["spec"]["ingressClassName"] = "nginx"
    other["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}
    api.apply(other)

    async def scenario(writer: StatusWriter) -> None:
        await until(lambda: lb(api, "shop") == [{"ip": "203.0.113.7"}], "status written")
        writes = puts(api)
        for i in range(5):  # more states and resyncs: nothing differs, nothing is written
            api.apply(svc(f"churn{i}"))
        await asyncio.sleep(1.2)
        assert puts(api) == writes
        assert lb(api, "theirs") == [{"ip": "198.51.100.1"}], "another class's status untouched"
        moved = api.get(NET, "Ingress", "default", "shop")
        assert moved is not None
        moved["spec"]["ingressClassName"] = "nginx"
        api.apply(moved)
        await until(lambda: not lb(api, "shop"), "status cleared")

    run_with_writer(api, StatusConfig(publish_address="203.0.113.7"), scenario)


def test_publish_service_follows_the_load_balancer(api: FakeApi) -> None:
    api.apply(ingress("shop"))
    edge = {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kxds-edge", "namespace": "kxds"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}}}
    api.apply(edge)

    async def scenario(writer: StatusWriter) -> None:
        await until(lambda: lb(api, "shop") == [{"hostname": "lb.example.com"}], "hostname")
        # A hostname-only change must reach the Ingress without a resync too.
        edge["status"] = {"loadBalancer": {"ingress": [{"hostname": "lb2.example.com"}]}}
        api.apply(edge)
        await until(lambda: lb(api, "shop") == [{"hostname": "lb2.example.com"}],
                    "hostname follows")
        edge["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}
        api.apply(edge)
        await until(lambda: lb(api, "shop") == [{"ip": "192.0.2.10"}], "ip follows")

    # No resync within the test: the Service's change itself must trigger the write.
    run_with_writer(api, StatusConfig(publish_service=("kxds", "kxds-edge")), scenario,
                    resync=60.0)


def test_conflict_is_retried_with_a_fresh_read(api: FakeApi) -> None:
    api.apply(ingress("shop"))
    raced: list[str] = []

    def race(method: str, path: str) -> None:
        # Someone else writes the Ingress between our read and our write, once.
        if method == "PUT" and path.endswith("/ingresses/shop/status") and not raced:
            raced.append(path)
            obj = api.get(NET, "Ingress", "default", "shop")
            assert obj is not None
            obj["metadata"]["labels"] = {"touched": "yes"}
            api.apply(obj)

    api.on_request = race

    async def scenario(writer: StatusWriter) -> None:
        await until(lambda: lb(api, "shop") == [{"ip": "203.0.113.7"}], "status written")
        assert raced
        assert puts(api) >= 2, "the first PUT must have met 409"
        obj = api.get(NET, "Ingress", "default", "shop")
        assert obj is not None and obj["metadata"]["labels"] == {"touched": "yes"}

    run_with_writer(api, StatusConfig(publish_address="203.0.113.7"), scenario)


def test_only_the_leader_writes(api: FakeApi) -> None:
    api.apply(ingress("shop"))
    leading = [False]

    async def scenario(writer: StatusWriter) -> None:
        # The writer has a state to act on, and a resync (0.5 s) goes by: still nothing.
        await until(lambda: writer.state is not None, "the first state")
        await asyncio.sleep(0.7)
        assert puts(api) == 0 and not lb(api, "shop")
        leading[0] = True
        writer.poke()
        await until(lambda: lb(api, "shop") == [{"ip": "203.0.113.7"}], "leader writes")

    run_with_writer(api, StatusConfig(publish_address="203.0.113.7"), scenario,
                    is_leader=lambda: leading[0])


# --- Events ----------------------------------------------------------------------------


def events(api: FakeApi) -> list[dict[str, Any]]:
    with api.lock:
        return [o for k, o in api.objects.items() if k[0][1] == "events"]


DIAG = Diagnostic(ObjectRef("Ingress", "default", "shop"), "spec.rules[0]",
                  Reason.BACKEND_NOT_FOUND, "Service default/nope not found")


def test_events_are_deduplicated_and_rate_limited(api: FakeApi) -> None:
    now = [0.0]
    rec = EventRecorder(KubeClient.for_url(api.url), burst=3, refill=60.0,
                        clock=lambda: now[0])
    assert rec.emit(DIAG, uid="u-1")
    [ev] = events(api)
    assert ev["type"] == "Warning" and ev["reason"] == "BackendNotFound"
    assert ev["involvedObject"] == {"apiVersion": NET, "kind": "Ingress",
                                    "namespace": "default", "name": "shop", "uid": "u-1"}
    assert ev["message"] == "spec.rules[0]: Service default/nope not found"
    assert rec.emit(DIAG)
    [ev] = events(api)
    assert ev["count"] == 2, "the same problem again updates the count"
    assert rec.emit(Diagnostic(DIAG.ref, "", Reason.CONFLICT, "other"))
    assert len(events(api)) == 2
    assert not rec.emit(DIAG), "burst of 3 per object spent"
    assert rec.dropped == 1
    now[0] += 60.0  # one token back
    assert rec.emit(DIAG)
    assert max(e["count"] for e in events(api)) == 3


def test_record_reports_only_new_problems_and_skips_files(api: FakeApi) -> None:
    rec = EventRecorder(KubeClient.for_url(api.url))
    file_diag = Diagnostic(ObjectRef("File", "", "x.yaml"), "line 1", Reason.INVALID_YAML, "bad")

    async def main() -> None:
        task = asyncio.create_task(rec.run())
        rec.record([DIAG, file_diag])
        rec.record([DIAG, file_diag])  # still there: no new Event
        assert rec._queue.qsize() == 1, "one Event queued: no file, no repeat"
        await until(lambda: len(events(api)) == 1, "one event")
        rec.record([])
        rec.record([DIAG])  # gone and back: counted again
        assert rec._queue.qsize() == 1
        await until(lambda: events(api)[0].get("count") == 2, "count 2")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert len(events(api)) == 1


def events_on(api: FakeApi, kind: str, name: str) -> list[dict[str, Any]]:
    return [e for e in events(api)
            if (e["involvedObject"]["kind"], e["involvedObject"]["name"]) == (kind, name)]


def test_serve_records_a_bad_ingress_as_one_event(api: FakeApi, tmp_path: Path) -> None:
    # The whole path: API watch -> translation diagnostic -> Event, in `kxds serve`.
    bad = ingress("shop")
    bad["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = "nope"
    uid = api.apply(bad)["metadata"]["uid"]
    kxds = Kxds(tmp_path, ["--kubeconfig", kubeconfig(api.url, str(tmp_path / "kubeconfig"))])
    try:
        kxds.wait_ready()
        wait_for(lambda: events_on(api, "Ingress", "shop"), what="an Event on the Ingress")
        [ev] = events_on(api, "Ingress", "shop")
        assert ev["type"] == "Warning" and ev["reason"] == "BackendNotFound"
        assert "default/nope" in ev["message"]
        assert ev["metadata"]["namespace"] == "default" and ev["count"] == 1
        assert ev["involvedObject"] == {"apiVersion": NET, "kind": "Ingress",
                                        "namespace": "default", "name": "shop", "uid": uid}
        # An object that failed to parse is named by its uid too (kubectl describe
        # finds Events by uid); the fixture holds one broken Service.
        broken = api.get("v1", "Service", "default", "broken")
        assert broken is not None
        wait_for(lambda: events_on(api, "Service", "broken"), what="an Event on the Service")
        [ev] = events_on(api, "Service", "broken")
        assert ev["involvedObject"]["uid"] == broken["metadata"]["uid"]
        assert ev["reason"] == "InvalidValue"
        # Rebuilds while the problem stays: no new Event, no higher count.
        seq = kxds.rebuild_seq()
        api.apply(svc("churn"))
        seq = kxds.wait_rebuild(seq + 1)
        # Fixed, then broken again: the same Event counts it (Events are written
        # in order, so a duplicate from the churn rebuild would show as count 3).
        api.apply(ingress("shop"))
        kxds.wait_rebuild(seq + 1)
        api.apply(bad)
        wait_for(lambda: events_on(api, "Ingress", "shop")[0]["count"] >= 2, what="count 2")
        [ev] = events_on(api, "Ingress", "shop")
        assert ev["count"] == 2
    except BaseException:
        print(kxds.diagnostics())
        raise
    finally:
        kxds.stop()


def test_a_reconciler_woken_as_it_is_cancelled_stops() -> None:
    """A wake-up and a cancel in the same step: the loop ends (``asyncio.wait_for`` of
    Python 3.11 returned the wake-up and dropped the cancel, and the loop went on
    forever, hanging whoever awaited it, as a stopping kxds)."""
    async def main() -> None:
        loop = LeaderReconciler("test", lambda value: None, resync=60.0, is_leader=lambda: True)
        task = asyncio.create_task(loop.run())
        await asyncio.sleep(0.01)  # waiting for a wake-up
        loop.offer(1, 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(2.0):
                await task

    asyncio.run(main())
