"""LoadBalancer address allocation from pools."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kxds.diagnostics import ObjectRef, Reason
from kxds.kube.lbpool import Pool, allocate, apply, changes, parse_pool, status_patch
from kxds.kube.loader import load_text


def lb(name: str, ns: str = "default", *, ts: str = "", annotations: str = "",
       status: str = "", spec: str = "") -> str:
    meta_ts = f", creationTimestamp: '{ts}'" if ts else ""
    ann = f", annotations: {{{annotations}}}" if annotations else ""
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}{meta_ts}{ann}}}
spec: {{type: LoadBalancer, ports: [{{name: p, port: 80}}]{", " + spec if spec else ""}}}
{"status: {loadBalancer: {ingress: " + status + "}}" if status else ""}
"""


def ips(text: str, *pools: str) -> dict[str, tuple[str, ...]]:
    result = allocate(load_text(text), [parse_pool(p) for p in pools])
    return {f"{k[0]}/{k[1]}": v for k, v in result.addresses.items()}


def problems(text: str, *pools: str) -> list[tuple[str, Reason]]:
    result = allocate(load_text(text), [parse_pool(p) for p in pools])
    return [(d.ref.name, d.reason) for d in result.diagnostics]


@pytest.mark.parametrize("spec, first, count", [
    ("a=192.0.2.0/30", "192.0.2.0", 4),
    ("a=192.0.2.0/30;avoid-buggy-ips", "192.0.2.1", 3),
    ("a=192.0.2.250-192.0.3.1;avoid-buggy-ips", "192.0.2.250", 6),
    ("a=192.0.2.9", "192.0.2.9", 1),
    ("a=2001:db8::/126", "2001:db8::", 4),
    ("a=192.0.2.1,192.0.2.5-192.0.2.6", "192.0.2.1", 3),
], ids=["cidr", "buggy", "range-across-255", "single", "v6", "several"])
def test_parse_pool_addresses(spec: str, first: str, count: int) -> None:
    addresses = list(parse_pool(spec).addresses())
    assert str(addresses[0]) == first and len(addresses) == count


def test_parse_pool_options() -> None:
    pool = parse_pool("private=10.0.0.0/24;namespaces=b,a;no-auto-assign")
    assert (pool.name, pool.namespaces, pool.auto_assign) == ("private", ("a", "b"), False)


@pytest.mark.parametrize("spec", [
    "nopool", "a=", "a=300.0.0.1", "a=10.0.0.5-10.0.0.1", "a=10.0.0.1-2001:db8::1",
    "a=10.0.0.0/30;color=red"])
def test_parse_pool_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_pool(spec)


def test_oldest_first_and_stable() -> None:
    text = lb("new", ts="2024-02-01T00:00:00Z") + lb("old", ts="2024-01-01T00:00:00Z")
    assert ips(text, "a=192.0.2.1-192.0.2.2") == {
        "default/new": ("192.0.2.2",), "default/old": ("192.0.2.1",)}


def test_current_address_is_kept_even_against_an_older_service() -> None:
    text = (lb("old", ts="2024-01-01T00:00:00Z")
            + lb("holder", ts="2024-02-01T00:00:00Z", status="[{ip: 192.0.2.1}]"))
    assert ips(text, "a=192.0.2.1-192.0.2.2") == {
        "default/holder": ("192.0.2.1",), "default/old": ("192.0.2.2",)}


def test_current_address_outside_pools_is_replaced() -> None:
    text = lb("web", status="[{ip: 203.0.113.5}]")
    assert ips(text, "a=192.0.2.1/32") == {"default/web": ("192.0.2.1",)}


def test_namespace_scoped_pools() -> None:
    text = lb("web", "team-a") + lb("web", "team-b")
    result = ips(text, "a=192.0.2.1/32;namespaces=team-a", "shared=198.51.100.1/32")
    assert result == {"team-a/web": ("192.0.2.1",), "team-b/web": ("198.51.100.1",)}


def test_no_auto_assign_pool_serves_only_requests() -> None:
    text = lb("auto") + lb("asks", annotations="kxds.io/load-balancer-ips: 192.0.2.1")
    assert ips(text, "a=192.0.2.1/32;no-auto-assign") == {
        "default/asks": ("192.0.2.1",), "default/auto": ()}
    assert problems(text, "a=192.0.2.1/32;no-auto-assign") == [("auto", Reason.NOT_ALLOWED)]


@pytest.mark.parametrize("annotation", [
    "kxds.io/load-balancer-ips", "metallb.io/loadBalancerIPs",
    "metallb.universe.tf/loadBalancerIPs"])
def test_requested_addresses(annotation: str) -> None:
    text = lb("web", annotations=f"{annotation}: '192.0.2.7,2001:db8::7'")
    assert ips(text, "v4=192.0.2.0/24", "v6=2001:db8::/64") == {
        "default/web": ("192.0.2.7", "2001:db8::7")}


def test_spec_load_balancer_ip_is_a_request() -> None:
    assert ips(lb("web", spec="loadBalancerIP: 192.0.2.9"), "a=192.0.2.0/24") == {
        "default/web": ("192.0.2.9",)}


def test_conflicting_request_is_refused_for_the_younger() -> None:
    ann = "kxds.io/load-balancer-ips: 192.0.2.7"
    text = (lb("young", ts="2024-02-01T00:00:00Z", annotations=ann)
            + lb("old", ts="2024-01-01T00:00:00Z", annotations=ann))
    assert ips(text, "a=192.0.2.0/24") == {"default/old": ("192.0.2.7",), "default/young": ()}
    assert problems(text, "a=192.0.2.0/24") == [("young", Reason.CONFLICT)]


