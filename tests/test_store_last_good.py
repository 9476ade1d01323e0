"""The API source's store keeps the last good version of an object that turns invalid."""

from __future__ import annotations

from typing import Any

from kxds.kube.store import KINDS, Store

INGRESSES = next(k for k in KINDS if k.plural == "ingresses")


def ingress(path_type: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": "shop", "namespace": "default", "resourceVersion": rv},
            "spec": {"rules": [{"host": "shop.example.com", "http": {"paths": [
                {"path": "/", "pathType": path_type,
                 "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}


def snapshot(store: Store) -> Any:
    for kind in store.kinds:
        if kind.plural not in store.synced:
            store.replace(kind, [])
    state, _ = store.snapshot()
    assert state is not None
    return state


def test_an_update_that_breaks_an_object_keeps_its_last_good_version() -> None:
    store = Store([INGRESSES])
    store.replace(INGRESSES, [ingress("Prefix", "1")])
    good = snapshot(store).ingresses[("default", "shop")]
    store.upsert(INGRESSES, ingress("prefix", "2"))
    state = snapshot(store)
    assert state.ingresses[("default", "shop")] is good
    (problem,) = state.problems
    assert problem.field == "spec.rules[0].http.paths[0].pathType"
    assert "last good version stays in use" in problem.message
    # A relist with the object still broken keeps it too; a fix replaces it.
    store.replace(INGRESSES, [ingress("prefix", "3")])
    assert snapshot(store).ingresses[("default", "shop")] is good
    store.upsert(INGRESSES, ingress("Exact", "4"))
    state = snapshot(store)
    assert state.ingresses[("default", "shop")].rules[0].paths[0].path_type == "Exact"
    assert state.problems == ()


def test_a_deleted_object_is_gone_and_a_new_invalid_one_is_left_out() -> None:
    store = Store([INGRESSES])
    store.replace(INGRESSES, [ingress("Prefix", "1")])
    store.delete(INGRESSES, ingress("Prefix", "2"))
    store.upsert(INGRESSES, ingress("prefix", "3"))
    state = snapshot(store)
    assert state.ingresses == {}
    assert "last good" not in state.problems[0].message
