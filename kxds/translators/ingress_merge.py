"""The routes of every Ingress of our class merged into virtual hosts, one per host.

The semantics are :mod:`kxds.translators.ingress`'s: the oldest Ingress keeps
a host and path that several name (the others get a ``Conflict``), and keeps
the default backend, which ends every virtual host.

A conflict is a matter of one host: merging is done host by host, each host
from the paths of the Ingresses that name it, in merge order. So when a few
Ingresses changed since the last merge (a path added), :func:`merge_routes`
merges again only the hosts they name, old or new, and keeps every other
host's share as it was: time in proportion to the change, not to every
Ingress. Canary Ingresses (which put their paths beside other Ingresses'
routes), mirrors, the default backend and the rules without a host (which
every wildcard host reads) are merged in full when they change, as is every
change while two Ingresses share a ref (:func:`told_apart`).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter

from kxds import names
from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.ir import Cluster, MatchKind, PathMatch, Route, RouteTable, VirtualHost
from kxds.translators.canary import apply_canaries
from kxds.translators.ingress import CATCH_ALL, Candidate, IngressRoutes, Target, precedence

_HostInputs = tuple[tuple[Route, ...], tuple[Route, ...], "Route | None", tuple[ObjectRef, ...]]
"""Everything :func:`_virtual_host` reads for one host: its routes, the routes without
a host (for a wildcard host), the default route, the refs of the Ingresses claiming it."""


@dataclass(frozen=True, slots=True)
class HostShare:
    """One host's share of the merge, a function of the paths the Ingresses name on it."""

    claimants: tuple[ObjectRef, ...]
    """Every Ingress with a path on the host (kept or not), in merge order."""
    routes: tuple[Route, ...]
    """The routes of the paths kept (before canaries)."""
    refs: frozenset[ObjectRef]
    """The Ingresses whose paths were kept."""
    diagnostics: tuple[Diagnostic, ...]
    """Conflicts, and the problems of the backends of the paths kept."""
    targets: frozenset[Target]
    """The Service clusters the paths kept forward to."""


@dataclass(frozen=True, slots=True)
class Others:
    """What a merge takes from beyond the hosts' shares."""

    diagnostics: tuple[Diagnostic, ...]
    """Of the default backend (and its conflicts) and of the canaries."""
    targets: frozenset[Target]
    """The Service clusters of the default backend and the mirrors."""
    default: Route | None
    """The default backend's route (the oldest Ingress's), which ends every virtual host."""


@dataclass(frozen=True, slots=True, eq=False)
class MergedRoutes:
    """The virtual hosts of every Ingress of our class, and the problems of merging them."""

    virtual_hosts: tuple[VirtualHost, ...]
    diagnostics: tuple[Diagnostic, ...]
    inputs: Mapping[str, tuple[_HostInputs, VirtualHost]]
    """Host -> what its virtual host was built from, and that virtual host."""
    backends: frozenset[Target]
    """Every Service cluster a route (or the default backend) forwards to: the edge
    builds these clusters and no others."""
    clusters: tuple[Cluster, ...] = ()
    """Clusters of the routes' own (DNS mirror targets), sorted by name."""
    ones: tuple[IngressRoutes, ...] = ()
    """What was merged, in merge order."""
    hosts: Mapping[str, HostShare] = field(default_factory=dict)
    """Each host's share (for a merge of what changed; empty when canaries apply)."""
    others: Others = field(default_factory=lambda: Others((), frozenset(), None))
    """What the default backend, the mirrors and the canaries add."""
    positions: Mapping[ObjectRef, int] = field(default_factory=dict)
    """Each Ingress's place in ``ones``."""