def test_request_conflicting_with_an_auto_assigned_holder() -> None:
    text = (lb("holder", status="[{ip: 192.0.2.1}]", ts="2024-02-01T00:00:00Z")
            + lb("asks", annotations="kxds.io/load-balancer-ips: 192.0.2.1",
                 ts="2024-01-01T00:00:00Z"))
    assert ips(text, "a=192.0.2.1/32") == {"default/asks": (), "default/holder": ("192.0.2.1",)}


@pytest.mark.parametrize("request_, reason", [
    ("203.0.113.1", Reason.NOT_ALLOWED), ("not-an-ip", Reason.INVALID_VALUE),
    ("192.0.2.0", Reason.NOT_ALLOWED)], ids=["outside", "invalid", "buggy"])
def test_bad_requests(request_: str, reason: Reason) -> None:
    text = lb("web", annotations=f"kxds.io/load-balancer-ips: {request_}")
    assert ips(text, "a=192.0.2.0/24;avoid-buggy-ips") == {"default/web": ()}
    assert problems(text, "a=192.0.2.0/24;avoid-buggy-ips") == [("web", reason)]


def test_request_namespace_restricted_pool() -> None:
    text = lb("web", "other", annotations="kxds.io/load-balancer-ips: 192.0.2.1")
    assert problems(text, "a=192.0.2.0/24;namespaces=team-a") == [("web", Reason.NOT_ALLOWED)]


def test_pools_exhausted() -> None:
    text = lb("a", ts="2024-01-01T00:00:00Z") + lb("b", ts="2024-01-02T00:00:00Z")
    assert ips(text, "p=192.0.2.1/32") == {"default/a": ("192.0.2.1",), "default/b": ()}
    assert problems(text, "p=192.0.2.1/32") == [("b", Reason.NOT_ALLOWED)]


def test_only_load_balancer_services() -> None:
    text = lb("web").replace("type: LoadBalancer", "type: NodePort")
    assert ips(text, "a=192.0.2.0/24") == {}


class Recorder:
    def __init__(self) -> None:
        self.writes: list[tuple[ObjectRef, tuple[str, ...]]] = []

    def write_load_balancer(self, ref: ObjectRef, ips: tuple[str, ...]) -> None:
        self.writes.append((ref, ips))


def test_apply_writes_only_changes() -> None:
    text = lb("done", status="[{ip: 192.0.2.1}]") + lb("todo")
    state = load_text(text)
    recorder = Recorder()
    apply(state, [parse_pool("a=192.0.2.1-192.0.2.9")], recorder)
    assert recorder.writes == [(ObjectRef("Service", "default", "todo"), ("192.0.2.2",))]
    assert status_patch(("192.0.2.2",)) == {
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.2"}]}}}
    # Once the status says what the allocation says, nothing is written.
    written = load_text(lb("done", status="[{ip: 192.0.2.1}]")
                        + lb("todo", status="[{ip: 192.0.2.2}]"))
    assert changes(written, allocate(written, [parse_pool("a=192.0.2.1-192.0.2.9")])) == []


@given(st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f"]), unique=True, max_size=6),
       st.integers(min_value=1, max_value=8))
def test_no_address_is_given_twice(names: list[str], size: int) -> None:
    text = "".join(lb(n) for n in names)
    pool = Pool(name="p", ranges=((ipaddress.ip_address("192.0.2.1"),
                                   ipaddress.ip_address(f"192.0.2.{size}")),))
    given_out = [ip for v in allocate(load_text(text), [pool]).addresses.values() for ip in v]
    assert len(given_out) == len(set(given_out)) == min(len(names), size)


def test_api_status_writer_against_the_fake_api_server() -> None:
    from fakeapi import FakeApi

    from kxds.kube.client import KubeClient
    from kxds.kube.lbpool import ApiStatusWriter

    api = FakeApi().start()
    try:
        api.apply({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "web", "namespace": "default"},
                   "spec": {"type": "LoadBalancer", "ports": [{"name": "p", "port": 80}]}})
        writer = ApiStatusWriter(KubeClient.for_url(api.url))
        ref = ObjectRef("Service", "default", "web")
        writer.write_load_balancer(ref, ("192.0.2.5",))
        stored = api.get("v1", "Service", "default", "web")
        assert stored is not None
        assert stored["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.5"}]
        writer.write_load_balancer(ref, ("192.0.2.5",))  # unchanged: no second write
        writer.write_load_balancer(ObjectRef("Service", "default", "gone"), ("192.0.2.6",))
        assert writer.writes == 1
    finally:
        api.stop()


def test_pool_allocator_writes_only_while_leader() -> None:
    import asyncio

    from kxds.kube.lbpool import PoolAllocator

    leader = False
    recorder = Recorder()
    allocator = PoolAllocator([parse_pool("a=192.0.2.1/32")], recorder,
                              is_leader=lambda: leader, resync=0.05)

    async def scenario() -> None:
        nonlocal leader
        task = asyncio.create_task(allocator.run())
        allocator.update(load_text(lb("web")))
        for _ in range(5):
            await asyncio.sleep(0.02)
        assert recorder.writes == []  # a follower never writes
        leader = True
        allocator.poke()
        for _ in range(200):
            if recorder.writes:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert recorder.writes == [(ObjectRef("Service", "default", "web"), ("192.0.2.1",))]
