"""State-of-the-world ADS conformance: an in-process client plays Envoy, rule by rule."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import grpc
import pytest
import xds_support as t
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.cluster.v3 import cds_pb2_grpc
from envoy.service.discovery.v3 import discovery_pb2

from kxds.envoy.resource import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from kxds.xds.admin import AdminServer
from kxds.xds.cache import SnapshotCache
from kxds.xds.metrics import XdsMetrics

GROUP = "edge/default"


def _cache(*items: Any, synced: bool = True) -> SnapshotCache:
    cache = SnapshotCache()
    cache.set_view(GROUP, t.resources(*items))
    if synced:
        cache.mark_synced()
    return cache


def _names(resp: Any) -> list[str]:
    out = []
    for any_msg in resp.resources:
        if resp.type_url == CLUSTER:
            msg: Any = cluster_pb2.Cluster()
            any_msg.Unpack(msg)
            out.append(msg.name)
        else:
            from envoy.config.endpoint.v3 import endpoint_pb2
            cla = endpoint_pb2.ClusterLoadAssignment()
            any_msg.Unpack(cla)
            out.append(cla.cluster_name)
    return out


def _timeouts(resp: Any) -> dict[str, int]:
    out = {}
    for any_msg in resp.resources:
        msg = cluster_pb2.Cluster()
        any_msg.Unpack(msg)
        out[msg.name] = msg.connect_timeout.ToMilliseconds()
    return out


@t.run_async
async def test_node_taken_from_first_request() -> None:
    cache = _cache(t.cluster("a"), t.endpoints("a", [1]))
    async with t.serving(cache) as (_, target), t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(CLUSTER)
        cds = await envoy.recv()
        await envoy.ack(cds)
        # Later requests carry no node (the client only sends it once).
        await envoy.send(ENDPOINT, resource_names=["a"])
        eds = await envoy.recv()
        assert eds.type_url == ENDPOINT and _names(eds) == ["a"]
        assert cache.nodes.get("envoy-1") is not None


@pytest.mark.parametrize(("node", "fragment"), [
    (t.make_node(role="mesh"), "unknown role 'mesh'"),
    (t.make_node(role=None), "metadata 'role' is missing"),
    (t.make_node(cluster="g" * 254), "node.cluster is 254 characters long; at most 253"),
    (t.make_node("edge-1\nevent=forged"), "holds control characters"),
    (t.make_node(role="node", node_name="n" * 300), "node name is 300 characters"),
], ids=["unknown-role", "missing-role", "long-cluster", "newline-in-id", "long-node-name"])
@t.run_async
async def test_bad_role_ends_stream_with_invalid_argument(node: Any, fragment: str) -> None:
    async with t.serving(_cache()) as (server, target), t.XdsTestClient(target, node) as envoy:
        await envoy.send(CLUSTER)
        assert await envoy.status() == grpc.StatusCode.INVALID_ARGUMENT
        assert fragment in await envoy.details()
        assert server.metrics.bad_requests.labels("bad_node")._value.get() == 1


@t.run_async
async def test_nothing_answered_before_first_sync() -> None:
    cache = _cache(t.cluster("a"), synced=False)
    async with t.serving(cache) as (_, target), t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(CLUSTER)
        await envoy.nothing(0.3)
        cache.mark_synced()
        cds = await envoy.recv()
        assert _names(cds) == ["a"]


@t.run_async
async def test_new_group_asks_controller_for_a_view() -> None:
    cache = SnapshotCache()
    cache.mark_synced()
    cache.on_new_group = lambda ident: cache.set_view(ident.group, t.resources(t.cluster("p")))
    node = t.make_node("p1", role="node", node_name="worker-1")
    async with t.serving(cache) as (_, target), t.XdsTestClient(target, node) as envoy:
        await envoy.send(CLUSTER)
        cds = await envoy.recv()
        assert _names(cds) == ["p"]
        assert "node/worker-1" in cache.groups()


@t.run_async
async def test_cds_is_full_state_on_every_push() -> None:
    cache = _cache(t.cluster("a"), t.cluster("b"))
    async with t.serving(cache) as (_, target), t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(CLUSTER)
        first = await envoy.recv()
        assert _names(first) == ["a", "b"]
        await envoy.ack(first)
        cache.set_view(GROUP, t.resources(t.cluster("a"), t.cluster("b", 2000)))
        second = await envoy.recv()
        assert _names(second) == ["a", "b"]
        assert second.version_info != first.version_info


@t.run_async
async def test_eds_answers_only_requested_names_and_unknown_is_absent() -> None:
    cache = _cache(t.endpoints("a", [1]), t.endpoints("b", [2]))
    async with t.serving(cache) as (_, target), t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(ENDPOINT, resource_names=["a", "nope"])
        eds = await envoy.recv()
        assert _names(eds) == ["a"]
        await envoy.ack(eds, ["a", "nope"])
        await envoy.nothing()


@t.run_async
async def test_unsubscribed_endpoints_are_forgotten() -> None:
    """A long-lived stream under Service churn keeps nothing of names it dropped."""
    cache = _cache(t.endpoints("a", [1]), t.endpoints("b", [2]))
    async with t.serving(cache) as (_, target), t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(ENDPOINT, resource_names=["a", "b"])
        await envoy.ack(await envoy.recv(), ["a", "b"])
        await _until(lambda: set(_dump(cache)["endpoints"]["resources"]) == {"a", "b"})
        await envoy.send(ENDPOINT, resource_names=["a"], version_info=cache.view(
            GROUP).type_version(ENDPOINT))
        await _until(lambda: set(_dump(cache)["endpoints"]["resources"]) == {"a"})
        await envoy.nothing()


@t.run_async
async def test_ack_is_recorded() -> None:
    cache = _cache(t.cluster("a"))
    async with t.serving(cache) as (_, target), t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(CLUSTER)
        cds = await envoy.recv()
        await envoy.ack(cds)
        await _until(lambda: _dump(cache)["clusters"].get("acked_version") == cds.version_info)
        rec = _dump(cache)["clusters"]["resources"]["a"]
        assert rec["acked_version"] == rec["sent_version"] == t.cluster("a").version


@t.run_async
async def test_unchanged_version_gets_no_response() -> None:
    cache = _cache(t.cluster("a"))
    async with t.serving(cache) as (_, target), t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(CLUSTER)
        await envoy.ack(await envoy.recv())
        cache.set_view(GROUP, t.resources(t.cluster("a")))  # same content, new view
        await envoy.nothing()


@t.run_async
async def test_new_view_is_pushed() -> None:
    cache = _cache(t.endpoints("a", [1]))
    async with t.serving(cache) as (_, target), t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(ENDPOINT, resource_names=["a"])
        await envoy.ack(await envoy.recv(), ["a"])
        cache.set_view(GROUP, t.resources(t.endpoints("a", [1, 2])))
        push = await envoy.recv()
        assert _names(push) == ["a"]


@t.run_async
async def test_stale_nonce_is_ignored() -> None:
    cache = _cache(t.cluster("a"))
    async with t.serving(cache) as (_, target), t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(CLUSTER)
        first = await envoy.recv()
        await envoy.ack(first)
        cache.set_view(GROUP, t.resources(t.cluster("a", 2000)))
        second = await envoy.recv()
        # A NACK carrying the first (stale) nonce changes nothing: no rollback, no reply.
        await envoy.send(CLUSTER, version_info=first.version_info,
                         response_nonce=first.nonce, error="late complaint about a")
        await envoy.nothing()
        assert _dump(cache)["recent_nacks"] == []
        await envoy.ack(second)
        await _until(lambda: _dump(cache)["clusters"].get("acked_version") == second.version_info)


@t.run_async
async def test_nonce_never_sent_is_ignored() -> None:
    cache = _cache(t.cluster("a"))
    async with t.serving(cache) as (_, target), t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(CLUSTER)
        cds = await envoy.recv()
        await envoy.send(CLUSTER, version_info="bogus", response_nonce="999")
        await envoy.nothing()
        await envoy.ack(cds)  # the stream is still healthy
        await _until(lambda: _dump(cache)["clusters"].get("acked_version") == cds.version_info)


@t.run_async
async def test_nack_is_logged_counted_and_rejected_version_never_resent(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "kxds.xds")
    good, bad = t.cluster("a"), t.cluster("a", 2000)
    cache = _cache(good)
    async with t.serving(cache) as (server, target), \
            t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(CLUSTER)
        first = await envoy.recv()
        await envoy.ack(first)
        cache.set_view(GROUP, t.resources(bad))
        second = await envoy.recv()
        await envoy.send(CLUSTER, version_info=first.version_info, response_nonce=second.nonce,
                         error="Error adding/updating cluster(s) a: bad timeout")
        await envoy.nothing()  # rolled back to what Envoy holds: nothing to send
        cache.set_view(GROUP, t.resources(bad))  # same bad content again
        await envoy.nothing()
        cache.set_view(GROUP, t.resources(t.cluster("a", 3000)))  # a fixed version goes out
        third = await envoy.recv()
        assert _timeouts(third) == {"a": 3000}
        assert server.metrics.nacks.labels("clusters")._value.get() == 1
        nack = _dump(cache)["recent_nacks"][0]
        assert nack["name"] == "a" and nack["version"] == bad.version
        assert "bad timeout" in nack["error"] and nack["refs"] == ["Service a/a"]
    assert any("event=nack" in r.message and "node=envoy-1" in r.message
               and "bad timeout" in r.message for r in caplog.records)


@t.run_async
async def test_nack_rolls_back_only_the_named_cluster() -> None:
    cache = _cache(t.cluster("a"), t.cluster("b"))
    async with t.serving(cache) as (_, target), t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(CLUSTER)
        first = await envoy.recv()
        await envoy.ack(first)
        cache.set_view(GROUP, t.resources(t.cluster("a", 2000), t.cluster("b", 2000)))
        second = await envoy.recv()
        await envoy.send(CLUSTER, version_info=first.version_info, response_nonce=second.nonce,
                         error="Error adding/updating cluster(s) a: rejected")
        third = await envoy.recv()
        assert _timeouts(third) == {"a": 1000, "b": 2000}
        await envoy.ack(third)
        await _until(lambda: _dump(cache)["clusters"].get("acked_version") == third.version_info)
        res = _dump(cache)["clusters"]["resources"]
        assert res["a"]["nacked"]["version"] == t.cluster("a", 2000).version
        assert res["a"]["acked_version"] == t.cluster("a").version


@t.run_async
async def test_ads_order_clusters_endpoints_then_listeners_routes_once_clusters_warm() -> None:
    cache = _cache()
    async with t.serving(cache) as (_, target), t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(CLUSTER)
        await envoy.send(LISTENER)
        await envoy.send(ENDPOINT, resource_names=["c"])
        await envoy.send(ROUTE, resource_names=["r"])
        await envoy.send(SECRET, resource_names=["s"])
        for _ in range(2):  # the empty CDS and LDS state
            await envoy.ack(await envoy.recv())
        cache.set_view(GROUP, t.resources(t.secret("s"), t.route("r", "c"),
                                          t.listener("l", 1, "r"), t.endpoints("c", [1]),
                                          t.cluster("c")))
        cds = await envoy.recv()
        got = [cds.type_url] + [(await envoy.recv()).type_url for _ in range(2)]
        assert got == [CLUSTER, ENDPOINT, SECRET]
        # Envoy ACKs clusters once they are warm; only then may routes use them.
        await envoy.nothing(0.2)
        await envoy.ack(cds)
        got = [(await envoy.recv()).type_url for _ in range(2)]
        assert got == [LISTENER, ROUTE]


@t.run_async
async def test_cluster_removed_only_after_routes_stop_using_it() -> None:
    cache = _cache(t.cluster("old"), t.cluster("new"), t.route("r", "old"))
    async with t.serving(cache) as (_, target), t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(CLUSTER)
        await envoy.ack(await envoy.recv())
        await envoy.send(ROUTE, resource_names=["r"])
        await envoy.ack(await envoy.recv(), ["r"])
        cache.set_view(GROUP, t.resources(t.cluster("new"), t.route("r", "new")))
        rds = await envoy.recv()
        assert rds.type_url == ROUTE
        await envoy.nothing(0.2)  # the cluster stays until the route is ACKed
        await envoy.ack(rds, ["r"])
        cds = await envoy.recv()
        assert cds.type_url == CLUSTER and _names(cds) == ["new"]


@t.run_async
async def test_cluster_sent_again_is_followed_by_its_endpoints() -> None:
    cache = _cache(t.cluster("a"), t.endpoints("a", [1]))
    async with t.serving(cache) as (_, target), t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(CLUSTER)
        await envoy.ack(await envoy.recv())
        await envoy.send(ENDPOINT, resource_names=["a"])
        await envoy.ack(await envoy.recv(), ["a"])
        cache.set_view(GROUP, t.resources(t.cluster("a", 2000), t.endpoints("a", [1])))
        cds = await envoy.recv()
        eds = await envoy.recv()
        assert (cds.type_url, eds.type_url) == (CLUSTER, ENDPOINT)
        assert _names(eds) == ["a"]


@t.run_async
async def test_endpoint_change_sends_only_that_endpoint() -> None:
    cache = _cache(t.cluster("a"), t.cluster("b"), t.endpoints("a", [1]), t.endpoints("b", [2]))
    async with t.serving(cache) as (server, target), \
            t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(CLUSTER)
        await envoy.ack(await envoy.recv())
        await envoy.send(ENDPOINT, resource_names=["a", "b"])
        await envoy.ack(await envoy.recv(), ["a", "b"])
        cache.set_view(GROUP, t.resources(t.cluster("a"), t.cluster("b"),
                                          t.endpoints("a", [1]), t.endpoints("b", [3])))
        eds = await envoy.recv()
        assert eds.type_url == ENDPOINT and _names(eds) == ["b"]
        await envoy.nothing()
        assert server.metrics.responses.labels("clusters", "sotw")._value.get() == 1


@t.run_async
async def test_new_subscription_with_the_acked_nonce_is_answered() -> None:
    cache = _cache(t.cluster("a"), t.endpoints("a", [1]), t.endpoints("b", [2]))
    async with t.serving(cache) as (_, target), t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(ENDPOINT, resource_names=["a"])
        eds = await envoy.recv()
        await envoy.ack(eds, ["a"])
        # A new cluster appeared: Envoy asks for its endpoints repeating the last nonce.
        await envoy.send(ENDPOINT, version_info=eds.version_info, response_nonce=eds.nonce,
                         resource_names=["a", "b"])
        more = await envoy.recv()
        assert _names(more) == ["b"]


@t.run_async
async def test_reconnect_with_current_version_gets_no_response() -> None:
    items = (t.cluster("a"), t.endpoints("a", [1]))
    async with t.serving(_cache(*items)) as (_, target), \
            t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(CLUSTER)
        cds = await envoy.recv()
        await envoy.ack(cds)
        await envoy.send(ENDPOINT, resource_names=["a"])
        eds = await envoy.recv()
        await envoy.ack(eds, ["a"])
    # A restarted kxds (new cache, new server) computes the same versions.
    async with t.serving(_cache(*items)) as (_, target), \
            t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(CLUSTER, version_info=cds.version_info)
        await envoy.send(ENDPOINT, version_info=eds.version_info, resource_names=["a"])
        await envoy.nothing()


@t.run_async
async def test_reconnect_after_a_subscription_left_unanswered_gets_the_new_names() -> None:
    """kxds killed mid-push: Envoy had subscribed to one more cluster's endpoints and
    got no answer. Its version covers the names it was answered for, not the new one."""
    items = (t.endpoints("a", [1]), t.endpoints("b", [2]))
    async with t.serving(_cache(*items)) as (_, target), \
            t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(ENDPOINT, resource_names=["a"])
        eds = await envoy.recv()
        await envoy.ack(eds, ["a"])
    async with t.serving(_cache(*items)) as (_, target), \
            t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(ENDPOINT, version_info=eds.version_info, resource_names=["a", "b"])
        again = await envoy.recv()
        assert "b" in _names(again)


@t.run_async
async def test_missing_type_url_ends_the_stream() -> None:
    async with t.serving(_cache()) as (_, target), t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send("")
        assert await envoy.status() == grpc.StatusCode.INVALID_ARGUMENT
        assert "type_url" in await envoy.details()


@t.run_async
async def test_unknown_type_is_ignored_and_stream_continues(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "kxds.xds")
    cache = _cache(t.cluster("a"))
    async with t.serving(cache) as (server, target), \
            t.XdsTestClient(target, t.make_node()) as envoy:
        for _ in range(5):
            await envoy.send("type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig")
        await envoy.nothing(0.2)
        await envoy.send(CLUSTER)
        assert _names(await envoy.recv()) == ["a"]
        assert server.metrics.bad_requests.labels("unknown_type")._value.get() == 5
    # Counted each time, logged once: a client repeating it cannot flood the log.
    assert sum("event=bad_request" in r.getMessage() for r in caplog.records) == 1


@t.run_async
async def test_slow_client_never_blocks_other_streams() -> None:
    big = [t.endpoints(f"c{i}", range(1, 200)) for i in range(200)]
    cache = _cache(*big)
    names = [f"c{i}" for i in range(200)]
    async with t.serving(cache) as (_, target), \
            t.XdsTestClient(target, t.make_node("slow")) as slow, \
            t.XdsTestClient(target, t.make_node("fast")) as fast:
        slow.reading = False
        await slow.send(ENDPOINT, resource_names=names)  # and never reads
        await fast.send(ENDPOINT, resource_names=names)
        await fast.ack(await fast.recv(), names)
        for port in range(300, 340):  # many views while the slow client reads nothing
            cache.set_view(GROUP, t.resources(*big[1:], t.endpoints("c0", [port])))
            push = await fast.recv()
            assert _names(push) == ["c0"]
            await fast.ack(push, names)
        # The slow stream holds at most the one reply it is writing: nothing queues up.
        slow_rec = cache.nodes.get("slow")
        assert slow_rec is not None
        assert slow_rec.types[ENDPOINT]["c0"].sent_version == big[0].version


@t.run_async
async def test_per_type_cds_service() -> None:
    cache = _cache(t.cluster("a"))
    async with t.serving(cache) as (_, target), grpc.aio.insecure_channel(target) as channel:
        call = cds_pb2_grpc.ClusterDiscoveryServiceStub(channel).StreamClusters()
        await call.write(discovery_pb2.DiscoveryRequest(node=t.make_node()))
        resp = await asyncio.wait_for(call.read(), 5)
        assert resp.type_url == CLUSTER and _names(resp) == ["a"]
        await call.write(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT))
        assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT


@t.run_async
async def test_metrics_count_responses_bytes_and_convergence() -> None:
    metrics = XdsMetrics()
    cache = _cache(t.cluster("a"))
    metrics.attach(cache)
    async with t.serving(cache, metrics) as (_, target), \
            t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(CLUSTER)
        first = await envoy.recv()
        await envoy.ack(first)
        await _until(lambda: metrics.acks.labels("clusters")._value.get() == 1)
        cache.set_view(GROUP, t.resources(t.cluster("a", 2000)))
        second = await envoy.recv()
        await envoy.send(CLUSTER, version_info=first.version_info, response_nonce=second.nonce,
                         error="Error adding/updating cluster(s) a: no")
        await _until(lambda: metrics.nacks.labels("clusters")._value.get() == 1)
        metrics.observe_rebuild(0.02, seq=3)
        text = metrics.render().decode()
    size = len(t.cluster("a", 2000).body)
    assert 'kxds_xds_responses_total{protocol="sotw",type="clusters"} 2.0' in text
    assert 'kxds_xds_resources_sent_total{protocol="sotw",type="clusters"} 2.0' in text
    assert 'kxds_xds_response_bytes_total{protocol="sotw",type="clusters"}' in text
    assert 'kxds_xds_nacks_total{type="clusters"} 1.0' in text
    assert 'kxds_proxy_convergence_time_seconds_count{type="clusters"} 1.0' in text
    assert 'kxds_view_resources{group="edge/default",type="clusters"} 1.0' in text
    assert f'kxds_view_bytes{{group="edge/default"}} {float(size)}' in text
    assert 'kxds_xds_connected_proxies{group="edge/default",protocol="sotw"} 1.0' in text
    assert "kxds_rebuild_duration_seconds_count 1.0" in text
    assert "kxds_rebuild_sequence 3.0" in text


def test_readme_lists_every_metric() -> None:
    import re
    from pathlib import Path

    from kxds.controller import Controller
    from kxds.supervise import Supervisor
    from kxds.translators.config import TranslateConfig

    metrics = XdsMetrics()
    Controller(SnapshotCache(), TranslateConfig(), metrics=metrics)
    Supervisor(metrics.registry)
    exported = {f"{m.name}_total" if m.type == "counter" else m.name
                for m in metrics.registry.collect()}
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("\n### Observability\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(kxds_[a-z_]+)`", section))
    assert documented == exported


@t.run_async
async def test_admin_endpoints() -> None:
    metrics = XdsMetrics()
    cache = _cache(t.cluster("a"), synced=False)
    admin = AdminServer(cache, metrics)
    port = await admin.start("127.0.0.1:0")
    try:
        assert (await _get(port, "/healthz"))[0] == 200
        assert (await _get(port, "/readyz"))[0] == 503
        cache.mark_synced()
        assert (await _get(port, "/readyz"))[0] == 200
        metrics.observe_rebuild(0.01, seq=7)
        status, body = await _get(port, "/metrics")
        assert status == 200 and b"kxds_rebuild_sequence 7.0" in body
        async with t.serving(cache, metrics) as (_, target), \
                t.XdsTestClient(target, t.make_node()) as envoy:
            await envoy.send(CLUSTER)
            await envoy.ack(await envoy.recv())
            await _until(lambda: _dump(cache)["clusters"].get("acked_version") is not None)
            status, body = await _get(port, "/debug/config_dump?node=envoy-1")
            assert status == 200
            assert json.loads(body)["types"]["clusters"]["resources"]["a"]["acked_version"]
            status, body = await _get(port, "/debug/nodes")
            node = json.loads(body)[0]
            assert (node["node"], node["group"], node["protocol"], node["connected"]) == (
                "envoy-1", GROUP, "sotw", True)
            status, body = await _get(port, "/debug/config_dump")
            assert [n["node"] for n in json.loads(body)["nodes"]] == ["envoy-1"]
            status, body = await _get(port, "/debug/views")
            assert json.loads(body)[GROUP]["resources"] == {"clusters": 1}
        assert (await _get(port, "/debug/config_dump?node=nobody"))[0] == 404
        assert (await _get(port, "/nope"))[0] == 404
    finally:
        await admin.stop()


@t.run_async
async def test_graceful_stop_ends_open_streams() -> None:
    cache = _cache(t.cluster("a"))
    async with t.serving(cache) as (server, target), \
            t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(CLUSTER)
        await envoy.recv()
        await server.stop(0.1)
        with pytest.raises((EOFError, grpc.aio.AioRpcError)):
            await envoy.recv(5)
        assert cache.watched_groups() == set()


# -- helpers ------------------------------------------------------------------

def _dump(cache: SnapshotCache, node: str = "envoy-1") -> dict[str, Any]:
    rec = cache.nodes.get(node)
    assert rec is not None
    doc = rec.dump()
    return {**doc["types"], "recent_nacks": doc["recent_nacks"]}


async def _until(pred: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def _get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@t.run_async
async def test_a_failing_stream_ends_alone_with_internal(monkeypatch: pytest.MonkeyPatch) -> None:
    from kxds.xds.sotw import SotwStream

    original = SotwStream.next_replies

    def broken(self: SotwStream, view: Any) -> Any:
        if self.identity.node_id == "broken":
            raise RuntimeError("bug")
        return original(self, view)

    monkeypatch.setattr(SotwStream, "next_replies", broken)
    cache = _cache(t.cluster("a"))
    async with t.serving(cache) as (_, target), \
            t.XdsTestClient(target, t.make_node("broken")) as bad, \
            t.XdsTestClient(target, t.make_node("fine")) as good:
        await bad.send(CLUSTER)
        await good.send(CLUSTER)
        assert await bad.status() == grpc.StatusCode.INTERNAL
        assert _names(await good.recv()) == ["a"]


@t.run_async
async def test_nack_naming_nothing_rejects_only_what_changed() -> None:
    cache = _cache(t.cluster("a"), t.cluster("b"))
    async with t.serving(cache) as (_, target), t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(CLUSTER)
        first = await envoy.recv()
        await envoy.ack(first)
        cache.set_view(GROUP, t.resources(t.cluster("a"), t.cluster("b", 2000)))
        second = await envoy.recv()
        await envoy.send(CLUSTER, version_info=first.version_info, response_nonce=second.nonce,
                         error="Invalid duration: Expected positive duration")
        await envoy.nothing()
        nacks = _dump(cache)["recent_nacks"]
        assert [(n["name"], n["version"]) for n in nacks] == [("b", t.cluster("b", 2000).version)]


@t.run_async
async def test_first_request_without_node_is_refused() -> None:
    async with t.serving(_cache(t.cluster("a"))) as (server, target), \
            grpc.aio.insecure_channel(target) as channel:
        call = cds_pb2_grpc.ClusterDiscoveryServiceStub(channel).StreamClusters()
        await call.write(discovery_pb2.DiscoveryRequest(type_url=CLUSTER))
        assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "must carry the node" in await call.details()
        assert server.metrics.bad_requests.labels("bad_node")._value.get() == 1


@t.run_async
async def test_named_cds_subscription_gets_every_requested_cluster_each_time() -> None:
    # A client that names its clusters (as gRPC's xDS client does) still gets SotW
    # full state for them: one left out of a response would be deleted.
    cache = _cache(t.cluster("a"), t.cluster("b"), t.cluster("c"))
    async with t.serving(cache) as (_, target), t.XdsTestClient(target, t.make_node()) as envoy:
        await envoy.send(CLUSTER, resource_names=["a"])
        first = await envoy.recv()
        assert _names(first) == ["a"]
        await envoy.ack(first, ["a", "b"])  # and asks for one more
        second = await envoy.recv()
        assert _names(second) == ["a", "b"]
        await envoy.ack(second, ["a", "b"])
        cache.set_view(GROUP, t.resources(t.cluster("a"), t.cluster("b", 2000), t.cluster("c")))
        third = await envoy.recv()
        assert _timeouts(third) == {"a": 1000, "b": 2000}
        await envoy.ack(third, ["a", "b"])
        cache.set_view(GROUP, t.resources(t.cluster("a"), t.cluster("b", 2000),
                                          t.cluster("c", 2000)))
        await envoy.nothing()  # c is not asked for
