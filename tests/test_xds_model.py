"""Property tests: a simulated Envoy converges on any sequence of views, both protocols.

The simulated client keeps what it was sent, subscribes to the endpoints of
the clusters it holds (as Envoy does), holds the clusters ACK until new or
changed clusters got their endpoints (as Envoy does while they warm), ACKs
everything except "poisoned" clusters (it NACKs those, naming them, like
Envoy's CDS), and the state
machines must bring it to exactly the view, with poisoned clusters kept at
their last accepted version and no rejected version ever sent twice.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import xds_support as t
from envoy.service.discovery.v3 import discovery_pb2
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kxds.envoy.resource import CLUSTER, ENDPOINT, Resource
from kxds.xds.cache import SnapshotCache, View
from kxds.xds.delta import DeltaStream
from kxds.xds.identity import NodeIdentity
from kxds.xds.protocol import ProtocolStream, Reply
from kxds.xds.sotw import SotwStream
from kxds.xds.tracker import NodeTracker

EDGE = NodeIdentity("sim", "edge", "edge/default", None, None, "default")
POISON = 13  # a connect timeout (ms) the simulated Envoy rejects

names = st.sampled_from(["a", "b", "c", "d"])
views = st.lists(st.tuples(
    st.dictionaries(names, st.sampled_from([1000, 2000, POISON])),
    st.dictionaries(names, st.integers(1, 3))), min_size=1, max_size=6)


def _view(clusters: dict[str, int], eps: dict[str, int]) -> View:
    cache = SnapshotCache()
    items = [t.cluster(n, ms) for n, ms in clusters.items()]
    items += [t.endpoints(n, [p]) for n, p in eps.items()]
    cache.set_view("edge/default", t.resources(*items))
    cache.mark_synced()
    view = cache.view("edge/default")
    assert view is not None
    return view


class SimEnvoy:
    """Just enough of Envoy's xDS client to check convergence."""

    def __init__(self, machine: ProtocolStream, delta: bool) -> None:
        self.machine = machine
        self.delta = delta
        self.clusters: dict[str, Resource] = {}
        self.endpoints: dict[str, Resource] = {}
        self.sent_versions: set[tuple[str, str]] = set()
        self.rejected: set[tuple[str, str]] = set()
        self.eds_names: set[str] = set()
        self.versions = {CLUSTER: "", ENDPOINT: ""}
        self.nonces = {CLUSTER: "", ENDPOINT: ""}
        self.warming: set[str] = set()
        """Clusters waiting for their endpoints; Envoy holds the CDS ACK meanwhile."""
        self.held_ack: Callable[[], None] | None = None
        """The last nonce received per type: Envoy puts it on every later request."""

    def request(self, type_url: str, **fields: Any) -> None:
        cls = discovery_pb2.DeltaDiscoveryRequest if self.delta else discovery_pb2.DiscoveryRequest
        error = fields.pop("error", None)
        req = cls(type_url=type_url, **fields)
        if error:
            req.error_detail.message = error
        assert self.machine.on_request(req) is None

    def start(self) -> None:
        self.request(CLUSTER)

    def take(self, reply: Reply) -> None:
        self.nonces[reply.type_url] = reply.nonce
        table = self.clusters if reply.type_url == CLUSTER else self.endpoints
        bad = [r for r in reply.resources
               if reply.type_url == CLUSTER and t.cluster(r.name, POISON).version == r.version]
        for res in reply.resources:
            key = (res.name, res.version)
            assert key not in self.rejected, f"rejected version resent: {key}"
        if reply.type_url == CLUSTER:
            self.warming |= {r.name for r in reply.resources if r not in bad
                             and (r.name not in table or table[r.name].version != r.version)}
        else:
            self.warming -= {r.name for r in reply.resources}
        if reply.type_url == CLUSTER and not self.delta:
            kept = {r.name: table[r.name] for r in bad if r.name in table}
            table.clear()
            table.update(kept)
        for res in reply.resources:
            if res not in bad:
                table[res.name] = res
        for name in reply.removed:
            table.pop(name, None)
        self.rejected |= {(r.name, r.version) for r in bad}
        error = ("Error adding/updating cluster(s) " + ", ".join(r.name for r in bad) + ": no"
                 if bad else None)
        self.warming &= set(table) if reply.type_url == CLUSTER else self.warming
        ack = functools.partial(self._ack, reply, error, not bad)
        if reply.type_url == CLUSTER and self.warming:
            self.held_ack = ack
        else:
            ack()
        self.resubscribe()
        if not self.warming and self.held_ack is not None:
            held, self.held_ack = self.held_ack, None
            held()

    def _ack(self, reply: Reply, error: str | None, accepted: bool) -> None:
        if self.delta:
            self.request(reply.type_url, response_nonce=reply.nonce, error=error)
            return
        if accepted:
            self.versions[reply.type_url] = reply.version
        names = sorted(self.eds_names) if reply.type_url == ENDPOINT else []
        self.request(reply.type_url, response_nonce=reply.nonce, resource_names=names,
                     version_info=self.versions[reply.type_url], error=error)

    def resubscribe(self) -> None:
        wanted = set(self.clusters)
        if wanted == self.eds_names:
            return
        for gone in self.eds_names - wanted:
            self.endpoints.pop(gone, None)
        if self.delta:
            self.request(ENDPOINT, resource_names_subscribe=sorted(wanted - self.eds_names),
                         resource_names_unsubscribe=sorted(self.eds_names - wanted),
                         response_nonce=self.nonces[ENDPOINT])
        else:
            self.request(ENDPOINT, resource_names=sorted(wanted),
                         version_info=self.versions[ENDPOINT],
                         response_nonce=self.nonces[ENDPOINT])
        self.eds_names = wanted

    def settle(self, view: View) -> None:
        for _ in range(50):
            replies = self.machine.next_replies(view)
            if not replies:
                assert self.held_ack is None, f"deadlock: clusters {self.warming} never warm"
                return
            for reply in replies:
                self.take(reply)
        raise AssertionError("did not settle")


