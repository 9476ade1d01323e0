"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection does.

Every replica runs :class:`LeaderElector`. The Lease records ``holderIdentity``,
``leaseDurationSeconds``, ``acquireTime``, ``renewTime`` and
``leaseTransitions``. A candidate takes the Lease when nobody holds it, or when
the record has not changed for ``lease_duration`` *as observed on its own
clock* (client-go compares against the local time it last saw the record
change, not against ``renewTime``, so clock skew between nodes does not
matter). The holder renews every ``retry_period``; if it cannot renew for
``renew_deadline`` (shorter than ``lease_duration``) it stops leading before
anyone else may start. Every write is a PUT carrying the Lease's
``resourceVersion``, so two candidates racing get one ``409 Conflict``, and
only one wins. On shutdown the leader releases the Lease (empty holder,
``leaseDurationSeconds: 1``) so a successor starts at once.

Defaults are client-go's: 15 s lease, 10 s renew deadline, 2 s retry period.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from kxds.kube.client import KubeClient, status_code

log = logging.getLogger(__name__)

JITTER = 1.2
"""client-go's JitterFactor: each wait is retry_period * [1, 1 + JITTER)."""


def micro_time(now: dt.datetime | None = None) -> str:
    """A ``metav1.MicroTime`` (RFC 3339 with microseconds)."""
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """Host name (the pod name in a cluster) plus a unique suffix, as client-go advises."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class LeaderElector:
    """Acquire, renew and release one Lease; call back on gaining and losing it."""

    def __init__(self, client: KubeClient, namespace: str, name: str, identity: str, *,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0,
                 on_started: Callable[[], None] = lambda: None,
                 on_stopped: Callable[[], None] = lambda: None) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")
        self.client = client
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self.create_path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_started = on_started
        self.on_stopped = on_stopped
        self.is_leader = False
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._timeout = (retry_period, renew_deadline / 2)

    def _wait(self) -> float:
        return self.retry_period * (1 + random.random() * JITTER)

    async def run(self) -> None:
        """Campaign and lead until cancelled; releases the Lease on the way out."""
        try:
            while True:
                while not await asyncio.to_thread(self.try_acquire_or_renew):
                    await asyncio.sleep(self._wait())
                self._set_leader(True)
                await self._keep_renewing()
                self._set_leader(False)
        finally:
            if self.is_leader:
                self._set_leader(False)
                try:
                    await asyncio.shield(asyncio.to_thread(self.release))
                except Exception as e:
                    log.warning("event=lease_release_failed error=%s", e)

    def _set_leader(self, leading: bool) -> None:
        self.is_leader = leading
        log.info("event=%s lease=%s/%s identity=%s",
                 "started_leading" if leading else "stopped_leading",
                 self.namespace, self.name, self.identity)
        (self.on_started if leading else self.on_stopped)()

    async def _keep_renewing(self) -> None:
        """Renew every retry period; return once renewing failed for ``renew_deadline``."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.retry_period)
            if await asyncio.to_thread(self.try_acquire_or_renew):
                last = time.monotonic()
            elif time.monotonic() - last >= self.renew_deadline:
                return

    def _observe(self, spec: dict[str, Any]) -> None:
        record = (spec.get("holderIdentity"), spec.get("renewTime"),
                  spec.get("acquireTime"), spec.get("leaseTransitions"))
        if record != self._observed:
            self._observed = record
            self._observed_at = time.monotonic()

    def try_acquire_or_renew(self) -> bool:
        """One attempt (blocking). True when we hold the Lease afterwards."""
        now = micro_time()
        try:
            lease = self.client.request("GET", self.path, timeout=self._timeout)
        except Exception as e:
            if status_code(e) != 404:
                log.debug("lease get failed: %s", e)
                return False
            return self._create(now)
        spec = lease.setdefault("spec", {})
        self._observe(spec)
        holder = spec.get("holderIdentity") or ""
        expired = time.monotonic() > self._observed_at + float(
            spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and not expired:
            return False
        if holder != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(holderIdentity=self.identity, renewTime=now,
                    leaseDurationSeconds=int(self.lease_duration))
        try:  # metadata.resourceVersion is still the one read: a race gets 409
            updated = self.client.request("PUT", self.path, body=lease, timeout=self._timeout)
        except Exception as e:
            log.debug("lease update failed (%s): %s", status_code(e), e)
            return False
        self._observe(updated.get("spec") or {})
        return True

    def _create(self, now: str) -> bool:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"holderIdentity": self.identity,
                         "leaseDurationSeconds": int(self.lease_duration),
                         "acquireTime": now, "renewTime": now, "leaseTransitions": 0}}
        try:
            created = self.client.request("POST", self.create_path, body=body,
                                          timeout=self._timeout)
        except Exception as e:  # 409 AlreadyExists: another candidate was first
            log.debug("lease create failed (%s): %s", status_code(e), e)
            return False
        self._observe(created.get("spec") or {})
        return True

    def release(self) -> None:
        """Give the Lease up so that a successor need not wait for it to expire."""
        lease = self.client.request("GET", self.path, timeout=self._timeout)
        spec = lease.setdefault("spec", {})
        if spec.get("holderIdentity") != self.identity:
            return
        spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=micro_time())
        self.client.request("PUT", self.path, body=lease, timeout=self._timeout)
        log.info("event=lease_released lease=%s/%s", self.namespace, self.name)
