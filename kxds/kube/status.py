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
from typing import Any, Generic, TypeVar

from kxds.kube.client import KubeClient, status_code
from kxds.kube.ingress_class import is_ours
from kxds.kube.models import ClusterState, Key

log = logging.getLogger(__name__)

T = TypeVar("T")

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


Status = dict[str, Any]
"""An object's ``status``, as the API server gives it."""


def write_status(client: KubeClient, path: str, what: str,
                 change: Callable[[Status], Status | None], attempts: int = 5) -> bool:
    """Read the object at ``path`` and write ``change(its status)`` to its ``status``
    subresource; ``change`` answers None when the status is already right. A 409
    (written in between) reads again; returns whether a write was made (an object
    deleted meanwhile is not written). Blocking."""
    for _ in range(attempts):
        try:
            current = client.request("GET", path)
        except Exception as e:
            if status_code(e) == 404:
                return False
            raise
        after = change(current.get("status") or {})
        if after is None:
            return False
        current["status"] = after
        try:
            client.request("PUT", f"{path}/status", body=current)
        except Exception as e:
            if status_code(e) == 409:
                continue
            raise
        return True
    log.warning("event=status_conflict object=%r attempts=%d", what, attempts)
    return False


class LeaderReconciler(Generic[T]):
    """Runs a blocking ``reconcile(value)`` (in a thread) when what it depends on
    changes, when leadership is gained (:meth:`poke`) and every ``resync`` seconds,
    on the leader only; a failure (the API down) waits for the next of those."""

    def __init__(self, name: str, reconcile: Callable[[T], object], *, resync: float,
                 is_leader: Callable[[], bool]) -> None:
        self.name = name
        self.reconcile_value = reconcile
        self.resync = resync
        self.is_leader = is_leader
        self._value: T | None = None
        self._inputs: object = None
        self._wake = asyncio.Event()
        self._poked = False

    @property
    def value(self) -> T | None:
        """The newest value offered (None before the first)."""
        return self._value

    def offer(self, value: T, inputs: object) -> None:
        """The newest ``value``; ``inputs`` is what decides whether it needs writing."""
        self._value, self._inputs = value, inputs
        self._wake.set()

    def poke(self) -> None:
        """Reconcile now (leadership was just acquired)."""
        self._poked = True
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled."""
        done: object = None
        while True:
            resync = False
            try:
                async with asyncio.timeout(self.resync):
                    await self._wake.wait()
            except TimeoutError:
                resync = True
            self._wake.clear()
            value, inputs = self._value, self._inputs
            if value is None or not self.is_leader():
                done = None  # a new leader starts from a full reconcile
                continue
            if inputs == done and not resync and not self._poked:
                continue
            self._poked = False
            try:
                await asyncio.to_thread(self.reconcile_value, value)
                done = inputs
            except Exception as e:
                log.warning("event=%s_failed error=%s: %s", self.name, type(e).__name__, e)


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
        self.writes = 0
        """Successful status writes (for tests and logs)."""
        self._loop: LeaderReconciler[ClusterState] = LeaderReconciler(
            "status", self.reconcile, resync=resync, is_leader=is_leader)

    @property
    def state(self) -> ClusterState | None:
        """The newest ClusterState given (None before the first)."""
        return self._loop.value

    def update(self, state: ClusterState) -> None:
        """A new ClusterState (subscribe this to the API source)."""
        self._loop.offer(state, self._inputs(state))

    def poke(self) -> None:
        """Reconcile now (leadership was just acquired)."""
        self._loop.poke()

    def _inputs(self, state: ClusterState) -> tuple[object, ...]:
        """What the status depends on; other changes (endpoints, pods) need no reconcile."""
        svc = self.config.publish_service
        return (state.ingresses, state.ingress_classes,
                state.services.get(svc) if svc is not None else None)

    async def run(self) -> None:
        """Reconcile when the Ingresses, classes or published Service change, when
        leadership is gained, and every ``resync`` seconds; until cancelled."""
        await self._loop.run()

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

    def _write(self, key: Key, entries: list[LbEntry]) -> bool:
        ns, name = key
        path = f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/{name}"

        def change(status: Status) -> Status | None:
            lb = status.setdefault("loadBalancer", {})
            if [entry_value(e) for e in lb.get("ingress") or []] == [
                    entry_value(e) for e in entries]:
                return None  # already right (the state we saw was older)
            if entries:
                lb["ingress"] = entries
            else:
                lb.pop("ingress", None)
            return status

        if not write_status(self.client, path, f"Ingress {ns}/{name}", change):
            return False
        log.info("event=ingress_status ingress=%s/%s addresses=%s", ns, name,
                 ",".join(entry_value(e) for e in entries) or "-")
        return True
