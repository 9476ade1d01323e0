"""M6: control-plane memory, measured on kxds alone in a fresh process.

1. The control plane serves 100 Services; K idle light ADS streams (each
   subscribed to the 100 endpoint resources, ACKed, then quiet) connect:
   memory per stream = RSS growth / K.
2. The streams leave; one real Envoy connects; the state grows to N Services:
   RSS at N.
3. Everything is deleted (an empty state is published, Envoy removes it all):
   RSS must come back within 10% of what it was before step 2.
4. Details only: RSS after three small changes more (a Service or two, then
   none again), and after a second load of N and delete followed by the same
   (not with ``--quick``): whether what stays grows with each cycle.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from bench import scenario
from bench.live import LightClients
from bench.m1 import wait_loaded
from bench.procs import WORKDIR, Envoy, close_child
from bench.report import Metric
from bench.scenario import Spec
from kxds import names

TARGET = "<= 100 KB per idle stream; <= 150 MB RSS at N=5000; back within 10% after delete"
BASE_SERVICES = 100
STREAMS = 1000
MB = 1024 * 1024


class Worker:
    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> dict[str, Any]:
        with open(WORKDIR / "memworker.log", "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.memworker", "--services", str(BASE_SERVICES),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log)
        return await self._read(120.0)

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("memory worker exited; see memworker.log")
        out: dict[str, Any] = json.loads(line)
        return out

    async def ask(self, command: str, timeout: float = 600.0) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._read(timeout)

    async def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        await close_child(proc, 10.0)


async def per_stream(streams: int, subscribed: list[str]) -> dict[str, float]:
    """RSS growth of a fresh control plane per idle light stream."""
    worker = Worker()
    clients: LightClients | None = None
    try:
        port = int((await worker.start())["port"])
        rss0 = (await worker.ask("wait 0.5"))["rss"]
        clients = LightClients(port, streams, subscribed, prefix=f"m6-{len(subscribed)}")
        await clients.start(timeout=300.0)
        rss1 = (await worker.ask("wait 1"))["rss"]
        return {"rss_before_mb": rss0 / MB, "rss_with_streams_mb": rss1 / MB,
                "per_stream_kb": (rss1 - rss0) / streams / 1024}
    finally:
        if clients is not None:
            await clients.stop()
        await worker.stop()


async def at_scale(services: int, second_cycle: bool = True) -> dict[str, Any]:
    """RSS of a fresh control plane with one Envoy: at 100, at N, and after deleting all."""
    worker = Worker()
    envoy: Envoy | None = None
    try:
        port = int((await worker.start())["port"])
        envoy = Envoy("m6", port, node_id="m6-envoy")
        await wait_loaded(envoy, BASE_SERVICES)
        at_start = await worker.ask("wait 0.5")
        before = at_start["rss"]
        loaded = (await worker.ask(f"load {services}"))["rss"]
        await wait_loaded(envoy, services, timeout=300.0)
        served = (await worker.ask("wait 0.5"))["rss"]

        async def emptied() -> bool:
            assert envoy is not None
            s = await envoy.stats("cluster_manager\\.active_clusters")
            # The bootstrap's own stay: the xds cluster and the external auth relay.
            return s.get("cluster_manager.active_clusters", 0) <= 2

        await worker.ask("empty")
        await envoy.wait_until(emptied, 120.0, interval=0.1)
        at_end = await worker.ask("wait 1")
        after = at_end["rss"]
        cycles = {"after_delete_and_3_changes": _cycle_end(await _small_changes(worker),
                                                           before)}
        if second_cycle:
            await worker.ask(f"load {services}")
            await wait_loaded(envoy, services, timeout=300.0)
            await worker.ask("empty")
            await envoy.wait_until(emptied, 120.0, interval=0.1)
            cycles["after_second_load_delete_and_3_changes"] = _cycle_end(
                await _small_changes(worker), before)
        cleared = (await worker.ask("clear"))["rss"]
        return {"rss_after_delete_memo_clear_and_malloc_trim_mb": cleared / MB, **cycles,
                "pymalloc_before_load": _mb(at_start["pymalloc"]),
                "pymalloc_after_delete": _mb(at_end["pymalloc"]),
                "rss_before_load_mb": before / MB,
                f"rss_at_{services}_mb": max(loaded, served) / MB,
                "rss_after_delete_mb": after / MB, "after_delete_vs_before_load": after / before,
                "peak": max(loaded, served), "back": after <= before * 1.10}
    finally:
        if envoy is not None:
            envoy.stop()
        await worker.stop()


async def _small_changes(worker: Worker) -> dict[str, Any]:
    """Three rebuilds of a Service or two, then nothing again: RSS once kxds has moved on."""
    for n in (1, 2, 1):
        await worker.ask(f"load {n}")
    return await worker.ask("empty")


def _cycle_end(answer: dict[str, Any], before: int) -> dict[str, Any]:
    return {"rss_mb": answer["rss"] / MB, "vs_before_load": answer["rss"] / before,
            "pymalloc": _mb(answer["pymalloc"])}


def _mb(stats: dict[str, int]) -> dict[str, float]:
    """Python's small-object allocator: its arenas (1 MiB each) and what is in use in them."""
    return {"arenas_mb": stats.get("arenas", 0) * 1.0,
            "allocated_blocks_mb": stats.get("allocated_bytes", 0) / MB}


async def run_m6(services: int, unit: float, streams: int = STREAMS,
                 quick: bool = False) -> list[Metric]:
    del unit  # memory has no time unit
    spec = Spec(services=BASE_SERVICES)
    eds = [names.service_cluster(scenario.namespace_of(spec, i), scenario.service_name(i),
                                 scenario.SERVICE_PORT) for i in range(BASE_SERVICES)]
    scale = await at_scale(services, second_cycle=not quick)
    full = await per_stream(streams, eds)
    one = await per_stream(streams, eds[:1])
    details = {
        "idle_streams": streams,
        f"subscribed_to_{BASE_SERVICES}_endpoints": full,
        "subscribed_to_1_endpoint": one,
        **{k: v for k, v in scale.items() if k not in ("peak", "back")},
        "back_within_10_percent": scale["back"],
    }
    per_kb = full["per_stream_kb"]
    met = per_kb <= 100 and scale["peak"] <= 150 * MB and scale["back"]
    return [Metric(id="M6", title=f"memory: RSS at N={services} (per stream in details)",
                   value=scale["peak"] / MB, unit="MB", target=TARGET, met=met,
                   details={**details, "per_stream_kb": per_kb})]
