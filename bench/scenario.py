"""Synthetic clusters of a chosen size, as Kubernetes manifests and as ClusterState.

A scenario of size N has N Services (one HTTP port each), one EndpointSlice
per Service with k endpoints, Ingresses that route one path to each Service
(``paths_per_ingress`` paths per Ingress, one host per Ingress), and one
NetworkPolicy with ipBlocks for every ``policy_every``-th Service. Everything
is deterministic: the same parameters give the same objects.

The objects are first built as plain dicts (what ``kubectl get -o yaml`` or
the API would give), so the same scenario can be written as manifest files for
``kxds serve`` and parsed into a :class:`ClusterState` for in-process runs
through the very parser kxds uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kxds.kube.models import ClusterState, EndpointSlice, Model
from kxds.kube.parse import parse_object

try:
    _Dumper: type[yaml.SafeDumper] = yaml.CSafeDumper  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - only without libyaml
    _Dumper = yaml.SafeDumper

Doc = dict[str, Any]
INGRESS_CLASS = "kxds"
CONTROLLER = "kxds.io/ingress-controller"
SERVICE_PORT = 80
TARGET_PORT = 8080


def default_address(service: int, endpoint: int) -> tuple[str, int]:
    """A unique pod address per (service, endpoint) inside 10.0.0.0/8."""
    n = service * 64 + endpoint
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}", TARGET_PORT


@dataclass(frozen=True, slots=True, kw_only=True)
class Spec:
    """The shape of a scenario."""

    services: int
    endpoints: int = 5
    paths_per_ingress: int = 4
    namespaces: int = 0
    """0: one namespace per 50 Services (clusters grow by adding namespaces)."""
    policy_every: int = 10
    """One NetworkPolicy for every this many Services (0: none)."""
    with_ingresses: bool = True
    client_cidrs: tuple[str, ...] = ("127.0.0.0/8", "10.0.0.0/8", "192.168.0.0/16")
    """What the NetworkPolicies allow; loopback is in, so live traffic passes them."""
    address: Callable[[int, int], tuple[str, int]] = default_address

    @property
    def namespace_count(self) -> int:
        return self.namespaces or max(1, -(-self.services // 50))

    @property
    def ingresses(self) -> int:
        return -(-self.services // self.paths_per_ingress)


def namespace_of(spec: Spec, i: int) -> str:
    """Services are spread over namespaces by Ingress group, so an Ingress's backends share it."""
    return f"ns-{(i // spec.paths_per_ingress) % spec.namespace_count}"


def service_name(i: int) -> str:
    return f"svc-{i:05d}"


def host_of(j: int) -> str:
    """The host of Ingress ``j``."""
    return f"app-{j:05d}.example.com"


def path_of(i: int) -> str:
    return f"/{service_name(i)}"


def route_of(spec: Spec, i: int) -> tuple[str, str]:
    """``(host, path)`` that reaches Service ``i`` through the gateway."""
    return host_of(i // spec.paths_per_ingress), path_of(i)


def service_doc(spec: Spec, i: int) -> Doc:
    name = service_name(i)
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace_of(spec, i), "labels": {"app": name}},
        "spec": {
            "selector": {"app": name},
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": TARGET_PORT,
                       "protocol": "TCP"}],
        },
    }


def slice_doc(spec: Spec, i: int, generation: int = 0, rolled: int | None = None) -> Doc:
    """The EndpointSlice of Service ``i``.

    With ``generation``, the first ``rolled`` endpoints (default 1) are pods of
    that generation: new names and addresses, as a rolling update makes them.
    """
    rolled = (1 if generation else 0) if rolled is None else rolled
    name = service_name(i)
    endpoints = []
    ports: set[int] = set()
    for e in range(spec.endpoints):
        addr, port = spec.address(i, e)
        ports.add(port)
        if e < rolled:
            # A replaced pod: new name, new address; port unchanged.
            n = (generation * 64 + e) & 0xFFFF
            addr = f"172.{16 + e % 16}.{n >> 8}.{n & 255}"
        endpoints.append({
            "addresses": [addr],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "nodeName": f"node-{(i + e) % 8}",
            "zone": f"zone-{(i + e) % 3}",
            "targetRef": {"kind": "Pod", "namespace": namespace_of(spec, i),
                          "name": f"{name}-{e}-{generation}"},
        })
    if len(ports) != 1:
        raise ValueError("every endpoint of one slice must use the same port")
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{name}-abcde", "namespace": namespace_of(spec, i),
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": ports.pop(), "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def ingress_doc(spec: Spec, j: int, extra_paths: tuple[tuple[str, int], ...] = ()) -> Doc:
    """Ingress ``j``: one host, a Prefix path per Service it covers, plus Exact ``extra_paths``."""
    first = j * spec.paths_per_ingress
    members = range(first, min(first + spec.paths_per_ingress, spec.services))
    paths = [
        {"path": path_of(i), "pathType": "Prefix",
         "backend": {"service": {"name": service_name(i), "port": {"number": SERVICE_PORT}}}}
        for i in members
    ]
    paths += [
        {"path": p, "pathType": "Exact",
         "backend": {"service": {"name": service_name(i), "port": {"number": SERVICE_PORT}}}}
        for p, i in extra_paths
    ]
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": f"ing-{j:05d}", "namespace": namespace_of(spec, first)},
        "spec": {"ingressClassName": INGRESS_CLASS,
                 "rules": [{"host": host_of(j), "http": {"paths": paths}}]},
    }


