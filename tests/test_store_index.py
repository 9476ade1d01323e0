"""The API source's snapshots are patched from what changed (kxds.kube.store_index).

Random sequences of lists, watch events and deletions, over kinds that refer to
one another (Ingresses naming Secrets and ConfigMaps, EndpointSlices grouped by
Service, Secrets watched per namespace and per type): after every step the
patched snapshot equals a snapshot indexed from every object, as the store made
it before (:func:`scratch`), a kind nothing changed in keeps its very mapping,
and the edge translation of both states is the same.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kxds.diagnostics import Diagnostic
from kxds.envoy.build import build_resources
from kxds.kube import models as m
from kxds.kube.store import KINDS, Kind, Store
from kxds.kube.store_index import plural_of, referenced_config_maps, referenced_secrets
from kxds.translators.config import TranslateConfig
from kxds.translators.edge import translate

NAMESPACES = ("a", "b")
BY_PLURAL = {k.plural + (f"#{k.variant}" if k.variant else ""): k for k in KINDS}
WATCHED = tuple(
    kind for k in KINDS if plural_of(k.slot) in (
        "services", "endpointslices", "ingresses", "secrets", "configmaps", "namespaces")
    for kind in (k.in_namespaces(NAMESPACES) if k.plural in ("secrets", "configmaps") else (k,)))


def scratch(store: Store) -> m.ClusterState:
    """The store's state indexed from every object it holds (how snapshots were made)."""
    tables = {slot: list(entries.values()) for slot, entries in store.entries.items()}
    models = [e[0] for slot, entries in tables.items() for e in entries]
    ingresses = [x for x in models if isinstance(x, m.Ingress)]
    wanted = {"secrets": referenced_secrets(ingresses, store.extra_secrets),
              "configmaps": referenced_config_maps(ingresses)}
    objects: list[m.Model] = []
    problems: list[Diagnostic] = []
    for slot, entries in tables.items():
        keep = wanted.get(plural_of(slot))
        for (model, problem), key in zip(entries, store.entries[slot], strict=True):
            if keep is not None and key not in keep:
                continue
            if model is not None:
                objects.append(model)
            if problem is not None:
                problems.append(problem)
    return m.ClusterState.from_objects(objects, problems)


def service(ns: str, name: str, port: int) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name},
            "spec": {"ports": [{"name": "http", "port": port, "targetPort": 8080}]}}


def endpoint_slice(ns: str, name: str, svc: str, ip: int) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": [f"10.0.0.{ip}"], "conditions": {"ready": True}}]}


def ingress(ns: str, name: str, svc: str, secret: str, config_map: str, valid: bool
            ) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name, "annotations": {
                "nginx.ingress.kubernetes.io/custom-headers": config_map}},
            "spec": {"ingressClassName": "kxds",
                     "tls": [{"hosts": [f"{name}.example.com"], "secretName": secret}],
                     "rules": [{"host": f"{name}.example.com", "http": {"paths": [
                         {"path": "/", "pathType": "Prefix" if valid else "prefix",
                          "backend": {"service": {"name": svc,
                                                  "port": {"number": 80}}}}]}}]}}


def secret(ns: str, name: str, value: str) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name}, "type": "Opaque",
            "data": {"auth": value}}


def config_map(ns: str, name: str, value: str) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name}, "data": {"X-Shop": value}}


NAME = st.sampled_from(("one", "two"))
DOCS: dict[str, Any] = {
    "services": lambda ns: st.builds(service, ns, NAME, st.sampled_from((80, 81))),
    "endpointslices": lambda ns: st.builds(endpoint_slice, ns, st.sampled_from(("s1", "s2")),
                                           NAME, st.integers(1, 3)),
    "ingresses": lambda ns: st.builds(ingress, ns, NAME, NAME, NAME, NAME, st.booleans()),
    "secrets": lambda ns: st.builds(secret, ns, NAME, st.sampled_from(("YQ==", "Yg=="))),
    "configmaps": lambda ns: st.builds(config_map, ns, NAME, st.sampled_from(("x", "y"))),
    "namespaces": lambda _: st.builds(lambda n: {"metadata": {"name": n}},
                                      st.sampled_from(NAMESPACES)),
}


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[str, Kind, Any]]:
    out = []
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(WATCHED))
        # A slot watched in one namespace only ever gets that namespace's objects.
        docs = DOCS[kind.plural](st.just(kind.namespace) if kind.namespace
                                 else st.sampled_from(NAMESPACES))
        op = draw(st.sampled_from(("upsert", "upsert", "delete", "replace")))
        out.append((op, kind, draw(st.lists(docs, max_size=4) if op == "replace" else docs)))
    return out


