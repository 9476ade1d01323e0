"""What one xDS client may cost: each limit refuses with RESOURCE_EXHAUSTED, counted,
logged once per client; closed streams leave nothing of their subscriptions behind.

Driven through the real gRPC server in process, as Envoy (or a hostile client)
would drive it. Every test client connects from 127.0.0.1: one client address.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import tracemalloc
from typing import Any

import grpc
import pytest
import xds_support as t

from kxds.envoy.resource import CLUSTER, ENDPOINT, ROUTE
from kxds.xds.cache import SnapshotCache
from kxds.xds.limits import LOG_QUIET_SECONDS, LimitReporter, XdsLimits
from kxds.xds.metrics import XdsMetrics

GROUP = "edge/default"
PROTOCOLS = [pytest.param(False, id="sotw"), pytest.param(True, id="delta")]


def _cache() -> SnapshotCache:
    cache = SnapshotCache()
    cache.set_view(GROUP, t.resources(t.cluster("a"), t.endpoints("a", [1])))
    cache.mark_synced()
    return cache


def _hits(metrics: XdsMetrics, limit: str) -> float:
    return float(metrics.limit_hits.labels(limit)._value.get())


def _names(count: int, prefix: str = "made-up") -> list[str]:
    return [f"{prefix}/{i:07d}" for i in range(count)]


async def _refused(client: t.XdsTestClient) -> str:
    assert await client.status() == grpc.StatusCode.RESOURCE_EXHAUSTED
    return await client.details()


async def _until(pred: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _limit_lines(caplog: pytest.LogCaptureFixture, limit: str) -> int:
    return sum(1 for r in caplog.records
               if "event=limit_hit" in r.getMessage() and f"limit={limit} " in r.getMessage())


@pytest.mark.parametrize("delta", PROTOCOLS)
@t.run_async
async def test_a_subscription_over_the_cap_ends_the_stream_logged_once_per_client(
        delta: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "kxds.xds")
    limits = XdsLimits(max_subscribed_names=100)
    metrics = XdsMetrics()
    async with t.serving(_cache(), metrics, limits) as (_, target):
        field = "resource_names_subscribe" if delta else "resource_names"
        async with t.XdsTestClient(target, t.make_node("fits"), delta) as fits:
            await fits.send(ENDPOINT, **{field: ["a", *_names(99)]})
            assert (await fits.recv()).type_url == ENDPOINT  # served: exactly at the cap
        for node in ("greedy-1", "greedy-2"):
            async with t.XdsTestClient(target, t.make_node(node), delta) as greedy:
                await greedy.send(ENDPOINT, **{field: _names(101)})
                details = await _refused(greedy)
                assert "101 endpoints names" in details
                assert "--max-subscribed-names" in details
    assert _hits(metrics, "subscribed_names") == 2
    assert _limit_lines(caplog, "subscribed_names") == 1  # the same client: logged once


@t.run_async
async def test_delta_counts_names_across_requests_and_initial_versions() -> None:
    limits = XdsLimits(max_subscribed_names=100)
    metrics = XdsMetrics()
    async with t.serving(_cache(), metrics, limits) as (_, target):
        async with t.XdsTestClient(target, t.make_node("grows"), delta=True) as grows:
            await grows.send(ENDPOINT, resource_names_subscribe=_names(60, "x"))
            first = await grows.recv()
            await grows.send(ENDPOINT, resource_names_subscribe=_names(30, "y"),
                             resource_names_unsubscribe=_names(10, "x"),
                             response_nonce=first.nonce)
            second = await grows.recv()  # 80 now
            await grows.send(ENDPOINT, resource_names_subscribe=_names(21, "z"),
                             response_nonce=second.nonce)
            assert "101 endpoints names" in await _refused(grows)
        async with t.XdsTestClient(target, t.make_node("claims"), delta=True) as claims:
            held = {name: "v1" for name in _names(101)}
            await claims.send(ENDPOINT, initial_resource_versions=held)
            assert "--max-subscribed-names" in await _refused(claims)
    assert _hits(metrics, "subscribed_names") == 2


@t.run_async
async def test_requests_over_the_size_limit_are_refused() -> None:
    limits = XdsLimits(max_message_bytes=64 * 1024)
    metrics = XdsMetrics()
    async with t.serving(_cache(), metrics, limits) as (_, target):
        async with t.XdsTestClient(target, t.make_node("big"), delta=False) as big:
            await big.send(CLUSTER)
            await big.recv()
            await big.send(ENDPOINT, resource_names=_names(6000))  # ~100 KB
            details = await _refused(big)
            assert "kxds reads at most 65536" in details and "--max-message-bytes" in details
        assert _hits(metrics, "message_bytes") == 1
        # Over twice the limit gRPC refuses it before kxds reads it (same status).
        async with t.XdsTestClient(target, t.make_node("huge"), delta=False) as huge:
            await huge.send(CLUSTER)
            await huge.recv()
            await huge.send(ENDPOINT, resource_names=_names(12000))  # ~200 KB
            assert "larger than max" in await _refused(huge)
        # A normal client is served as before.
        async with t.XdsTestClient(target, t.make_node("fine")) as fine:
            await fine.send(CLUSTER)
            assert (await fine.recv()).type_url == CLUSTER


@t.run_async
async def test_streams_per_client_are_capped_and_freed_when_streams_close() -> None:
    limits = XdsLimits(max_streams_per_client=2)
    metrics = XdsMetrics()
    cache = _cache()
    async with t.serving(cache, metrics, limits) as (server, target):
        first = t.XdsTestClient(target, t.make_node("e1"))
        second = t.XdsTestClient(target, t.make_node("e2"))
        for client in (first, second):
            await client.__aenter__()
            await client.send(CLUSTER)
            await client.recv()
        async with t.XdsTestClient(target, t.make_node("e3")) as third:
            await third.send(CLUSTER)
            details = await _refused(third)
            assert "has 2 open streams" in details and "--max-streams-per-client" in details
        await first.close()
        await _until(lambda: len(cache.identities(GROUP)) == 1)
        async with t.XdsTestClient(target, t.make_node("e4")) as fourth:
            await fourth.send(CLUSTER)
            assert (await fourth.recv()).type_url == CLUSTER
        await second.close()
        await _until(lambda: server.admission.clients() <= 1)
    assert _hits(metrics, "streams_per_client") == 1


@t.run_async
async def test_groups_per_client_count_until_the_group_is_forgotten() -> None:
    """Cycling ``node.cluster`` over short streams gains a client nothing: a group it
    left counts against it until the controller forgets the group."""
    limits = XdsLimits(max_groups_per_client=2)
    metrics = XdsMetrics()
    cache = _cache()
    cache.on_new_group = lambda ident: cache.set_view(ident.group, t.resources(t.cluster("g")))
    async with t.serving(cache, metrics, limits) as (server, target):
        for name in ("a", "b"):
            async with t.XdsTestClient(target, t.make_node(f"e-{name}", cluster=name)) as c:
                await c.send(CLUSTER)
                await c.recv()
        await _until(lambda: not cache.watched_groups())
        async with t.XdsTestClient(target, t.make_node("e-c", cluster="c")) as c:
            await c.send(CLUSTER)
            details = await _refused(c)
            assert "is in 2 groups" in details and "--max-groups-per-client" in details
        # A group it already counts is fine; so is a new one once an old one is forgotten.
        async with t.XdsTestClient(target, t.make_node("e-a2", cluster="a")) as c:
            await c.send(CLUSTER)
            await c.recv()
        await _until(lambda: not cache.watched_groups())
        cache.remove_view("edge/b")  # what the controller's prune does after the grace
        async with t.XdsTestClient(target, t.make_node("e-c2", cluster="c")) as c:
            await c.send(CLUSTER)
            assert (await c.recv()).type_url == CLUSTER
        assert server.admission.groups_of("ipv4:127.0.0.1") == {"edge/a", "edge/c"}
    assert _hits(metrics, "groups_per_client") == 1


@t.run_async
async def test_the_global_group_cap_refuses_only_new_groups() -> None:
    limits = XdsLimits(max_groups=2)
    metrics = XdsMetrics()
    cache = _cache()
    cache.on_new_group = lambda ident: cache.set_view(ident.group, t.resources(t.cluster("g")))
    async with t.serving(cache, metrics, limits) as (_, target), \
            t.XdsTestClient(target, t.make_node("one", cluster="one")) as one, \
            t.XdsTestClient(target, t.make_node("two", cluster="two")) as two, \
            t.XdsTestClient(target, t.make_node("dflt")) as dflt:
        await one.send(CLUSTER)
        await one.recv()
        await two.send(CLUSTER)
        assert "serves at most 2 (--max-groups)" in await _refused(two)
        await dflt.send(CLUSTER)  # edge/default exists: always served
        assert (await dflt.recv()).type_url == CLUSTER
    assert "edge/two" not in cache.groups()
    assert _hits(metrics, "groups") == 1


def test_a_limit_is_logged_once_per_client_then_rarely(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "kxds.xds")
    metrics = XdsMetrics()
    reporter = LimitReporter(metrics)
    assert reporter.hit("groups", "ipv4:10.0.0.1", "m", now=0.0)
    assert not reporter.hit("groups", "ipv4:10.0.0.1", "m", now=1.0)
    assert not reporter.hit("groups", "ipv4:10.0.0.1", "m", now=2.0)
    assert reporter.hit("groups", "ipv4:10.0.0.2", "m", now=3.0)  # another client
    assert reporter.hit("streams_per_client", "ipv4:10.0.0.1", "m", now=3.0)  # another limit
    assert reporter.hit("groups", "ipv4:10.0.0.1", "m", now=LOG_QUIET_SECONDS + 1)
    assert _hits(metrics, "groups") == 5
    assert "suppressed_since_last=2" in caplog.records[-1].getMessage()


@t.run_async
async def test_closed_streams_leave_no_subscription_state_behind() -> None:
    """The flood of the issue, scaled to the cap: 8 streams subscribe to 10,000 made-up
    names of two types each; once they close, what they cost is gone again, twice.

    Counted in memory blocks (one per name string, set entry table, ...): bytes alone
    would include the high-water mark of Python's table of interned strings (streams
    share one string per name through it), a few large blocks that never shrink."""
    cache = _cache()
    async with t.serving(cache) as (_, target):
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.take_snapshot()
            floods = [await _flood(cache, target, base, tag) for tag in ("one", "two")]
        finally:
            tracemalloc.stop()
    for flood, ((held, held_blocks), (left, left_blocks)) in enumerate(floods, start=1):
        print(f"\nflood of 160,000 names: {held / 1e6:.1f} MB in {held_blocks} blocks while "
              f"open, {left / 1e6:.2f} MB in {left_blocks} blocks after close")
        assert held_blocks > 160_000  # the measurement sees the subscriptions...
        # ...and that they are gone. What stays: the tracker's records of the last
        # disconnected nodes (up to MAX_DISCONNECTED; 8 more after each flood here), about
        # 70 blocks each, and a few hundred of the server's own (1,400 and 1,970 measured).
        assert left_blocks < 1_000 + 100 * 8 * flood


async def _flood(cache: SnapshotCache, target: str, base: tracemalloc.Snapshot,
                 tag: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Open 8 streams subscribing to 2 x 10,000 names, close them: growth (bytes, blocks)
    while open and after."""
    nodes = [f"flood-{tag}-{i}" for i in range(8)]
    clients = [t.XdsTestClient(target, t.make_node(node)) for node in nodes]
    for i, client in enumerate(clients):
        await client.__aenter__()
        # Distinct strings per stream, as a hostile client would send them.
        for type_url in (ENDPOINT, ROUTE):
            await client.send(type_url, resource_names=_names(10_000, f"{tag}/{i}/{type_url}"))
    await _until(lambda: all(_subscribed(cache, node) == 20_000 for node in nodes))
    gc.collect()
    held = _growth(base)
    for client in clients:
        await client.close()
    await _until(lambda: not cache.watched_groups()
                 and all(_subscribed(cache, node) == 0 for node in nodes))
    await asyncio.sleep(0.1)  # the handlers' frames end
    gc.collect()
    return held, _growth(base)


