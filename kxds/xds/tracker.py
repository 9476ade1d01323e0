"""What each connected Envoy was sent, ACKed and NACKed, per type and resource.

This is the bookkeeping behind ``/debug/config_dump?node=ID`` and
``/debug/nodes``. It costs nothing per push: a record points at the live
per-type state of the node's latest stream (what was sent, what was ACKed)
and keeps only the NACKs itself; the per-resource view is computed when
someone asks. Memory is bounded: the last NACKs per node, the last NACK of a
capped number of resources per node, and a capped number of disconnected nodes.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kxds.envoy.resource import SHORT_NAMES, TYPE_ORDER, Resource
from kxds.xds.identity import NodeIdentity
from kxds.xds.retry import Retry

MAX_NACKS_PER_NODE = 32
"""Recent NACKs kept per node (the ``recent_nacks`` of the config dump)."""
MAX_NACKED_RESOURCES = 256
"""Per node, how many resources keep their last NACK (the oldest is forgotten)."""
MAX_DISCONNECTED = 256


class TypeStateView(Protocol):
    """The part of a stream's per-type state the tracker reads."""

    held: dict[str, str]
    objs: dict[str, Resource]
    acked: dict[str, Resource]
    version_held: str
    acked_version: str
    retries: dict[str, Retry]

    @property
    def pending_version(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class NackRecord:
    """One rejected version of one resource, with Envoy's words and its sources."""

    type_url: str
    name: str
    version: str
    error: str
    refs: tuple[str, ...]
    kept_version: str | None
    """The version Envoy kept serving (its last ACKed one), if any."""
    at: float

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"type": SHORT_NAMES.get(self.type_url, self.type_url), "name": self.name,
                "version": self.version, "error": self.error, "refs": list(self.refs),
                "kept_version": self.kept_version, "at": self.at}


@dataclass(slots=True)
class ResourceRecord:
    """The state of one resource at one node (computed on demand)."""

    sent_version: str | None = None
    acked_version: str | None = None
    refs: tuple[str, ...] = ()
    nacked: NackRecord | None = None
    retry: Retry | None = None
    """A rejected version waiting to be offered again (the error may pass)."""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {"sent_version": self.sent_version,
                               "acked_version": self.acked_version, "refs": list(self.refs)}
        if self.nacked is not None:
            out["nacked"] = self.nacked.to_json()
        if self.retry is not None:
            out["retry"] = self.retry.to_json()
        return out


def _refs(resource: Resource | None) -> tuple[str, ...]:
    return tuple(str(ref) for ref in resource.refs) if resource is not None else ()


class ResourceTable(Mapping[str, ResourceRecord]):
    """The :class:`ResourceRecord` of each resource of one type at one node (read lazily)."""

    __slots__ = ("_node", "_state", "_type_url")

    def __init__(self, node: NodeRecord, type_url: str, state: TypeStateView) -> None:
        self._node = node
        self._type_url = type_url
        self._state = state

    def __getitem__(self, name: str) -> ResourceRecord:
        st = self._state
        acked = st.acked.get(name)
        sent = st.held.get(name)
        retry = st.retries.get(name)
        if acked is None and sent is None and retry is None:
            raise KeyError(name)
        nack = self._node.nacked.get((self._type_url, name))
        acked_version = acked.version if acked is not None else None
        if nack is not None and acked_version not in (None, nack.kept_version):
            nack = None  # a newer version (or, retried, the rejected one) was accepted since
        refs = _refs(st.objs.get(name) or acked) or (nack.refs if nack is not None else ())
        return ResourceRecord(sent, acked_version, refs, nack, retry)

    def _names(self) -> set[str]:
        st = self._state
        return st.held.keys() | st.acked.keys() | st.retries.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._names()))

    def __len__(self) -> int:
        return len(self._names())


