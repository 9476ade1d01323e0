"""Per-node views rebuilt for EndpointSlice changes equal a full translation.

Every per-node golden case, every EndpointSlice in it, several changes each
(endpoints moving onto and off the node, readiness, addresses, none left):
the controller's memoized build must give exactly the resources and problems
of a fresh translation, and translate again only the Service of the slice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from golden_support import case_settings, cases, load_case_objects

from kxds.kube.loader import load_text
from kxds.kube.models import ClusterState, EndpointSlice, Model, SliceEndpoint
from kxds.translators.config import NodeInfo
from kxds.translators.node import SERVICE_SHARE
from kxds.views import Built, ViewMemo, build_node

NODE_CASES = [c for c in cases() if case_settings(c)[1] is not None]
SHARE = SERVICE_SHARE.name

Change = Callable[[SliceEndpoint, NodeInfo], SliceEndpoint]

CHANGES: dict[str, Change] = {
    "onto-node": lambda ep, node: dataclasses.replace(ep, node_name=node.name),
    "off-node": lambda ep, node: dataclasses.replace(ep, node_name="elsewhere"),
    "not-ready": lambda ep, node: dataclasses.replace(ep, ready=False, serving=False),
    "terminating": lambda ep, node: dataclasses.replace(ep, ready=False, terminating=True),
    "readdressed": lambda ep, node: dataclasses.replace(
        ep, addresses=tuple(_moved(a) for a in ep.addresses)),
}


def _moved(address: str) -> str:
    if ":" in address:
        return address + "1" if not address.endswith(":") else address + "2"
    if address[0].isdigit():
        head, _, last = address.rpartition(".")
        return f"{head}.{(int(last) + 7) % 250 + 1}"
    return "moved." + address


def _versions(built: Built) -> tuple[dict[str, dict[str, str]], tuple[object, ...]]:
    assert built.resources is not None, built.rejected
    return ({t: {n: r.version for n, r in by_name.items()}
             for t, by_name in built.resources.items()}, built.diagnostics)


@pytest.mark.parametrize("case", NODE_CASES)
def test_patched_node_views_equal_full_translation(case: str) -> None:
    objects, problems = load_case_objects(case)
    config, node = case_settings(case)
    assert node is not None
    base: dict[tuple[type, tuple[str, str]], Model] = {(type(o), o.meta.key): o for o in objects}
    slices = [o for o in objects if isinstance(o, EndpointSlice)]
    for sl in slices:
        for name, change in CHANGES.items():
            memo = ViewMemo()
            before = ClusterState.from_objects(base.values(), problems)
            build_node(before, config, node, memo)
            moved = dataclasses.replace(
                sl, endpoints=tuple(change(ep, node) for ep in sl.endpoints))
            for step in (moved, dataclasses.replace(sl, endpoints=()), sl):
                state = ClusterState.from_objects(
                    {**base, (EndpointSlice, sl.meta.key): step}.values(), problems)
                runs = memo.store.runs_by_query.get(SHARE, 0)
                got = build_node(state, config, node, memo)
                assert _versions(got) == _versions(build_node(state, config, node)), (
                    f"{case}: slice {sl.meta.key} {name}")
                # Only the slice's Service is translated again (if the node serves it).
                assert memo.store.runs_by_query.get(SHARE, 0) - runs <= 1, case


def _nodeport_state(names: list[str]) -> ClusterState:
    """NodePort Services (a fixed nodePort and address each), an endpoint on ``n1`` each."""
    docs = []
    for s in names:
        i = ord(s) - ord("a")
        docs.append(f"apiVersion: v1\nkind: Service\nmetadata: {{name: {s}, namespace: default}}\n"
                    f"spec:\n  type: NodePort\n  ports: [{{port: 80, nodePort: {30000 + i}}}]\n")
        docs.append("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
                    f"metadata: {{name: {s}-1, namespace: default, labels: "
                    f"{{kubernetes.io/service-name: {s}}}}}\naddressType: IPv4\n"
                    f"ports: [{{port: 8080}}]\nendpoints:\n"
                    f"- {{addresses: [10.0.0.{i + 1}], nodeName: n1}}\n")
    return load_text("---\n".join(docs))


def test_a_service_added_or_removed_with_slices_is_not_patched() -> None:
    """The view read the slices that changed, and the list of served Services changed
    with them: a patch of the slices alone would miss the Service (it did, re-added)."""
    memo, node = ViewMemo(), NodeInfo(name="n1")
    config = case_settings(NODE_CASES[0])[0]
    for names in (["a"], ["a", "b"], ["b"], ["a", "b"], ["a", "b", "c"]):
        state = _nodeport_state(names)
        assert (_versions(build_node(state, config, node, memo))
                == _versions(build_node(state, config, node))), names