def _subscribed(cache: SnapshotCache, node: str) -> int:
    rec = cache.nodes.get(node)
    if rec is None:
        return -1
    return sum(len(getattr(st, "names", ())) + len(getattr(st, "dirty", ()))
               for st in rec.states.values())


def _growth(base: tracemalloc.Snapshot) -> tuple[int, int]:
    stats = tracemalloc.take_snapshot().compare_to(base, "filename")
    return sum(s.size_diff for s in stats), sum(s.count_diff for s in stats)


def test_every_limit_is_a_serve_flag_with_the_documented_default() -> None:
    import argparse
    from pathlib import Path

    from kxds import cli
    from kxds.serve import limits_from_args
    from kxds.xds.limits import DEFAULTS

    p = argparse.ArgumentParser()
    cli.add_xds_limit_flags(p)
    assert limits_from_args(p.parse_args([])) == DEFAULTS
    given = limits_from_args(p.parse_args([
        "--max-subscribed-names", "5", "--max-message-bytes", "1000",
        "--max-streams-per-client", "2", "--max-groups-per-client", "3", "--max-groups", "4",
        "--nack-retry-initial", "0.5", "--nack-retry-max", "10"]))
    assert given == XdsLimits(5, 1000, 2, 3, 4, 0.5, 10.0)
    with pytest.raises(SystemExit):
        p.parse_args(["--max-groups", "0"])
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("\n## Limits\n", 1)[1].split("\n## ", 1)[0]
    for flag, default in (("--max-subscribed-names", DEFAULTS.max_subscribed_names),
                          ("--max-message-bytes", DEFAULTS.max_message_bytes),
                          ("--max-streams-per-client", DEFAULTS.max_streams_per_client),
                          ("--max-groups-per-client", DEFAULTS.max_groups_per_client),
                          ("--max-groups", DEFAULTS.max_groups)):
        assert f"| `{flag}` | {default}" in section, flag


