"""The consistency check given the last checked IR: it skips only what that IR shares
and still exists, so whatever a change breaks is found as by a full check."""

from __future__ import annotations

import dataclasses

from kxds import ir
from kxds.diagnostics import ObjectRef

REF = ObjectRef("Ingress", "a", "i")


def _cluster(name: str) -> ir.Cluster:
    return ir.Cluster(name=name, ref=REF)


def _assignment(name: str) -> ir.LoadAssignment:
    return ir.LoadAssignment(cluster=name, ref=REF, endpoints=())


def _host(name: str, cluster: str) -> ir.VirtualHost:
    route = ir.Route(name=f"{name}/r", ref=REF,
                     match=ir.PathMatch(kind=ir.MatchKind.PREFIX, path="/"),
                     action=ir.Forward(backends=(ir.WeightedBackend(cluster=cluster),)))
    return ir.VirtualHost(name=name, domains=(name,), routes=(route,))


def _model(clusters: tuple[str, ...], hosts: tuple[ir.VirtualHost, ...],
           table: str = "http/80") -> ir.IR:
    return ir.IR(clusters=tuple(_cluster(c) for c in clusters),
                 load_assignments=tuple(_assignment(c) for c in clusters),
                 listeners=(ir.HttpListener(name="http/80", address="0.0.0.0", port=80,
                                            route_table=table),),
                 route_tables=(ir.RouteTable(name="http/80", virtual_hosts=hosts),))


def test_what_a_change_breaks_is_found_with_or_without_the_checked_ir() -> None:
    a, b = _host("a", "c1"), _host("b", "c2")
    checked = _model(("c1", "c2"), (a, b))
    assert ir.consistency_problems(checked) == []
    # A new virtual host beside the same (very) clusters, naming one that is missing.
    added = dataclasses.replace(checked, route_tables=(ir.RouteTable(
        name="http/80", virtual_hosts=(a, b, _host("c", "c3"))),))
    want = ["route table http/80 names missing cluster c3"]
    assert ir.consistency_problems(added) == want
    assert ir.consistency_problems(added, checked) == want
    # The clusters changed: an unchanged virtual host now names a missing one.
    fewer = dataclasses.replace(checked, clusters=(_cluster("c1"),),
                                load_assignments=(_assignment("c1"),))
    want = ["route table http/80 names missing cluster c2"]
    assert ir.consistency_problems(fewer) == want
    assert ir.consistency_problems(fewer, checked) == want
    # The (very same) listener's route table is gone.
    gone = dataclasses.replace(checked, route_tables=(ir.RouteTable(
        name="other", virtual_hosts=(a, b)),))
    want = ["listener http/80 names missing route table http/80"]
    assert ir.consistency_problems(gone) == want
    assert ir.consistency_problems(gone, checked) == want
    # A cluster without its load assignment, the clusters the very same tuple.
    lost = dataclasses.replace(checked, load_assignments=(_assignment("c1"),))
    want = ["cluster c2 has no load assignment"]
    assert ir.consistency_problems(lost) == want
    assert ir.consistency_problems(lost, checked) == want


def test_names_are_found_whatever_the_order_of_the_clusters() -> None:
    """Names are looked up by bisection in the clusters (the IR keeps them sorted); out of
    order, a name bisection misses is still found, and a missing one still reported."""
    hosts = (_host("a", "c1"), _host("b", "c3"), _host("c", "c9"))
    for order in (("c1", "c2", "c3"), ("c3", "c2", "c1"), ("c2", "c3", "c1")):
        model = _model(order, hosts)
        assert ir.consistency_problems(model) == [
            "route table http/80 names missing cluster c9"]
