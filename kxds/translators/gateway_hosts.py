"""Gateway API front-end, part three: the Routes' outcomes merged per listener and host (pure).

Every Route's outcome (:mod:`kxds.translators.gateway_routes`) names the
(Gateway, listener, host) its routes serve. Here they become route tables:

* Listener isolation: a request belongs to the listener whose hostname matches it
  most specifically, and only that listener's Routes may serve it.
* Within one listener, a host also gets the routes of the wider hosts
  (wildcards, then every host) that cover it, after its own.
* HTTPS listeners each get a table of their own; HTTP listeners on a port of
  their own get a table per port; the rest share the edge HTTP listener's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kxds.diagnostics import Diagnostic
from kxds.ir import Route
from kxds.kube.models import Key
from kxds.translators.gateway_routes import Rank, RouteOutcome, Target
from kxds.translators.gateway_status import RouteStatus


@dataclass(frozen=True, slots=True, eq=False)
class GatewayRoutes:
    """The routes of every HTTPRoute of ours, per host (``""``: every host), in Envoy order."""

    by_host: Mapping[str, tuple[Route, ...]]
    backends: frozenset[Target]
    diagnostics: tuple[Diagnostic, ...]
    attached: Mapping[tuple[Key, str], int]
    statuses: tuple[RouteStatus, ...]
    https: Mapping[tuple[Key, str], Mapping[str, tuple[Route, ...]]] = field(
        default_factory=dict)
    """The routes of each HTTPS listener (Gateway, listener name), per host as in
    ``by_host``: each is its own route table, not merged with the others."""
    by_port: Mapping[int, Mapping[str, tuple[Route, ...]]] = field(default_factory=dict)
    """The routes of the HTTP listeners on a port of their own (not the edge's), per
    port, per host as in ``by_host``: each port is its own Envoy listener and table."""


def _isolated(listeners: Mapping[tuple[Key, str], dict[str, list[tuple[Rank, Route]]]],
              hostnames: Mapping[tuple[Key, str], str | None] | None
              ) -> dict[str, tuple[Route, ...]]:
    """The routes per host of the HTTP listeners sharing one Envoy listener.

    A request belongs to the listener whose hostname (``hostnames``) matches it most
    specifically, and only that listener's Routes may serve it (the spec's listener
    isolation): a host is served with the routes of its owner only, and a listener
    hostname no Route serves is an empty host (404) rather than falling to a wider
    listener's routes."""
    hosts: dict[str, list[Route]] = {}
    owners = {h or "" for h in (hostnames or {}).values()}
    for k, per_host in listeners.items():
        for host, served in _covered(per_host).items():
            if hostnames is not None and _owner(host, owners) != (hostnames.get(k) or ""):
                continue  # a more specific listener owns these requests
            have = hosts.setdefault(host, [])
            names_in = {r.name for r in have}
            have += [r for r in served if r.name not in names_in]
    for host in owners - {""}:
        hosts.setdefault(host, [])
    return {h: tuple(rs) for h, rs in sorted(hosts.items())}


def _covered(per_host: Mapping[str, list[tuple[Rank, Route]]]) -> dict[str, list[Route]]:
    """One listener's routes per host, each host also given the routes of the wider
    hosts (wildcards, then every host) that cover it, after its own: Envoy serves a
    request from its most specific virtual host only, and the spec gives the rules
    of the Route with the more specific matching hostname precedence. Only within
    one listener: a request belongs to one listener (listener isolation)."""
    out: dict[str, list[Route]] = {}
    for host in per_host:
        wider = sorted((w for w in per_host if w != host and _covers(w, host)),
                       key=lambda w: (w == "", -len(w)))
        out[host] = [r for h in (host, *wider) for _, r in sorted(per_host[h],
                                                                  key=lambda kr: kr[0])]
    return out


def _covers(wide: str, host: str) -> bool:
    """Whether every name ``host`` stands for is also one of ``wide``'s."""
    return wide == "" or (wide.startswith("*.") and host.endswith(wide[1:]))


def _specificity(listener_host: str) -> tuple[int, int]:
    """A listener hostname's rank: an exact name, then the longest wildcard, then none."""
    kind = 0 if listener_host == "" else 1 if listener_host.startswith("*.") else 2
    return (kind, len(listener_host))


def _owner(host: str, listener_hosts: Iterable[str]) -> str | None:
    """The hostname of the listener the requests for ``host`` belong to: the most
    specific listener hostname that covers every name of ``host``."""
    covering = [h for h in listener_hosts if h == host or _covers(h, host)]
    return max(covering, key=_specificity, default=None)


def collect(outcomes: Iterable[RouteOutcome],
            https: frozenset[tuple[Key, str]] = frozenset(),
            hostnames: Mapping[tuple[Key, str], str | None] | None = None,
            own_ports: Mapping[tuple[Key, str], int] | None = None) -> GatewayRoutes:
    """Merge the Routes' outcomes (each already in age order) into hosts; the routes
    of the ``https`` listeners go to their own tables, those of the HTTP listeners
    on ``own_ports`` (beside the edge's own ports) to a table per port.

    ``hostnames``: the hostname of each accepted HTTP listener (see :func:`_isolated`)."""
    listeners: dict[tuple[Key, str], dict[str, list[tuple[Rank, Route]]]] = {}
    backends: set[Target] = set()
    diags: list[Diagnostic] = []
    attached: dict[tuple[Key, str], int] = {}
    statuses: list[RouteStatus] = []
    for o in outcomes:
        for (gw, lis, host), routes in o.hosts.items():
            listeners.setdefault((gw, lis), {}).setdefault(host, []).extend(routes)
        backends |= o.backends
        diags += o.diagnostics
        for k, n in o.attached.items():
            attached[k] = attached.get(k, 0) + n
        if o.status is not None and (o.status.parents or o.stale):
            statuses.append(o.status)
    secure = {k: {h: tuple(rs) for h, rs in sorted(_covered(per_host).items())}
              for k, per_host in sorted(listeners.items()) if k in https}
    ports = own_ports or {}  # absent: the edge HTTP listener (port 0 here)
    tables: dict[int, dict[str, tuple[Route, ...]]] = {}
    for port in {0, *ports.values()}:
        plain = {k: v for k, v in listeners.items()
                 if k not in https and ports.get(k, 0) == port}
        names_of = {k: h for k, h in (hostnames or {}).items()
                    if k not in https and ports.get(k, 0) == port}
        tables[port] = _isolated(plain, names_of if hostnames is not None else None)
    return GatewayRoutes(
        by_host=tables.pop(0), by_port={p: tables[p] for p in sorted(tables)},
        backends=frozenset(backends), diagnostics=tuple(diags), attached=attached,
        statuses=tuple(sorted(statuses, key=lambda s: s.ref)), https=secure)