def merge_routes(ones: Iterable[IngressRoutes], previous: MergedRoutes | None = None,
                 changed: Iterable[int] | None = None) -> MergedRoutes:
    """Merge the routes of every Ingress (oldest first) into virtual hosts, sorted by name.

    ``previous``: the last merge. Hosts that no changed Ingress names keep their
    share of it, and virtual hosts built from the very same routes are reused
    (the very objects): the Envoy builders then find them unchanged by identity.
    ``changed``: when the caller knows, the places in ``ones`` that changed since
    ``previous``, whose Ingresses were the same ones in the same order (then no
    Ingress is compared with its last version).
    """
    ones = tuple(ones)
    if previous is not None and previous.hosts and told_apart(previous):
        if changed is None:
            position = {one.ref: i for i, one in enumerate(ones)}
            merged = _merge_changed(ones, previous, _changed_ones(ones, previous),
                                    position) if len(position) == len(ones) else None
        else:
            merged = _merge_changed(ones, previous, [
                one for at in changed for one in (previous.ones[at], ones[at])],
                previous.positions)
        if merged is not None:
            return merged
    return _merge_all(ones, previous)


def told_apart(merged: MergedRoutes) -> bool:
    """Whether the Ingresses of ``merged`` have a ref each: two whose names are cut to
    the same text (:class:`~kxds.diagnostics.ObjectRef`) cannot be told apart by it,
    and only a merge of every Ingress is then right."""
    return len(merged.positions) == len(merged.ones)


def _merge_all(ones: tuple[IngressRoutes, ...], previous: MergedRoutes | None) -> MergedRoutes:
    diagnostics: list[Diagnostic] = []
    other_diagnostics: list[Diagnostic] = []
    other_targets: set[Target] = set()
    canaries = []
    own_clusters: dict[str, Cluster] = {}
    default: tuple[ObjectRef, Route] | None = None
    by_host: dict[str, list[tuple[ObjectRef, Sequence[Candidate]]]] = {}
    for one in ones:
        if one.mirror is not None and one.canary is None:
            if one.mirror.target is not None:
                other_targets.add(one.mirror.target)
            if one.mirror.cluster is not None:
                own_clusters.setdefault(one.mirror.cluster.name, one.mirror.cluster)
        diagnostics += one.diagnostics
        if one.canary is not None:
            canaries.append((one.ref, *one.canary))
            continue
        for host, paths in _paths_by_host(one).items():
            by_host.setdefault(host, []).append((one.ref, paths))
        if one.default is None:
            continue
        if default is not None:
            other_diagnostics.append(Diagnostic(
                one.ref, "spec.defaultBackend", Reason.CONFLICT,
                f"the default backend is already set by {default[0]}; this one is ignored"))
            continue
        other_diagnostics += one.default.diagnostics
        if one.default.target is not None:
            other_targets.add(one.default.target)
        default = (one.ref, one.default.route)
    hosts = {host: _merge_host(host, claims) for host, claims in by_host.items()}
    routes = {host: list(share.routes) for host, share in hosts.items()}
    canary_targets: set[Target] = set()
    apply_canaries(routes, canaries, other_diagnostics, canary_targets)
    targets = frozenset().union(*(s.targets for s in hosts.values()), other_targets,
                                canary_targets)
    others = Others(tuple(other_diagnostics), frozenset(other_targets),
                    default[1] if default is not None else None)
    return _assemble(ones, {h: tuple(r) for h, r in routes.items()},
                     hosts if not canaries else {}, others, diagnostics, targets,
                     tuple(own_clusters[k] for k in sorted(own_clusters)), previous)


def _changed_ones(ones: tuple[IngressRoutes, ...],
                  previous: MergedRoutes) -> list[IngressRoutes]:
    """The Ingresses' routes of ``ones`` and of ``previous`` that the other lacks."""
    before = {one.ref: one for one in previous.ones}
    now = {one.ref: one for one in ones}
    changed = [one for ref, one in now.items() if before.get(ref) is not one]
    changed += [one for ref, one in before.items() if now.get(ref) is not one]
    return changed


