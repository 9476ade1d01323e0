"""The API source's object store: parsed objects per kind, snapshotted into ClusterStates.

Reflector threads write (:meth:`Store.replace` after a list, :meth:`Store.upsert`
and :meth:`Store.delete` for watch events); the asyncio side reads
:meth:`Store.snapshot`. Objects are kept parsed (models, or the diagnostic of
why they could not be), never as raw JSON, to keep memory small.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kxds.diagnostics import Diagnostic, ObjectRef
from kxds.kube import models as m
from kxds.kube.gateway_models import GROUP
from kxds.kube.limits import Limits
from kxds.kube.parse import parse_object
from kxds.kube.store_index import Entry, StateIndex

TLS_SECRET_TYPE = "kubernetes.io/tls"
OPAQUE_SECRET_TYPE = "Opaque"
"""Basic authentication users (htpasswd) and backend CA bundles come in Opaque Secrets."""


def strip_pod(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Only what NetworkPolicy needs from a Pod: labels, IPs, node, container ports.

    Annotations, managed fields, volumes, env, conditions and the rest are
    dropped before parsing; they can be most of a Pod's size.
    """
    meta = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    status = doc.get("status") or {}
    containers = [{"name": c.get("name"), "ports": c.get("ports")}
                  for c in spec.get("containers") or [] if isinstance(c, Mapping)]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "uid",
                                          "resourceVersion", "creationTimestamp") if k in meta},
        "spec": {"nodeName": spec.get("nodeName"), "containers": containers},
        "status": {k: status[k] for k in ("phase", "podIP", "podIPs") if k in status},
    }


def strip_secret(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Only what kxds reads from a Secret: its type, data and identifying metadata.

    Annotations go (``kubectl apply`` keeps a copy of the whole Secret, data
    included, in one), and so do managed fields: a Secret is kept once.
    """
    meta = doc.get("metadata") or {}
    return {
        "apiVersion": "v1", "kind": "Secret",
        **{k: doc[k] for k in ("type", "data") if k in doc},
        "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "uid",
                                          "resourceVersion", "creationTimestamp") if k in meta},
    }


def strip_config_map(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Only a ConfigMap's data and identifying metadata (not binaryData, annotations or
    managed fields)."""
    meta = doc.get("metadata") or {}
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        **{k: doc[k] for k in ("data",) if k in doc},
        "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "uid",
                                          "resourceVersion", "creationTimestamp") if k in meta},
    }


@dataclass(frozen=True, slots=True)
class Kind:
    """One watched resource."""

    plural: str
    api_version: str
    kind: str
    namespaced: bool
    field_selector: str = ""
    strip: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    optional: bool = False
    """Served only when its CRD is installed: a 404 means "none" (see :mod:`kxds.kube.api`)."""
    namespace: str | None = None
    """Watch it only in this namespace, whatever the source's (``--watch-namespaces``)."""
    variant: str = ""
    """Tells apart two watches of one resource with different field selectors."""

    @property
    def slot(self) -> str:
        """Where the store keeps its objects: the plural (and variant), and the namespace
        when it has one (one reflector per namespace and variant lists and replaces only
        its own objects)."""
        base = f"{self.plural}#{self.variant}" if self.variant else self.plural
        return base if self.namespace is None else f"{base}@{self.namespace}"

    def in_namespaces(self, namespaces: Iterable[str]) -> tuple[Kind, ...]:
        """This kind watched separately in each of ``namespaces``."""
        return tuple(dataclasses.replace(self, namespace=ns) for ns in sorted(set(namespaces)))

    def path(self, namespace: str | None) -> str:
        namespace = self.namespace or namespace
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if namespace and self.namespaced:
            return f"{prefix}/namespaces/{namespace}/{self.plural}"
        return f"{prefix}/{self.plural}"