def listed(store: Store) -> None:
    for kind in store.kinds:
        store.replace(kind, [])


FIELDS = (*m.FIELD_OF.values(), "slices_by_service", "problems")


def same_objects(before: Any, now: Any) -> bool:
    """The very same objects (under the same keys): nothing downstream sees a change."""
    if isinstance(before, tuple):
        return before == now
    return before.keys() == now.keys() and all(
        same_objects(v, now[k]) if isinstance(v, tuple) else v is now[k]
        for k, v in before.items())


@settings(max_examples=200, deadline=None)
@given(steps())
def test_a_patched_snapshot_equals_one_indexed_from_every_object(
        sequence: list[tuple[str, Kind, Any]]) -> None:
    store = Store(WATCHED, extra_secrets=[("a", "three")])
    listed(store)
    before, _ = store.snapshot()
    assert before is not None
    for op, kind, arg in sequence:
        getattr(store, op)(kind, arg)
        state, _ = store.snapshot()
        assert state is not None
        want = scratch(store)
        for name in FIELDS:
            got, expected = getattr(state, name), getattr(want, name)
            assert (dict(got) if name != "problems" else got) == expected, name
            if same_objects(getattr(before, name), got):
                # Nothing changed in it: the very same mapping, passed by identity.
                assert getattr(before, name) is got, name
        before = state


def test_the_edge_translation_of_a_patched_snapshot_is_the_one_of_every_object() -> None:
    """Orders may differ (a relist lists in its own order); the translation may not."""
    store = Store(WATCHED)
    listed(store)
    store.replace(BY_PLURAL["services"], [service("a", n, 80) for n in ("one", "two", "three")])
    for i, n in enumerate(("three", "one", "two")):
        store.upsert(BY_PLURAL["endpointslices"], endpoint_slice("a", f"s{i}", n, i + 1))
        store.upsert(BY_PLURAL["ingresses"], ingress("a", n, n, n, n, True))
    secrets = next(k for k in WATCHED if k.plural == "secrets" and k.namespace == "a"
                   and not k.variant)
    store.replace(secrets, [secret("a", "two", "YQ==")])
    store.replace(BY_PLURAL["endpointslices"], [
        endpoint_slice("a", f"s{i}", n, i + 1) for i, n in reversed(list(enumerate(
            ("three", "one", "two"))))])
    state, _ = store.snapshot()
    assert state is not None and len(state.ingresses) == 3
    config = TranslateConfig()
    got = build_resources(translate(state, config).ir)
    want = build_resources(translate(scratch(store), config).ir)
    assert {t: {n: r.body for n, r in v.items()} for t, v in got.items()} == {
        t: {n: r.body for n, r in v.items()} for t, v in want.items()}


def test_an_unchanged_object_listed_again_keeps_its_model_and_changes_nothing() -> None:
    store = Store(WATCHED)
    listed(store)
    kind = BY_PLURAL["services"]
    store.replace(kind, [service("a", "one", 80)])
    first, generation = store.snapshot()
    assert first is not None
    again = service("a", "one", 80)
    again["metadata"]["resourceVersion"] = "7"  # a relist or a status-only update
    store.replace(kind, [again])
    store.upsert(kind, again)
    state, now = store.snapshot()
    assert state is first and now == generation
    store.upsert(kind, service("a", "one", 81))
    state, now = store.snapshot()
    assert state is not None and now == generation + 1
    assert state.services is not first.services and state.endpoint_slices is first.endpoint_slices