def _merge_changed(ones: tuple[IngressRoutes, ...], previous: MergedRoutes,
                   changed: list[IngressRoutes],
                   position: Mapping[ObjectRef, int]) -> MergedRoutes | None:
    """The merge of ``ones`` from ``previous``, merging again only the hosts that the
    ``changed`` Ingresses' routes (old and new) name; None when that cannot be told so
    (see the module docs). ``position``: each Ingress's place in ``ones``."""
    if any(one.canary is not None or one.mirror is not None or one.default is not None
           for one in changed):
        return None
    touched = {c.host for one in changed for c in one.paths}
    if CATCH_ALL in touched:
        return None
    hosts = dict(previous.hosts)
    for host in touched:
        old = hosts.pop(host, None)
        claimants = {ref for ref in (old.claimants if old is not None else ())
                     if ref in position}
        claimants.update(one.ref for one in changed if _current(ones, position, one)
                         and any(c.host == host for c in one.paths))
        claims = [(ref, paths) for ref in sorted(claimants, key=position.__getitem__)
                  if (paths := _paths_by_host(ones[position[ref]]).get(host))]
        if claims:  # else no Ingress names the host any more
            hosts[host] = _merge_host(host, claims)
    if all(host in previous.hosts and host in hosts
           and hosts[host].targets == previous.hosts[host].targets for host in touched):
        targets = previous.backends
    else:
        targets = frozenset().union(*(s.targets for s in hosts.values()),
                                    previous.others.targets)
    quiet = not any(one.diagnostics for one in changed) and not any(
        share.diagnostics for host in touched
        for share in (previous.hosts.get(host), hosts.get(host)) if share is not None)
    # Quiet: no problem came or went, so the problems are the last merge's, in order.
    diagnostics = None if quiet else [d for one in ones for d in one.diagnostics]
    return _assemble(ones, {h: hosts[h].routes for h in (*touched, CATCH_ALL) if h in hosts},
                     hosts, previous.others, diagnostics, targets, previous.clusters,
                     previous, touched, position)


def _current(ones: tuple[IngressRoutes, ...], position: Mapping[ObjectRef, int],
             one: IngressRoutes) -> bool:
    """Whether ``one`` is the Ingress's routes in ``ones`` (not the version it replaced)."""
    at = position.get(one.ref)
    return at is not None and ones[at] is one


def _paths_by_host(one: IngressRoutes) -> dict[str, list[Candidate]]:
    out: dict[str, list[Candidate]] = {}
    for c in one.paths:
        out.setdefault(c.host, []).append(c)
    return out


def _merge_host(host: str, claims: Iterable[tuple[ObjectRef, Sequence[Candidate]]]) -> HostShare:
    """One host's share, from each claimant's paths on it in merge order: a path whose
    match an earlier one took is a conflict."""
    owners: dict[PathMatch, ObjectRef] = {}
    routes: list[Route] = []
    refs: set[ObjectRef] = set()
    diagnostics: list[Diagnostic] = []
    targets: set[Target] = set()
    claimants = []
    for ref, paths in claims:
        claimants.append(ref)
        for c in paths:
            owner = owners.get(c.match)
            if owner is not None:
                diagnostics.append(Diagnostic(
                    ref, c.field_path, Reason.CONFLICT,
                    f"host {host or '*'!r} {c.described} is already "
                    f"served by {owner}; this path is ignored"))
                continue
            diagnostics += c.diagnostics
            if c.target is not None:
                targets.add(c.target)
            owners[c.match] = ref
            routes.append(c.route)
            refs.add(ref)
    return HostShare(tuple(claimants), tuple(routes), frozenset(refs), tuple(diagnostics),
                     frozenset(targets))


