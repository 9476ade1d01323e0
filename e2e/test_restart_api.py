"""kxds with the API source killed and started again: the proxies get nothing resent.

kxds's versions are content hashes of the resources, so a new process (with
another hash seed, nothing carried over) computes the same ones from the same
cluster: a reconnecting SotW Envoy whose ``version_info`` matches gets no
response, a delta Envoy's ``initial_resource_versions`` skip every resource,
and kxds's tracker shows both holding what they ACKed before the kill. The
restarted kxds's list of EndpointSlices waits until both Envoys have connected
to it: they are held on the streams they opened (a snapshot published before
every kind is listed would reach them as a (wrong) update), and keep those
streams once kxds is ready.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import scenario
from bench.scenario import Spec
from e2e.harness import Envoy, Kxds, free_port, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fakeapi import FakeApi, kubeconfig

pytestmark = pytest.mark.e2e

SERVICES = 40
"""With their EndpointSlices, ten Ingresses of four paths, four NetworkPolicies."""


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi().start()
    for doc in scenario.documents(Spec(services=SERVICES)):
        fake.apply(doc)
    try:
        yield fake
    finally:
        fake.stop()


def held(kxds: Kxds, node: str) -> dict[str, dict[str, str | None]]:
    """Per type, per resource: the version kxds records ``node`` as having ACKed."""
    status, body = kxds.get(f"/debug/config_dump?node={node}")
    assert status == 200, body
    return {t: {n: r["acked_version"] for n, r in v["resources"].items()}
            for t, v in json.loads(body)["types"].items()}


def updates(envoy: Envoy) -> dict[str, int]:
    """Every xDS subscription's accepted and rejected update counts."""
    return {k: v for k, v in envoy.stats().items()
            if k.endswith((".update_success", ".update_rejected"))}


def loaded(envoy: Envoy) -> bool:
    s = envoy.stats()
    return (s.get("cluster_manager.active_clusters", 0) >= SERVICES
            and s.get("cluster_manager.warming_clusters", 1) == 0
            and s.get("listener_manager.total_listeners_active", 0) >= 1
            and any(".rds." in k and k.endswith(".update_success") and v
                    for k, v in s.items()))


def test_restarted_kxds_resends_nothing_to_reconnecting_proxies(
        api: FakeApi, tmp_path: Path, started: list[Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--kubeconfig", kubeconfig(api.url, str(tmp_path / "kubeconfig")),
            "--http-port", str(free_port()), "--listen-address", "127.0.0.1", "--no-events"]
    monkeypatch.setenv("PYTHONHASHSEED", "1")
    first = Kxds(tmp_path, args)
    started.append(first)
    first.wait_ready(60)
    envoys = [Envoy(tmp_path, first.xds_address, node_id="sotw"),
              Envoy(tmp_path, first.xds_address, node_id="delta", delta=True)]
    started.extend(envoys)
    for envoy in envoys:
        envoy.wait_until(loaded, timeout=60, what=f"{envoy.node_id} loaded")

    def settled(kxds: Kxds, node: str) -> dict[str, dict[str, str | None]] | None:
        got = held(kxds, node)
        ok = got and all(v is not None for by_name in got.values() for v in by_name.values())
        return got if ok else None

    before = {e.node_id: wait_for(lambda e=e: settled(first, e.node_id), 30,
                                  what=f"{e.node_id} ACKed everything") for e in envoys}
    assert {"clusters", "endpoints", "listeners", "routes"} <= before["sotw"].keys()
    assert before["sotw"] == before["delta"]
    counts = {e.node_id: updates(e) for e in envoys}

    os.kill(first.pid, signal.SIGKILL)
    first.stop()
    for envoy in envoys:
        envoy.wait_until(lambda e: e.stat("control_plane.connected_state") == 0,
                         what="Envoy sees kxds gone")

    # The new process's list of EndpointSlices waits until both Envoys have opened
    # their streams to it: they are held (not ready, nothing sent) on those streams.
    connected = threading.Event()

    def slow_slices(method: str, path: str) -> None:
        if method == "GET" and "endpointslices" in path and "watch" not in path:
            connected.wait(30)

    api.on_request = slow_slices
    monkeypatch.setenv("PYTHONHASHSEED", "2")
    again = Kxds(tmp_path, args, xds_port=first.xds_port, admin_port=first.admin_port,
                 name="kxds-again")
    started.append(again)
    try:
        for envoy in envoys:
            envoy.wait_until(lambda e: e.stat("control_plane.connected_state") == 1,
                             timeout=30, what="Envoy reconnected")
        readyz = wait_for(lambda: again.get("/readyz")[0], 30, what="the new admin server")
        assert readyz == 503, "ready before its EndpointSlices were listed"
        streams = {e.node_id: e.stat("cluster.xds_cluster.upstream_cx_total") for e in envoys}
        assert min(streams.values()) > 0, streams
    finally:
        connected.set()
    again.wait_ready(60)
    for envoy in envoys:
        after = wait_for(lambda e=envoy: settled(again, e.node_id), 30,
                         what=f"{envoy.node_id} known to the new kxds as holding everything")
        assert after == before[envoy.node_id], f"{envoy.node_id}: versions differ"
    time.sleep(1.0)  # anything sent late would show now
    for envoy in envoys:
        assert updates(envoy) == counts[envoy.node_id], f"{envoy.node_id} got a resend"
        assert envoy.stat("cluster.xds_cluster.upstream_cx_total") == streams[envoy.node_id], \
            f"{envoy.node_id} connected again: the stream it opened before the first " \
            "snapshot did not stay"
    _, text = again.get("/metrics")
    sent = [line for line in text.splitlines()
            if line.startswith("kxds_xds_resources_sent_total{") and not line.endswith(" 0.0")]
    assert not sent, f"the restarted kxds sent resources: {sent}"
