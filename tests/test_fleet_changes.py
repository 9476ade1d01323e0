"""A node fleet rebuilt change after change equals one built from scratch.

The per-change memos of the node path: the join of Service shares patched
for the shares that changed (:mod:`kxds.translators.node_join`), a template's
local parts patched for the Services that changed
(:func:`~kxds.translators.node_fleet.patched_parts`), and the fleet's view of
each node, not even visited when a round leaves the node untouched
(:meth:`~kxds.fleet.FleetMemo.build_all`). After every step of a random
sequence of changes (nodePorts moved, onto another Service's too, Local
endpoints moved between nodes, a Service made Local or not, deleted and back,
its endpoints gone; and nodes joining, leaving, changing zone, or built at once
between rebuilds), each must equal what a build from nothing gives, the views
of the nodes a round did not even visit too; and a join tells overlapping
addresses (and gives them back) as translation does.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any

import pytest
from test_node_patch import _versions

from kxds.fleet import FleetMemo
from kxds.incremental import Store
from kxds.kube.models import ClusterState, Model
from kxds.kube.parse import parse_object
from kxds.translators.config import NodeInfo, TranslateConfig
from kxds.translators.node import JOINED, translate_node
from kxds.translators.node_fleet import node_class, patched_parts, template_parts
from kxds.translators.node_join import Taken
from kxds.translators.node_service import Claim, Slot
from kxds.views import Built, build_node

NODES = [NodeInfo(name=f"n{i}") for i in range(6)]
CONFIG = TranslateConfig(external_ip_cidrs=("198.51.100.0/24",))
SERVICES = 10


def _service(i: int, node_port: int, local: bool, external_ip: bool,
             port: int = 80) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "LoadBalancer" if i % 3 == 0 else "NodePort", "selector": {"app": f"s{i}"},
        "ports": [{"name": "a", "port": port, "targetPort": 8080, "nodePort": node_port},
                  {"name": "b", "port": 81, "targetPort": 8081, "nodePort": node_port + 100,
                   "protocol": "UDP"}]}
    if local:
        spec.update(externalTrafficPolicy="Local", healthCheckNodePort=32000 + i)
    if external_ip:
        spec["externalIPs"] = [f"198.51.100.{i + 1}"]
    status = {"loadBalancer": {"ingress": [{"ip": f"203.0.113.{i + 1}"}]}} if i % 3 == 0 else {}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"s{i}", "namespace": "default",
                         "creationTimestamp": f"2024-01-01T00:00:{i:02d}Z"},
            "spec": spec, "status": status}


def _slice(i: int, nodes: list[str]) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"s{i}-x", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": f"s{i}"}},
            "addressType": "IPv4",
            "ports": [{"name": "a", "port": 8080, "protocol": "TCP"},
                      {"name": "b", "port": 8081, "protocol": "UDP"}],
            "endpoints": [{"addresses": [f"10.0.{i}.{e + 1}"], "nodeName": n,
                           "conditions": {"ready": True}} for e, n in enumerate(nodes)]}


@dataclass(slots=True)
class _Spec:
    port: int
    local: bool
    external_ip: bool
    service_port: int = 80


class _Fleet:
    """The objects of the scenario, changed one at a time."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.services = {i: _Spec(30000 + i, local=i % 2 == 0, external_ip=i % 4 == 1)
                         for i in range(SERVICES)}
        self.slices = {i: [NODES[(i + e) % len(NODES)].name for e in range(2)]
                       for i in range(SERVICES)}
        self.parsed: dict[str, Model] = {}
        """Each document's model: an unchanged object is the very same model in the next
        state, as sources keep it (what the memos tell changes by)."""

    def state(self) -> ClusterState:
        docs = [*(_service(i, s.port, s.local, s.external_ip, s.service_port)
                  for i, s in self.services.items()),
                *(_slice(i, nodes) for i, nodes in self.slices.items())]
        models = []
        for doc in docs:
            model = self.parsed.get(repr(doc))
            if model is None:
                model, problem = parse_object(doc, "test")
                assert model is not None, problem
                self.parsed[repr(doc)] = model
            models.append(model)
        return ClusterState.from_objects(models)

    def change(self) -> str:
        rng, i = self.rng, self.rng.randrange(SERVICES)
        kind = rng.choice(["port"] * 4 + ["pod"] * 4 + ["local", "delete", "empty", "taken"])
        if kind == "taken":  # two Services contend, until one of them moves on
            kind = rng.choice(["port-taken", "address-taken"])
        if kind == "delete" and i in self.services:
            del self.services[i]
        elif i not in self.services:
            self.services[i] = _Spec(30000 + i, local=True, external_ip=False)
            kind = "back"
        elif kind == "port":  # (and its Service port back: no longer on another's)
            self.services[i].port = 31000 + rng.randrange(50)
            self.services[i].service_port = 80
        elif kind == "port-taken":  # another Service's nodePort: they contend
            self.services[i].port = self.services[rng.choice(list(self.services))].port
        elif kind == "address-taken":  # its external IP on another's nodePort (0.0.0.0)
            spec = self.services[i]
            spec.external_ip = True
            spec.service_port = self.services[rng.choice(list(self.services))].port
        elif kind == "local":
            self.services[i].local = not self.services[i].local
        elif kind == "empty":
            self.slices[i] = []
        else:
            self.slices[i] = rng.sample([n.name for n in NODES], rng.randrange(1, 3))
        return f"{kind} s{i}"


