"""LoadBalancer address allocation from configured pools (MetalLB's model).

On bare metal nobody fills in ``status.loadBalancer.ingress`` for a Service of
type LoadBalancer. With ``--lb-pool`` kxds does: it hands each such Service an
address from a pool, the status writer records it, and the per-node proxies
then listen on it. Announcing the address to the network (ARP, NDP or BGP)
stays the network's job: kxds only decides who owns which address.

:func:`allocate` is pure (state and pools in, addresses and problems out), so
every rule is tested without an API server. :func:`apply` hands the changes to
a :class:`StatusWriter`, which the Kubernetes API source provides and calls
only while it holds the leader lease, so two kxds replicas never hand out the
same address twice.

Rules, in order of precedence:

1. A Service keeps an address it already has in its status when that address is
   still in a pool open to its namespace (addresses never move under traffic).
2. An address requested with ``kxds.io/load-balancer-ips``,
   ``metallb.io/loadBalancerIPs`` or ``metallb.universe.tf/loadBalancerIPs``
   (comma-separated) or ``spec.loadBalancerIP`` is
   given when it lies in an open pool and nobody holds it; otherwise the Service
   gets a diagnostic and no address (all of its requests, or none).
3. Every other Service gets the first free address of the first pool (in the
   order given) that is open to its namespace and assigns automatically.

Among Services competing for one address, the older one (``creationTimestamp``,
then namespace/name) wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.kube.models import ClusterState, Key, Service

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

REQUEST_ANNOTATIONS = ("kxds.io/load-balancer-ips", "metallb.io/loadBalancerIPs",
                       "metallb.universe.tf/loadBalancerIPs")
"""Annotations naming the addresses a Service asks for, first present wins.

MetalLB 0.14.9 renamed its prefix ``metallb.universe.tf`` to ``metallb.io``
and still reads the old one; both are read here, the new one first.
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Pool:
    """A named set of addresses, optionally reserved for some namespaces."""

    name: str
    ranges: tuple[tuple[IPAddress, IPAddress], ...]
    """Inclusive (first, last) address ranges, each within one IP family."""
    namespaces: tuple[str, ...] = ()
    """Namespaces that may use the pool; empty means every namespace."""
    avoid_buggy_ips: bool = False
    """Skip IPv4 addresses ending in .0 or .255 (some old clients drop them)."""
    auto_assign: bool = True
    """False: the pool only serves explicit requests."""

    def serves(self, namespace: str) -> bool:
        return not self.namespaces or namespace in self.namespaces

    def contains(self, ip: IPAddress) -> bool:
        if self.avoid_buggy_ips and _buggy(ip):
            return False
        return any(first.version == ip.version and first <= ip <= last  # type: ignore[operator]
                   for first, last in self.ranges)

    def addresses(self) -> Iterator[IPAddress]:
        """Every address of the pool in order (lazily: pools may be large)."""
        for first, last in self.ranges:
            value, end = int(first), int(last)
            while value <= end:
                ip = ipaddress.ip_address(value) if first.version == 4 \
                    else ipaddress.IPv6Address(value)
                if not (self.avoid_buggy_ips and _buggy(ip)):
                    yield ip
                value += 1


def _buggy(ip: IPAddress) -> bool:
    return ip.version == 4 and int(ip) & 0xFF in (0, 255)


def _parse_range(text: str) -> tuple[IPAddress, IPAddress]:
    if "/" in text:
        net = ipaddress.ip_network(text, strict=False)
        return net[0], net[-1]
    first_s, sep, last_s = text.partition("-")
    first = ipaddress.ip_address(first_s.strip())
    last = ipaddress.ip_address(last_s.strip()) if sep else first
    if first.version != last.version or last < first:  # type: ignore[operator]
        raise ValueError(f"range {text!r} is empty or mixes IP families")
    return first, last


def parse_pool(spec: str) -> Pool:
    """Parse ``--lb-pool``: ``NAME=RANGE[,RANGE...][;namespaces=NS[,NS...]][;avoid-buggy-ips]``.

    A RANGE is a CIDR (``203.0.113.0/28``), ``FIRST-LAST`` or one address;
    ``;no-auto-assign`` keeps the pool for explicit requests. Raises ValueError
    with a message fit for the command line.
    """
    head, *options = [part.strip() for part in spec.split(";")]
    name, sep, ranges_text = head.partition("=")
    if not sep or not name.strip() or not ranges_text.strip():
        raise ValueError(f"expected NAME=RANGE[,RANGE...], got {spec!r}")
    ranges = tuple(_parse_range(r.strip()) for r in ranges_text.split(",") if r.strip())
    pool = Pool(name=name.strip(), ranges=ranges)
    for option in filter(None, options):
        key, _, value = option.partition("=")
        if key == "namespaces" and value:
            pool = _with(pool, namespaces=tuple(sorted(n.strip() for n in value.split(","))))
        elif key == "avoid-buggy-ips" and not value:
            pool = _with(pool, avoid_buggy_ips=True)
        elif key == "no-auto-assign" and not value:
            pool = _with(pool, auto_assign=False)
        else:
            raise ValueError(f"unknown pool option {option!r} in {spec!r}")
    return pool