def policy_doc(spec: Spec, i: int) -> Doc:
    """Allow the client CIDRs (with a hole carved out of each) to Service ``i``'s pods."""
    blocks = []
    for n, cidr in enumerate(spec.client_cidrs):
        base = cidr.split("/")[0].rsplit(".", 1)[0]
        hole = f"{base}.{200 + n}/32" if not cidr.startswith("127.") else None
        blocks.append({"ipBlock": {"cidr": cidr, **({"except": [hole]} if hole else {})}})
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": f"allow-{service_name(i)}", "namespace": namespace_of(spec, i)},
        "spec": {
            "podSelector": {"matchLabels": {"app": service_name(i)}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": blocks, "ports": [{"protocol": "TCP", "port": TARGET_PORT}]}],
        },
    }


def documents(spec: Spec) -> Iterator[Doc]:
    """Every object of the scenario, as Kubernetes would serve it."""
    yield {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
           "metadata": {"name": INGRESS_CLASS}, "spec": {"controller": CONTROLLER}}
    for ns in range(min(spec.namespace_count, spec.ingresses)):
        yield {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns-{ns}"}}
    for i in range(spec.services):
        yield service_doc(spec, i)
        yield slice_doc(spec, i)
        if spec.policy_every and i % spec.policy_every == 0:
            yield policy_doc(spec, i)
    for j in range(spec.ingresses if spec.with_ingresses else 0):
        yield ingress_doc(spec, j)


def parse(doc: Doc) -> Model:
    model, problem = parse_object(doc, "<bench>")
    if model is None:
        raise ValueError(f"generated an invalid object: {problem}")
    return model


def build_state(spec: Spec) -> ClusterState:
    """The scenario as an in-memory ClusterState, through kxds's own parser."""
    return ClusterState.from_objects(parse(d) for d in documents(spec))


def write_manifests(spec: Spec, directory: Path, per_file: int = 500) -> list[Path]:
    """Write the scenario as multi-document YAML files of ``per_file`` objects each."""
    directory.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    docs = list(documents(spec))
    for n, start in enumerate(range(0, len(docs), per_file)):
        path = directory / f"scenario-{n:04d}.yaml"
        path.write_text(yaml.dump_all(docs[start:start + per_file], Dumper=_Dumper,
                                      sort_keys=False), encoding="utf-8")
        files.append(path)
    return files


def write_doc(directory: Path, name: str, doc: Doc) -> Path:
    """Write (atomically) one object as its own manifest file."""
    path = directory / f"{name}.yaml"
    tmp = directory / f".{name}.yaml.tmp"
    tmp.write_text(yaml.dump(doc, Dumper=_Dumper, sort_keys=False), encoding="utf-8")
    tmp.replace(path)
    return path


# --- cheap mutations of an in-memory state -----------------------------------


def with_slice(state: ClusterState, new: EndpointSlice) -> ClusterState:
    """``state`` with one EndpointSlice replaced (same key), without re-indexing the rest."""
    slices = dict(state.endpoint_slices)
    slices[new.meta.key] = new
    group = (new.meta.namespace, new.service_name)
    by_service = dict(state.slices_by_service)
    by_service[group] = tuple(sorted(
        (s for s in slices.values() if (s.meta.namespace, s.service_name) == group),
        key=lambda s: s.meta.name,
    )) if len(by_service.get(group, ())) > 1 else (new,)
    return dataclasses.replace(state, endpoint_slices=slices, slices_by_service=by_service)


def with_objects(state: ClusterState, *models: Model) -> ClusterState:
    """``state`` with ``models`` added or replaced (re-indexes: for rare changes)."""
    keep = {(type(o), o.meta.key): o for o in state.objects()}
    for m in models:
        keep[(type(m), m.meta.key)] = m
    return ClusterState.from_objects(keep.values(), state.problems)


def without_objects(state: ClusterState, *models: Model) -> ClusterState:
    """``state`` without the objects of the same kind and key as ``models``."""
    drop = {(type(m), m.meta.key) for m in models}
    return ClusterState.from_objects(
        (o for o in state.objects() if (type(o), o.meta.key) not in drop), state.problems
    )