KINDS: tuple[Kind, ...] = (
    Kind("services", "v1", "Service", True),
    Kind("endpointslices", "discovery.k8s.io/v1", "EndpointSlice", True),
    Kind("ingresses", "networking.k8s.io/v1", "Ingress", True),
    Kind("ingressclasses", "networking.k8s.io/v1", "IngressClass", False),
    Kind("networkpolicies", "networking.k8s.io/v1", "NetworkPolicy", True),
    Kind("namespaces", "v1", "Namespace", False),
    Kind("pods", "v1", "Pod", True, strip=strip_pod),
    # Only TLS and Opaque secrets are ever read; the server filters the rest out
    # (service-account tokens, Helm releases, registry credentials never reach kxds).
    Kind("secrets", "v1", "Secret", True, field_selector=f"type={TLS_SECRET_TYPE}",
         strip=strip_secret),
    Kind("secrets", "v1", "Secret", True, field_selector=f"type={OPAQUE_SECRET_TYPE}",
         strip=strip_secret, variant="opaque"),
    # Kept only when an Ingress annotation names them (see referenced_config_maps).
    Kind("configmaps", "v1", "ConfigMap", True, strip=strip_config_map),
    # Gateway API (standard channel v1.4): CRDs a cluster may not have installed.
    Kind("gatewayclasses", f"{GROUP}/v1", "GatewayClass", False, optional=True),
    Kind("gateways", f"{GROUP}/v1", "Gateway", True, optional=True),
    Kind("httproutes", f"{GROUP}/v1", "HTTPRoute", True, optional=True),
    Kind("grpcroutes", f"{GROUP}/v1", "GRPCRoute", True, optional=True),
    Kind("backendtlspolicies", f"{GROUP}/v1", "BackendTLSPolicy", True, optional=True),
    # The experimental channel's L4 Routes.
    Kind("tlsroutes", f"{GROUP}/v1alpha2", "TLSRoute", True, optional=True),
    Kind("tcproutes", f"{GROUP}/v1alpha2", "TCPRoute", True, optional=True),
    Kind("udproutes", f"{GROUP}/v1alpha2", "UDPRoute", True, optional=True),
    # The standard channel serves ReferenceGrant as v1beta1.
    Kind("referencegrants", f"{GROUP}/v1beta1", "ReferenceGrant", True, optional=True),
)


def parse_doc(kind: Kind, doc: Mapping[str, Any],
              limits: Limits | None = None) -> tuple[m.Key, Entry]:
    """Parse one object from the API; list items lack apiVersion and kind, so add them."""
    body = dict(kind.strip(doc) if kind.strip else doc)
    body["apiVersion"] = kind.api_version
    body["kind"] = kind.kind
    meta = body.get("metadata") or {}
    key = (str(meta.get("namespace") or "") if kind.namespaced else "", str(meta.get("name")))
    model, problem = parse_object(body, f"{kind.kind} {'/'.join(filter(None, key))}", limits)
    return key, (model, problem)


def keep_last_good(old: Entry | None, new: Entry) -> Entry:
    """``new``; but an object that parsed before and fails now keeps its old model.

    Its problem stays, saying so: a change the API server accepted but kxds
    cannot use must not withdraw what the object served until then.
    """
    if new[0] is not None or new[1] is None or old is None or old[0] is None:
        return new
    p = new[1]
    return old[0], Diagnostic(p.ref, p.field, p.reason,
                              f"{p.message} (its last good version stays in use)")


def _doc_uid(doc: Mapping[str, Any]) -> str:
    return str((doc.get("metadata") or {}).get("uid") or "")


def _same(old: Entry | None, new: Entry) -> bool:
    """Equal apart from resourceVersion: a status-only change of a Pod is no change to us."""
    if old is None:
        return False
    if old[0] is None or new[0] is None:
        return old == new
    rv = old[0].meta.resource_version
    meta = dataclasses.replace(new[0].meta, resource_version=rv)
    return old[0] == dataclasses.replace(new[0], meta=meta) and old[1] == new[1]


