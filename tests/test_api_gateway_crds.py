"""The API source with and without the Gateway API CRDs installed (a 404 for the group)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fakeapi import FakeApi, SourceRunner
from test_api_source import OTHERS, eps, source, svc

GROUP = "gateway.networking.k8s.io"


def gateway_objects() -> list[dict[str, Any]]:
    return [
        {"apiVersion": f"{GROUP}/v1", "kind": "GatewayClass", "metadata": {"name": "kxds"},
         "spec": {"controllerName": "kxds.io/gateway-controller"}},
        {"apiVersion": f"{GROUP}/v1", "kind": "Gateway",
         "metadata": {"name": "gw", "namespace": "default"},
         "spec": {"gatewayClassName": "kxds",
                  "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}},
        {"apiVersion": f"{GROUP}/v1", "kind": "HTTPRoute",
         "metadata": {"name": "r", "namespace": "default"},
         "spec": {"parentRefs": [{"name": "gw"}],
                  "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}},
        {"apiVersion": f"{GROUP}/v1beta1", "kind": "ReferenceGrant",
         "metadata": {"name": "g", "namespace": "other"},
         "spec": {"from": [{"group": GROUP, "kind": "HTTPRoute", "namespace": "default"}],
                  "to": [{"group": "", "kind": "Service"}]}},
    ]


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi(bookmark_interval=0.1).start()
    for obj in [svc("web"), eps("web", ["10.1.0.5"]), *OTHERS]:
        fake.apply(obj)
    yield fake
    fake.stop()


def test_gateway_kinds_are_listed_and_watched(api: FakeApi) -> None:
    for obj in gateway_objects():
        api.apply(obj)
    with SourceRunner(source(api)) as run:
        state = run.wait(lambda s: s.http_routes, what="the HTTPRoute")
        assert set(state.gateway_classes) == {("", "kxds")}
        assert set(state.gateways) == {("default", "gw")}
        assert set(state.reference_grants) == {("other", "g")}
        api.delete(f"{GROUP}/v1", "HTTPRoute", "default", "r")
        run.wait(lambda s: not s.http_routes, what="the HTTPRoute deleted")


def test_without_the_crds_the_rest_is_served_and_the_404_is_not_retried_in_a_loop(
        api: FakeApi, caplog: pytest.LogCaptureFixture) -> None:
    api.not_installed.add(GROUP)
    caplog.set_level(logging.INFO, logger="kxds.kube.api")
    src = source(api, absent_retry=0.5)
    with SourceRunner(src) as run:
        state = run.wait(lambda s: s.services, what="the Services without the Gateway API")
        assert not state.gateways and not state.http_routes
        # Over a measured interval: retried every absent_retry (0.5 s), not in a loop.
        path = f"/apis/{GROUP}/v1/gateways"
        start, before = time.monotonic(), api.count("GET", path)
        time.sleep(1.6)
        tries = api.count("GET", path) - before
        assert 2 <= tries <= (time.monotonic() - start) / 0.5 + 1
        not_served = [r for r in caplog.records if "kind_not_served" in r.getMessage()
                      and "kind=gateways" in r.getMessage()]
        assert len(not_served) == 1
        # The CRDs get installed: the objects appear without a restart.
        api.not_installed.clear()
        for obj in gateway_objects():
            api.apply(obj)
        run.wait(lambda s: s.http_routes and s.gateways, what="Gateway API after installing")
