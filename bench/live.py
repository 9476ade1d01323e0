"""kxds's xDS server and snapshot pipeline running inside the benchmark process.

The benchmark drives the same code ``kxds serve`` runs (translate, build,
``SnapshotCache.set_view``, ``XdsServer``) but feeds it ClusterStates
directly, so it can time a change from the moment it is published, and reads
ACKs from the cache's per-node tracker (what Envoy actually accepted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from bench.procs import close_child
from kxds.envoy.resource import Resource
from kxds.kube.models import ClusterState

GROUP = "edge/default"


class ViewLog:
    """Every view set on the cache, reduced to what changed, per type.

    Called inside ``set_view``, so inside the time M8 and M1 measure: it looks
    only at the names the cache's change history gives (a whole type only when
    that history is unknown), so it costs the size of the change, as kxds does.
    """

    def __init__(self) -> None:
        self.last: dict[str, Mapping[str, Resource]] = {}
        self.changes: list[dict[str, int]] = []
        self.changed_bytes: list[int] = []
        """Serialized bytes of the resources each view added or changed."""

    def __call__(self, group: str, view: Any) -> None:
        if group != GROUP:
            return
        changed: dict[str, int] = {}
        nbytes = 0
        for type_url, by_name in view.resources.items():
            before = self.last.get(type_url, {})
            names = by_name.changes_since(before)
            if names is None:
                names = {*by_name, *before}
            diff = 0
            for name in names:
                new, old = by_name.get(name), before.get(name)
                if new is not None and (old is None or old.version != new.version):
                    nbytes += len(new.body)
                    diff += 1
                elif new is None and old is not None:
                    diff += 1
            if diff:
                changed[type_url] = diff
            self.last[type_url] = by_name
        for type_url in set(self.last) - set(view.resources):
            changed[type_url] = len(self.last.pop(type_url))
        self.changes.append(changed)
        self.changed_bytes.append(nbytes)


class ControlPlane:
    """kxds's controller (debounce + rebuild), snapshot cache and xDS server, in process.

    ``holdoff``/``max_holdoff`` are the controller's debounce (``kxds serve``
    flags of the same names); :meth:`publish` is the source interface's
    ``publish`` and returns at once, the rebuild follows on the event loop.
    """

    def __init__(self, *, holdoff: float = 0.05, max_holdoff: float = 0.25,
                 config: Any = None) -> None:
        from kxds.controller import Controller
        from kxds.translators.config import TranslateConfig
        from kxds.xds.cache import SnapshotCache
        from kxds.xds.metrics import XdsMetrics

        self.cache = SnapshotCache()
        self.views = ViewLog()
        self.cache.view_listeners.append(self.views)
        self.metrics = XdsMetrics()
        self.metrics.attach(self.cache)
        self.holdoff, self.max_holdoff = holdoff, max_holdoff
        self.rebuilds = RebuildClock(self.metrics)
        self.controller = Controller(self.cache, config or TranslateConfig(), holdoff=holdoff,
                                     max_holdoff=max_holdoff, metrics=self.rebuilds)
        self.server: Any = None
        self.port = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self, state: ClusterState) -> None:
        """Serve ``state`` (first sync) on a free port."""
        from kxds.xds.limits import XdsLimits
        from kxds.xds.server import XdsServer

        self._task = asyncio.get_running_loop().create_task(self.controller.run())
        await self.publish_and_wait(state, timeout=300.0)
        # Every simulated proxy connects from 127.0.0.1, which kxds counts as one
        # client: lift the per-client caps (thousands of streams and node groups).
        limits = XdsLimits(max_streams_per_client=100_000, max_groups_per_client=100_000)
        self.server = XdsServer(self.cache, self.metrics, limits=limits)
        self.port = await self.server.start("127.0.0.1:0")

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0.2)
            self.server = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def publish(self, state: ClusterState) -> None:
        self.controller.publish(state)

    @property
    def rebuild_seq(self) -> int:
        return int(self.controller.rebuild_seq)

    async def publish_and_wait(self, state: ClusterState, timeout: float = 60.0) -> float:
        """Publish ``state``; ``time.perf_counter()`` when its rebuild finished."""
        seq = self.rebuild_seq
        self.publish(state)
        return await self.rebuilds.finished(seq + 1, timeout)

    def last_rebuild_seconds(self) -> float | None:
        """Sum and count of the controller's rebuild-duration histogram (mean of all)."""
        total = self.counter("kxds_rebuild_duration_seconds_sum")
        count = self.counter("kxds_rebuild_duration_seconds_count")
        return total / count if count else None

    def resource(self, type_url: str, name: str) -> Resource | None:
        view = self.cache.view(GROUP)
        return None if view is None else view.of_type(type_url).get(name)

    def acked_version(self, node_id: str, type_url: str, name: str) -> str | None:
        rec = self.cache.nodes.get(node_id)
        if rec is None:
            return None
        entry = rec.types.get(type_url, {}).get(name)
        return None if entry is None else entry.acked_version

    def replaced(self, type_url: str, name: str, old: Resource | None) -> Callable[[], bool]:
        """A predicate: the view's ``name`` is no longer the ``old`` resource."""
        return lambda: self.resource(type_url, name) is not old

    def acked(self, node_id: str, type_url: str, name: str, version: str
              ) -> Callable[[], bool]:
        """A predicate: node ``node_id`` has ACKed ``name`` at ``version``."""
        return lambda: self.acked_version(node_id, type_url, name) == version

    def counter(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.metrics.registry.get_sample_value(name, labels or {})
        return float(value or 0.0)


class RebuildClock:
    """The controller's rebuild observer in the benchmark: kxds's own metrics, and the
    instant each rebuild ended, taken by the controller as it ends (not by polling)."""

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics
        self.registry = metrics.registry
        self.ended: dict[int, float] = {}
        """Rebuild sequence number -> ``time.perf_counter()`` when it ended (the last few)."""
        self._changed = asyncio.Event()

    def observe_rebuild(self, seconds: float, seq: int | None = None) -> None:
        self.metrics.observe_rebuild(seconds, seq)
        if seq is not None:
            self.ended[seq] = time.perf_counter()
            while len(self.ended) > 64:
                del self.ended[next(iter(self.ended))]
            self._changed.set()

    async def finished(self, seq: int, timeout: float) -> float:
        """When rebuild ``seq`` (or the first after it) ended; waits for it."""
        async with asyncio.timeout(timeout):
            while True:
                done = [t for s, t in self.ended.items() if s >= seq]
                if done:
                    return done[0]
                self._changed.clear()
                await self._changed.wait()


async def poll(pred: Callable[[], Any], timeout: float, interval: float = 0.0005,
               what: str = "condition") -> float:
    """Await ``pred()`` truthy; returns ``time.perf_counter()`` when it first was."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached in {timeout}s")
        await asyncio.sleep(interval)


class LightClients:
    """``bench.adsclient`` in another process: K light ADS streams, read from its stdout."""

    def __init__(self, port: int, streams: int, names: list[str], *, protocol: str = "sotw",
                 prefix: str = "light", role: str = "edge", listeners: bool = False,
                 reconnect: bool = False, versions: bool = True) -> None:
        self.args = [sys.executable, "-m", "bench.adsclient", "--port", str(port),
                     "--streams", str(streams), "--protocol", protocol,
                     "--names", ",".join(names), "--prefix", prefix, "--role", role,
                     *(["--listeners"] if listeners else []),
                     *(["--reconnect"] if reconnect else []),
                     *([] if versions else ["--no-versions"])]
        self.streams = streams
        self.events: list[dict[str, Any]] = []
        self.ready = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 120.0) -> None:
        from bench.procs import WORKDIR

        with open(WORKDIR / "adsclient.log", "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=log, limit=1 << 24)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await asyncio.wait_for(self.ready.wait(), timeout)

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            event = json.loads(line)
            if event.get("ready"):
                self.ready.set()
            else:
                self.events.append(event)

    def all_received(self, name: str, version: str, count: int) -> Callable[[], bool]:
        """A predicate: ``count`` streams have received ``name`` at ``version``."""
        return lambda: len(self.received(name, version)) >= count

    def received(self, name: str, version: str) -> list[dict[str, Any]]:
        """Events of streams that received ``name`` at ``version`` (first per stream)."""
        seen: dict[int, dict[str, Any]] = {}
        for e in self.events:
            if e["v"].get(name) == version and e["s"] not in seen:
                seen[e["s"]] = e
        return list(seen.values())

    async def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        await close_child(proc, 5.0)
        if self._reader is not None:
            self._reader.cancel()
        self.proc = None
