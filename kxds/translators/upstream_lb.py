"""How a route picks its backend's endpoint: hashing, the balancing policy, the connect
timeout (``upstream-hash-by``, ``load-balance``, ``proxy-connect-timeout``).

:func:`with_upstream` reads the annotations into the route's
:class:`~kxds.ir.Forward` (its ``hash_on`` and ``cluster_options``).
The balancing policy and the connect timeout are cluster settings, and a
Service port's cluster is shared by every route to it; so
:func:`apply_cluster_options` points a route that asks for other settings at a
twin of each of its clusters, ``<cluster>/lb=<policy>[/connect=<ms>ms]``, with the
same endpoints (as TLS twins are made, :mod:`kxds.translators.upstream_tls`).
One Ingress's choice never changes another's, and equal settings share a twin.

ingress-nginx semantics
(https://kubernetes.github.io/ingress-nginx/user-guide/nginx-configuration/annotations/#custom-nginx-upstream-hashing):

* ``upstream-hash-by`` is an nginx string of variables; each variable becomes
  one Envoy ``hash_policy`` entry (their hashes are combined, as the string's
  parts are): ``$remote_addr`` (the client address as the listener derives it),
  ``$request_uri`` (path and query), ``$host``/``$http_host``, ``$http_<name>``
  (a header, ``_`` read as ``-``), ``$cookie_<name>``, ``$arg_<name>`` (a query
  parameter). Text between variables changes no choice and is ignored; any
  other variable is reported and the annotation not applied. The cluster uses
  consistent hashing on a ring (``RING_HASH``), as nginx's ``hash ... consistent``.
* ``load-balance``: ``round_robin`` (the default) or ``ewma``, for which Envoy's
  closest policy is ``LEAST_REQUEST``. ``upstream-hash-by`` wins when both are set.
* ``proxy-connect-timeout``: the cluster's ``connect_timeout`` (default 5 s, as nginx).
"""

from __future__ import annotations

import dataclasses
import re

from kxds import ir, names
from kxds.diagnostics import Diagnostic, show
from kxds.translators import annotations as ann
from kxds.translators.annotations import registry as r

DEFAULT_CONNECT_TIMEOUT_MS = 5000
"""Envoy's and nginx's default connect timeout."""

_VARIABLE = re.compile(r"\$(?:\{([a-z0-9_]+)\}|([a-z0-9_]+))")
_NAME = re.compile(r"^[a-z0-9_-]+$")


def hash_inputs(text: str) -> tuple[ir.HashOn, ...] | str:
    """The hash inputs of an ``upstream-hash-by`` value, or why it cannot be used."""
    found: list[ir.HashOn] = []
    for m in _VARIABLE.finditer(text.lower()):
        var = m.group(1) or m.group(2)
        hash_on = _variable(var)
        if hash_on is None:
            return f"${var} has no Envoy equivalent"
        if hash_on not in found:
            found.append(hash_on)
    if not found:
        return "names no variable (such as $remote_addr or $request_uri)"
    return tuple(found)


def _variable(var: str) -> ir.HashOn | None:
    if var in ("remote_addr", "binary_remote_addr"):
        return ir.HashOn(kind=ir.HashKind.CLIENT_IP)
    if var == "request_uri":
        return ir.HashOn(kind=ir.HashKind.PATH)
    if var in ("host", "http_host"):
        return ir.HashOn(kind=ir.HashKind.HEADER, name=":authority")
    for prefix, kind in (("http_", ir.HashKind.HEADER), ("cookie_", ir.HashKind.COOKIE),
                         ("arg_", ir.HashKind.QUERY_PARAMETER)):
        if var.startswith(prefix) and len(var) > len(prefix):
            name = var[len(prefix):]
            if kind is ir.HashKind.HEADER:
                name = name.replace("_", "-")
            return ir.HashOn(kind=kind, name=name) if _NAME.match(name) else None
    return None


