"""``kxds serve`` starting with the API source: proxies wait for the first snapshot.

The whole ``serve`` wiring runs in this process against the in-test API server.
Its list of EndpointSlices is held back, so kxds is listening (the xDS port is
bound before the first list completes) but has no complete state yet: a proxy
that connects then is held, gets nothing, and once the list completes it gets
the first snapshot, complete, on the stream it opened.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import xds_support as t
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from fakeapi import FakeApi, kubeconfig
from test_api_source import OTHERS, eps, svc

from kxds import names
from kxds.cli import _parser, config_from_args
from kxds.envoy.resource import CLUSTER, ENDPOINT
from kxds.gc_policy import gc_paused
from kxds.serve import _collector_back_on, serve
from kxds.xds.cache import SnapshotCache

SERVICES = ("web", "api", "shop")


def _ingress() -> dict[str, Any]:
    """One Ingress routing a path to each Service (the edge serves what Ingresses use)."""
    paths = [{"path": f"/{s}", "pathType": "Prefix",
              "backend": {"service": {"name": s, "port": {"number": 80}}}} for s in SERVICES]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "shop", "namespace": "default"},
            "spec": {"ingressClassName": "kxds",
                     "rules": [{"host": "a.example", "http": {"paths": paths}}]}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _fetch(port: int, path: str) -> tuple[int, str]:
    """An admin page: (status, body); (0, "") while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode().strip()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode().strip()
    except OSError:
        return 0, ""


async def _get(port: int, path: str) -> tuple[int, str]:
    """:func:`_fetch` off the loop (the admin server runs on it)."""
    return await asyncio.to_thread(_fetch, port, path)


async def _until(check: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await asyncio.to_thread(check)
        if got:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _unpack(resp: Any, message: Any) -> dict[str, Any]:
    out = {}
    for res in resp.resources:
        msg = message()
        res.Unpack(msg)
        out[msg.cluster_name if message is endpoint_pb2.ClusterLoadAssignment else msg.name] = msg
    return out


@t.run_async
async def test_a_proxy_connected_before_the_first_list_gets_the_first_snapshot(
        tmp_path: Path) -> None:
    api = FakeApi().start()
    for name in SERVICES:
        api.apply(svc(name))
        api.apply(eps(name, ["10.0.0.1", "10.0.0.2"]))
    for doc in [*OTHERS, _ingress()]:
        api.apply(doc)
    listed = threading.Event()

    def hold_slices(method: str, path: str) -> None:
        if method == "GET" and "endpointslices" in path and "watch" not in path:
            listed.wait(30)

    api.on_request = hold_slices
    xds_port, admin_port = _free_port(), _free_port()
    args = _parser().parse_args([
        "serve", "--kubeconfig", kubeconfig(api.url, str(tmp_path / "kubeconfig")),
        "--xds-address", f"127.0.0.1:{xds_port}", "--admin-address", f"127.0.0.1:{admin_port}",
        "--no-events"])
    server = asyncio.create_task(serve(args, config_from_args(args)))
    try:
        await _until(lambda: _listening(xds_port), "the xDS port")
        async with t.XdsTestClient(f"127.0.0.1:{xds_port}", t.make_node()) as envoy:
            await envoy.send(CLUSTER)
            # The admin server answers too, and kxds is not ready: nothing is served.
            await _until(lambda: _fetch(admin_port, "/healthz")[0], "the admin server")
            assert await _get(admin_port, "/readyz") == (503, "not synced")
            await envoy.nothing(0.5)
            listed.set()
            cds = await envoy.recv()
            assert set(_unpack(cds, cluster_pb2.Cluster)) == {
                names.service_cluster("default", s, 80) for s in SERVICES}
            await envoy.ack(cds)
            await envoy.send(ENDPOINT, resource_names=sorted(_unpack(cds, cluster_pb2.Cluster)))
            eds = _unpack(await envoy.recv(), endpoint_pb2.ClusterLoadAssignment)
            # The EndpointSlices listed last are in it: the first snapshot is complete.
            assert {n: sum(len(loc.lb_endpoints) for loc in a.endpoints)
                    for n, a in eds.items()} == {n: 2 for n in _unpack(cds, cluster_pb2.Cluster)}
            assert await _get(admin_port, "/readyz") == (200, "ready")
            _, metrics = await _get(admin_port, "/metrics")
            assert "kxds_rebuilds_total 1.0" in metrics.splitlines()
    finally:
        listed.set()
        os.kill(os.getpid(), signal.SIGTERM)  # serve's own handler: a clean stop
        await asyncio.wait_for(server, 30)
        api.stop()


@pytest.mark.parametrize("synced", [True, False], ids=["first-snapshot", "none-in-time"])
def test_the_collector_comes_back_after_start_up(synced: bool) -> None:
    # Off from the start of serve; back on at the first snapshot, or after the limit
    # when none comes (an unreachable API must not leave it off for good).
    cache = SnapshotCache()
    if synced:
        cache.mark_synced()
    with ExitStack() as startup:
        startup.enter_context(gc_paused)
        assert not gc.isenabled()
        started = time.monotonic()
        asyncio.run(_collector_back_on(cache, 0.3, startup))
        assert gc.isenabled()
        assert (time.monotonic() - started < 0.2) is synced
    assert gc.isenabled()



@t.run_async
async def test_the_collector_is_back_on_and_the_watches_end_when_serve_fails_to_start(
        tmp_path: Path) -> None:
    # The xDS port is taken: serve ends before its task that turns the collector
    # back on has run, and must not leave the process without it, nor with the
    # API source's watches running.
    before = set(threading.enumerate())
    api = FakeApi().start()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    args = _parser().parse_args([
        "serve", "--kubeconfig", kubeconfig(api.url, str(tmp_path / "kubeconfig")),
        "--xds-address", f"127.0.0.1:{taken.getsockname()[1]}",
        "--admin-address", f"127.0.0.1:{_free_port()}", "--no-events"])
    assert gc.isenabled()
    try:
        with pytest.raises((SystemExit, RuntimeError, OSError)):
            await serve(args, config_from_args(args))
        await _until(lambda: not [t for t in set(threading.enumerate()) - before
                                  if t.name.startswith("watch-")], "the watches to end")
    finally:
        taken.close()
        api.stop()
    assert gc.isenabled()
