"""M1's change through the Kubernetes API source: a watch event to Envoy's ACK.

Run alone: ``.venv/bin/python -m bench.m1_api [--services 1000] [--repeats 40]``.

M1 publishes each new ClusterState to the controller itself; a user's
EndpointSlice change comes through the API source first. Here a fake API server
(:mod:`bench.fakeapi_proc`, its own process) holds the scenario; kxds's API source
(reflector threads, the store's snapshot) runs in this process with the controller,
the xDS server and the shipped debounce, as ``kxds serve`` does, and one real Envoy
on SotW ADS. Each sample: one EndpointSlice replaced in the fake server (a pod
swapped), from the instant the benchmark asks for it until the tracker records
Envoy's ACK of that endpoint resource; and, inside it, until the source published
the new state (the watch event delivered, parsed, stored, snapshotted). A calm of
0.2 s separates changes, as in M1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

from bench import scenario
from bench.live import ControlPlane
from bench.m1 import HOLDOFF, MAX_HOLDOFF, acked_change, one_envoy, wait_loaded
from bench.m10 import fake_api
from bench.procs import WORKDIR, close_child
from bench.scenario import Spec
from kxds import names
from kxds.envoy.resource import ENDPOINT
from kxds.kube.api import ApiOptions, ApiSource
from kxds.kube.client import KubeClient
from kxds.kube.models import ClusterState


class FakeApiProcess:
    """:mod:`bench.fakeapi_proc`, applying one object per request."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, services: int) -> str:
        with open(WORKDIR / "fakeapi.log", "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.fakeapi_proc", "--services", str(services),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 300.0)
        if not line:
            raise RuntimeError("the fake API server exited; see fakeapi.log")
        return str(json.loads(line)["url"])

    def apply(self, doc: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(doc).encode() + b"\n")

    async def applied(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        if await asyncio.wait_for(self.proc.stdout.readline(), 30.0) != b"ok\n":
            raise RuntimeError("the fake API server did not apply; see fakeapi.log")

    async def stop(self) -> None:
        if self.proc is not None:
            await close_child(self.proc, 10.0)


async def run(services: int, repeats: int, warmup: int = 3) -> dict[str, Any]:
    spec = Spec(services=services)
    api = FakeApiProcess()
    cp = ControlPlane(holdoff=HOLDOFF, max_holdoff=MAX_HOLDOFF)
    published: list[float] = []
    first: asyncio.Future[ClusterState] = asyncio.get_running_loop().create_future()

    def publish(state: ClusterState) -> None:
        if not first.done():
            first.set_result(state)
            return
        published.append(time.perf_counter())
        cp.publish(state)

    task: asyncio.Task[None] | None = None
    try:
        url = await api.start(services)
        kubeconfig = fake_api().kubeconfig(url, str(WORKDIR / "m1-api-kubeconfig"))
        source = ApiSource(KubeClient.from_config(kubeconfig, in_cluster=False), ApiOptions())
        task = asyncio.get_running_loop().create_task(source.run(publish))
        await cp.start(await asyncio.wait_for(first, 300.0))
        async with one_envoy("m1-api", cp.port, node_id="m1-api") as envoy:
            await wait_loaded(envoy, services)
            acked: list[float] = []
            to_source: list[float] = []
            for r in range(warmup + repeats):
                i = (r * 37) % services
                name = names.service_cluster(scenario.namespace_of(spec, i),
                                             scenario.service_name(i), scenario.SERVICE_PORT)
                old = cp.resource(ENDPOINT, name)
                published.clear()
                t0 = time.perf_counter()
                api.apply(scenario.slice_doc(spec, i, generation=r + 1))
                _, t1 = await acked_change(cp, "m1-api", name, old)
                await api.applied()
                if r >= warmup:
                    acked.append(t1 - t0)
                    to_source.append(published[0] - t0)
                await asyncio.sleep(0.2)
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await cp.stop()
        await api.stop()
    out = {"services": services, "samples": len(acked),
           "event_to_ack_p50_ms": statistics.median(acked) * 1e3,
           "event_to_ack_max_ms": max(acked) * 1e3,
           "event_to_published_p50_ms": statistics.median(to_source) * 1e3}
    print(f"{services:,} Services, {len(acked)} EndpointSlice changes through the API "
          f"source: event to Envoy's ACK p50 {out['event_to_ack_p50_ms']:.2f} ms (max "
          f"{out['event_to_ack_max_ms']:.2f}), of which event to the source's publish "
          f"{out['event_to_published_p50_ms']:.2f} ms", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.m1_api", description=__doc__)
    p.add_argument("--services", type=int, nargs="+", default=[1000])
    p.add_argument("--repeats", type=int, default=40)
    args = p.parse_args()
    for n in args.services:
        asyncio.run(run(n, args.repeats))


if __name__ == "__main__":
    main()
