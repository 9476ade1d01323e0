"""The controller: source states in, per-group views into the snapshot cache out.

A source calls :meth:`Controller.publish` with each new :class:`ClusterState`.
Events are coalesced (a holdoff after the last one, capped since the first
pending one; the first change after a calm is rebuilt at once, only what
follows it is held: :mod:`kxds.debounce`), then one rebuild translates the
latest state, checks it with :func:`kxds.ir.consistency_problems`, builds the
Envoy resources and sets the view of every group:

- every ``edge/<cluster>`` group shares one built view, but groups that a
  Gateway is pinned to (``kxds.io/edge-group``), each built with its own
  Gateways, and then the others share one without the pinned Gateways;
- each ``node/<name>`` group gets its own view, built for that node (also
  as soon as a proxy of a new group connects, through ``cache.on_new_group``)
  from what nodes of its class share (:mod:`kxds.fleet`); a rebuild looks only
  at the node groups whose view it may change (an endpoint change of a Local
  Service: the nodes of its endpoints), and a node view that did not change is
  not set again. The node groups and edge groups are remembered as their
  proxies connect (``cache.on_new_group``) and forgotten when pruned, not found
  among the cache's groups at each rebuild.

Building a view is :mod:`kxds.views`; a view it rejects (inconsistent, or a
translation bug) is not published: the last good one keeps being served, and
the failure is logged and counted (:mod:`kxds.rebuild_report`, with the problems
found in the input).

Translation and building run in a worker thread, and the views are set from
the event loop (the cache is not thread-safe). Measured on a 2-core machine
with 1,000 Services, EndpointSlices and Ingresses: a rebuild takes about
0.35 s either way, but on the loop it stalls every xDS stream and the admin
server for all of it, while from a thread the loop's longest pause was 88 ms
(312 ms with 3,000: the GIL is held through long C calls such as serializing
a large route table).

An endpoint change (at most :data:`SMALL_CHANGE` EndpointSlices and nothing
else, :func:`kxds.state_changes.only_slices_changed`) is built on the loop
instead, with the node views too when there are at most :data:`SMALL_NODES`:
its rebuild is patched in proportion to the change (about a millisecond at
1,000 Services), less than the hop to a worker thread and back costs it
(0.3-0.4 ms here, and whatever the worker then waits for the GIL).

Each view keeps a :class:`~kxds.views.ViewMemo` across rebuilds: a rebuild
recomputes only what changed and reuses the rest.

Per-node proxies come and go with their nodes: a ``node/<name>`` group none
of whose streams has been connected for ``node_grace`` seconds is forgotten
(its view, memo and node info), so memory follows the nodes that exist; a
proxy that reconnects within the grace period finds everything in place.
Edge groups (``edge/<cluster>``, named by whatever ``node.cluster`` a client
sends) are forgotten the same way, except ``edge/default``, which is always
built.

Certificates are checked against the rebuild's instant; when one of the
served state's certificates becomes valid or expires later, the controller
rebuilds the same state at that instant, so an expired certificate fails
closed on time rather than at the next unrelated change (:mod:`kxds.cert_recheck`).

After each rebuild the state that survived is frozen out of the cyclic
garbage collector's way, and thawed again periodically; only the first
rebuild, before anything is served, runs with the collector paused
(:mod:`kxds.gc_policy` has why and the figures).

After a rebuild that serves less than half of what was served before (most of
the state deleted), freed heap memory is given back to the system
(:mod:`kxds.memory`).

``rebuild_seq`` counts finished rebuilds; it is exported as the
``kxds_rebuild_sequence`` gauge so tests wait for a number instead of sleeping.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from prometheus_client import CollectorRegistry

from kxds.cert_recheck import config_at_now, due, next_recheck, seconds_until
from kxds.debounce import Debounce
from kxds.diagnostics import Diagnostic
from kxds.envoy.build import BuildCache, SharedBuilds
from kxds.envoy.resource import Resources
from kxds.fleet import FleetMemo
from kxds.gc_policy import PeriodicThaw, gc_paused
from kxds.kube.models import ClusterState
from kxds.memory import ShrinkWatch, release_free_memory
from kxds.rebuild_report import RebuildReport
from kxds.state_changes import only_slices_changed
from kxds.translators.config import NodeInfo, TranslateConfig
from kxds.translators.gateway_groups import pinned_groups, state_for_group
from kxds.translators.gateway_status import GatewayApiStatus
from kxds.views import Built, ViewMemo, build_edge
from kxds.xds.cache import SnapshotCache
from kxds.xds.identity import NodeIdentity

_T = TypeVar("_T")

log = logging.getLogger("kxds.controller")

EDGE_DEFAULT = "edge/default"
NODE_GRACE = 60.0
"""Default seconds before the group of a per-node proxy that left is forgotten: long
enough for an Envoy restart or a control-plane reconnect, short against node churn."""


SMALL_CHANGE = 8
"""At most this many EndpointSlices changed, and nothing else: rebuilt on the event loop."""

SMALL_NODES = 1024
"""The node views of such a change are built on the loop too when there are at most this
many. A node the change leaves untouched is not even looked at (:mod:`kxds.fleet`): a
Local pod moved takes about 1.3 ms of the loop in all, at 500 nodes as at 2,000, less
than the hop to a worker thread and its cold start; but a Cluster Service's endpoints
change every node's view, and their number has no bound, hence one."""