@pytest.mark.parametrize("seed", range(6))
def test_a_fleet_changed_step_by_step_equals_one_built_from_scratch(seed: int) -> None:
    scenario = _Fleet(random.Random(seed))
    fleet = FleetMemo()
    groups = [(f"node/{n.name}", n) for n in NODES]
    for group, node in groups:
        fleet.join(group, node)
    views: dict[str, Built] = {}
    for step in range(40):
        what = scenario.change() if step else "initial"
        state = scenario.state()
        views.update(fleet.build_all(state, CONFIG))
        fleet.sweep()
        for group, node in groups:
            want = build_node(state, CONFIG, node)
            assert _versions(views[group]) == _versions(want), f"step {step} ({what}): {group}"


@pytest.mark.parametrize("seed", range(6))
def test_nodes_joining_and_leaving_mid_sequence_keep_every_view_equal_to_scratch(
        seed: int) -> None:
    # build_all visits only the due groups: every other view is its last one. After
    # each step (a change of the objects, a node joining, leaving, or coming back in
    # another zone, a new node built at once between rebuilds as the controller does),
    # every group's latest view must equal a build from scratch, the skipped ones too.
    rng = random.Random(seed)
    scenario = _Fleet(rng)
    fleet = FleetMemo()
    pool = [*NODES, NodeInfo(name="n6"), NodeInfo(name="n7", zone="z2")]
    joined: dict[str, NodeInfo] = {}
    views: dict[str, Built] = {}
    skipped = 0
    for group, node in ((f"node/{n.name}", n) for n in NODES[:4]):
        fleet.join(group, node)
        joined[group] = node
    for step in range(60):
        what = "initial" if not step else rng.choice(["objects"] * 3 + ["join", "leave", "zone"])
        node = rng.choice(pool)
        group = f"node/{node.name}"
        if what == "join" and group not in joined:
            fleet.join(group, node)
            joined[group] = node
            if rng.random() < 0.5:  # built at once, from the state of the last rebuild
                views[group] = fleet.build(scenario.state(), CONFIG, group, node)
        elif what == "leave" and group in joined and len(joined) > 1:
            fleet.forget(group)
            del joined[group], views[group]
        elif what == "zone" and group in joined:
            zone = None if joined[group].zone else "z2"
            joined[group] = NodeInfo(name=node.name, zone=zone)
            fleet.join(group, joined[group])
        elif step:
            what = scenario.change()
        state = scenario.state()
        got = fleet.build_all(state, CONFIG)
        fleet.sweep()
        assert got.keys() <= joined.keys()
        skipped += len(joined) - len(got)
        views.update(got)
        assert views.keys() == joined.keys(), f"step {step} ({what})"
        for group, node in joined.items():
            want = build_node(state, CONFIG, node)
            assert _versions(views[group]) == _versions(want), f"step {step} ({what}): {group}"
    assert skipped, "no group was skipped: the test does not test the skip path"


@pytest.mark.parametrize("seed", range(6))
def test_patched_joins_and_template_parts_equal_those_from_scratch(seed: int) -> None:
    scenario = _Fleet(random.Random(seed))
    template, store = node_class(NODES[0]), Store()
    last = None
    patches = contended = parts_patched = 0
    for step in range(40):
        what = scenario.change() if step else "initial"
        state = scenario.state()
        updates = store.updates
        got = translate_node(state, CONFIG, template, store)
        want = translate_node(state, CONFIG, template)
        assert got == want, f"step {step} ({what})"
        patches += store.updates > updates
        ctx = store.begin(state, CONFIG)  # the same state again: nothing runs
        contended += ctx.query(JOINED, template) is None
        store.end()
        parts = template_parts(got, state)
        if last is not None:
            before, last_parts, last_state = last
            changed = frozenset(k for k in state.services.keys() | last_state.services.keys()
                                if state.services.get(k) is not last_state.services.get(k)
                                or state.slices_by_service.get(k)
                                != last_state.slices_by_service.get(k))
            patched = patched_parts(last_parts, before.ir, got.ir, state, changed)
            if patched is not None:
                assert patched[0] == parts, f"step {step} ({what})"
                parts_patched += 1
        last = (got, parts, state)
    assert patches, "no join was patched: the test does not test the patch"
    assert parts_patched, "no template parts were patched"
    assert contended, "no two Services contended: the test does not test the fallback"


ADDRESSES = ["0.0.0.0", "10.0.0.1", "10.0.0.2", "::", "fd00::1"]


@pytest.mark.parametrize("order", list(itertools.permutations(ADDRESSES, 3)))
def test_a_join_tells_overlapping_addresses_as_translation_does(order: tuple[str, ...]) -> None:
    # Taken (what a join keeps, and gives back) overlaps as the translator's Slot does:
    # a wildcard address overlaps every address of its family, either way round.
    taken, slot = Taken(), Slot()
    kept = []
    for i, address in enumerate(order):
        free = slot.holder(address) is None
        assert taken.take(("ns", f"s{i}"), address) == free, (order, address)
        if free:
            slot.take(Claim(("ns", f"s{i}"), address))
            kept.append(address)
    for gone in kept:  # given back: as if the others alone had been taken
        again, rest = taken.copy(), Slot()
        again.give_back(gone)
        for address in kept:
            if address != gone:
                rest.take(Claim(("", ""), address))
        for address in ADDRESSES:
            probe = again.copy()
            assert probe.take(("ns", "new"), address) == (rest.holder(address) is None)
