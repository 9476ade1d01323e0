"""Delta (incremental) ADS conformance: an in-process client plays Envoy, rule by rule."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import xds_support as t
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.endpoint.v3 import eds_pb2_grpc

from kxds.envoy.resource import CLUSTER, ENDPOINT, LISTENER, ROUTE
from kxds.xds.cache import SnapshotCache

GROUP = "edge/default"


def _cache(*items: Any, synced: bool = True) -> SnapshotCache:
    cache = SnapshotCache()
    cache.set_view(GROUP, t.resources(*items))
    if synced:
        cache.mark_synced()
    return cache


def _sent(resp: Any) -> dict[str, str]:
    return {r.name: r.version for r in resp.resources}


def _client(target: str, node_id: str = "envoy-1") -> t.XdsTestClient:
    return t.XdsTestClient(target, t.make_node(node_id), delta=True)


@t.run_async
async def test_wildcard_cds_on_empty_first_subscribe() -> None:
    cache = _cache(t.cluster("a"), t.cluster("b"))
    async with t.serving(cache) as (_, target), _client(target) as envoy:
        await envoy.send(CLUSTER)
        resp = await envoy.recv()
        assert _sent(resp) == {"a": t.cluster("a").version, "b": t.cluster("b").version}
        assert resp.removed_resources == []
        await envoy.ack(resp)
        cache.set_view(GROUP, t.resources(t.cluster("a"), t.cluster("b"), t.cluster("c")))
        assert list(_sent(await envoy.recv())) == ["c"]


@t.run_async
async def test_nothing_answered_before_first_sync() -> None:
    cache = _cache(t.cluster("a"), synced=False)
    async with t.serving(cache) as (_, target), _client(target) as envoy:
        await envoy.send(CLUSTER)
        await envoy.nothing(0.3)
        cache.mark_synced()
        assert list(_sent(await envoy.recv())) == ["a"]


@t.run_async
async def test_explicit_star_subscribes_to_everything() -> None:
    cache = _cache(t.endpoints("a", [1]), t.endpoints("b", [1]))
    async with t.serving(cache) as (_, target), _client(target) as envoy:
        await envoy.send(ENDPOINT, resource_names_subscribe=["*"])
        assert set(_sent(await envoy.recv())) == {"a", "b"}


@t.run_async
async def test_unsubscribing_star_keeps_the_named_subscriptions() -> None:
    cache = _cache(t.endpoints("a", [1]), t.endpoints("b", [1]))
    async with t.serving(cache) as (_, target), _client(target) as envoy:
        await envoy.send(ENDPOINT, resource_names_subscribe=["*", "a"])
        resp = await envoy.recv()
        assert set(_sent(resp)) == {"a", "b"}
        await envoy.send(ENDPOINT, response_nonce=resp.nonce, resource_names_unsubscribe=["*"])
        cache.set_view(GROUP, t.resources(t.endpoints("a", [2]), t.endpoints("b", [2])))
        assert list(_sent(await envoy.recv())) == ["a"]  # b went with the wildcard
        await envoy.nothing()


@t.run_async
async def test_unsubscribing_a_name_under_star_keeps_it_through_the_wildcard() -> None:
    cache = _cache(t.endpoints("a", [1]), t.endpoints("b", [1]))
    async with t.serving(cache) as (_, target), _client(target) as envoy:
        await envoy.send(ENDPOINT, resource_names_subscribe=["*", "a"])
        resp = await envoy.recv()
        await envoy.send(ENDPOINT, response_nonce=resp.nonce, resource_names_unsubscribe=["a"])
        await envoy.nothing(0.2)  # still held through "*": no removal
        changed = t.endpoints("a", [2])
        cache.set_view(GROUP, t.resources(changed, t.endpoints("b", [1])))
        resp = await envoy.recv()
        assert _sent(resp) == {"a": changed.version} and not resp.removed_resources


@t.run_async
async def test_named_subscriptions_only() -> None:
    cache = _cache(t.endpoints("a", [1]), t.endpoints("b", [2]))
    async with t.serving(cache) as (_, target), _client(target) as envoy:
        await envoy.send(ENDPOINT, resource_names_subscribe=["a", "missing"])
        resp = await envoy.recv()
        assert list(_sent(resp)) == ["a"]
        await envoy.ack(resp)
        await envoy.nothing()


@t.run_async
async def test_subscribed_name_that_does_not_exist_is_announced_removed() -> None:
    # xds_protocol, "Knowing When a Requested Resource Does Not Exist" (incremental):
    # the name goes out in removed_resources, so Envoy need not wait for a timeout.
    cache = _cache(t.endpoints("a", [1]))
    async with t.serving(cache) as (_, target), _client(target) as envoy:
        await envoy.send(ENDPOINT, resource_names_subscribe=["a", "missing"])
        resp = await envoy.recv()
        assert list(_sent(resp)) == ["a"] and list(resp.removed_resources) == ["missing"]
        await envoy.ack(resp)
        cache.set_view(GROUP, t.resources(t.endpoints("a", [2])))
        resp = await envoy.recv()  # told once: later replies do not repeat it
        assert list(_sent(resp)) == ["a"] and not resp.removed_resources
        await envoy.ack(resp)
        # Subscribed again: told again; created later: sent.
        await envoy.send(ENDPOINT, resource_names_subscribe=["missing"])
        resp = await envoy.recv()
        assert not resp.resources and list(resp.removed_resources) == ["missing"]
        await envoy.ack(resp)
        created = t.endpoints("missing", [3])
        cache.set_view(GROUP, t.resources(t.endpoints("a", [2]), created))
        resp = await envoy.recv()
        assert _sent(resp) == {"missing": created.version} and not resp.removed_resources


@t.run_async
async def test_resubscribing_a_name_held_since_reconnect_sends_it() -> None:
    # "the server *must* still provide those resources": the client may have
    # forgotten a resource it told us about in initial_resource_versions.
    a = t.endpoints("a", [1])
    cache = _cache(a)
    async with t.serving(cache) as (_, target), _client(target) as envoy:
        await envoy.send(ENDPOINT, resource_names_subscribe=["a"],
                         initial_resource_versions={"a": a.version})
        await envoy.nothing(0.2)
        await envoy.send(ENDPOINT, resource_names_subscribe=["a"])
        assert _sent(await envoy.recv()) == {"a": a.version}


@t.run_async
async def test_subscribe_then_unsubscribe() -> None:
    cache = _cache(t.endpoints("a", [1]), t.endpoints("b", [2]))
    async with t.serving(cache) as (_, target), _client(target) as envoy:
        await envoy.send(ENDPOINT, resource_names_subscribe=["a"])
        first = await envoy.recv()
        await envoy.send(ENDPOINT, response_nonce=first.nonce, resource_names_subscribe=["b"])
        assert list(_sent(await envoy.recv())) == ["b"]
        await envoy.send(ENDPOINT, resource_names_unsubscribe=["a"])
        # An unsubscribed resource changes: nothing is sent, and no removal either.
        cache.set_view(GROUP, t.resources(t.endpoints("a", [9]), t.endpoints("b", [2])))
        await envoy.nothing()


@t.run_async
async def test_unsubscribed_resources_are_forgotten() -> None:
    """A long-lived stream under Service churn keeps nothing of names it dropped."""
    cache = _cache(t.endpoints("a", [1]), t.endpoints("b", [2]))
    async with t.serving(cache) as (_, target), _client(target) as envoy:
        await envoy.send(ENDPOINT, resource_names_subscribe=["a", "b"])
        await envoy.ack(await envoy.recv())
        await envoy.send(ENDPOINT, resource_names_unsubscribe=["b"])
        await envoy.nothing()
        rec = cache.nodes.get("envoy-1")
        assert rec is not None and set(rec.types[ENDPOINT]) == {"a"}


@t.run_async
async def test_resubscribe_sends_the_resource_again() -> None:
    cache = _cache(t.endpoints("a", [1]))
    async with t.serving(cache) as (_, target), _client(target) as envoy:
        await envoy.send(ENDPOINT, resource_names_subscribe=["a"])
        await envoy.ack(await envoy.recv())
        await envoy.send(ENDPOINT, resource_names_unsubscribe=["a"])
        await envoy.send(ENDPOINT, resource_names_subscribe=["a"])
        assert list(_sent(await envoy.recv())) == ["a"]


@t.run_async
async def test_removed_resources_for_a_deleted_resource() -> None:
    cache = _cache(t.cluster("a"), t.cluster("b"))
    async with t.serving(cache) as (_, target), _client(target) as envoy:
        await envoy.send(CLUSTER)
        await envoy.ack(await envoy.recv())
        cache.set_view(GROUP, t.resources(t.cluster("a")))
        resp = await envoy.recv()
        assert list(resp.removed_resources) == ["b"] and not resp.resources


@t.run_async
async def test_initial_resource_versions_send_only_what_differs() -> None:
    a, b = t.cluster("a"), t.cluster("b")
    cache = _cache(a, b, t.cluster("c"))
    async with t.serving(cache) as (_, target), _client(target) as envoy:
        await envoy.send(CLUSTER, initial_resource_versions={
            "a": a.version, "b": "stale", "gone": "x"})
        resp = await envoy.recv()
        assert set(_sent(resp)) == {"b", "c"}
        assert list(resp.removed_resources) == ["gone"]


@t.run_async
async def test_reconnect_with_matching_versions_gets_nothing() -> None:
    items = (t.cluster("a"), t.endpoints("a", [1]))
    cache = _cache(*items)
    async with t.serving(cache) as (_, target), _client(target) as envoy:
        await envoy.send(CLUSTER, initial_resource_versions={"a": items[0].version})
        await envoy.send(ENDPOINT, resource_names_subscribe=["a"],
                         initial_resource_versions={"a": items[1].version})
        await envoy.nothing()
        # It holds them: the config dump shows them ACKed, as a SotW client's would be.
        rec = cache.nodes.get("envoy-1")
        assert rec is not None
        assert rec.types[CLUSTER]["a"].acked_version == items[0].version
        assert rec.types[ENDPOINT]["a"].acked_version == items[1].version


@t.run_async
async def test_reconnect_with_an_old_version_is_acked_only_once_answered() -> None:
    items = (t.cluster("a"), t.cluster("b"))
    cache = _cache(*items)
    async with t.serving(cache) as (_, target), _client(target) as envoy:
        await envoy.send(CLUSTER, initial_resource_versions={"a": items[0].version,
                                                             "b": "old"})
        resp = await envoy.recv()
        assert _sent(resp) == {"b": items[1].version}
        rec = cache.nodes.get("envoy-1")
        assert rec is not None
        assert rec.types[CLUSTER]["a"].acked_version == items[0].version
        assert rec.types[CLUSTER]["b"].acked_version is None
        await envoy.ack(resp)
        await envoy.nothing()
        assert rec.types[CLUSTER]["b"].acked_version == items[1].version


@t.run_async
async def test_exactly_the_changed_resource_goes_to_each_subscriber() -> None:
    cache = _cache(*(t.endpoints(f"c{i}", [i + 1]) for i in range(20)))
    async with t.serving(cache) as (server, target), \
            _client(target, "one") as one, _client(target, "two") as two, \
            _client(target, "other") as other:
        for envoy, names in ((one, ["c3", "c4"]), (two, ["c3"]), (other, ["c5"])):
            await envoy.send(ENDPOINT, resource_names_subscribe=names)
            await envoy.ack(await envoy.recv())
        changed = [t.endpoints(f"c{i}", [i + 1]) for i in range(20)]
        changed[3] = t.endpoints("c3", [99])
        cache.set_view(GROUP, t.resources(*changed))
        for envoy in (one, two):
            resp = await envoy.recv()
            assert _sent(resp) == {"c3": changed[3].version}
        await other.nothing()
        assert server.metrics.resources_sent.labels("endpoints", "delta")._value.get() == 6


@t.run_async
async def test_nack_rolls_back_only_that_resource_and_never_resends_it() -> None:
    cache = _cache(t.cluster("a"), t.cluster("b"))
    async with t.serving(cache) as (server, target), _client(target) as envoy:
        await envoy.send(CLUSTER)
        await envoy.ack(await envoy.recv())
        bad_a, new_b = t.cluster("a", 2000), t.cluster("b", 2000)
        cache.set_view(GROUP, t.resources(bad_a, new_b))
        resp = await envoy.recv()
        assert set(_sent(resp)) == {"a", "b"}
        await envoy.send(CLUSTER, response_nonce=resp.nonce,
                         error="Error adding/updating cluster(s) a: invalid field")
        await envoy.nothing()  # Envoy keeps a@1000: nothing to roll back over the wire
        cache.set_view(GROUP, t.resources(bad_a, t.cluster("b", 3000)))
        resp = await envoy.recv()
        assert _sent(resp) == {"b": t.cluster("b", 3000).version}  # a is never resent
        await envoy.ack(resp)
        rec = cache.nodes.get("envoy-1")
        assert rec is not None
        entry = rec.types[CLUSTER]["a"]
        assert entry.acked_version == t.cluster("a").version
        assert entry.nacked is not None and entry.nacked.version == bad_a.version
        assert entry.nacked.error.endswith("invalid field")
        assert entry.nacked.refs == ("Service a/a",)
        assert server.metrics.nacks.labels("clusters")._value.get() == 1
        cache.set_view(GROUP, t.resources(t.cluster("a", 4000), t.cluster("b", 3000)))
        assert list(_sent(await envoy.recv())) == ["a"]


@t.run_async
async def test_nack_without_names_rolls_back_the_whole_reply() -> None:
    cache = _cache(t.endpoints("a", [1]))
    async with t.serving(cache) as (_, target), _client(target) as envoy:
        await envoy.send(ENDPOINT, resource_names_subscribe=["a"])
        await envoy.ack(await envoy.recv())
        cache.set_view(GROUP, t.resources(t.endpoints("a", [2])))
        resp = await envoy.recv()
        await envoy.send(ENDPOINT, response_nonce=resp.nonce, error="malformed")
        cache.set_view(GROUP, t.resources(t.endpoints("a", [2])))
        await envoy.nothing()
        rec = cache.nodes.get("envoy-1")
        assert rec is not None and [n.name for n in rec.nacks] == ["a"]
        fixed = t.endpoints("a", [3])
        cache.set_view(GROUP, t.resources(fixed))
        assert _sent(await envoy.recv()) == {"a": fixed.version}


@t.run_async
async def test_stale_nonce_still_applies_subscription_changes() -> None:
    cache = _cache(t.endpoints("a", [1]), t.endpoints("b", [1]))
    async with t.serving(cache) as (_, target), _client(target) as envoy:
        await envoy.send(ENDPOINT, resource_names_subscribe=["a"])
        await envoy.recv()
        await envoy.send(ENDPOINT, response_nonce="12345", resource_names_subscribe=["b"])
        # The first reply was never ACKed (the nonce was wrong): b waits for it...
        await envoy.nothing(0.2)
        await envoy.send(ENDPOINT, response_nonce="1")
        assert list(_sent(await envoy.recv())) == ["b"]


@t.run_async
async def test_additions_ordered_and_removals_reversed() -> None:
    cache = _cache(t.cluster("old"), t.route("r", "old"))
    async with t.serving(cache) as (_, target), _client(target) as envoy:
        await envoy.send(CLUSTER)
        await envoy.ack(await envoy.recv())
        await envoy.send(LISTENER)
        await envoy.ack(await envoy.recv())
        await envoy.send(ROUTE, resource_names_subscribe=["r"])
        await envoy.ack(await envoy.recv())
        cache.set_view(GROUP, t.resources(t.cluster("new"), t.route("r", "new"),
                                          t.listener("l", 1, "r")))
        cds = await envoy.recv()
        assert cds.type_url == CLUSTER and list(_sent(cds)) == ["new"]
        assert not cds.removed_resources  # "old" stays until the route moves off it
        await envoy.ack(cds)
        lds = await envoy.recv()
        assert lds.type_url == LISTENER
        await envoy.ack(lds)
        rds = await envoy.recv()
        assert rds.type_url == ROUTE
        await envoy.nothing(0.2)
        await envoy.ack(rds)
        last = await envoy.recv()
        assert last.type_url == CLUSTER and list(last.removed_resources) == ["old"]


@t.run_async
async def test_cluster_sent_again_is_followed_by_its_endpoints() -> None:
    cache = _cache(t.cluster("a"), t.endpoints("a", [1]))
    async with t.serving(cache) as (_, target), _client(target) as envoy:
        await envoy.send(CLUSTER)
        await envoy.ack(await envoy.recv())
        await envoy.send(ENDPOINT, resource_names_subscribe=["a"])
        await envoy.ack(await envoy.recv())
        cache.set_view(GROUP, t.resources(t.cluster("a", 2000), t.endpoints("a", [1])))
        cds, eds = await envoy.recv(), await envoy.recv()
        assert (cds.type_url, eds.type_url) == (CLUSTER, ENDPOINT)
        assert list(_sent(eds)) == ["a"]


@t.run_async
async def test_unknown_role_ends_delta_stream() -> None:
    async with t.serving(_cache()) as (_, target), \
            t.XdsTestClient(target, t.make_node(role="mesh"), delta=True) as envoy:
        await envoy.send(CLUSTER)
        assert await envoy.status() == grpc.StatusCode.INVALID_ARGUMENT


@t.run_async
async def test_per_type_delta_eds_service() -> None:
    cache = _cache(t.endpoints("a", [1]))
    async with t.serving(cache) as (_, target), grpc.aio.insecure_channel(target) as channel:
        call = eds_pb2_grpc.EndpointDiscoveryServiceStub(channel).DeltaEndpoints()
        await call.write(discovery_pb2.DeltaDiscoveryRequest(
            node=t.make_node(), resource_names_subscribe=["a"]))
        resp = await asyncio.wait_for(call.read(), 5)
        assert resp.type_url == ENDPOINT and [r.name for r in resp.resources] == ["a"]
        await call.done_writing()


@t.run_async
async def test_delta_sends_resource_bytes_unchanged() -> None:
    original = t.cluster("a", 1234)
    cache = _cache(original)
    async with t.serving(cache) as (_, target), _client(target) as envoy:
        await envoy.send(CLUSTER)
        resp = await envoy.recv()
        assert resp.resources[0].resource.value == original.body
        msg = cluster_pb2.Cluster()
        resp.resources[0].resource.Unpack(msg)
        assert msg.connect_timeout.ToMilliseconds() == 1234