def _check(sim: SimEnvoy, clusters: dict[str, int], eps: dict[str, int]) -> None:
    for name, ms in clusters.items():
        if ms != POISON:
            assert sim.clusters[name].version == t.cluster(name, ms).version
        else:
            assert name not in sim.clusters or sim.clusters[name].version != \
                t.cluster(name, POISON).version
    assert set(sim.clusters) <= set(clusters)
    for name in sim.clusters:
        if name in eps:
            assert sim.endpoints[name].version == t.endpoints(name, [eps[name]]).version


REMOVED_THEN_REJECTED = [({"a": 1000}, {}), ({"b": POISON}, {}), ({"a": POISON}, {}),
                         ({"a": 1000}, {})]
"""A cluster removed by a NACKed reply, then rejected, then fixed: it must come back."""


def _run(delta: bool, sequence: list[tuple[dict[str, int], dict[str, int]]]) -> None:
    cls = DeltaStream if delta else SotwStream
    sim = SimEnvoy(cls(EDGE, NodeTracker()), delta)
    sim.start()
    for clusters, eps in sequence:
        eps = {**{name: 1 for name in clusters}, **eps}  # every cluster can warm
        sim.settle(_view(clusters, eps))
        _check(sim, clusters, eps)


@settings(max_examples=60, deadline=None)
@given(views)
@example(REMOVED_THEN_REJECTED)
def test_sotw_converges_and_never_resends_a_rejected_version(
        sequence: list[tuple[dict[str, int], dict[str, int]]]) -> None:
    _run(False, sequence)


@settings(max_examples=60, deadline=None)
@given(views)
@example(REMOVED_THEN_REJECTED)
def test_delta_converges_and_never_resends_a_rejected_version(
        sequence: list[tuple[dict[str, int], dict[str, int]]]) -> None:
    _run(True, sequence)