def _with(pool: Pool, **changes: Any) -> Pool:
    return replace(pool, **changes)


# --- allocation --------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Allocation:
    """What every LoadBalancer Service's ``status.loadBalancer.ingress`` should say."""

    addresses: Mapping[Key, tuple[str, ...]] = field(default_factory=dict)
    """Services without an address (pools full, requests refused) map to ``()``."""
    diagnostics: tuple[Diagnostic, ...] = ()


@dataclass(slots=True)
class _Allocator:
    pools: Sequence[Pool]
    taken: dict[IPAddress, Key] = field(default_factory=dict)
    result: dict[Key, tuple[str, ...]] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    cursors: dict[str, Iterator[IPAddress]] = field(default_factory=dict)
    """Pool name -> its addresses not yet looked at. Taken addresses stay taken
    during one allocation, so each pool is scanned once, not once per Service."""

    def free_address(self, pool: Pool) -> IPAddress | None:
        cursor = self.cursors.setdefault(pool.name, pool.addresses())
        return next((ip for ip in cursor if ip not in self.taken), None)

    def pool_for(self, svc: Service, ip: IPAddress) -> Pool | None:
        return next((p for p in self.pools
                     if p.serves(svc.meta.namespace) and p.contains(ip)), None)

    def take(self, svc: Service, ips: list[IPAddress]) -> None:
        for ip in ips:
            self.taken[ip] = svc.meta.key
        self.result[svc.meta.key] = tuple(str(ip) for ip in ips)

    def problem(self, svc: Service, field_: str, reason: Reason, message: str) -> None:
        self.diagnostics.append(Diagnostic(svc.meta.ref, field_, reason, message))


def _age(svc: Service) -> tuple[bool, str, str, str]:
    ts = svc.meta.creation_timestamp
    return (ts == "", ts, svc.meta.namespace, svc.meta.name)


def requested(svc: Service) -> tuple[str, list[str]] | None:
    """(field, addresses) a Service asks for, or None when it asks for none."""
    for key in REQUEST_ANNOTATIONS:
        value = svc.meta.annotations.get(key)
        if value:
            return f"metadata.annotations[{key}]", [v.strip() for v in value.split(",")
                                                     if v.strip()]
    if svc.load_balancer_ip:
        return "spec.loadBalancerIP", [svc.load_balancer_ip]
    return None


def allocate(state: ClusterState, pools: Sequence[Pool]) -> Allocation:
    """Addresses for every LoadBalancer Service in ``state``; pure and deterministic."""
    services = sorted((s for s in state.services.values() if s.type == "LoadBalancer"),
                      key=_age)
    a = _Allocator(pools)
    pending = [s for s in services if not _keep_current(a, s)]
    pending = [s for s in pending if not _grant_request(a, s)]
    for svc in pending:
        _assign(a, svc)
    return Allocation(addresses=dict(sorted(a.result.items())),
                      diagnostics=tuple(sorted(set(a.diagnostics))))


def _keep_current(a: _Allocator, svc: Service) -> bool:
    """Keep the addresses the Service already has, if all are still valid and free."""
    if not svc.load_balancer_ingress:
        return False
    try:
        current = [ipaddress.ip_address(ip) for ip in svc.load_balancer_ingress]
    except ValueError:
        return False
    wanted = requested(svc)
    if wanted is not None and sorted(wanted[1]) != sorted(map(str, current)):
        return False  # the request changed: it is honoured (or refused) below
    if all(a.pool_for(svc, ip) is not None and ip not in a.taken for ip in current):
        a.take(svc, current)
        return True
    return False


def _grant_request(a: _Allocator, svc: Service) -> bool:
    """Give the requested addresses, or report why not. False when nothing was asked."""
    wanted = requested(svc)
    if wanted is None:
        return False
    field_, values = wanted
    ips: list[IPAddress] = []
    for value in values:
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            a.problem(svc, field_, Reason.INVALID_VALUE, f"{value!r} is not an IP address")
            break
        if a.pool_for(svc, ip) is None:
            a.problem(svc, field_, Reason.NOT_ALLOWED,
                      f"{ip} is in no address pool open to namespace {svc.meta.namespace}")
            break
        holder = a.taken.get(ip)
        if holder is not None and holder != svc.meta.key:
            a.problem(svc, field_, Reason.CONFLICT,
                      f"{ip} is already assigned to Service {holder[0]}/{holder[1]}")
            break
        ips.append(ip)
    else:
        a.take(svc, ips)
        return True
    a.result[svc.meta.key] = ()
    return True


