"""Gateway API status, as data: conditions the translation computes and a writer writes.

The values mirror the status stanzas of the Gateway API objects
(``GatewayClass.status``, ``Gateway.status.listeners``, ``HTTPRoute.status.parents``)
with the spec's condition types and reasons; :func:`status_lines` renders them
for ``kxds validate`` and the debug page.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kxds.diagnostics import ObjectRef
from kxds.kube.gateway_models import GroupKind, ParentReference

CONTROLLER_NAME = "kxds.io/gateway-controller"
"""``spec.controllerName`` of the GatewayClasses kxds serves."""


@dataclass(frozen=True, slots=True, order=True)
class Condition:
    """One ``metav1.Condition`` (without its transition time: the writer sets it)."""

    type: str
    status: bool
    reason: str
    message: str = ""

    def __str__(self) -> str:
        text = f"{self.type}={self.status} ({self.reason})"
        return f"{text}: {self.message}" if self.message else text


@dataclass(frozen=True, slots=True, kw_only=True)
class ClassStatus:
    ref: ObjectRef
    generation: int
    conditions: tuple[Condition, ...]
    supported_features: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerStatus:
    name: str
    supported_kinds: tuple[GroupKind, ...]
    attached_routes: int
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayStatus:
    ref: ObjectRef
    generation: int
    conditions: tuple[Condition, ...]
    listeners: tuple[ListenerStatus, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ParentStatus:
    parent: ParentReference
    """As the Route wrote it (namespace None: the Route's own)."""
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteStatus:
    ref: ObjectRef
    generation: int
    parents: tuple[ParentStatus, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayApiStatus:
    """Every status kxds owns, sorted by object."""

    classes: tuple[ClassStatus, ...] = ()
    gateways: tuple[GatewayStatus, ...] = ()
    routes: tuple[RouteStatus, ...] = ()


def _parent_text(p: ParentReference) -> str:
    where = f"{p.namespace}/{p.name}" if p.namespace else p.name
    section = f" section {p.section_name}" if p.section_name else ""
    port = f" port {p.port}" if p.port is not None else ""
    return f"{p.kind} {where}{section}{port}"


def status_lines(status: GatewayApiStatus) -> Iterable[str]:
    """One line per condition: ``Kind ns/name[: listener L | parent P]: Type=Status (Reason)``."""
    for c in status.classes:
        feats = f" supportedFeatures={','.join(c.supported_features)}"
        for cond in c.conditions:
            yield f"{c.ref.kind} {c.ref.key}: {cond}{feats if cond.type == 'Accepted' else ''}"
    for gw in status.gateways:
        for cond in gw.conditions:
            yield f"{gw.ref.kind} {gw.ref.key}: {cond}"
        for lis in gw.listeners:
            for cond in lis.conditions:
                yield (f"{gw.ref.kind} {gw.ref.key}: listener {lis.name} "
                       f"(attachedRoutes {lis.attached_routes}): {cond}")
    for r in status.routes:
        for p in r.parents:
            for cond in p.conditions:
                yield f"{r.ref.kind} {r.ref.key}: parent {_parent_text(p.parent)}: {cond}"
