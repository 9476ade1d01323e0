"""The whole model of one view, and the check that it names nothing it lacks."""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Container, Sequence
from dataclasses import dataclass

from kxds.ir.clusters import Cluster, ClusterKind, LoadAssignment
from kxds.ir.listeners import (
    HttpListener,
    Listener,
    TcpListener,
    TerminatedChain,
    TlsListener,
    UdpListener,
)
from kxds.ir.routes import Forward, RouteTable
from kxds.ir.secrets import Secret


@dataclass(frozen=True, slots=True, kw_only=True)
class IR:
    """Everything one proxy (or group of identical proxies) should be told.

    Each collection becomes one xDS resource type (clusters, endpoints,
    listeners, route tables, secrets), every collection sorted by name.
    """

    clusters: tuple[Cluster, ...] = ()
    load_assignments: tuple[LoadAssignment, ...] = ()
    listeners: tuple[Listener, ...] = ()
    route_tables: tuple[RouteTable, ...] = ()
    secrets: tuple[Secret, ...] = ()


_NAME = operator.attrgetter("name")


def _route_clusters(table: RouteTable, skip: frozenset[int] = frozenset()) -> set[str]:
    """The clusters the routes of ``table`` name, but those of its virtual hosts in
    ``skip`` (by ``id``)."""
    vhosts = table.virtual_hosts
    hosts = [vh for vh in vhosts if id(vh) not in skip] if skip else vhosts
    out = {
        b.cluster
        for vh in hosts
        for r in vh.routes
        if isinstance(r.action, Forward)
        for b in r.action.backends
    } | {
        r.policy.auth.external.cluster
        for vh in hosts
        for r in vh.routes
        if r.policy is not None and r.policy.auth is not None
        and r.policy.auth.external is not None
    }
    out.update(m.cluster for vh in hosts for r in vh.routes
               if isinstance(r.action, Forward) for m in r.action.mirrors)
    return out


def consistency_problems(ir: IR, checked: IR | None = None) -> list[str]:
    """What in ``ir`` names something ``ir`` lacks; empty when it is safe to publish.

    ``checked``: an IR that passed this check (the view's last). With the very
    same clusters, the virtual hosts and listeners it holds (the very objects:
    IR nodes are immutable) are not looked at again (listeners while the route
    tables and secrets it had are there), nor are its clusters and load
    assignments when both are the very same tuples: a change of one virtual
    host is checked in time proportional to it, not to the route table.
    """
    clusters = _Names(ir.clusters)
    tables = {t.name for t in ir.route_tables}
    secrets = {s.name for s in ir.secrets}
    same_clusters = checked is not None and checked.clusters is ir.clusters
    problems: list[str] = []
    if not (same_clusters and checked is not None
            and checked.load_assignments is ir.load_assignments):
        problems += _assignment_problems(ir, clusters.all())
    seen = frozenset(map(id, itertools.chain.from_iterable(
        t.virtual_hosts for t in checked.route_tables))) \
        if same_clusters and checked is not None else frozenset()
    for t in ir.route_tables:
        problems += [f"route table {t.name} names missing cluster {c}"
                     for c in sorted(_route_clusters(t, seen)) if c not in clusters]
    # What the checked IR named is still there: its very listeners (and clusters)
    # need no look again.
    kept = same_clusters and checked is not None and tables.issuperset(
        t.name for t in checked.route_tables) and secrets.issuperset(
        s.name for s in checked.secrets)
    seen_listeners = frozenset(id(lis) for lis in checked.listeners) \
        if kept and checked is not None else frozenset()
    for lis in ir.listeners:
        if id(lis) not in seen_listeners:
            problems += _listener_problems(lis, clusters, tables, secrets)
    for c in () if kept else ir.clusters:
        v = c.upstream_tls.validation_secret if c.upstream_tls else None
        if v is not None and v not in secrets:
            problems.append(f"cluster {c.name} names missing secret {v}")
    return problems


class _Names(Container[str]):
    """The names of ``items`` (sorted by name, as the IR keeps every collection), looked
    up by bisection: a check of a few new names costs no set of every cluster's name.
    Exact whatever the order: a name not found so is looked for in the set of all
    (built at the first miss, one per :func:`consistency_problems` call, which makes
    and drops the index)."""

    def __init__(self, items: Sequence[Cluster]) -> None:
        self._items = items
        self._all: set[str] | None = None

    def all(self) -> set[str]:
        if self._all is None:
            self._all = set(map(_NAME, self._items))  # (at C speed)
        return self._all

    def __contains__(self, name: object) -> bool:
        at = bisect.bisect_left(self._items, name, key=_NAME) if isinstance(name, str) else 0
        if at < len(self._items) and self._items[at].name == name:
            return True
        return name in self.all()


def _assignment_problems(ir: IR, clusters: set[str]) -> list[str]:
    """EDS clusters without a load assignment, and load assignments without a cluster."""
    assignments = {a.cluster for a in ir.load_assignments}
    problems = [f"cluster {c.name} has no load assignment"
                for c in ir.clusters if c.kind is ClusterKind.EDS and c.name not in assignments]
    problems += [f"load assignment {a} has no cluster" for a in sorted(assignments - clusters)]
    return problems


def _listener_problems(lis: Listener, clusters: Container[str], tables: set[str],
                       secrets: set[str]) -> list[str]:
    """The route tables, clusters and secrets ``lis`` names that are missing."""
    wanted_tables, wanted_clusters, wanted_secrets = _named_by(lis)
    return [
        *(f"listener {lis.name} names missing route table {t}"
          for t in wanted_tables if t not in tables),
        *(f"listener {lis.name} names missing cluster {c}"
          for c in wanted_clusters if c not in clusters),
        *(f"listener {lis.name} names missing secret {s}"
          for s in wanted_secrets if s not in secrets),
    ]


def _named_by(lis: Listener) -> tuple[list[str], list[str], list[str]]:
    """The route tables, clusters and secrets a listener names, in that order."""
    tables: list[str] = []
    clusters: list[str] = []
    secrets: list[str] = []
    if isinstance(lis, HttpListener):
        tables.append(lis.route_table)
    elif isinstance(lis, TlsListener):
        for ch in lis.chains:
            if isinstance(ch, TerminatedChain):
                tables.append(ch.route_table)
                secrets.append(ch.secret)
                if ch.client_certificate is not None:
                    secrets.append(ch.client_certificate.validation_secret)
            else:
                clusters.append(ch.cluster)
                clusters += [w.cluster for w in ch.weighted]
    elif isinstance(lis, (TcpListener, UdpListener)):
        clusters.append(lis.cluster)
        if isinstance(lis, TcpListener):
            clusters += [w.cluster for w in lis.weighted]
        if lis.internal is not None:
            clusters.append(lis.internal.cluster)
    return tables, clusters, secrets