@dataclass(slots=True)
class NodeRecord:
    """Everything known about one Envoy node."""

    identity: NodeIdentity
    protocol: str
    streams: int = 0
    connected_at: float = field(default_factory=time.time)
    states: Mapping[str, TypeStateView] = field(default_factory=dict)
    """The per-type state of the node's latest stream."""
    nacked: dict[tuple[str, str], NackRecord] = field(default_factory=dict)
    nacks: deque[NackRecord] = field(default_factory=lambda: deque(maxlen=MAX_NACKS_PER_NODE))

    @property
    def types(self) -> dict[str, Mapping[str, ResourceRecord]]:
        """Per type, per resource: sent and ACKed versions, sources, NACK.

        Each record is computed when it is read, so asking about one resource
        costs one lookup however many the node holds.
        """
        return {t: ResourceTable(self, t, st) for t, st in self.states.items()
                if st.held or st.acked or st.retries}

    @property
    def versions(self) -> dict[str, dict[str, str]]:
        """Per type: the last sent and ACKed type version (SotW) / system version (delta)."""
        out = {}
        for type_url, st in self.states.items():
            sent = st.pending_version or st.version_held
            entry = {k: v for k, v in (("sent_version", sent),
                                       ("acked_version", st.acked_version)) if v}
            if entry:
                out[type_url] = entry
        return out

    def summary(self) -> dict[str, Any]:
        """One line of ``/debug/nodes``."""
        ident = self.identity
        return {"node": ident.node_id, "role": ident.role, "group": ident.group,
                "node_name": ident.node_name, "zone": ident.zone, "cluster": ident.cluster,
                "protocol": self.protocol, "connected": self.streams > 0,
                "connected_at": self.connected_at,
                "resources": {SHORT_NAMES.get(t, t): len(st.held)
                              for t, st in self.states.items() if st.held},
                "nacks": len(self.nacks)}

    def dump(self) -> dict[str, Any]:
        """The ``/debug/config_dump`` document of this node."""
        types, versions = self.types, self.versions
        by_type: dict[str, Any] = {}
        for type_url in (*TYPE_ORDER, *sorted(set(types) - set(TYPE_ORDER))):
            if type_url not in types and type_url not in versions:
                continue
            by_type[SHORT_NAMES.get(type_url, type_url)] = {
                "type_url": type_url, **versions.get(type_url, {}),
                "resources": {name: rec.to_json()
                              for name, rec in types.get(type_url, {}).items()},
            }
        return {**self.summary(), "types": by_type,
                "recent_nacks": [n.to_json() for n in self.nacks]}


class NodeTracker:
    """Records per node id (a reconnect continues the record)."""

    def __init__(self) -> None:
        self._nodes: OrderedDict[str, NodeRecord] = OrderedDict()
        self._gone: OrderedDict[str, None] = OrderedDict()
        """Ids of the nodes without a connected stream, the longest gone first (so a
        disconnect costs the same however many nodes there are)."""

    def connect(self, identity: NodeIdentity, protocol: str,
                states: Mapping[str, TypeStateView]) -> NodeRecord:
        """A stream of this node started; its state is what the record shows from now."""
        rec = self._nodes.get(identity.node_id)
        if rec is None or rec.identity != identity or rec.protocol != protocol:
            rec = NodeRecord(identity, protocol, streams=rec.streams if rec is not None else 0)
            self._nodes[identity.node_id] = rec
        self._nodes.move_to_end(identity.node_id)
        self._gone.pop(identity.node_id, None)
        rec.streams += 1
        # Per-type (non-aggregated) streams each bring one type: keep the others.
        rec.states = {**rec.states, **states}
        return rec

    def disconnect(self, identity: NodeIdentity) -> None:
        """A stream of this node ended."""
        rec = self._nodes.get(identity.node_id)
        if rec is not None:
            rec.streams = max(0, rec.streams - 1)
            if rec.streams == 0:
                self._gone[identity.node_id] = None
                self._gone.move_to_end(identity.node_id)
        while len(self._gone) > MAX_DISCONNECTED:
            node_id, _ = self._gone.popitem(last=False)
            self._nodes.pop(node_id, None)

    def get(self, node_id: str) -> NodeRecord | None:
        """The record of one node."""
        return self._nodes.get(node_id)

    def all(self) -> list[NodeRecord]:
        """All records, oldest first."""
        return list(self._nodes.values())

    @staticmethod
    def nacked(rec: NodeRecord, type_url: str, resources: Iterable[Resource], error: str,
               kept: Mapping[str, Resource]) -> list[NackRecord]:
        """Envoy rejected these resources (in these versions) with ``error``."""
        out = []
        now = time.time()
        for res in resources:
            previous = kept.get(res.name)
            nack = NackRecord(type_url, res.name, res.version, error, _refs(res),
                              previous.version if previous is not None else None, now)
            rec.nacked.pop((type_url, res.name), None)  # re-inserted as the newest
            rec.nacked[(type_url, res.name)] = nack
            rec.nacks.append(nack)
            out.append(nack)
        while len(rec.nacked) > MAX_NACKED_RESOURCES:
            del rec.nacked[next(iter(rec.nacked))]
        return out
