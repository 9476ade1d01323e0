"""Gateway API status written to the API server: GatewayClasses, Gateways and Routes.

The translation computes every status kxds owns
(:class:`~kxds.translators.gateway_status.GatewayApiStatus`); this writer puts
it on the objects, through the ``status`` subresource, as the spec lays it out:

* GatewayClass: ``conditions`` and ``supportedFeatures``;
* Gateway: ``conditions``, ``listeners`` (``supportedKinds``, ``attachedRoutes``,
  ``conditions``) and ``addresses`` (the published addresses, when kxds knows
  them: ``--publish-address`` or ``--publish-service``);
* a Route: its entries of ``parents`` whose ``controllerName`` is ours; the
  entries other controllers wrote are kept as they are.

Every condition carries ``observedGeneration``; ``lastTransitionTime`` moves only
when a condition's status changes. Only the leader writes, and only what
differs (ignoring transition times). A write is a GET then a PUT carrying the
object's ``resourceVersion``; ``409 Conflict`` means read again and retry, as
for Ingress status (:mod:`kxds.kube.status`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from kxds.kube.client import KubeClient
from kxds.kube.gateway_models import ParentReference
from kxds.kube.status import LbEntry, LeaderReconciler, write_status
from kxds.translators.gateway_status import (
    CONTROLLER_NAME,
    ClassStatus,
    Condition,
    GatewayApiStatus,
    GatewayStatus,
    RouteStatus,
)

log = logging.getLogger(__name__)

API = "/apis/gateway.networking.k8s.io"
ROUTE_PATHS = {"HTTPRoute": "v1/namespaces/{ns}/httproutes/{name}",
               "GRPCRoute": "v1/namespaces/{ns}/grpcroutes/{name}",
               "TLSRoute": "v1alpha2/namespaces/{ns}/tlsroutes/{name}",
               "TCPRoute": "v1alpha2/namespaces/{ns}/tcproutes/{name}",
               "UDPRoute": "v1alpha2/namespaces/{ns}/udproutes/{name}"}
"""Where each Route kind lives (its version as kxds reads it)."""
POLICY_PATHS = {"BackendTLSPolicy": "v1/namespaces/{ns}/backendtlspolicies/{name}"}
"""Where each policy kind lives: its status lists ``ancestors`` (the Gateways it
applies to), the same shape as a Route's ``parents``."""

Obj = dict[str, Any]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions(wanted: tuple[Condition, ...], generation: int,
               current: list[Any] | None, now: str) -> list[Obj]:
    """``wanted`` as ``metav1.Condition`` objects; a condition whose status is unchanged
    keeps its ``lastTransitionTime``."""
    before = {c.get("type"): c for c in current or [] if isinstance(c, Mapping)}
    out: list[Obj] = []
    for c in wanted:
        status = "True" if c.status else "False"
        old = before.get(c.type)
        since = old.get("lastTransitionTime") if old and old.get("status") == status else None
        out.append({"type": c.type, "status": status, "reason": c.reason,
                    "message": c.message, "observedGeneration": generation,
                    "lastTransitionTime": since or now})
    return out


def _parent_ref(p: ParentReference) -> Obj:
    ref: Obj = {"group": p.group, "kind": p.kind, "name": p.name}
    if p.namespace is not None:
        ref["namespace"] = p.namespace
    if p.section_name is not None:
        ref["sectionName"] = p.section_name
    if p.port is not None:
        ref["port"] = p.port
    return ref


def _address(entry: LbEntry) -> Obj:
    if "ip" in entry:
        return {"type": "IPAddress", "value": entry["ip"]}
    return {"type": "Hostname", "value": entry["hostname"]}


def class_status(c: ClassStatus, current: Obj, *, now: str) -> Obj:
    """The GatewayClass ``status`` for ``c`` over the object's ``current`` one."""
    status = dict(current)
    status["conditions"] = conditions(c.conditions, c.generation, current.get("conditions"),
                                      now)
    status["supportedFeatures"] = [{"name": f} for f in c.supported_features]
    return status


def gateway_status(g: GatewayStatus, current: Obj, *, now: str,
                   addresses: list[LbEntry] | None) -> Obj:
    """The Gateway ``status`` for ``g`` over the object's ``current`` one."""
    status = dict(current)
    status["conditions"] = conditions(g.conditions, g.generation, current.get("conditions"),
                                      now)
    before = {lis.get("name"): lis for lis in current.get("listeners") or []
              if isinstance(lis, Mapping)}
    status["listeners"] = [{
        "name": lis.name,
        "supportedKinds": [{"group": k.group or "gateway.networking.k8s.io", "kind": k.kind}
                           for k in lis.supported_kinds],
        "attachedRoutes": lis.attached_routes,
        "conditions": conditions(lis.conditions, g.generation,
                                 (before.get(lis.name) or {}).get("conditions"), now),
    } for lis in g.listeners]
    if addresses is not None:
        status["addresses"] = [_address(e) for e in addresses]
    return status


