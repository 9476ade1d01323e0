"""Ingress status: ``status.loadBalancer.ingress`` of the Ingresses kxds serves.

The address published is either fixed (``--publish-address``: an IP becomes
``ip``, anything else ``hostname``) or copied from the load-balancer status of
the edge proxy's Service (``--publish-service NS/NAME``), as ingress-nginx and
Contour do. Every Ingress of our class gets it; an Ingress that is not ours
but still carries exactly our addresses (it left our class) is cleared. The
class decision is the translators' own (:func:`kxds.kube.ingress_class.is_ours`).

Only the leader writes (see :mod:`kxds.kube.leader`), and only what differs.
A write is a GET then a PUT to the ``status`` subresource carrying the
object's ``resourceVersion``; ``409 Conflict`` (someone wrote in between)
means read again and retry (optimistic concurrency,
https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kxds.kube.client import KubeClient, status_code
from kxds.kube.ingress_class import is_ours
from kxds.kube.models import ClusterState, Key

log = logging.getLogger(__name__)

LbEntry = dict[str, str]
"""One ``status.loadBalancer.ingress`` entry: ``{"ip": ...}`` or ``{"hostname": ...}``."""


def address_entry(address: str) -> LbEntry:
    """``--publish-address``: an IP address is an ``ip``, anything else a ``hostname``."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return {"hostname": address}
    return {"ip": address}


def entry_value(entry: Mapping[str, Any]) -> str:
    """The IP or hostname of an entry, as :class:`kxds.kube.models.Ingress` keeps it."""
    return str(entry.get("ip") or entry.get("hostname") or "")


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusConfig:
    """Where the published address comes from; exactly one should be set."""

    publish_service: Key | None = None
    publish_address: str | None = None


class StatusWriter:
    """Keeps Ingress load-balancer status in line with the published address."""

    def __init__(self, client: KubeClient, config: StatusConfig, ingress_class: str,
                 *, resync: float = 30.0, is_leader: Callable[[], bool] = lambda: True) -> None:
        self.client = client
        self.config = config
        self.ingress_class = ingress_class
        self.resync = resync
        self.is_leader = is_leader
        self.writes = 0
        """Successful status writes (for tests and logs)."""
        self._state: ClusterState | None = None
        self._wake = asyncio.Event()
        self._poked = False

    def update(self, state: ClusterState) -> None:
        """A new ClusterState (subscribe this to the API source)."""
        self._state = state
        self._wake.set()

    def poke(self) -> None:
        """Reconcile now (leadership was just acquired)."""
        self._poked = True
        self._wake.set()

    def _inputs(self, state: ClusterState) -> tuple[object, ...]:
        """What the status depends on; other changes (endpoints, pods) need no reconcile."""
        svc = self.config.publish_service
        return (state.ingresses, state.ingress_classes,
                state.services.get(svc) if svc is not None else None)

    async def run(self) -> None:
        """Reconcile when the Ingresses, classes or published Service change, when
        leadership is gained, and every ``resync`` seconds; until cancelled."""
        done: tuple[object, ...] | None = None
        while True:
            resync = False
            try:
                await asyncio.wait_for(self._wake.wait(), self.resync)
            except TimeoutError:
                resync = True
            self._wake.clear()
            state = self._state
            if state is None or not self.is_leader():
                done = None  # a new leader starts from a full reconcile
                continue
            inputs = self._inputs(state)
            if inputs == done and not resync and not self._poked:
                continue
            self._poked = False
            try:
                await asyncio.to_thread(self.reconcile, state)
                done = inputs
            except Exception as e:  # the API is down: the next state or resync retries
                log.warning("event=status_failed error=%s: %s", type(e).__name__, e)

    def published(self) -> list[LbEntry] | None:
        """Our addresses now; None when they cannot be known (Service not found)."""
        if self.config.publish_address:
            return [address_entry(self.config.publish_address)]
        if self.config.publish_service is None:
            return None
        ns, name = self.config.publish_service
        try:
            svc = self.client.request("GET", f"/api/v1/namespaces/{ns}/services/{name}")
        except Exception as e:
            log.warning("event=publish_service_unavailable service=%s/%s error=%s", ns, name, e)
            return None
        entries = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return [{k: str(e[k]) for k in ("ip", "hostname") if e.get(k)}
                for e in entries if isinstance(e, Mapping) and (e.get("ip") or e.get("hostname"))]

    def desired(self, state: ClusterState, ours: Sequence[LbEntry]) -> dict[Key, list[LbEntry]]:
        """The Ingresses whose status must change, and what it must become."""
        values = tuple(entry_value(e) for e in ours)
        out: dict[Key, list[LbEntry]] = {}
        for key, ing in sorted(state.ingresses.items()):
            if is_ours(ing, state, self.ingress_class):
                if ing.load_balancer_ingress != values:
                    out[key] = list(ours)
            elif values and ing.load_balancer_ingress == values:
                out[key] = []  # it left our class: take our address back
        return out

    def reconcile(self, state: ClusterState) -> int:
        """Write every status that differs; returns how many were written (blocking)."""
        ours = self.published()
        if ours is None:
            return 0
        written = 0
        for key, entries in self.desired(state, ours).items():
            if self._write(key, entries):
                written += 1
        self.writes += written
        return written

    def _write(self, key: Key, entries: list[LbEntry], attempts: int = 5) -> bool:
        ns, name = key
        path = f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/{name}"
        for _ in range(attempts):
            try:
                current = self.client.request("GET", path)
            except Exception as e:
                if status_code(e) == 404:
                    return False  # deleted meanwhile
                raise
            status = current.setdefault("status", {})
            lb = status.setdefault("loadBalancer", {})
            if [entry_value(e) for e in lb.get("ingress") or []] == [
                    entry_value(e) for e in entries]:
                return False  # already right (the state we saw was older)
            if entries:
                lb["ingress"] = entries
            else:
                lb.pop("ingress", None)
            try:
                self.client.request("PUT", f"{path}/status", body=current)
            except Exception as e:
                if status_code(e) == 409:
                    continue  # written in between: read again
                raise
            log.info("event=ingress_status ingress=%s/%s addresses=%s", ns, name,
                     ",".join(entry_value(e) for e in entries) or "-")
            return True
        log.warning("event=status_conflict ingress=%s/%s attempts=%d", ns, name, attempts)
        return False
