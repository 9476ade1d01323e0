"""Status entries kxds takes back: Routes that leave kxds's Gateways, and Gateways
whose GatewayClass stops being kxds's.

Each entry of a Route's ``status.parents`` belongs to the controller named in it.
When no parent of a Route is kxds's any more, kxds removes its own entries and
leaves the others'; a Gateway whose class goes to another controller is no longer
written (its conditions are the new controller's to set), and the Routes' entries
kxds wrote for it are taken back. Tested as in test_gateway_conformance.py: the
objects live in the fake API server, kxds watches them, translates, and the status
writer writes, one step at a time.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from test_gateway_conformance import CLASS, GROUP, HTTP, Leader, gateway, leader, route

from kxds.kube.models import ClusterState
from kxds.translators.edge import translate
from kxds.translators.gateway import our_gateways
from kxds.translators.gateway_status import CONTROLLER_NAME

__all__ = ["leader"]  # the fixture, used by name

Obj = dict[str, Any]
V1ALPHA2 = f"{GROUP}/v1alpha2"
THEIR_CLASS: Obj = {**CLASS, "metadata": {"name": "other"},
                    "spec": {"controllerName": "example.com/other"}}
LISTENERS = {"TLSRoute": {"name": "l", "port": 443, "protocol": "TLS",
                          "tls": {"mode": "Passthrough"}},
             "TCPRoute": {"name": "l", "port": 5432, "protocol": "TCP"},
             "UDPRoute": {"name": "l", "port": 5353, "protocol": "UDP"}}


def l4_route(kind: str, name: str, *parents: Obj) -> Obj:
    spec: Obj = {"parentRefs": list(parents),
                 "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}
    if kind == "TLSRoute":
        spec["hostnames"] = ["db.test.com"]
    return {"apiVersion": V1ALPHA2, "kind": kind,
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def stored(leader: Leader, kind: str, name: str) -> Obj:
    version = V1ALPHA2 if kind in LISTENERS else f"{GROUP}/v1"
    obj = leader.api.get(version, kind, "" if kind == "GatewayClass" else "default", name)
    assert obj is not None
    return obj


def parents_of(leader: Leader, kind: str, name: str) -> list[tuple[str, str]]:
    """(controllerName, parent Gateway) of each entry of the Route's ``status.parents``."""
    status = stored(leader, kind, name).get("status") or {}
    return [(p["controllerName"], p["parentRef"]["name"]) for p in status.get("parents", [])]


def routes_of(state: ClusterState, kind: str) -> Any:
    return {"HTTPRoute": state.http_routes, "TLSRoute": state.tls_routes,
            "TCPRoute": state.tcp_routes, "UDPRoute": state.udp_routes}[kind]


def route_seen(kind: str, name: str, generation: int, *controllers: str
               ) -> Callable[[ClusterState], bool]:
    """The watch holds generation ``generation`` of the Route, and its status names
    ``controllers``."""
    def check(state: ClusterState) -> bool:
        r = routes_of(state, kind).get(("default", name))
        return (r is not None and r.meta.generation == generation
                and set(controllers) <= set(r.status_controllers))
    return check


def their_entry(parent: str) -> Obj:
    return {"parentRef": {"group": GROUP, "kind": "Gateway", "name": parent},
            "controllerName": "example.com/other",
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                            "message": "", "observedGeneration": 2,
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}


def written_nothing_more(leader: Leader) -> None:
    assert leader.writer.reconcile(translate(leader.run.wait(
        lambda s: True)).gateway_status) == 0