def with_upstream(forward: ir.Forward, parsed: ann.Parsed,
                  diags: list[Diagnostic]) -> ir.Forward:
    """``forward`` with the hashing, balancing policy and connect timeout ``parsed`` asks."""
    policy = ir.LbPolicy.ROUND_ROBIN
    hash_on: tuple[ir.HashOn, ...] = ()
    by = parsed.get(r.UPSTREAM_HASH_BY)
    if by is not None:
        got = hash_inputs(by)
        if isinstance(got, str):
            diags.append(parsed.problem(r.UPSTREAM_HASH_BY, f"{show(by)}: {got}; the "
                                        "annotation is not applied"))
        else:
            hash_on, policy = got, ir.LbPolicy.RING_HASH
    if not hash_on and parsed.get(r.LOAD_BALANCE) == "ewma":
        policy = ir.LbPolicy.LEAST_REQUEST
    timeout = parsed.get(r.CONNECT_TIMEOUT)
    if timeout == DEFAULT_CONNECT_TIMEOUT_MS:
        timeout = None
    if policy is ir.LbPolicy.ROUND_ROBIN and timeout is None:
        return forward
    return dataclasses.replace(forward, hash_on=hash_on, cluster_options=ir.ClusterOptions(
        lb_policy=policy, connect_timeout_ms=timeout))


def twin_name(base: str, options: ir.ClusterOptions) -> str:
    """The twin of cluster ``base`` with ``options``: ``<base>/lb=<policy>[/connect=<ms>ms]``."""
    name = f"{base}/lb={options.lb_policy.value}"
    if options.connect_timeout_ms is not None:
        name += f"/connect={options.connect_timeout_ms}ms"
    return names.cap(name)


class _Twins:
    def __init__(self, base: ir.IR) -> None:
        self.clusters = {c.name: c for c in base.clusters}
        self.assignments = {a.cluster: a for a in base.load_assignments}
        self.new_clusters: dict[str, ir.Cluster] = {}
        self.new_assignments: dict[str, ir.LoadAssignment] = {}

    def twin(self, name: str, options: ir.ClusterOptions) -> str:
        base = self.clusters.get(name)
        if base is None:
            return name  # left for the consistency check to name (a bug)
        twin = twin_name(name, options)
        if twin not in self.new_clusters:
            self.new_clusters[twin] = dataclasses.replace(
                base, name=twin, lb_policy=options.lb_policy,
                connect_timeout_ms=options.connect_timeout_ms or base.connect_timeout_ms)
            if name in self.assignments:
                self.new_assignments[twin] = dataclasses.replace(self.assignments[name],
                                                                 cluster=twin)
        return twin

    def route(self, route: ir.Route) -> ir.Route:
        action = route.action
        if not isinstance(action, ir.Forward) or action.cluster_options is None:
            return route
        options = action.cluster_options
        backends = tuple(dataclasses.replace(b, cluster=self.twin(b.cluster, options))
                         for b in action.backends)
        return dataclasses.replace(route, action=dataclasses.replace(
            action, backends=backends, cluster_options=None))


def asks_options(route: ir.Route) -> bool:
    """Whether ``route`` asks for cluster options (only such routes are looked at)."""
    return isinstance(route.action, ir.Forward) and route.action.cluster_options is not None


def apply_cluster_options(base: ir.IR) -> ir.IR:
    """Point every route with ``cluster_options`` at twin clusters that have them."""
    if not any(asks_options(rt) for t in base.route_tables for vh in t.virtual_hosts
               for rt in vh.routes):
        return base  # the common case
    twins = _Twins(base)
    tables = tuple(dataclasses.replace(t, virtual_hosts=tuple(
        dataclasses.replace(vh, routes=tuple(twins.route(rt) for rt in vh.routes))
        if any(asks_options(rt) for rt in vh.routes) else vh
        for vh in t.virtual_hosts)) for t in base.route_tables)
    clusters = {c.name: c for c in base.clusters} | twins.new_clusters
    assignments = {a.cluster: a for a in base.load_assignments} | twins.new_assignments
    return dataclasses.replace(
        base, clusters=tuple(clusters[k] for k in sorted(clusters)),
        load_assignments=tuple(assignments[k] for k in sorted(assignments)),
        route_tables=tables)
