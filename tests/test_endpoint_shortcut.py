"""An EndpointSlice-only change is patched into the last translation, exactly.

:func:`kxds.translators.edge.translate` with a memo patches the last IR when only
EndpointSlices changed, and the controller then serializes only the changed
endpoint resources. Both must give what a full translation and a full build
give: every golden case has each of its EndpointSlices changed in several
ways (an address, a dropped endpoint, another pod behind it, no pod), and
targeted cases check that the shortcut is taken when it may be and not when
the change reaches further (NetworkPolicy access rules, DNS clusters, TLS
twins, certificates checked against a moving clock).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from golden_support import GOLDEN, case_settings, cases

from kxds.envoy.build import build_resources
from kxds.envoy.resource import CLUSTER, ENDPOINT, LISTENER, ROUTE, Resources
from kxds.incremental import Store
from kxds.kube.loader import load_documents
from kxds.kube.models import ClusterState, Model
from kxds.kube.parse import parse_object
from kxds.translators.config import TranslateConfig
from kxds.translators.edge import translate
from kxds.translators.translation import Translation
from kxds.views import Built, ViewMemo, build_edge

Doc = dict[str, Any]


def _docs(case: str) -> list[Doc]:
    path = GOLDEN / case / "input.yaml"
    docs, _ = load_documents(path.read_text(encoding="utf-8"), "test")
    return [d for d in docs if isinstance(d, dict)]


def _models(docs: list[Doc]) -> dict[tuple[str, str, str], Model]:
    out: dict[tuple[str, str, str], Model] = {}
    for doc in docs:
        model, _ = parse_object(doc, "test")
        if model is not None:
            out[(type(model).__name__, *model.meta.key)] = model
    return out


def _state(models: dict[tuple[str, str, str], Model]) -> ClusterState:
    return ClusterState.from_objects(models.values())


Mutation = Callable[[Doc], None]


def _readdress(doc: Doc) -> None:
    for ep in doc.get("endpoints") or []:
        ep["addresses"] = ["10.99.0.1" if doc.get("addressType") != "FQDN" else "moved.example"]
        return


def _drop_endpoint(doc: Doc) -> None:
    if doc.get("endpoints"):
        doc["endpoints"] = doc["endpoints"][:-1]


def _other_pod(doc: Doc) -> None:
    """The first endpoint is backed by another pod (the next one named, else none)."""
    eps = doc.get("endpoints") or []
    refs = [ep.get("targetRef") for ep in eps if ep.get("targetRef")]
    if eps:
        eps[0]["targetRef"] = copy.deepcopy(refs[-1]) if len(refs) > 1 else None
        if eps[0]["targetRef"] is None:
            del eps[0]["targetRef"]


def _no_pods(doc: Doc) -> None:
    for ep in doc.get("endpoints") or []:
        ep.pop("targetRef", None)


MUTATIONS = (_readdress, _drop_endpoint, _other_pod, _no_pods)


def _slice_changes(case: str) -> Iterator[tuple[list[Doc], list[Doc]]]:
    """(docs before, docs after) with one EndpointSlice changed, for each slice and mutation."""
    docs = _docs(case)
    for i, doc in enumerate(docs):
        if doc.get("kind") != "EndpointSlice":
            continue
        for mutate in MUTATIONS:
            changed = copy.deepcopy(doc)
            mutate(changed)
            yield docs, [*docs[:i], changed, *docs[i + 1:]]


def _bytes(resources: Resources) -> dict[str, dict[str, tuple[str, bytes]]]:
    return {t: {n: (r.version, r.body) for n, r in by_name.items()}
            for t, by_name in resources.items()}


def _check_exact(before: ClusterState, after: ClusterState, config: TranslateConfig
                 ) -> tuple[Translation, Translation, Built, Built]:
    """Translate and build ``before`` then ``after`` through one memo; both match full runs."""
    memo = Store()
    first = translate(before, config, memo)
    second = translate(after, config, memo)
    assert second == translate(after, config)
    # The controller's path (translation and resources through one memo).
    view = ViewMemo()
    built_before = build_edge(before, config, view)
    built_after = build_edge(after, config, view)
    assert built_before.resources is not None
    full = build_edge(after, config)
    assert built_after.rejected == full.rejected
    if full.resources is not None:
        assert built_after.resources is not None
        assert _bytes(built_after.resources) == _bytes(build_resources(second.ir))
        assert built_after.diagnostics == full.diagnostics
    return first, second, built_before, built_after


EDGE_CASES = [c for c in cases() if case_settings(c)[1] is None
              and (GOLDEN / c / "input.yaml").exists()
              and "EndpointSlice" in (GOLDEN / c / "input.yaml").read_text()]


@pytest.mark.parametrize("case", EDGE_CASES)
def test_golden_slice_changes_match_a_full_translation(case: str) -> None:
    config, _ = case_settings(case)
    for before_docs, after_docs in _slice_changes(case):
        before_models = _models(before_docs)
        after_models = dict(before_models)
        # Unchanged objects keep their model, as the sources do; only the slice is new.
        for key, model in _models(after_docs).items():
            if key[0] == "EndpointSlice" and before_models.get(key) is not None:
                after_models[key] = model
        _check_exact(_state(before_models), _state(after_models), config)


# --- targeted cases ------------------------------------------------------------

BASE = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, labels: {app: web}}
status: {phase: Running, podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: other-0, namespace: shop, labels: {app: other}}
status: {phase: Running, podIP: 10.0.1.9}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: storefront, namespace: shop}
spec:
  ingressClassName: kxds
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
"""

POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: office, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - ipBlock: {cidr: 192.0.2.0/24}
"""


def _slice(service: str, address: str, pod: str | None = None, fqdn: bool = False) -> Doc:
    endpoint: Doc = {"addresses": [address]}
    if pod is not None:
        endpoint["targetRef"] = {"kind": "Pod", "namespace": "shop", "name": pod}
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{service}-abc", "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "FQDN" if fqdn else "IPv4",
            "ports": [{"name": "http", "port": 8080}], "endpoints": [endpoint]}


def _states(extra: str, before: list[Doc], after: list[Doc]
            ) -> tuple[ClusterState, ClusterState]:
    models = _models([d for d in yaml.safe_load_all(BASE + "---\n" + extra) if d])
    first = dict(models) | _models(before)
    second = dict(first) | _models(after)
    return _state(first), _state(second)


def test_an_endpoint_change_is_patched_into_the_last_ir() -> None:
    before, after = _states("", [_slice("web", "10.0.1.1"), _slice("api", "10.0.2.1")],
                            [_slice("api", "10.0.2.2")])
    first, second, built_before, built_after = _check_exact(before, after, TranslateConfig())
    assert second.ir.clusters is first.ir.clusters
    assert second.ir.route_tables is first.ir.route_tables
    assert second.ir.load_assignments != first.ir.load_assignments
    old, new = built_before.resources, built_after.resources
    assert old is not None and new is not None
    for type_url in (CLUSTER, LISTENER, ROUTE):
        assert new[type_url] is old[type_url]  # the cache sees them unchanged by identity
    moved = {n for n, r in new[ENDPOINT].items() if old[ENDPOINT][n] is not r}
    assert moved == {"shop/api/80"}


def test_another_pod_behind_a_guarded_service_changes_its_access_rules() -> None:
    """web-0 is selected by the policy (office clients only); other-0 is not (open)."""
    before, after = _states(POLICY, [_slice("web", "10.0.1.1", "web-0"),
                                     _slice("api", "10.0.2.1")],
                            [_slice("web", "10.0.1.9", "other-0")])
    first, second, _, _ = _check_exact(before, after, TranslateConfig())
    assert second.ir.route_tables != first.ir.route_tables

    def web_access(t: Translation) -> object:
        return next(r.access for vh in t.ir.route_tables[0].virtual_hosts for r in vh.routes
                    if r.ref.name == "storefront" and r.match.path == "/")

    assert web_access(first) is not None and web_access(second) is None


def test_a_new_address_of_the_same_pod_keeps_the_access_rules() -> None:
    before, after = _states(POLICY, [_slice("web", "10.0.1.1", "web-0")],
                            [_slice("web", "10.0.1.2", "web-0")])
    first, second, _, _ = _check_exact(before, after, TranslateConfig())
    assert second.ir.route_tables is first.ir.route_tables  # patched
    assert second.ir.load_assignments != first.ir.load_assignments


def test_a_dns_cluster_carries_its_endpoints_in_the_cluster_resource() -> None:
    before, after = _states("", [_slice("web", "a.example.com", fqdn=True)],
                            [_slice("web", "b.example.com", fqdn=True)])
    _, _, built_before, built_after = _check_exact(before, after, TranslateConfig())
    assert built_before.resources is not None and built_after.resources is not None
    assert (built_after.resources[CLUSTER]["shop/web/80"].version
            != built_before.resources[CLUSTER]["shop/web/80"].version)


def test_backend_tls_twins_get_the_new_endpoints() -> None:
    ingress = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: secure
  namespace: shop
  annotations: {nginx.ingress.kubernetes.io/backend-protocol: HTTPS}
spec:
  ingressClassName: kxds
  rules:
  - host: secure.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"""
    before, after = _states(ingress, [_slice("web", "10.0.1.1")], [_slice("web", "10.0.1.2")])
    _, second, _, _ = _check_exact(before, after, TranslateConfig())
    twins = [a for a in second.ir.load_assignments if a.cluster.startswith("shop/web/80")
             and a.cluster != "shop/web/80"]
    assert twins and all(a.endpoints[0].address == "10.0.1.2" for a in twins)


def test_certificates_are_checked_against_the_new_instant() -> None:
    """With Secrets, a moving clock is a change: the shortcut must not hide an expiry."""
    from kxds.certs.make import make_ca, make_leaf, tls_secret_yaml

    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    leaf = make_leaf(make_ca(not_before=t0), ["shop.example.com"], not_before=t0, days=1)
    tls = tls_secret_yaml("shop", "cert", leaf) + """
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: tls, namespace: shop}
spec:
  ingressClassName: kxds
  tls: [{hosts: [shop.example.com], secretName: cert}]
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"""
    before, after = _states(tls, [_slice("web", "10.0.1.1")], [_slice("web", "10.0.1.2")])
    memo = Store()
    valid = translate(before, TranslateConfig(tls_now=t0 + dt.timedelta(hours=1)), memo)
    later = TranslateConfig(tls_now=t0 + dt.timedelta(days=2))
    expired = translate(after, later, memo)
    assert expired == translate(after, later)
    assert expired.diagnostics != valid.diagnostics