@pytest.mark.parametrize("kind", ["TLSRoute", "TCPRoute", "UDPRoute"])
def test_an_l4_route_moved_to_another_controllers_gateway_loses_our_entry(
        leader: Leader, kind: str) -> None:
    theirs = {**gateway("theirs", LISTENERS[kind]),
              "spec": {"gatewayClassName": "other", "listeners": [LISTENERS[kind]]}}
    for obj in [THEIR_CLASS, theirs, gateway("gw", LISTENERS[kind]),
                l4_route(kind, "r", {"name": "gw"})]:
        leader.api.apply(obj)
    leader.write(route_seen(kind, "r", 1), f"the {kind}")
    assert parents_of(leader, kind, "r") == [(CONTROLLER_NAME, "gw")]
    leader.write(route_seen(kind, "r", 1, CONTROLLER_NAME), "our entry")
    # The Route moves to the other controller's Gateway, which writes its entry.
    moved = copy.deepcopy(stored(leader, kind, "r"))
    moved["spec"]["parentRefs"] = [{"name": "theirs"}]
    moved = leader.api.apply(moved)
    assert moved["metadata"]["generation"] == 2
    moved["status"]["parents"].append(their_entry("theirs"))
    leader.api.apply(moved)
    leader.write(route_seen(kind, "r", 2, "example.com/other"), f"the {kind} moved")
    assert parents_of(leader, kind, "r") == [("example.com/other", "theirs")]
    assert stored(leader, kind, "r")["status"]["parents"] == [their_entry("theirs")]
    written_nothing_more(leader)


def _ours_then_moved(leader: Leader, change: Callable[[], None]) -> tuple[Obj, Obj]:
    """Routes of every kind on Gateway ``gw`` (and an HTTPRoute on ``gw`` and ``stays``),
    status written; then ``change`` makes ``gw`` another controller's, which writes
    the Gateway's conditions. Returns the Gateway's status before and after."""
    tls = {**LISTENERS["TLSRoute"], "name": "tls"}
    for obj in [THEIR_CLASS, gateway("gw", HTTP, tls), gateway("stays", HTTP),
                route("web", {"name": "gw"}), route("both", {"name": "gw"}, {"name": "stays"}),
                l4_route("TLSRoute", "db", {"name": "gw"})]:
        leader.api.apply(obj)
    leader.write(lambda s: route_seen("TLSRoute", "db", 1)(s) and len(s.http_routes) == 2,
                 "the Routes")
    assert parents_of(leader, "HTTPRoute", "both") == [
        (CONTROLLER_NAME, "gw"), (CONTROLLER_NAME, "stays")]
    assert parents_of(leader, "TLSRoute", "db") == [(CONTROLLER_NAME, "gw")]
    before = stored(leader, "Gateway", "gw")["status"]
    change()
    # The new controller writes the Gateway's conditions as it sees them.
    gw = stored(leader, "Gateway", "gw")
    gw["status"] = {**gw["status"], "conditions": [
        {**c, "reason": "TheirsNow", "message": "example.com/other serves it"}
        for c in gw["status"]["conditions"]]}
    after = leader.api.apply(gw)["status"]
    leader.write(lambda s: {g.meta.name for g in our_gateways(s)} == {"stays"}
                 and all(CONTROLLER_NAME in r.status_controllers
                         for kind in ("HTTPRoute", "TLSRoute")
                         for r in routes_of(s, kind).values()),
                 "the Gateway gone to another controller")
    return before, after


def _reclassed(leader: Leader) -> None:
    """The Gateway names the other controller's class."""
    gw = stored(leader, "Gateway", "gw")
    gw["spec"]["gatewayClassName"] = "other"
    leader.api.apply(gw)


def _class_deleted(leader: Leader) -> None:
    """Its class is deleted (and "stays" moves to another class of ours)."""
    leader.api.apply({**CLASS, "metadata": {"name": "kxds-next"}})
    stays = stored(leader, "Gateway", "stays")
    stays["spec"]["gatewayClassName"] = "kxds-next"
    leader.api.apply(stays)
    leader.api.delete(f"{GROUP}/v1", "GatewayClass", "", "kxds")


@pytest.mark.parametrize("change", [_reclassed, _class_deleted], ids=["reclassed", "deleted"])
def test_a_gateway_whose_class_stops_being_ours_is_left_alone(
        leader: Leader, change: Callable[[Leader], None]) -> None:
    before, after = _ours_then_moved(leader, lambda: change(leader))
    assert after["conditions"] != before["conditions"]
    # kxds writes the Gateway no more: the new controller's conditions stay.
    assert stored(leader, "Gateway", "gw")["status"] == after
    # The Routes' entries for it are taken back; the entry for a Gateway still ours stays.
    assert parents_of(leader, "HTTPRoute", "web") == []
    assert parents_of(leader, "TLSRoute", "db") == []
    assert parents_of(leader, "HTTPRoute", "both") == [(CONTROLLER_NAME, "stays")]
    written_nothing_more(leader)
    assert stored(leader, "Gateway", "gw")["status"] == after
