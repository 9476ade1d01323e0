"""Leader election on a Lease: in-process electors, and two ``kxds serve`` processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fakeapi import FakeApi, kubeconfig
from test_api_source import OTHERS, ingress, svc

from e2e.harness import Kxds
from kxds.kube import leader
from kxds.kube.client import KubeClient
from kxds.kube.leader import LeaderElector

COORD = "coordination.k8s.io/v1"
NET = "networking.k8s.io/v1"
FAST = dict(lease_duration=2.0, renew_deadline=1.5, retry_period=0.2)


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi(bookmark_interval=0.1).start()
    yield fake
    fake.stop()


def lease(api: FakeApi) -> dict[str, Any]:
    obj = api.get(COORD, "Lease", "kxds", "kxds")
    return (obj or {}).get("spec") or {}


def wait_for(pred: Callable[[], bool], what: str, timeout: float = 15.0) -> float:
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def test_one_leader_then_release_hands_over_at_once(api: FakeApi) -> None:
    log: list[str] = []

    def elector(name: str) -> LeaderElector:
        return LeaderElector(KubeClient.for_url(api.url), "kxds", "kxds", name, **FAST,
                             on_started=lambda: log.append(f"+{name}"),
                             on_stopped=lambda: log.append(f"-{name}"))

    async def main() -> None:
        a, b = elector("a"), elector("b")
        ta, tb = asyncio.create_task(a.run()), asyncio.create_task(b.run())
        while not (a.is_leader or b.is_leader):
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)  # several renewals: still exactly one leader
        assert a.is_leader != b.is_leader
        leader, other, task = (a, b, ta) if a.is_leader else (b, a, tb)
        assert lease(api)["holderIdentity"] == leader.identity
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert not leader.is_leader
        started = time.monotonic()
        while not other.is_leader:
            await asyncio.sleep(0.02)
        # Released (empty holder): no need to wait out the 2 s lease (renewed at most
        # 0.2 s before the cancel, so waiting it out would take over 1.8 s).
        assert time.monotonic() - started < 1.5
        spec = lease(api)
        assert spec["holderIdentity"] == other.identity
        assert spec["leaseTransitions"] == 1
        (tb if other is b else ta).cancel()
        await asyncio.gather(ta, tb, return_exceptions=True)

    asyncio.run(main())
    assert log[0][0] == "+" and log[1] == "-" + log[0][1:] and log[2][0] == "+"
    assert lease(api)["holderIdentity"] == ""


def test_a_held_lease_is_not_taken_before_it_expires(
        api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    # The elector's own clock, stepped by the test: a loaded machine cannot
    # stretch "1 s later" past the lease duration.
    clock = [1000.0]
    monkeypatch.setattr(leader, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    now = "2026-01-01T00:00:00.000000Z"
    api.apply({"apiVersion": COORD, "kind": "Lease",
               "metadata": {"name": "kxds", "namespace": "kxds"},
               "spec": {"holderIdentity": "gone", "leaseDurationSeconds": 2,
                        "acquireTime": now, "renewTime": now, "leaseTransitions": 4}})
    b = LeaderElector(KubeClient.for_url(api.url), "kxds", "kxds", "b", **FAST)
    assert not b.try_acquire_or_renew(), "first sight of the record starts the clock"
    clock[0] += 1.9
    assert not b.try_acquire_or_renew()
    clock[0] += 0.2
    assert b.try_acquire_or_renew(), "unchanged for longer than leaseDurationSeconds"
    spec = lease(api)
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 5
    assert spec["acquireTime"] != now


# --- two kxds processes ------------------------------------------------------------------


def leader_kxds(tmp_path: Path, config: str, identity: str) -> Kxds:
    return Kxds(tmp_path, ["--kubeconfig", config, "--leader-elect",
                           "--lease-namespace", "kxds", "--leader-identity", identity,
                           "--lease-duration", "2", "--renew-deadline", "1.5",
                           "--retry-period", "0.2", "--publish-address", "203.0.113.7"],
                name=f"kxds-{identity}")


def status(api: FakeApi, name: str) -> Any:
    obj = api.get(NET, "Ingress", "default", name) or {}
    return ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")


def events_on(api: FakeApi, name: str) -> list[dict[str, Any]]:
    with api.lock:
        return [o for k, o in api.objects.items()
                if k[0][1] == "events" and o["involvedObject"]["name"] == name]


LEASE = "/apis/coordination.k8s.io/v1/namespaces/kxds/leases/kxds"


def test_two_kxds_processes_elect_one_writer_and_fail_over(api: FakeApi, tmp_path: Path) -> None:
    for obj in [svc("web"), ingress("shop"), *OTHERS]:
        api.apply(obj)
    config = kubeconfig(api.url, str(tmp_path / "kubeconfig"))
    a = leader_kxds(tmp_path, config, "a")
    b: Kxds | None = None
    try:
        wait_for(lambda: lease(api).get("holderIdentity") == "a", "a leads")
        wait_for(lambda: status(api, "shop") == [{"ip": "203.0.113.7"}], "a writes status")
        b = leader_kxds(tmp_path, config, "b")
        b.wait_ready()  # a follower serves xDS too
        # b reads the Lease without writing it (a both reads and writes): once b
        # has looked twice, its clock runs; a renewed Lease must stay a's for
        # longer than the lease duration.
        wait_for(lambda: api.count("GET", LEASE) - api.count("PUT", LEASE) >= 3, "b polls")
        until = time.monotonic() + 2.5
        while time.monotonic() < until:
            assert lease(api)["holderIdentity"] == "a", "b took a renewed lease"
            time.sleep(0.05)
        # Both see a bad Ingress; only the leader records it as an Event.
        bad = ingress("bad")
        bad["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = "nope"
        seq = b.rebuild_seq()
        api.apply(bad)
        wait_for(lambda: events_on(api, "bad"), "the leader's Event")
        b.wait_rebuild(seq + 1)
        time.sleep(0.3)  # b would write at once after its rebuild; give it the chance
        assert len(events_on(api, "bad")) == 1, "the follower recorded an Event too"
        os.kill(a.pid, signal.SIGKILL)  # a crash: no release, b must wait for expiry
        took = wait_for(lambda: lease(api).get("holderIdentity") == "b", "b takes over")
        assert took >= 1.0, f"took over after {took:.2f}s, before the lease expired"
        assert lease(api)["leaseTransitions"] == 1
        api.apply(ingress("second"))
        wait_for(lambda: status(api, "second") == [{"ip": "203.0.113.7"}], "b writes status")
        assert b.stop() == 0  # graceful: b releases the lease
        assert lease(api)["holderIdentity"] == ""
    except BaseException:
        for proc in (a, b):
            if proc is not None:
                print(proc.diagnostics())
        raise
    finally:
        a.stop()
        if b is not None:
            b.stop()