def _assign(a: _Allocator, svc: Service) -> None:
    for pool in a.pools:
        if not pool.auto_assign or not pool.serves(svc.meta.namespace):
            continue
        free = a.free_address(pool)
        if free is not None:
            a.take(svc, [free])
            return
    a.result[svc.meta.key] = ()
    a.problem(svc, "status.loadBalancer.ingress", Reason.NOT_ALLOWED,
              f"no free address in any pool open to namespace {svc.meta.namespace}")


# --- writing the result back -------------------------------------------------


class StatusWriter(Protocol):
    """Records a Service's load balancer addresses (the API source implements it).

    Called only by the leader. ``ips`` empty means "no address": the writer
    clears ``status.loadBalancer.ingress``.
    """

    def write_load_balancer(self, ref: ObjectRef, ips: tuple[str, ...]) -> None: ...


def status_patch(ips: tuple[str, ...]) -> dict[str, Any]:
    """The merge patch for ``.../services/NAME/status`` that records ``ips``."""
    return {"status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}}


def changes(state: ClusterState, allocation: Allocation) -> list[tuple[ObjectRef, tuple[str, ...]]]:
    """The Services whose status differs from ``allocation``, sorted."""
    out = []
    for key, ips in allocation.addresses.items():
        svc = state.services.get(key)
        if svc is not None and tuple(svc.load_balancer_ingress) != ips:
            out.append((svc.meta.ref, ips))
    return sorted(out)


def apply(state: ClusterState, pools: Sequence[Pool], writer: StatusWriter) -> Allocation:
    """Allocate and write every change through ``writer``; returns the allocation."""
    allocation = allocate(state, pools)
    for ref, ips in changes(state, allocation):
        writer.write_load_balancer(ref, ips)
    return allocation


class RequestClient(Protocol):
    """The part of :class:`kxds.kube.client.KubeClient` the writer needs."""

    def request(self, method: str, path: str, *, body: Any = None) -> dict[str, Any]: ...


class ApiStatusWriter:
    """A :class:`StatusWriter` over the Kubernetes API (blocking: run it off the loop).

    Like the Ingress status writer: GET the Service, PUT its ``status``
    subresource with the ``resourceVersion`` read, and on ``409 Conflict``
    (written in between) read again. A Service deleted meanwhile is skipped.
    """

    def __init__(self, client: RequestClient, attempts: int = 5) -> None:
        self.client = client
        self.attempts = attempts
        self.writes = 0

    def write_load_balancer(self, ref: ObjectRef, ips: tuple[str, ...]) -> None:
        from kxds.kube.client import status_code

        path = f"/api/v1/namespaces/{ref.namespace}/services/{ref.name}"
        for _ in range(self.attempts):
            try:
                current = self.client.request("GET", path)
            except Exception as e:
                if status_code(e) == 404:
                    return
                raise
            lb = current.setdefault("status", {}).setdefault("loadBalancer", {})
            if [i.get("ip") for i in lb.get("ingress") or []] == list(ips):
                return
            lb["ingress"] = status_patch(ips)["status"]["loadBalancer"]["ingress"]
            if not ips:
                lb.pop("ingress")
            try:
                self.client.request("PUT", f"{path}/status", body=current)
            except Exception as e:
                if status_code(e) == 409:
                    continue
                raise
            self.writes += 1
            log.info("event=service_lb_status service=%s addresses=%s", ref.key,
                     ",".join(ips) or "-")
            return
        log.warning("event=status_conflict service=%s attempts=%d", ref.key, self.attempts)


class PoolAllocator:
    """Runs :func:`apply` on every new ClusterState, while leader (subscribe ``update``).

    Like the Ingress status writer: a new state or a resync tick wakes it; the
    blocking API calls run in a worker thread; an API error is logged and the
    next state (or tick) retries.
    """

    def __init__(self, pools: Sequence[Pool], writer: StatusWriter, *, resync: float = 30.0,
                 is_leader: Callable[[], bool] = lambda: True) -> None:
        self.pools = tuple(pools)
        self.writer = writer
        self.resync = resync
        self.is_leader = is_leader
        self.last: Allocation | None = None
        self._state: ClusterState | None = None
        self._wake = asyncio.Event()

    def update(self, state: ClusterState) -> None:
        """A new ClusterState."""
        self._state = state
        self._wake.set()

    def poke(self) -> None:
        """Allocate now (leadership was just acquired)."""
        self._wake.set()

    async def run(self) -> None:
        """Allocate on every new state and every ``resync`` seconds, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.resync):
                    await self._wake.wait()
            self._wake.clear()
            state = self._state
            if state is None or not self.is_leader():
                continue
            try:
                self.last = await asyncio.to_thread(apply, state, self.pools, self.writer)
            except Exception as e:
                log.warning("event=lb_pool_failed error=%s: %s", type(e).__name__, e)
                continue
            for d in self.last.diagnostics:
                log.info("event=lb_pool_diagnostic %s", d)