def _assemble(ones: tuple[IngressRoutes, ...], routes: Mapping[str, tuple[Route, ...]],
              hosts: Mapping[str, HostShare], others: Others,
              diagnostics: list[Diagnostic] | None, targets: frozenset[Target],
              clusters: tuple[Cluster, ...], previous: MergedRoutes | None,
              touched: set[str] | None = None,
              positions: Mapping[ObjectRef, int] | None = None) -> MergedRoutes:
    """The virtual hosts of ``routes``, reusing ``previous``'s where their inputs are
    the same; only the ``touched`` hosts are looked at when given (the others are
    known unchanged, and ``routes`` need only hold the touched hosts' and the
    catch-all's). ``positions``: each Ingress's place in ``ones``, when known;
    ``diagnostics``: the Ingresses' own, None when the problems are ``previous``'s."""
    last = previous.inputs if previous is not None else {}
    built: dict[str, tuple[_HostInputs, VirtualHost]] = {}
    order: Iterable[str]
    if previous is not None and touched is not None:
        built.update(last)  # the others are known unchanged
        order = touched
    else:
        order = sorted(routes)
        if CATCH_ALL not in routes and others.default is not None:
            order = [*order, CATCH_ALL]
    for host in order:
        if host not in routes and (host != CATCH_ALL or others.default is None):
            built.pop(host, None)  # a touched host that no Ingress names any more
            continue
        old = last.get(host)
        share = hosts.get(host)
        inputs = (routes.get(host, ()),
                  routes.get(CATCH_ALL, ()) if host.startswith("*.") else (), others.default,
                  _sorted_refs(share.refs) if share is not None else ())
        if old is not None and _same_inputs(old[0], inputs):
            built[host] = old
        else:
            built[host] = (inputs, _virtual_host(host, *inputs))
    if previous is not None and built.keys() == last.keys():
        vhosts = _in_place(previous.virtual_hosts, [
            built[h][1] for h in (touched if touched is not None else built)
            if built[h] is not last[h]])
    else:
        vhosts = tuple(sorted((vh for _, vh in built.values()), key=lambda vh: vh.name))
    if diagnostics is None and previous is not None:
        problems = previous.diagnostics
    else:
        problems = tuple(itertools.chain(diagnostics or (),
                                         *(s.diagnostics for s in hosts.values()),
                                         others.diagnostics))
    return MergedRoutes(vhosts, problems, built, targets, clusters, ones, hosts, others,
                        positions if positions is not None
                        else {one.ref: i for i, one in enumerate(ones)})


def _in_place(vhosts: tuple[VirtualHost, ...], new: list[VirtualHost]
              ) -> tuple[VirtualHost, ...]:
    """``vhosts`` (sorted by name) with each of ``new`` where its namesake stood."""
    if not new:
        return vhosts
    out = list(vhosts)
    for vh in new:
        at = bisect.bisect_left(out, vh.name, key=attrgetter("name"))
        assert out[at].name == vh.name
        out[at] = vh
    return tuple(out)


def _same_inputs(a: _HostInputs, b: _HostInputs) -> bool:
    """The same routes (by identity: Route objects are reused while unchanged) and refs."""
    return (len(a[0]) == len(b[0]) and len(a[1]) == len(b[1]) and a[2] is b[2]
            and all(x is y for x, y in zip(a[0], b[0], strict=True))
            and all(x is y for x, y in zip(a[1], b[1], strict=True)) and a[3] == b[3])


def route_table(name: str, merged: MergedRoutes) -> RouteTable:
    """The route table of the HTTP listener (the same name) serving ``merged``."""
    return RouteTable(name=name, virtual_hosts=merged.virtual_hosts)


def _virtual_host(host: str, own: tuple[Route, ...], shared: tuple[Route, ...],
                  default: Route | None, refs: tuple[ObjectRef, ...]) -> VirtualHost:
    """The virtual host of ``host``: a pure function of its inputs (:data:`_HostInputs`)."""
    routes = sorted(own, key=precedence)
    if host.startswith("*."):
        # A deeper subdomain reaches this virtual host only because Envoy's
        # wildcard matches several labels; it must be served as if the wildcard
        # had not matched: by the rules without a host, then the default backend.
        # A one-label host did match the wildcard rule, and "requests are matched
        # against the host before the IngressRuleValue" (IngressRule API docs): a
        # path the wildcard rule lacks goes to the default backend, never to the
        # rules without a host, exactly as for an exact host.
        routes += [replace(r, below_wildcard_host=host)
                   for r in sorted(shared, key=precedence)]
    # A "/" that matches every request of this virtual host makes the default unreachable.
    catch_all = any(r.match.kind is MatchKind.PREFIX and r.wildcard_host is None
                    and r.below_wildcard_host is None for r in routes)
    if default is not None and not catch_all:
        routes.append(default)
    return VirtualHost(name=names.virtual_host(host), domains=(host or "*",),
                       routes=tuple(routes), refs=_sorted_refs((*refs, *(r.ref for r in routes))))


def _sorted_refs(refs: Iterable[ObjectRef]) -> tuple[ObjectRef, ...]:
    """``tuple(sorted(set(refs)))``, through plain tuple keys, which hash and compare in C."""
    unique = {(r.kind, r.namespace, r.name): r for r in refs}
    return tuple(unique[k] for k in sorted(unique))
