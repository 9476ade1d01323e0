"""Diagnostics as core/v1 Events on the offending objects (``kubectl describe`` shows them).

Like client-go's event recorder: an Event is ``type: Warning`` with the
diagnostic's reason and message; the same object, reason and message again
updates the existing Event's ``count`` and ``lastTimestamp`` (a merge PATCH)
instead of creating another; and a token bucket per object (burst, then one
every ``refill`` seconds) keeps a broken object from flooding the API, as
client-go's spam filter does. Events of cluster-scoped objects go to the
``default`` namespace, as kubectl's do.

:meth:`EventRecorder.record` takes the complete current set of diagnostics
after each rebuild and emits only those that appeared since the previous
set: a problem that persists is one Event, not one per rebuild.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from kxds.diagnostics import Diagnostic, ObjectRef
from kxds.kube.client import KubeClient, status_code
from kxds.kube.models import ClusterState, Key, Model

log = logging.getLogger(__name__)

API_VERSIONS = {
    "Service": "v1", "Secret": "v1", "Namespace": "v1", "Pod": "v1",
    "EndpointSlice": "discovery.k8s.io/v1", "Ingress": "networking.k8s.io/v1",
    "IngressClass": "networking.k8s.io/v1", "NetworkPolicy": "networking.k8s.io/v1",
}
"""Kinds an Event can name; diagnostics about anything else (files) are not recorded."""

MAX_MESSAGE = 1024


def _timestamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


@dataclass(slots=True)
class _Sent:
    namespace: str
    name: str
    count: int


class EventRecorder:
    """Writes Warning Events for diagnostics; deduplicated and rate-limited per object."""

    def __init__(self, client: KubeClient, *, component: str = "kxds", instance: str = "",
                 burst: int = 25, refill: float = 300.0,
                 is_leader: Callable[[], bool] = lambda: True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.component = component
        self.instance = instance
        self.burst = burst
        self.refill = refill
        self.is_leader = is_leader
        self.clock = clock
        self.dropped = 0
        """Events not written because their object's bucket was empty."""
        self._buckets: dict[ObjectRef, _Bucket] = {}
        self._sent: dict[tuple[ObjectRef, str, str], _Sent] = {}
        self._previous: frozenset[Diagnostic] = frozenset()
        self._queue: asyncio.Queue[tuple[Diagnostic, str]] = asyncio.Queue()

    def record(self, diagnostics: Iterable[Diagnostic], state: ClusterState | None = None,
               uid: Callable[[ObjectRef], str] = lambda ref: "") -> None:
        """Queue an Event for every diagnostic that was not in the previous set.

        The Event names its object by uid, as ``kubectl describe`` looks Events
        up by it: from ``state``, else (an object that failed to parse) ``uid``.
        """
        if not self.is_leader():
            self._previous = frozenset()  # a new leader reports what is wrong now
            return
        current = frozenset(d for d in diagnostics if d.ref.kind in API_VERSIONS)
        new, self._previous = current - self._previous, current
        for d in sorted(new):
            self._queue.put_nowait((d, _uid(state, d.ref) or uid(d.ref)))

    async def run(self) -> None:
        """Write queued Events until cancelled."""
        while True:
            diag, uid = await self._queue.get()
            try:
                await asyncio.to_thread(self.emit, diag, uid)
            except Exception as e:  # the API is down: the Event is lost, the log line is not
                log.warning("event=event_write_failed object=%s error=%s", diag.ref, e)

    def _allow(self, ref: ObjectRef) -> bool:
        now = self.clock()
        bucket = self._buckets.setdefault(ref, _Bucket(float(self.burst), now))
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) / self.refill)
        bucket.updated = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def emit(self, diag: Diagnostic, uid: str = "") -> bool:
        """Write one Event (blocking); False when rate-limited."""
        ref = diag.ref
        if not self._allow(ref):
            self.dropped += 1
            return False
        message = f"{diag.field}: {diag.message}" if diag.field else diag.message
        message = message[:MAX_MESSAGE]
        key = (ref, diag.reason.value, message)
        sent = self._sent.get(key)
        now = _timestamp()
        if sent is not None:
            path = f"/api/v1/namespaces/{sent.namespace}/events/{sent.name}"
            patch = {"count": sent.count + 1, "lastTimestamp": now}
            try:
                self.client.request("PATCH", path, body=patch,
                                    content_type="application/merge-patch+json")
                sent.count += 1
                return True
            except Exception as e:
                if status_code(e) != 404:  # expired (events have a TTL): create anew
                    raise
        namespace = ref.namespace or "default"
        name = f"{ref.name}.{time.time_ns():x}"
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {"apiVersion": API_VERSIONS[ref.kind], "kind": ref.kind,
                               "namespace": ref.namespace, "name": ref.name, "uid": uid},
            "reason": diag.reason.value, "message": message, "type": "Warning",
            "source": {"component": self.component},
            "reportingComponent": self.component, "reportingInstance": self.instance,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        self.client.request("POST", f"/api/v1/namespaces/{namespace}/events", body=body)
        self._sent[key] = _Sent(namespace, name, 1)
        return True


def _uid(state: ClusterState | None, ref: ObjectRef) -> str:
    """The object's uid when the state has it (Events link to objects by uid)."""
    if state is None:
        return ""
    tables: dict[str, Mapping[Key, Model]] = {
              "Service": state.services, "Secret": state.secrets, "Pod": state.pods,
              "EndpointSlice": state.endpoint_slices, "Ingress": state.ingresses,
              "IngressClass": state.ingress_classes, "NetworkPolicy": state.network_policies,
              "Namespace": state.namespaces}
    obj = tables[ref.kind].get((ref.namespace, ref.name)) if ref.kind in tables else None
    return obj.meta.uid if obj is not None else ""