def _prunable(group: str) -> bool:
    """Whether a group is forgotten once it has had no stream for the grace period."""
    return group.startswith("node/") or (group.startswith("edge/") and group != EDGE_DEFAULT)


class RebuildObserver(Protocol):
    """What the controller reports each rebuild to (the xDS server's metrics)."""

    registry: CollectorRegistry

    def observe_rebuild(self, seconds: float, seq: int | None = None) -> None: ...


class Controller:
    """Debounces source states and publishes consistent views into the cache."""

    def __init__(self, cache: SnapshotCache, config: TranslateConfig, *,
                 holdoff: float = 0.05, max_holdoff: float = 0.25,
                 metrics: RebuildObserver | None = None, in_thread: bool = True,
                 node_grace: float = NODE_GRACE) -> None:
        self.cache = cache
        self.config = config
        self.node_grace = node_grace
        """Seconds a per-node group may have no connected stream before it is forgotten."""
        self.in_thread = in_thread
        self.metrics = metrics
        self._debounce: Debounce[ClusterState] = Debounce(holdoff, max_holdoff)
        self._recheck_at: dt.datetime | None = None
        """When the state's certificates next change validity (see :meth:`_wait_for_state`)."""
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._init_results()
        self._init_views()
        self._report = RebuildReport(metrics.registry if metrics is not None
                                     else CollectorRegistry())
        cache.on_new_group = self._on_new_group
        self._remember_watched()

    def _init_results(self) -> None:
        """What each rebuild leaves for others to read, and who is told of it."""
        self.rebuild_seq = 0
        """Number of finished rebuilds (published or rejected)."""
        self.state: ClusterState | None = None
        """The state of the last rebuild."""
        self.gateway_status: GatewayApiStatus | None = None
        """The Gateway API status of the served edge view (``/debug/gateway-api``)."""
        self.on_diagnostics: Callable[[set[Diagnostic]], None] | None = None
        """Told the current problems after each rebuild (the API source records Events)."""
        self.on_gateway_status: Callable[[GatewayApiStatus], None] | None = None
        """Told the Gateway API status of the served edge view after each rebuild (the
        API source writes it to the objects)."""

    def _init_views(self) -> None:
        """The views served, the memos they are rebuilt from, and the known nodes."""
        self._edge: Resources | None = None
        self._nodes: dict[str, NodeInfo] = {}
        # One memo per view, used by one rebuild at a time (under ``_lock``).
        self._edge_memo = ViewMemo()
        self._others_memo = ViewMemo()
        self._group_memos: dict[str, ViewMemo] = {}
        self._group_views: dict[str, Resources] = {}
        """Each edge group a Gateway is pinned to (``kxds.io/edge-group``) -> its view;
        the other edge groups serve ``_edge``."""
        self._node_memos: dict[str, ViewMemo] = {}
        self._joining: dict[str, NodeInfo] = {}
        """Node groups remembered since the fleet was last told of them (it is told under
        the lock, :meth:`_publish_nodes`: a rebuild may be using it in a worker thread)."""
        self._edge_known: set[str] = set()
        """The edge groups whose proxies connected (and were not forgotten since)."""
        self._shared = SharedBuilds()
        """Resources equal across node views, serialized once (swept every rebuild)."""
        self._fleet = FleetMemo(self._shared)
        """What node views share, built once per rebuild (see :mod:`kxds.fleet`)."""
        self._published: dict[str, Resources] = {}
        """Each node group's resources as last set on the cache."""
        self._bounds: frozenset[dt.datetime] = frozenset()
        """When a certificate check of the served edge view may change its verdict."""
        self._shrink = ShrinkWatch()
        """When the served state shrank enough to give freed memory back (kxds.memory)."""

    # -- the source's side ----------------------------------------------------

    def publish(self, state: ClusterState) -> None:
        """Accept a new complete state (the source interface's ``publish``)."""
        self._debounce.put(state)

    # -- the loop ---------------------------------------------------------------

    async def run(self) -> None:
        """Rebuild after each burst of states, and forget departed node groups;
        runs until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._prune_loop())
            await self._rebuild_loop()

    async def _rebuild_loop(self) -> None:
        while True:
            if not await self._wait_for_state():
                continue
            state = await self._debounce.take()
            if state is not None:
                await self.rebuild(state)

    async def _wait_for_state(self) -> bool:
        """Wait for a new state; True when one came. At the next certificate validity
        boundary of the current state, rebuild that state instead (and return False)."""
        recheck = self._recheck_at
        if recheck is None:
            return await self._debounce.wait()
        if await self._debounce.wait(timeout=seconds_until(recheck)):
            return True
        if self.state is not None and due(recheck):
            log.info("event=certificate_validity_changed at=%s", recheck.isoformat())
            await self.rebuild(self.state)
        return False

    async def _call(self, fn: Callable[..., _T], *args: object, inline: bool = False) -> _T:
        """``fn(*args)`` in a worker thread (unless ``inline``, or threads are off)."""
        if self.in_thread and not inline:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    def _small(self, state: ClusterState) -> bool:
        """Whether ``state`` is the served one but for a few EndpointSlices."""
        return (self.state is not None and self.cache.synced
                and only_slices_changed(self.state, state, SMALL_CHANGE))

    async def rebuild(self, state: ClusterState) -> None:
        """Translate ``state``, and set every group's view if it is consistent."""
        async with self._lock:
            started = time.monotonic()
            config = config_at_now(self.config)
            small = self._small(state)
            edge = await self._build_edge(state, config, small)
            diagnostics = set(edge.diagnostics)
            if edge.resources is not None:
                self._serve_edge(edge)
                await self._publish_edge(state, config, edge.resources, small)
            else:
                self._report.rejected(EDGE_DEFAULT, edge)
            diagnostics |= await self._publish_nodes(state, config, small)
            self.state = state
            self._recheck_at = next_recheck(self.config, config, self._bounds)
            published = edge.resources is not None
            if published and not self.cache.synced:
                self.cache.mark_synced()
            self._log_diagnostics(diagnostics)
            await self._end_rebuild()
            seconds = time.monotonic() - started
            if self.metrics is not None:
                self.metrics.observe_rebuild(seconds, self.rebuild_seq)
            log.info("event=rebuild seq=%d published=%s seconds=%.3f diagnostics=%d groups=%d",
                     self.rebuild_seq, published, seconds, len(diagnostics),
                     len(self._edge_groups()) + len(self._nodes))

    async def _build_edge(self, state: ClusterState, config: TranslateConfig,
                          small: bool) -> Built:
        """The view every edge group without a pinned Gateway serves."""
        if self.cache.synced:
            return await self._call(build_edge, state, config, self._edge_memo, inline=small)
        with gc_paused:  # nothing is served yet: see kxds.gc_policy
            return await self._call(build_edge, state, config, self._edge_memo)

    def _serve_edge(self, edge: Built) -> None:
        """Take ``edge`` (built, not rejected) as the served edge view."""
        assert edge.resources is not None
        self._edge, self._bounds = edge.resources, edge.bounds
        self.gateway_status = edge.gateway_status
        if self.on_gateway_status is not None and edge.gateway_status is not None:
            self.on_gateway_status(edge.gateway_status)
        self._report.skipped(edge.skipped)

    async def _publish_nodes(self, state: ClusterState, config: TranslateConfig,
                             small: bool) -> set[Diagnostic]:
        """Build every node group's view, set those that may have changed (the fleet
        tells which: :mod:`kxds.fleet`); the problems of every node group."""
        for group, node in self._joining.items():
            self._fleet.join(group, node)
        self._joining.clear()
        # One worker-thread call for all of them: a hop per node cost more than
        # most node views (kxds.fleet), and let streams run between the views.
        builts = await self._call(self._build_nodes, state, config,
                                  inline=small and len(self._nodes) <= SMALL_NODES
                                  ) if self._nodes else {}
        for group in sorted(builts):
            self._set_node_view(group, builts[group])
        return self._report.node_diagnostics()

    async def _end_rebuild(self) -> None:
        """Sweep what no view uses any more, end the cache's batch, count the rebuild."""
        self._shared.sweep()
        self._fleet.sweep()
        self.cache.end_batch()
        if self._shrink.shrank(self.cache.count()):
            released = await self._call(release_free_memory)
            log.info("event=memory_released after=shrink released=%s", released)
        gc.freeze()  # what survived is long-lived: out of the next rebuild's collections
        self.rebuild_seq += 1

    async def _publish_edge(self, state: ClusterState, config: TranslateConfig,
                            full: Resources, small: bool) -> None:
        """Set every edge group's view: ``full`` when no Gateway is pinned to a group
        (the usual case); else each pinned group gets a view with its own Gateways and
        the unpinned ones, and every other group one without the pinned Gateways
        (:mod:`kxds.translators.gateway_groups`). A rejected view keeps its last good one."""
        pins = pinned_groups(state)
        for gone in set(self._group_memos) - pins:
            del self._group_memos[gone]
            self._group_views.pop(gone, None)
        if not pins:
            self._edge = full
        else:
            others = await self._call(build_edge, state_for_group(state, None), config,
                                      self._others_memo, inline=small)
            if others.resources is not None:
                self._edge = others.resources
            else:
                self._report.rejected(EDGE_DEFAULT, others)
            for group in sorted(pins):
                memo = self._group_memos.setdefault(group, ViewMemo())
                built = await self._call(build_edge, state_for_group(state, group), config,
                                         memo, inline=small)
                if built.resources is not None:
                    self._group_views[group] = built.resources
                else:
                    self._report.rejected(group, built)
        for group in self._edge_groups():
            view = self._group_views.get(group, self._edge)
            if view is not None:
                self.cache.set_view(group, view)

    async def _prune_loop(self) -> None:
        # A departed group goes between node_grace and 1.25 node_grace after it left.
        interval = min(max(self.node_grace / 4, 0.01), 10.0)
        thaw = PeriodicThaw()
        while True:
            await asyncio.sleep(interval)
            thaw.tick()
            try:
                await self.prune()
            except Exception:  # a bug here must not stop the rebuilds
                log.exception("event=prune_failed")

    async def prune(self, now: float | None = None) -> list[str]:
        """Forget every group but ``edge/default`` without a stream for ``node_grace``
        seconds (at ``now``, a ``time.monotonic()`` value); returns the groups forgotten."""
        async with self._lock:  # not while a rebuild reads the groups
            now = time.monotonic() if now is None else now
            known = {*self._nodes, *self._node_memos, *self.cache.groups()}
            gone = []
            for group in sorted(g for g in known if _prunable(g)):
                since = self.cache.idle_since(group)
                if since is not None and now - since >= self.node_grace:
                    self._nodes.pop(group, None)
                    self._node_memos.pop(group, None)
                    self._fleet.forget(group)
                    self._joining.pop(group, None)
                    self._published.pop(group, None)
                    self._report.forget(group)
                    self._edge_known.discard(group)
                    self.cache.remove_view(group)
                    gone.append(group)
            if gone:
                log.info("event=groups_pruned count=%d groups=%s idle_seconds=%.0f",
                         len(gone), ",".join(gone[:20]) + ("..." if len(gone) > 20 else ""),
                         self.node_grace)
            return gone

    @property
    def node_groups(self) -> set[str]:
        """The node groups the controller keeps state for (node info or memo)."""
        return {*self._nodes, *self._node_memos}

    def _build_nodes(self, state: ClusterState, config: TranslateConfig) -> dict[str, Built]:
        """The node views that may have changed, by group (in a worker thread, under
        the lock)."""
        return self._fleet.build_all(state, config, self._node_memo)

    def _node_memo(self, group: str) -> ViewMemo:
        memo = self._node_memos.get(group)
        if memo is None:
            memo = self._node_memos[group] = ViewMemo(build=BuildCache(self._shared))
        return memo

    def _edge_groups(self) -> set[str]:
        return {EDGE_DEFAULT} | self._edge_known

    def _remember_watched(self) -> None:
        """Remember the groups whose proxies were watching the cache before the
        controller took it; the cache tells every later one (``on_new_group``), so a
        rebuild does not look for them among all the groups."""
        for group in sorted(self.cache.groups()):
            if group.startswith("edge/"):
                self._edge_known.add(group)
            elif group.startswith("node/") and group not in self._nodes:
                ids = self.cache.identities(group)
                if ids:
                    self._remember(ids[0])

    def _remember(self, identity: NodeIdentity) -> NodeInfo:
        node = NodeInfo(name=identity.node_name or identity.node_id, zone=identity.zone,
                        bind_address=identity.bind_address,
                        transparent=identity.source_ip_mode == "transparent")
        self._nodes[identity.group] = node
        self._joining[identity.group] = node
        return node

    def _log_diagnostics(self, diagnostics: set[Diagnostic]) -> None:
        """Report the current problems, and tell them (:attr:`on_diagnostics`)."""
        self._report.diagnostics(diagnostics)
        if self.on_diagnostics is not None:
            self.on_diagnostics(diagnostics)

    # -- the cache's side -------------------------------------------------------

    def _on_new_group(self, identity: NodeIdentity) -> None:
        """A proxy of a group without a view connected: give that group its view."""
        if identity.role == "edge":
            self._edge_known.add(identity.group)
            view = self._group_views.get(identity.group, self._edge)
            if view is not None:
                self.cache.set_view(identity.group, view)
            return
        node = self._remember(identity)
        if self.state is None:
            return  # the first rebuild will include this group
        task = asyncio.get_running_loop().create_task(self._build_group(identity.group, node))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _build_group(self, group: str, node: NodeInfo) -> None:
        async with self._lock:
            if group not in self.cache.watched_groups():
                return  # gone again (and maybe pruned) before its turn
            state = self.state
            assert state is not None
            built = await self._call(self._fleet.build, state, config_at_now(self.config), group,
                                     node, self._node_memo(group))
            self._set_node_view(group, built)
            # Its problems are told now, not at the next rebuild (a node without the
            # set-up for transparent source addresses reports its fallbacks at once).
            self._log_diagnostics(self._report.logged | set(built.diagnostics))

    def _set_node_view(self, group: str, built: Built) -> None:
        self._report.node_built(group, built)
        if built.resources is None:
            return
        if self._published.get(group) is built.resources:
            return  # the very view of last time (kxds.fleet): nothing to tell its proxies
        self._published[group] = built.resources
        self.cache.set_view(group, built.resources)