def test_what_a_client_claims_to_hold_is_not_kept_after_its_stream() -> None:
    """Delta ``initial_resource_versions`` and SotW ``version_info`` are the client's
    words: versions are cut to 64 characters, and claims kxds never sent go with the
    stream (the config dump of a disconnected node keeps only what kxds sent)."""
    from envoy.service.discovery.v3 import discovery_pb2

    from kxds.xds.delta import DeltaStream
    from kxds.xds.identity import NodeIdentity
    from kxds.xds.sotw import SotwStream
    from kxds.xds.tracker import NodeTracker

    ident = NodeIdentity("claims", "edge", GROUP, None, None, "default")
    delta = DeltaStream(ident, NodeTracker())
    delta.on_request(discovery_pb2.DeltaDiscoveryRequest(
        type_url=ENDPOINT, initial_resource_versions={n: "v" * 10_000 for n in _names(5000)}))
    st = delta.states[ENDPOINT]
    assert len(st.held) == 5000 and {len(v) for v in st.held.values()} == {64}
    delta.close()
    assert st.held == {} and st.names == set()
    sotw = SotwStream(ident, NodeTracker())
    sotw.on_request(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, version_info="v" * 10_000))
    assert len(sotw.states[CLUSTER].version_held) == 64


@t.run_async
async def test_a_refused_request_is_not_kept_after_its_stream_ends() -> None:
    """gRPC's request iterator holds the last request it read; kxds closes it when a
    stream ends, so refused floods of large requests do not keep their memory (the
    finished call outlives the stream through the exception an abort raises)."""
    limits = XdsLimits(max_subscribed_names=100, max_streams_per_client=20)

    def big_requests() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o).__name__ == "DiscoveryRequest"
                   and len(o.resource_names) > 1000)

    async with t.serving(_cache(), XdsMetrics(), limits) as (_, target):
        async def flood(i: int) -> None:
            async with t.XdsTestClient(target, t.make_node(f"flood-{i}")) as client:
                await client.send(ENDPOINT, resource_names=_names(5000, f"n{i}"))
                assert "--max-subscribed-names" in await _refused(client)

        await asyncio.gather(*(flood(i) for i in range(4)))
        await asyncio.sleep(0.2)
        assert big_requests() == 0
