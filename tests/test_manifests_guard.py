"""The manifest source under bad input: last good objects, mass removals, limits, duplicates."""

from __future__ import annotations

import asyncio
import os
import time
import tracemalloc
from pathlib import Path

import pytest

from kxds.diagnostics import Reason
from kxds.kube.limits import LimitCounter, Limits
from kxds.kube.loader import load_path
from kxds.kube.manifests import ManifestOptions, ManifestSource
from kxds.kube.models import ClusterState


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def svc(name: str, port: int = 80, extra: str = "") -> str:
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n"
            f"spec:\n  ports: [{{name: http, port: {port}}}]\n{extra}---\n")


def ingress(path_type: str, host: str = "shop.example.com") -> str:
    return f"""apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: shop, namespace: default}}
spec:
  ingressClassName: kxds
  rules:
  - host: {host}
    http:
      paths:
      - path: /
        pathType: {path_type}
        backend: {{service: {{name: web, port: {{number: 80}}}}}}
"""


def refresh(source: ManifestSource) -> ClusterState:
    state = source.refresh()
    assert state is not None
    return state


def test_a_schema_error_keeps_the_last_good_version_of_that_object(tmp_path: Path) -> None:
    write(tmp_path / "shop.yaml", svc("web") + ingress("Prefix"))
    source = ManifestSource(tmp_path)
    good = refresh(source).ingresses[("default", "shop")]
    write(tmp_path / "shop.yaml", svc("web", 81) + ingress("prefix", "new.example.com"))
    state = refresh(source)
    # The Service changed validly; the Ingress stays as it was, and says so.
    assert state.services[("default", "web")].ports[0].port == 81
    assert state.ingresses[("default", "shop")] is good
    (problem,) = state.problems
    assert problem.field == "spec.rules[0].http.paths[0].pathType"
    assert "'prefix' is not one of" in problem.message
    assert problem.message.endswith("(its last good version stays in use)")
    write(tmp_path / "shop.yaml", svc("web", 81) + ingress("Exact", "new.example.com"))
    fixed = refresh(source)
    assert fixed.ingresses[("default", "shop")].rules[0].host == "new.example.com"
    assert fixed.problems == ()


def test_an_object_invalid_from_the_start_is_left_out(tmp_path: Path) -> None:
    write(tmp_path / "shop.yaml", svc("web") + ingress("prefix"))
    state = refresh(ManifestSource(tmp_path))
    assert state.ingresses == {}
    assert "last good" not in state.problems[0].message


def many(n: int, prefix: str = "s") -> str:
    return "".join(svc(f"{prefix}{i}") for i in range(n))


