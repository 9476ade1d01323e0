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

Entry = tuple[m.Model | None, Diagnostic | None]

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


def _names_in_annotations(ing: m.Ingress) -> Iterable[m.Key]:
    """Secrets named by annotations such as ``kxds.io/client-ca-secret: [ns/]name``."""
    for key, value in ing.meta.annotations.items():
        if "secret" in key.rsplit("/", 1)[-1].lower():
            for ref in value.split(","):
                ns, _, name = ref.strip().rpartition("/")
                if name:
                    yield (ns or ing.meta.namespace, name)


def referenced_secrets(ingresses: Iterable[m.Ingress], extra: Iterable[m.Key],
                       gateways: Iterable[m.Gateway] = (),
                       policies: Iterable[m.BackendTLSPolicy] = ()) -> set[m.Key]:
    """Secrets an Ingress (of any class), a Gateway listener, a BackendTLSPolicy or the
    configuration refers to."""
    out = set(extra)
    for pol in policies:
        out.update((pol.meta.namespace, ref.name) for ref in pol.ca_refs
                   if ref.group == "" and ref.kind == "Secret")
    for gw in gateways:
        out.update((ref.namespace or gw.meta.namespace, ref.name) for lis in gw.listeners
                   if lis.tls is not None for ref in lis.tls.certificate_refs)
    for ing in ingresses:
        out.update((ing.meta.namespace, t.secret_name) for t in ing.tls if t.secret_name)
        out.update(_names_in_annotations(ing))
    return out


CONFIG_MAP_ANNOTATIONS = ("custom-headers", "auth-proxy-set-headers")
"""Annotations (short names, under either prefix) whose value names a ConfigMap."""


def referenced_config_maps(ingresses: Iterable[m.Ingress],
                           policies: Iterable[m.BackendTLSPolicy] = ()) -> set[m.Key]:
    """ConfigMaps an Ingress (of any class) names (``[namespace/]name``), and the CA
    bundles BackendTLSPolicies name."""
    out: set[m.Key] = {(p.meta.namespace, r.name) for p in policies for r in p.ca_refs
                       if r.group == "" and r.kind == "ConfigMap"}
    for ing in ingresses:
        for key, value in ing.meta.annotations.items():
            if key.rsplit("/", 1)[-1] in CONFIG_MAP_ANNOTATIONS:
                ns, _, name = value.strip().rpartition("/")
                if name:
                    out.add((ns or ing.meta.namespace, name))
    return out


class Store:
    """Thread-safe per-kind maps of parsed objects, with a change generation."""

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

    def _changed(self) -> None:
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
            new = {k: keep_last_good(old.get(k), e) for k, e in new.items()}
            same = old.keys() == new.keys() and all(_same(old[k], e) for k, e in new.items())
            self.entries[kind.slot] = new
            first = kind.slot not in self.synced
            self.synced.add(kind.slot)
            if first or not same:
                self._changed()

    def upsert(self, kind: Kind, doc: Mapping[str, Any]) -> None:
        key, entry = parse_doc(kind, doc, self.limits)
        with self.lock:
            if entry[0] is None:
                self.failed_uids[kind.slot][key] = _doc_uid(doc)
            else:
                self.failed_uids[kind.slot].pop(key, None)
            table = self.entries[kind.slot]
            entry = keep_last_good(table.get(key), entry)
            unchanged = _same(table.get(key), entry)
            table[key] = entry
            if not unchanged:
                self._changed()

    def delete(self, kind: Kind, doc: Mapping[str, Any]) -> None:
        key, _ = parse_doc(kind, doc)
        with self.lock:
            self.failed_uids[kind.slot].pop(key, None)
            if self.entries[kind.slot].pop(key, None) is not None:
                self._changed()

    def uid(self, ref: ObjectRef) -> str:
        """The uid of an object that failed to parse ("" when unknown)."""
        key = (ref.namespace, ref.name)
        with self.lock:
            for kind in self.kinds:
                if kind.kind == ref.kind and key in self.failed_uids[kind.slot]:
                    return self.failed_uids[kind.slot][key]
        return ""

    def snapshot(self) -> tuple[m.ClusterState | None, int]:
        """``(state, generation)``; the state is None until every kind has been listed."""
        with self.lock:
            if len(self.synced) < len(self.kinds):
                return None, self.generation
            tables = {k: list(v.values()) for k, v in self.entries.items()}
            generation = self.generation
        ingresses = [e[0] for e in tables.get("ingresses", ()) if isinstance(e[0], m.Ingress)]
        gateways = [e[0] for e in tables.get("gateways", ()) if isinstance(e[0], m.Gateway)]
        # (kinds watched per namespace or variant are in slots "plural#variant@ns";
        # these two never are)
        policies = [e[0] for e in tables.get("backendtlspolicies", ())
                    if isinstance(e[0], m.BackendTLSPolicy)]
        wanted = referenced_secrets(ingresses, self.extra_secrets, gateways, policies)
        # Only ConfigMaps an annotation or a policy names are kept in the snapshot, so an
        # unrelated ConfigMap's change rebuilds nothing.
        wanted_maps = referenced_config_maps(ingresses, policies)
        objects: list[m.Model] = []
        problems: list[Diagnostic] = []
        for slot, entries in tables.items():
            plural = slot.partition("@")[0].partition("#")[0]
            for model, problem in entries:
                if plural == "secrets" and not _wanted(model, problem, wanted):
                    continue
                if plural == "configmaps" and not _wanted(model, problem, wanted_maps):
                    continue
                if model is not None:
                    objects.append(model)
                if problem is not None:
                    problems.append(problem)
        return m.ClusterState.from_objects(objects, problems), generation


def _wanted(model: m.Model | None, problem: Diagnostic | None, wanted: set[m.Key]) -> bool:
    if model is not None:
        return model.meta.key in wanted
    return problem is not None and (problem.ref.namespace, problem.ref.name) in wanted
