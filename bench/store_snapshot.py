"""The API source's snapshot after one watch event, against indexing every object.

Run alone: ``.venv/bin/python -m bench.store_snapshot [--services 1000 5000] [--repeats 50]``.

The API source's store (:class:`kxds.kube.store.Store`) holds the scenario's
objects (N Services and their EndpointSlices, Ingresses, NetworkPolicies,
Namespaces), as its reflectors left them after the first list. Each sample
updates one EndpointSlice (a watch event) and times ``Store.snapshot()``, the
ClusterState the controller gets; for comparison, the same state indexed from
every object (:meth:`ClusterState.from_objects`, which is what each snapshot
cost before snapshots were patched).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections import defaultdict
from typing import Any

from bench import scenario
from kxds.kube import models as m
from kxds.kube.store import KINDS, Store


def filled(services: int) -> tuple[Store, list[dict[str, Any]]]:
    """A synced store of the scenario at ``services``; its EndpointSlice documents."""
    docs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in scenario.documents(scenario.Spec(services=services)):
        docs[doc["kind"]].append(doc)
    store = Store(KINDS)
    for kind in KINDS:
        store.replace(kind, docs.get(kind.kind, []) if kind.kind != "Secret" else [])
    return store, docs["EndpointSlice"]


def run(services: int, repeats: int) -> dict[str, float]:
    store, slices = filled(services)
    kind = next(k for k in KINDS if k.kind == "EndpointSlice")
    patched, whole = [], []
    for i in range(repeats):
        doc = copy.deepcopy(slices[(i * 37) % len(slices)])
        doc["metadata"]["resourceVersion"] = str(1000 + i)
        doc["endpoints"][0]["addresses"] = [f"10.99.{i // 250}.{i % 250 + 1}"]
        store.upsert(kind, doc)
        t0 = time.perf_counter()
        state, _ = store.snapshot()
        patched.append(time.perf_counter() - t0)
        assert state is not None
        t0 = time.perf_counter()
        m.ClusterState.from_objects(state.objects(), state.problems)
        whole.append(time.perf_counter() - t0)
    objects = sum(len(t) for t in store.entries.values())
    out = {"objects": objects, "patched_ms": statistics.median(patched) * 1e3,
           "every_object_ms": statistics.median(whole) * 1e3}
    print(f"{services:,} Services ({objects:,} objects): snapshot after one EndpointSlice "
          f"event p50 {out['patched_ms']:.3f} ms; indexing every object "
          f"{out['every_object_ms']:.2f} ms ({out['every_object_ms'] / out['patched_ms']:.0f}x)",
          flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.store_snapshot", description=__doc__)
    p.add_argument("--services", type=int, nargs="+", default=[1000, 5000])
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args()
    for n in args.services:
        run(n, args.repeats)


if __name__ == "__main__":
    main()