def test_an_emptied_directory_is_held_until_restored(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", svc("a"))
    counter = LimitCounter()
    source = ManifestSource(tmp_path, counter=counter)
    refresh(source)
    (tmp_path / "a.yaml").unlink()
    assert source.refresh() is None
    assert source.held is not None and "every object is gone (1 before)" in source.held
    assert counter.hits == {"max_delete_fraction": 1}
    assert source.refresh() is None  # still held, counted once
    assert counter.hits == {"max_delete_fraction": 1}
    write(tmp_path / "a.yaml", svc("a"))
    assert set(refresh(source).services) == {("default", "a")}
    assert source.held is None


def test_allow_empty_publishes_an_empty_directory(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", svc("a"))
    source = ManifestSource(tmp_path, options=ManifestOptions(allow_empty=True))
    refresh(source)
    (tmp_path / "a.yaml").unlink()
    assert list(refresh(source).objects()) == []
    assert source.held is None


def test_losing_more_than_the_fraction_at_once_is_held(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", many(10, "a"))
    write(tmp_path / "b.yaml", many(10, "b"))
    write(tmp_path / "c.yaml", many(10, "c"))
    source = ManifestSource(tmp_path, options=ManifestOptions(max_delete_fraction=0.5))
    refresh(source)
    (tmp_path / "c.yaml").unlink()  # a third: published
    assert len(refresh(source).services) == 20
    (tmp_path / "b.yaml").unlink()  # half of the rest... 10 of 20 is not more than half
    assert len(refresh(source).services) == 10
    write(tmp_path / "b.yaml", many(10, "b"))
    write(tmp_path / "c.yaml", many(10, "c"))
    assert len(refresh(source).services) == 30
    (tmp_path / "b.yaml").unlink()
    (tmp_path / "c.yaml").unlink()  # 20 of 30: held
    assert source.refresh() is None
    assert source.held is not None and "20 of 30 objects removed" in source.held


def test_the_same_object_in_two_files_is_reported_and_the_first_path_wins(
        tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", svc("web", 82))
    write(tmp_path / "a.yaml", svc("web", 81))
    sl = ("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
          "metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}\n"
          "addressType: IPv4\nports: [{name: http, port: 8080}]\n"
          "endpoints: [{addresses: [10.0.0.1]}]\n")
    write(tmp_path / "s1.yaml", sl)
    write(tmp_path / "s2.yaml", sl)
    for state in (refresh(ManifestSource(tmp_path)), load_path(tmp_path)):
        assert state.services[("default", "web")].ports[0].port == 81
        assert len(state.slices_by_service[("default", "web")]) == 1  # counted once
        dups = sorted(p for p in state.problems if p.reason is Reason.DUPLICATE)
        assert [(p.ref.kind, p.ref.name) for p in dups] == [("EndpointSlice", "web-1"),
                                                            ("Service", "web")]
        assert "a.yaml" in dups[1].message and "b.yaml" in dups[1].message


def test_a_file_over_the_size_limit_is_skipped_and_counted(tmp_path: Path) -> None:
    write(tmp_path / "small.yaml", svc("small"))
    write(tmp_path / "big.yaml", many(40, "big"))
    counter = LimitCounter()
    limits = Limits(max_manifest_bytes=2000)
    source = ManifestSource(tmp_path, options=ManifestOptions(limits=limits), counter=counter)
    state = refresh(source)
    assert set(state.services) == {("default", "small")}
    (problem,) = state.problems
    assert problem.reason is Reason.TOO_LARGE and problem.ref.name.endswith("big.yaml")
    assert "--max-manifest-bytes 2000" in problem.message
    assert counter.hits == {"max_manifest_bytes": 1}


def test_a_file_that_grows_over_the_limit_keeps_its_last_good_objects(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", svc("a"))
    source = ManifestSource(tmp_path, options=ManifestOptions(
        limits=Limits(max_manifest_bytes=1000)))
    refresh(source)
    write(tmp_path / "a.yaml", svc("a") + many(20))
    state = refresh(source)
    assert set(state.services) == {("default", "a")}
    assert [p.reason for p in state.problems] == [Reason.TOO_LARGE]


def alias_bomb() -> str:
    """Under 500 bytes: metadata.name is an alias eight levels deep (9^9 nodes)."""
    lines = ["apiVersion: v1", "kind: Service", "x0: &x0 [q,q,q,q,q,q,q,q,q]"]
    for i in range(1, 9):
        lines.append(f"x{i}: &x{i} [" + ",".join([f"*x{i - 1}"] * 9) + "]")
    lines.append("metadata: {name: *x8}")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_cheaply_naming_file_and_document(tmp_path: Path) -> None:
    text = alias_bomb()
    assert len(text) < 500
    write(tmp_path / "bomb.yaml", svc("good") + text)
    counter = LimitCounter()
    refresh(ManifestSource(tmp_path))  # imports and caches warmed: measure the bomb alone
    tracemalloc.start()
    started = time.monotonic()
    try:
        state = refresh(ManifestSource(tmp_path, counter=counter))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 2
    assert peak < 20_000_000
    assert set(state.services) == {("default", "good")}
    (problem,) = state.problems
    assert (problem.reason, problem.field) == (Reason.TOO_LARGE, "document 2 (line 7)")
    assert problem.ref.name.endswith("bomb.yaml")
    assert counter.hits == {"max_document_nodes": 1}
    # Without the budget, the name would be a 9^9-item value: as it is, nothing
    # ever walks it. With a budget that lets it through, it is still reported briefly.
    state = refresh(ManifestSource(tmp_path, options=ManifestOptions(
        limits=Limits(max_document_nodes=10**12))))
    (problem,) = state.problems
    assert problem.field == "metadata.name" and len(problem.message) < 300


def test_a_small_alias_expansion_is_fine(tmp_path: Path) -> None:
    text = ("apiVersion: v1\nkind: Service\nmetadata: {name: a, labels: &l {app: a}}\n"
            "spec: {selector: *l, ports: [{port: 80}]}\n")
    write(tmp_path / "a.yaml", text)
    state = refresh(ManifestSource(tmp_path))
    assert state.services[("default", "a")].selector == {"app": "a"}


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "apiVersion: v1\nkind: Service\nmetadata: &m {name: a, x: *m}\n")
    (problem,) = refresh(ManifestSource(tmp_path)).problems
    assert problem.reason is Reason.TOO_LARGE and "contains it" in problem.message


NODE_PORT = "  type: NodePort\n"


def node_port_services(order: list[str]) -> str:
    return "".join(svc(n, extra=NODE_PORT) for n in order)


def test_missing_node_ports_are_allocated_deterministically(tmp_path: Path) -> None:
    names = [f"n{i}" for i in range(30)]
    write(tmp_path / "a.yaml", node_port_services(names))
    first = refresh(ManifestSource(tmp_path))
    write(tmp_path / "a.yaml", node_port_services(list(reversed(names))))
    again = refresh(ManifestSource(tmp_path))
    ports = {k: s.ports[0].node_port for k, s in first.services.items()}
    assert ports == {k: s.ports[0].node_port for k, s in again.services.items()}
    assert len(set(ports.values())) == 30
    # The upper band first (the API server's dynamic band: 30000 + 86 and up here).
    assert all(p is not None and 30086 <= p <= 32767 for p in ports.values())
    allocated = [p for p in first.problems if p.reason is Reason.ALLOCATED]
    assert len(allocated) == 30 and allocated[0].field == "spec.ports[0].nodePort"


def test_allocation_avoids_ports_other_services_name(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", node_port_services(["auto"]))
    taken = refresh(ManifestSource(tmp_path)).services[("default", "auto")].ports[0].node_port
    assert taken is not None
    fixed = ("apiVersion: v1\nkind: Service\nmetadata: {name: fixed}\nspec:\n  type: NodePort\n"
             f"  ports: [{{name: http, port: 80, nodePort: {taken}}}]\n---\n")
    write(tmp_path / "b.yaml", fixed)
    state = refresh(ManifestSource(tmp_path))
    assert state.services[("default", "auto")].ports[0].node_port not in (None, taken)
    assert state.services[("default", "fixed")].ports[0].node_port == taken


def test_an_allocated_service_stays_the_same_model_while_its_ports_do(tmp_path: Path) -> None:
    # Incremental translation knows an unchanged object by identity: filling in the
    # nodePorts again on every change must not make every such Service look changed.
    write(tmp_path / "a.yaml", node_port_services(["n0", "n1"]))
    source = ManifestSource(tmp_path)
    first = refresh(source)
    write(tmp_path / "b.yaml", svc("other"))
    second = refresh(source)
    for key in (("default", "n0"), ("default", "n1")):
        assert second.services[key] is first.services[key]
    # A Service that now names n0's port itself moves n0 to another port: a new model.
    taken = first.services[("default", "n0")].ports[0].node_port
    write(tmp_path / "b.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: fixed}\n"
          f"spec:\n  type: NodePort\n  ports: [{{port: 80, nodePort: {taken}}}]\n")
    third = refresh(source)
    assert third.services[("default", "n0")].ports[0].node_port not in (None, taken)
    assert third.services[("default", "n1")] is first.services[("default", "n1")]


def test_load_balancers_opting_out_get_no_node_port(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", svc("lb", extra="  type: LoadBalancer\n"
                                              "  allocateLoadBalancerNodePorts: false\n")
          + svc("lb2", extra="  type: LoadBalancer\n"))
    state = refresh(ManifestSource(tmp_path))
    assert state.services[("default", "lb")].ports[0].node_port is None
    assert state.services[("default", "lb2")].ports[0].node_port is not None


@pytest.mark.parametrize("documents", [20_000])
def test_parsing_many_documents_leaves_the_event_loop_free(tmp_path: Path,
                                                           documents: int) -> None:
    for part in range(4):
        write(tmp_path / f"m{part}.yaml", many(documents // 4, f"p{part}-"))
    lags: list[float] = []

    async def scenario() -> float:
        source = ManifestSource(tmp_path)
        loaded = asyncio.Event()
        task = asyncio.create_task(source.run(lambda state: loaded.set()))
        started = time.monotonic()
        while not loaded.is_set():
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - before)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return time.monotonic() - started

    took = asyncio.run(scenario())
    assert took > 0.3  # the parse took a while...
    # ...and the loop kept running meanwhile. The bound leaves room for a loaded
    # machine (the parser thread holds the GIL through long C calls); the bug this
    # guards against blocked the loop for the whole parse (21 s for 50 MB).
    assert max(lags) < 3.0, (max(lags), took)