class Store:
    """Thread-safe per-kind maps of parsed objects, with a change generation.

    An object parsed again unchanged (a relist, a status-only update) keeps its
    model, so a snapshot hands downstream the very same object while it is the
    same; :class:`~kxds.kube.store_index.StateIndex` patches the last snapshot
    with the keys changed since.
    """

    def __init__(self, kinds: Iterable[Kind], extra_secrets: Iterable[m.Key] = (),
                 limits: Limits | None = None) -> None:
        self.lock = threading.Lock()
        self.limits = limits
        self.kinds = tuple(kinds)
        self.entries: dict[str, dict[m.Key, Entry]] = {k.slot: {} for k in self.kinds}
        self.synced: set[str] = set()
        self.generation = 0
        self.extra_secrets = tuple(extra_secrets)
        self.on_change: Callable[[], None] = lambda: None
        self.failed_uids: dict[str, dict[m.Key, str]] = {k.slot: {} for k in self.kinds}
        """Per slot, the uid of each object that failed to parse (it is in no model), for
        Events."""
        self._index = StateIndex({k.slot: k.kind for k in self.kinds}, self.extra_secrets)
        self._pending: dict[str, set[m.Key]] = {}
        """Per slot, the keys changed since the last snapshot."""

    def _changed(self, slot: str, keys: Iterable[m.Key]) -> None:
        self._pending.setdefault(slot, set()).update(keys)
        self.generation += 1
        self.on_change()

    def replace(self, kind: Kind, docs: Iterable[Mapping[str, Any]]) -> None:
        """The result of a complete list: the kind's objects are exactly these."""
        new: dict[m.Key, Entry] = {}
        failed: dict[m.Key, str] = {}
        for doc in docs:
            key, entry = parse_doc(kind, doc, self.limits)
            new[key] = entry
            if entry[0] is None:
                failed[key] = _doc_uid(doc)
        with self.lock:
            self.failed_uids[kind.slot] = failed
            old = self.entries[kind.slot]
            new = {k: _kept(old.get(k), e) for k, e in new.items()}
            changed = [k for k, e in new.items() if e is not old.get(k)]
            changed += old.keys() - new.keys()
            self.entries[kind.slot] = new
            first = kind.slot not in self.synced
            self.synced.add(kind.slot)
            if first or changed:
                self._changed(kind.slot, changed)

    def upsert(self, kind: Kind, doc: Mapping[str, Any]) -> None:
        key, entry = parse_doc(kind, doc, self.limits)
        with self.lock:
            if entry[0] is None:
                self.failed_uids[kind.slot][key] = _doc_uid(doc)
            else:
                self.failed_uids[kind.slot].pop(key, None)
            table = self.entries[kind.slot]
            old = table.get(key)
            table[key] = entry = _kept(old, entry)
            if entry is not old:
                self._changed(kind.slot, (key,))

    def delete(self, kind: Kind, doc: Mapping[str, Any]) -> None:
        key, _ = parse_doc(kind, doc)
        with self.lock:
            self.failed_uids[kind.slot].pop(key, None)
            if self.entries[kind.slot].pop(key, None) is not None:
                self._changed(kind.slot, (key,))

    def uid(self, ref: ObjectRef) -> str:
        """The uid of an object that failed to parse ("" when unknown)."""
        key = (ref.namespace, ref.name)
        with self.lock:
            for kind in self.kinds:
                if kind.kind == ref.kind and key in self.failed_uids[kind.slot]:
                    return self.failed_uids[kind.slot][key]
        return ""

    def snapshot(self) -> tuple[m.ClusterState | None, int]:
        """``(state, generation)``; the state is None until every kind has been listed.
        It costs the objects changed since the last one (the first, every object)."""
        with self.lock:
            if len(self.synced) < len(self.kinds):
                return None, self.generation
            if self._pending:
                self._index.update(self.entries, self._pending)
                self._pending = {}
            return self._index.state, self.generation


def _kept(old: Entry | None, new: Entry) -> Entry:
    """The entry a key holds once ``new`` is parsed: its last good model if ``new``
    failed (:func:`keep_last_good`), and ``old`` itself when nothing we read changed."""
    new = keep_last_good(old, new)
    return old if old is not None and _same(old, new) else new