def route_status(r: RouteStatus, current: Obj, *, now: str) -> Obj:
    """The Route ``status`` for ``r`` over the object's ``current`` one: our parents
    replaced, the other controllers' kept."""
    status = dict(current)
    kept = [p for p in current.get("parents") or []
            if isinstance(p, Mapping) and p.get("controllerName") != CONTROLLER_NAME]
    ours_before = {_key(p.get("parentRef")): p for p in current.get("parents") or []
                   if isinstance(p, Mapping) and p.get("controllerName") == CONTROLLER_NAME}
    ours = []
    for p in r.parents:
        ref = _parent_ref(p.parent)
        old = ours_before.get(_key(ref)) or {}
        ours.append({"parentRef": ref, "controllerName": CONTROLLER_NAME,
                     "conditions": conditions(p.conditions, r.generation,
                                              old.get("conditions"), now)})
    status["parents"] = kept + ours
    return status


def policy_status(r: RouteStatus, current: Obj, *, now: str) -> Obj:
    """A policy's ``status``: :func:`route_status` with ``ancestors``/``ancestorRef``."""
    def renamed(value: Obj, old: str, new: str, old_ref: str, new_ref: str) -> Obj:
        out = {k: v for k, v in value.items() if k != old}
        out[new] = [{(new_ref if k == old_ref else k): v for k, v in e.items()}
                    for e in value.get(old) or [] if isinstance(e, Mapping)]
        return out

    as_route = renamed(current, "ancestors", "parents", "ancestorRef", "parentRef")
    made = route_status(r, as_route, now=now)
    return renamed(made, "parents", "ancestors", "parentRef", "ancestorRef")


def _key(ref: object) -> tuple[object, ...]:
    if not isinstance(ref, Mapping):
        return ()
    return tuple(ref.get(k) for k in ("group", "kind", "namespace", "name", "sectionName",
                                      "port"))


def _without_times(value: Any) -> Any:
    """``value`` with every ``lastTransitionTime`` left out (what decides a write)."""
    if isinstance(value, Mapping):
        return {k: _without_times(v) for k, v in value.items() if k != "lastTransitionTime"}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


class GatewayStatusWriter:
    """Keeps the status of the Gateway API objects kxds owns in line with the translation."""

    def __init__(self, client: KubeClient, *, resync: float = 60.0,
                 is_leader: Callable[[], bool] = lambda: True,
                 addresses: Callable[[], list[LbEntry] | None] = lambda: None) -> None:
        self.client = client
        self.addresses = addresses
        """The Gateways' published addresses; None: unknown (left as they are)."""
        self.writes = 0
        self._loop: LeaderReconciler[GatewayApiStatus] = LeaderReconciler(
            "gateway_status", self.reconcile, resync=resync, is_leader=is_leader)

    def update(self, status: GatewayApiStatus) -> None:
        """The status of the served view after a rebuild."""
        self._loop.offer(status, status)

    def poke(self) -> None:
        """Reconcile now (leadership was just acquired)."""
        self._loop.poke()

    async def run(self) -> None:
        """Write when the status changes, when leadership is gained, and every ``resync``
        seconds (someone may have overwritten it); until cancelled."""
        await self._loop.run()

    def reconcile(self, status: GatewayApiStatus) -> int:
        """Write every status that differs; returns how many were written (blocking)."""
        now = _now()
        addresses = self.addresses() if status.gateways else None
        jobs: list[tuple[str, str, Callable[[Obj], Obj]]] = []
        for c in status.classes:
            jobs.append((f"{API}/v1/gatewayclasses/{c.ref.name}", f"GatewayClass {c.ref.name}",
                         partial(class_status, c, now=now)))
        for g in status.gateways:
            jobs.append((f"{API}/v1/namespaces/{g.ref.namespace}/gateways/{g.ref.name}",
                         f"Gateway {g.ref.key}",
                         partial(gateway_status, g, now=now, addresses=addresses)))
        for r in status.routes:
            where = ROUTE_PATHS.get(r.ref.kind)
            make = route_status
            if where is None:
                where, make = POLICY_PATHS.get(r.ref.kind), policy_status
            if where is None:
                continue
            jobs.append((f"{API}/{where.format(ns=r.ref.namespace, name=r.ref.name)}",
                         f"{r.ref.kind} {r.ref.key}", partial(make, r, now=now)))
        written = sum(self._write(path, what, make) for path, what, make in jobs)
        self.writes += written
        return written

    def _write(self, path: str, what: str, make: Callable[[Obj], Obj]) -> bool:
        def change(before: Obj) -> Obj | None:
            after = make(before)
            return None if _without_times(after) == _without_times(before) else after

        if not write_status(self.client, path, what, change):
            return False
        log.info("event=gateway_status object=%r", what)
        return True
