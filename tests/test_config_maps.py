"""ConfigMaps: parsed data only, kept only when an annotation names them, and read
incrementally (a ConfigMap's change reruns only the Ingresses that read it)."""

from __future__ import annotations

from typing import Any

import pytest
from fakeapi import FakeApi, SourceRunner

from kxds import ir
from kxds.incremental import Store
from kxds.kube.api import ApiOptions, ApiSource
from kxds.kube.client import KubeClient
from kxds.kube.models import MAX_CONFIG_MAP_BYTES, ClusterState, ConfigMap, Model
from kxds.kube.parse import parse_object
from kxds.kube.store import KINDS
from kxds.kube.store import Store as ObjectStore
from kxds.kube.store_index import referenced_config_maps
from kxds.translators.auth_proxy_headers import template
from kxds.translators.config import TranslateConfig
from kxds.translators.edge import translate

CUSTOM = "nginx.ingress.kubernetes.io/custom-headers"


def _cm(name: str, ns: str = "a", **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "uid": f"u-{name}",
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x"},
                         "managedFields": [{"manager": "kubectl"}]},
            "data": data, "binaryData": {"blob": "AAAA"}}


def _ingress(name: str, host: str, annotations: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "a", "annotations": annotations},
            "spec": {"ingressClassName": "kxds", "rules": [{"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}


SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "a"},
           "spec": {"ports": [{"port": 80}]}}


def _model(doc: dict[str, Any]) -> Model:
    model, problem = parse_object(doc)
    assert model is not None, problem
    return model


def test_parse_keeps_data_only() -> None:
    cm = _model(_cm("h", **{"X-One": "1"}))
    assert isinstance(cm, ConfigMap)
    assert dict(cm.data) == {"X-One": "1"}
    assert not cm.meta.annotations


@pytest.mark.parametrize(("value", "want"), [
    ("h", ("a", "h")), ("other/h", ("other", "h")), (" other/h ", ("other", "h")),
], ids=["same-namespace", "namespaced", "spaces"])
def test_referenced_config_maps(value: str, want: tuple[str, str]) -> None:
    ing = _model(_ingress("i", "x.example.com", {CUSTOM: value}))
    assert referenced_config_maps([ing]) == {want}  # type: ignore[list-item]


def test_api_store_keeps_only_named_config_maps() -> None:
    kinds = [k for k in KINDS if k.plural in ("configmaps", "ingresses")]
    store = ObjectStore(kinds)
    by_plural = {k.plural: k for k in kinds}
    store.replace(by_plural["ingresses"], [_ingress("i", "x.example.com", {CUSTOM: "named"})])
    store.replace(by_plural["configmaps"], [_cm("named", **{"X-A": "1"}), _cm("other")])
    state, _ = store.snapshot()
    assert state is not None
    assert set(state.config_maps) == {("a", "named")}


def test_watch_namespaces_split_config_maps() -> None:
    kinds = ApiOptions(secret_namespaces=("n1", "n2")).watched_kinds()
    assert sorted(k.slot for k in kinds if k.plural == "configmaps") == \
        ["configmaps@n1", "configmaps@n2"]


def _policy(state: ClusterState, host: str) -> ir.RoutePolicy | None:
    out = translate(state, TranslateConfig()).ir
    for table in out.route_tables:
        for vh in table.virtual_hosts:
            if host in vh.domains:
                return vh.routes[0].policy
    raise AssertionError(host)


def test_config_map_change_reruns_only_its_readers() -> None:
    """Changing the ConfigMap reruns the Ingress naming it, not the other one."""
    objects = [_model(SERVICE),
               _model(_ingress("reads", "r.example.com", {CUSTOM: "h"})),
               _model(_ingress("other", "o.example.com", {})),
               _model(_cm("h", **{"X-A": "1"}))]
    store = Store()
    state = ClusterState.from_objects(objects)
    first = translate(state, TranslateConfig(), store)
    runs, before = store.runs, dict(store.runs_by_query)
    new_cm = _model(_cm("h", **{"X-A": "2"}))
    changed = ClusterState.from_objects([*objects[:3], new_cm])
    second = translate(changed, TranslateConfig(), store)
    assert second.ir == translate(changed, TranslateConfig()).ir
    assert second.ir != first.ir
    reran = {q: n - before.get(q, 0) for q, n in store.runs_by_query.items()
             if n != before.get(q, 0)}
    # One Ingress's routes ran again (not the other's), and the whole-view queries
    # over every Ingress's routes.
    assert 0 < store.runs - runs < runs
    assert all(n == 1 for n in reran.values()), reran
    runs = store.runs
    # An unrelated ConfigMap appearing reruns nothing.
    translate(ClusterState.from_objects([*objects[:3], new_cm, _model(_cm("unrelated"))]),
              TranslateConfig(), store)
    assert store.runs == runs
    policy = _policy(changed, "r.example.com")
    assert policy is not None and policy.response_headers is not None
    assert policy.response_headers.set == (ir.Header(name="x-a", value="2"),)
    assert _policy(changed, "o.example.com") is None


@pytest.mark.parametrize(("text", "want"), [
    ("plain", (ir.ValuePart(text="plain"),)),
    ("$remote_addr", (ir.ValuePart(value=ir.RequestValue.CLIENT_ADDRESS),)),
    ("a=${host}/b", (ir.ValuePart(text="a="), ir.ValuePart(value=ir.RequestValue.AUTHORITY),
                     ir.ValuePart(text="/b"))),
    ("$http_x_user_id", (ir.ValuePart(request_header="x-user-id"),)),
], ids=["plain", "variable", "braced-in-text", "request-header"])
def test_check_header_template(text: str, want: tuple[ir.ValuePart, ...]) -> None:
    assert template(text) == (want, None)


@pytest.mark.parametrize("text", ["$ssl_client_s_dn", "cost $5", "a$", "tab\there", "é"],
                         ids=["unknown-variable", "digit-variable", "lone-dollar", "control",
                              "non-ascii"])
def test_check_header_template_refused(text: str) -> None:
    parts, why = template(text)
    assert parts == () and why


def _auth_ingress(value: str) -> dict[str, Any]:
    return _ingress("i", "x.example.com", {
        "nginx.ingress.kubernetes.io/auth-url": "http://auth.a.svc:80/check",
        "nginx.ingress.kubernetes.io/auth-proxy-set-headers": value})


@pytest.mark.parametrize(("data", "refused"), [
    ({"X-Real-IP": "1.2.3.4"}, "sets on the check request itself"),
    ({"X-Kxds-Cluster": "x"}, "sets on the check request itself"),
    ({"bad name": "x"}, "is not a header name"),
], ids=["reserved", "internal", "bad-name"])
def test_auth_proxy_set_headers_fail_closed(data: dict[str, str], refused: str) -> None:
    auth = dict(SERVICE, metadata={"name": "auth", "namespace": "a"})
    state = ClusterState.from_objects([_model(SERVICE), _model(auth),
                                       _model(_auth_ingress("h")), _model(_cm("h", **data))])
    result = translate(state, TranslateConfig())
    assert any(refused in d.message and "503" in d.message for d in result.diagnostics)


def test_api_source_reads_named_config_maps_in_the_watched_namespaces() -> None:
    """Through the API: a ConfigMap an Ingress names reaches the state (data only) and
    its changes follow; one named by no Ingress, or outside --watch-namespaces, never
    does; the list and watch are per watched namespace."""
    api = FakeApi(bookmark_interval=0.1).start()
    try:
        api.apply(_ingress("i", "x.example.com", {CUSTOM: "h"}))
        api.apply(_ingress("j", "y.example.com", {CUSTOM: "elsewhere/h"}))
        api.apply(_cm("h", **{"X-A": "1"}))
        api.apply(_cm("h", ns="elsewhere", **{"X-A": "1"}))
        api.apply(_cm("unnamed", **{"X-A": "1"}))
        options = ApiOptions(watch_timeout=2.0, read_timeout=5.0, connect_timeout=1.0,
                             backoff_initial=0.05, backoff_max=0.2,
                             secret_namespaces=("a",))
        with SourceRunner(ApiSource(KubeClient.for_url(api.url), options)) as run:
            state = run.wait(lambda s: ("a", "h") in s.config_maps)
            assert set(state.config_maps) == {("a", "h")}
            cm = state.config_maps[("a", "h")]
            assert dict(cm.data) == {"X-A": "1"} and not cm.meta.annotations
            api.apply(_cm("h", **{"X-A": "2"}))
            run.wait(lambda s: s.config_maps[("a", "h")].data == {"X-A": "2"})
        assert api.count("GET", "/api/v1/namespaces/a/configmaps", "watch=")
        assert not api.count("GET", "/api/v1/configmaps")
        assert not api.count("GET", "/api/v1/namespaces/elsewhere/configmaps")
    finally:
        api.stop()


def test_too_large_config_map_keeps_no_data() -> None:
    """A ConfigMap over the size bound keeps no data: custom-headers is reported and the
    routes are served; auth-proxy-set-headers fails closed."""
    big = _model(_cm("h", blob="x" * (MAX_CONFIG_MAP_BYTES + 1)))
    assert isinstance(big, ConfigMap) and big.too_large and not big.data
    auth = dict(SERVICE, metadata={"name": "auth", "namespace": "a"})
    state = ClusterState.from_objects([_model(SERVICE), _model(auth), big,
                                       _model(_ingress("c", "c.example.com", {CUSTOM: "h"})),
                                       _model(_auth_ingress("h"))])
    result = translate(state, TranslateConfig())
    messages = [(d.ref.name, d.message) for d in result.diagnostics]
    assert any(n == "c" and "too much" in m and "no header is added" in m
               for n, m in messages)
    assert any(n == "i" and "too much" in m and "503" in m for n, m in messages)
