"""nodePorts for manifest Services that have none, chosen as the API server would.

With the Kubernetes API the API server allocates a ``nodePort`` for each port
of a NodePort Service (and of a LoadBalancer Service unless
``allocateLoadBalancerNodePorts: false``); manifests written for ``kubectl
apply`` usually leave it out. The manifest source fills it in the same way, so
the same manifests serve the same ports: from ``--node-port-range``, avoiding
every port another Service names, upper band first (the API server's static /
dynamic split, KEP-3668: the lowest ``min(max(16, size/32), 128)`` ports are
left for Services that pick their own). Unlike the API server's random pick,
the choice is deterministic: a hash of ``namespace/name/port/protocol`` gives
the first candidate, taken in the order of those keys, so the same objects get
the same ports on every run and in any input order.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping

from kxds.diagnostics import Diagnostic, Reason
from kxds.kube.models import Key, Model, Service, ServicePort


def _wants_node_port(svc: Service) -> bool:
    return svc.type == "NodePort" or (svc.type == "LoadBalancer"
                                      and svc.allocate_load_balancer_node_ports)


def _candidates(key: str, lo: int, hi: int) -> Iterable[int]:
    """Every port of the range, starting at the key's hash, the upper band first."""
    size = hi - lo + 1
    offset = min(max(16, size // 32), 128) if size > 16 else 0
    bands = [(lo + offset, hi), (lo, lo + offset - 1)]
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    for first, last in bands:
        if last < first:
            continue
        width = last - first + 1
        start = digest % width
        for i in range(width):
            yield first + (start + i) % width


def allocate_node_ports(objects: list[Model], port_range: tuple[int, int],
                        last: Mapping[Key, Service] | None = None,
                        ) -> tuple[list[Model], list[Diagnostic]]:
    """``objects`` with nodePorts filled in, and one ``Allocated`` diagnostic per port.

    ``last``: the Services of the previous call's result, by key. A Service given
    the same ports as then is that very object again: an unchanged Service stays
    the same model, by which incremental translation (:mod:`kxds.state_changes`)
    knows it unchanged.
    """
    last = last or {}
    lo, hi = port_range
    taken = {(p.node_port, p.protocol) for o in objects if isinstance(o, Service)
             for p in o.ports if p.node_port is not None}
    wanted = sorted(
        (o for o in objects if isinstance(o, Service)
         and _wants_node_port(o)
         and any(p.node_port is None for p in o.ports)),
        key=lambda s: s.meta.key)
    replaced: dict[int, Service] = {}
    problems: list[Diagnostic] = []
    for svc in wanted:
        ports: list[ServicePort] = []
        for i, p in enumerate(svc.ports):
            if p.node_port is None:
                key = f"{svc.meta.namespace}/{svc.meta.name}/{p.port}/{p.protocol}"
                port = next((c for c in _candidates(key, lo, hi)
                             if (c, p.protocol) not in taken), None)
                if port is None:
                    problems.append(Diagnostic(
                        svc.meta.ref, f"spec.ports[{i}].nodePort", Reason.MISSING_FIELD,
                        f"no free nodePort left in {lo}-{hi} for port {p.port}/{p.protocol}"))
                else:
                    taken.add((port, p.protocol))
                    p = dataclasses.replace(p, node_port=port)
                    problems.append(Diagnostic(
                        svc.meta.ref, f"spec.ports[{i}].nodePort", Reason.ALLOCATED,
                        f"not set: {port} allocated from {lo}-{hi}, as the API server "
                        "would (set it to keep it stable when other Services change)"))
            ports.append(p)
        filled = dataclasses.replace(svc, ports=tuple(ports))
        before = last.get(svc.meta.key)
        replaced[id(svc)] = before if before is not None and before == filled else filled
    return [replaced.get(id(o), o) for o in objects], problems
