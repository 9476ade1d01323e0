"""Which edge Envoys serve which Gateway (pure).

Edge Envoys form groups by the ``node.cluster`` they send (``edge/<cluster>``).
By default every edge group serves every Gateway of our classes. A Gateway
annotated ``kxds.io/edge-group: <cluster>`` is served by the Envoys of group
``edge/<cluster>`` only; the other groups' views leave it out (its listeners,
chains and routes), as if it did not exist. Its status is computed with every
Gateway (listener conflicts are settled across all of them, whichever group
serves them), so a Gateway's conditions do not depend on which group is asked.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

from kxds.kube.gateway_models import Gateway
from kxds.kube.models import ClusterState

EDGE_GROUP_ANNOTATION = "kxds.io/edge-group"
"""On a Gateway: the ``node.cluster`` of the edge Envoys that serve it (no others do)."""


def edge_group_of(gateway: Gateway) -> str | None:
    """The edge group (``edge/<cluster>``) a Gateway is pinned to; None: every group."""
    cluster = gateway.meta.annotations.get(EDGE_GROUP_ANNOTATION, "").strip()
    return f"edge/{cluster}" if cluster else None


def pinned_groups(state: ClusterState) -> frozenset[str]:
    """The edge groups some Gateway is pinned to (usually none)."""
    return frozenset(g for gw in state.gateways.values() if (g := edge_group_of(gw)))


def state_for_group(state: ClusterState, group: str | None) -> ClusterState:
    """``state`` as edge group ``group`` serves it: without the Gateways pinned to other
    groups (``None``: a group no Gateway is pinned to, so without every pinned one)."""
    kept = {k: gw for k, gw in state.gateways.items() if edge_group_of(gw) in (None, group)}
    if len(kept) == len(state.gateways):
        return state
    return dataclasses.replace(state, gateways=MappingProxyType(kept))
