"""A bug met while translating one object leaves that object out, alone, failing closed.

Faults are injected from outside: the inner function translating one Service,
Ingress, TLS Secret or Ingress's TLS is made to raise for one object. The
object gets an ``InternalError`` diagnostic naming it, its routes answer 503
(never fall through to another Ingress's shorter prefix) or its TLS hosts get
no plaintext, and every other object is served; the snapshot is published.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kxds import ir
from kxds.certs.make import make_ca, make_leaf, tls_secret_yaml
from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.kube.loader import load_text
from kxds.kube.models import ClusterState
from kxds.translators import edge, ingress, node_service, tls_plan
from kxds.translators.config import NodeInfo, TranslateConfig
from kxds.translators.edge import translate
from kxds.translators.node import translate_node
from kxds.translators.translation import Translation
from kxds.views import build_edge

BASE = """
apiVersion: v1
kind: Service
metadata: {name: a, namespace: default}
spec: {type: NodePort, ports: [{name: http, port: 80, nodePort: 30080}]}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: default}
spec: {type: NodePort, ports: [{name: http, port: 80, nodePort: 30081}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: broad, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  ingressClassName: kxds
  rules:
  - host: shop.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: narrow, namespace: default, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  ingressClassName: kxds
  rules:
  - host: shop.example
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: b, port: {number: 80}}}}
  - host: api.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: b, port: {number: 80}}}}
"""


def _failing(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str,
             bad: Callable[..., bool]) -> None:
    """Make ``owner.name`` raise when ``bad`` says so of its arguments."""
    real = getattr(owner, name)

    def fake(*args: Any, **kwargs: Any) -> Any:
        if bad(*args, **kwargs):
            raise RuntimeError("injected fault")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, fake)


def _internal(result: Translation) -> list[ObjectRef]:
    return [d.ref for d in result.diagnostics if d.reason is Reason.INTERNAL_ERROR]


def _actions(result: Translation, host: str) -> dict[str, object]:
    """Path -> what the HTTP route table does with it on ``host``."""
    table = next(t for t in result.ir.route_tables if t.name.startswith("http/"))
    vh = next(v for v in table.virtual_hosts if v.domains == (host,))
    return {r.match.path: r.action for r in vh.routes}


def _published(state: ClusterState) -> None:
    built = build_edge(state, TranslateConfig())
    assert built.rejected is None and built.resources is not None


def test_a_failing_service_answers_503_and_the_others_serve(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _failing(monkeypatch, edge, "translate_service", lambda service, *_: service.meta.name == "b")
    state = load_text(BASE)
    result = translate(state)
    assert _internal(result) == [ObjectRef("Service", "default", "b")]
    assert [c.name for c in result.ir.clusters] == ["default/a/80"]
    shop = _actions(result, "shop.example")
    assert shop["/api"] == ingress.UNAVAILABLE  # never falls through to "/"
    assert isinstance(shop["/"], ir.Forward)
    assert _actions(result, "api.example")["/"] == ingress.UNAVAILABLE
    _published(state)


def test_a_failing_ingress_answers_503_on_its_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    _failing(monkeypatch, ingress, "ingress_routes", lambda _s, ing, *_: ing.meta.name == "narrow")
    state = load_text(BASE)
    result = translate(state)
    assert _internal(result) == [ObjectRef("Ingress", "default", "narrow")]
    shop = _actions(result, "shop.example")
    # Its path does not fall through to the older Ingress's "/" (fail closed) ...
    assert shop["/api"] == ingress.UNAVAILABLE
    # ... and the other Ingress still serves.
    forward = shop["/"]
    assert isinstance(forward, ir.Forward)
    assert forward.backends == (ir.WeightedBackend(cluster="default/a/80"),)
    assert _actions(result, "api.example")["/"] == ingress.UNAVAILABLE
    assert [c.name for c in result.ir.clusters] == ["default/a/80"]
    _published(state)


def test_a_failing_service_on_a_node_leaves_only_it_out(monkeypatch: pytest.MonkeyPatch) -> None:
    _failing(monkeypatch, node_service, "_add_port", lambda _b, svc, *_: svc.meta.name == "a")
    result = translate_node(load_text(BASE), TranslateConfig(), NodeInfo(name="n1"))
    assert _internal(result) == [ObjectRef("Service", "default", "a")]
    assert [lis.port for lis in result.ir.listeners] == [30081]
    assert {c.ref.name for c in result.ir.clusters} == {"b"}
    assert ir.consistency_problems(result.ir) == []


def _tls_state() -> str:
    ca = make_ca()

    def secret(name: str, host: str) -> str:
        return "---\n" + tls_secret_yaml("default", name, make_leaf(ca, [host]))

    def ing(name: str, host: str, ts: str) -> str:
        return f"""---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: default, creationTimestamp: "{ts}"}}
spec:
  ingressClassName: kxds
  tls: [{{hosts: [{host}], secretName: {name}}}]
  rules:
  - host: {host}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: a, port: {{number: 80}}}}}}}}
"""

    return (BASE + secret("good", "good.example") + secret("bad", "bad.example")
            + ing("good", "good.example", "2024-03-01T00:00:00Z")
            + ing("bad", "bad.example", "2024-03-02T00:00:00Z"))


def _tls_chains(result: Translation) -> list[tuple[str, ...]]:
    return [c.server_names for lis in result.ir.listeners if isinstance(lis, ir.TlsListener)
            for c in lis.chains]


def _fails_closed(result: Translation, host: str) -> None:
    """``host`` gets no chain and its plain HTTP redirects to HTTPS (never plaintext)."""
    assert all(host not in names for names in _tls_chains(result))
    assert isinstance(_actions(result, host)["/"], ir.Redirect)


@pytest.mark.parametrize("where", ["planner", "secret"])
def test_a_failing_tls_ingress_or_secret_fails_closed(where: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    ingress_ref = ObjectRef("Ingress", "default", "bad")
    if where == "planner":
        _failing(monkeypatch, tls_plan.Planner, "terminated",
                 lambda _p, ing: ing.meta.name == "bad")
        culprits = [ingress_ref]
    else:
        _failing(monkeypatch, tls_plan.Planner, "_load", lambda _p, key: key[1] == "bad")
        # The Secret is named; the Ingress using it says its hosts are not served.
        culprits = [ingress_ref, ObjectRef("Secret", "default", "bad")]
    state = load_text(_tls_state())
    result = translate(state)
    assert sorted(_internal(result)) == culprits
    _fails_closed(result, "bad.example")
    assert ("good.example",) in _tls_chains(result)
    assert isinstance(_actions(result, "good.example")["/"], ir.Redirect)  # ssl-redirect
    _published(state)


def test_the_guard_names_the_object_and_keeps_the_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    from kxds.translators.translation import guarded

    ref = ObjectRef("Service", "default", "x")

    def boom() -> int:
        raise KeyError("k")

    got: list[Diagnostic] = []
    assert guarded(ref, boom, lambda d: got.append(d) or 7) == 7
    assert got[0].ref == ref and got[0].reason is Reason.INTERNAL_ERROR
    assert "KeyError" in got[0].message
    assert any(r.exc_info for r in caplog.records)
