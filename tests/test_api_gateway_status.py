"""Gateway API status written to the API server (GatewayClass, Gateway, HTTPRoute)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeApi, SourceRunner, kubeconfig
from test_api_gateway_crds import GROUP, gateway_objects
from test_api_source import OTHERS, eps, source, svc

from e2e.harness import Kxds, wait_for
from kxds.gateway_status_writer import GatewayStatusWriter
from kxds.kube.client import KubeClient
from kxds.translators.edge import translate
from kxds.translators.gateway_status import GatewayApiStatus

V1 = f"{GROUP}/v1"
OTHER_PARENT = {"parentRef": {"group": GROUP, "kind": "Gateway", "name": "theirs"},
                "controllerName": "example.com/other",
                "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                "message": "", "observedGeneration": 1,
                                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi(bookmark_interval=0.1).start()
    for obj in [svc("web"), eps("web", ["10.1.0.5"]), *OTHERS, *gateway_objects()]:
        fake.apply(obj)
    # Another controller's entry on the same Route: kxds must leave it as it is.
    route = fake.get(V1, "HTTPRoute", "default", "r")
    assert route is not None
    route["status"] = {"parents": [OTHER_PARENT]}
    fake.apply(route)
    yield fake
    fake.stop()


def translated(api: FakeApi) -> GatewayApiStatus:
    with SourceRunner(source(api)) as run:
        state = run.wait(lambda s: s.http_routes and s.gateways and s.services, what="objects")
    return translate(state).gateway_status


def status_of(api: FakeApi, kind: str, ns: str, name: str) -> dict[str, Any]:
    obj = api.get(V1, kind, ns, name)
    assert obj is not None
    return obj.get("status") or {}


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str, int]]:
    return {c["type"]: (c["status"], c["reason"], c["observedGeneration"])
            for c in status.get("conditions") or []}


def test_status_is_written_as_the_spec_lays_it_out(api: FakeApi) -> None:
    status = translated(api)
    writer = GatewayStatusWriter(KubeClient.for_url(api.url),
                                 addresses=lambda: [{"ip": "192.0.2.1"}])
    assert writer.reconcile(status) == 3

    cls = status_of(api, "GatewayClass", "", "kxds")
    assert conditions(cls)["Accepted"][:2] == ("True", "Accepted")
    assert {"name": "HTTPRoute"} in cls["supportedFeatures"]

    gw = status_of(api, "Gateway", "default", "gw")
    assert conditions(gw)["Accepted"][:2] == ("True", "Accepted")
    assert conditions(gw)["Programmed"][:2] == ("True", "Programmed")
    assert gw["addresses"] == [{"type": "IPAddress", "value": "192.0.2.1"}]
    [listener] = gw["listeners"]
    assert listener["name"] == "http" and listener["attachedRoutes"] == 1
    assert {"group": GROUP, "kind": "HTTPRoute"} in listener["supportedKinds"]
    assert conditions(listener)["ResolvedRefs"][:2] == ("True", "ResolvedRefs")

    route = status_of(api, "HTTPRoute", "default", "r")
    theirs, ours = route["parents"]
    assert theirs == OTHER_PARENT
    assert ours["controllerName"] == "kxds.io/gateway-controller"
    assert ours["parentRef"] == {"group": GROUP, "kind": "Gateway", "name": "gw"}
    assert conditions(ours)["Accepted"][:2] == ("True", "Accepted")
    assert conditions(ours)["ResolvedRefs"][:2] == ("True", "ResolvedRefs")

    # Nothing changed: nothing is written again (transition times do not count).
    assert writer.reconcile(translated(api)) == 0


def test_a_new_generation_moves_observed_generation_but_not_transition_times(
        api: FakeApi) -> None:
    client = KubeClient.for_url(api.url)
    GatewayStatusWriter(client).reconcile(translated(api))
    before = status_of(api, "HTTPRoute", "default", "r")["parents"][1]["conditions"]
    route = copy.deepcopy(api.get(V1, "HTTPRoute", "default", "r"))
    assert route is not None
    route["spec"]["rules"][0]["backendRefs"][0]["name"] = "missing"
    api.apply(route)  # the spec changed: the API server bumps the generation
    GatewayStatusWriter(client).reconcile(translated(api))
    after = {c["type"]: c for c in status_of(api, "HTTPRoute", "default", "r")["parents"][1][
        "conditions"]}
    old = {c["type"]: c for c in before}
    assert {c["observedGeneration"] for c in after.values()} == {2}
    # Accepted stayed True: its transition time is kept; ResolvedRefs turned False.
    assert after["Accepted"]["lastTransitionTime"] == old["Accepted"]["lastTransitionTime"]
    assert (after["ResolvedRefs"]["status"], after["ResolvedRefs"]["reason"]) == (
        "False", "BackendNotFound")


def test_kxds_serve_writes_gateway_status_through_the_api(api: FakeApi, tmp_path: Path) -> None:
    # The whole path in `kxds serve`: watch -> translation -> status written.
    kxds = Kxds(tmp_path, ["--kubeconfig", kubeconfig(api.url, str(tmp_path / "kubeconfig"))])
    try:
        kxds.wait_ready()
        wait_for(lambda: len(status_of(api, "HTTPRoute", "default", "r").get("parents")
                             or []) == 2, what="the HTTPRoute's status")
        wait_for(lambda: conditions(status_of(api, "Gateway", "default", "gw")).get(
            "Programmed", ("",))[0] == "True", what="the Gateway programmed")
    finally:
        kxds.stop()
