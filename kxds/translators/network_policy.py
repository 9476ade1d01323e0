"""NetworkPolicy ingress rules -> the client addresses a Service's pods accept.

Behind an L7 gateway a backend pod only sees the gateway's address, so its
NetworkPolicy cannot tell outside clients apart. This module works out, for
one Service port, which client addresses the pods' policies would admit, so
the gateway can enforce it against the real client IP.

Semantics follow the Kubernetes NetworkPolicy documentation:

* a pod selected by no policy with ``policyTypes: [Ingress]`` is open;
* once selected, only the union of all selecting policies' ingress rules is
  allowed (policies are additive);
* a rule without ``from`` (or with an empty one) admits every source, without
  ``ports`` every port; ``ipBlock.except`` carves holes out of ``cidr``;
* ``ports`` match by number, by ``endPort`` range, or by name (resolved on the
  pod's container ports) and by protocol; only rules whose ports cover the
  port the gateway connects to (the Service's target port) matter;
* ``podSelector`` / ``namespaceSelector`` peers stand for the IPs of the pods
  they select.

A request may land on any backend pod, so when pods are selected by different
policy sets the result is the intersection of what each would allow, and a
``PolicyDivergence`` diagnostic says so.

Bad input fails closed: an invalid ipBlock (bad CIDR, an ``except`` that is
invalid or outside its ``cidr``) or an unresolvable named port drops that peer
or port, and a rule left with no valid peer (or port) is dropped as a whole,
never widened to "all sources". The policy still selects its pods, so a policy
whose every rule is invalid denies everything. A NetworkPolicy the parser
rejected outright (a selector with a bad operator, say) has unknown selectors:
it is taken to select every pod of its namespace and to allow nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from kxds import names
from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.ir import ClientSet, IPRange
from kxds.kube.models import (
    ClusterState,
    IPBlock,
    NetworkPolicy,
    Pod,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
    Service,
    ServicePort,
)
from kxds.translators.policy_index import (
    SHADOW_ANNOTATION,
    NamespacePolicies,
    PeerCache,
    Selector,
    selectors_of,
)
from kxds.translators.policy_index import PolicyIndex as PolicyIndex  # re-exported

ALL_V4 = "0.0.0.0/0"
ALL_V6 = "::/0"
EVERYONE = (IPRange(cidr=ALL_V4), IPRange(cidr=ALL_V6))

_DONE_PHASES = ("Succeeded", "Failed")
"""Pods in these phases hold no IP that is still theirs."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Backend:
    """One backend pod of a Service port, as NetworkPolicy sees it."""

    namespace: str
    labels: Mapping[str, str]
    pod: Pod | None
    """None when only the Service selector is known (no Pod object)."""
    port: int | None
    """The target port number the gateway connects to, when known."""
    port_name: str | None
    """The target port's name (Service ``targetPort`` name), when known."""
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class _Allowed:
    """What one pod admits: everyone, or the union of ``ranges``."""

    everyone: bool
    ranges: frozenset[IPRange] = frozenset()


@dataclass(slots=True)
class Result:
    """The NetworkPolicy part of one Service port's access rules.

    ``enforced`` are sets a client must all be in (empty: open). ``shadow`` is
    the same computed with shadow-mode policies counted as enforced; None when
    no shadow-mode policy selects a backend pod.
    """

    enforced: tuple[ClientSet, ...] = ()
    shadow: tuple[ClientSet, ...] | None = None
    diagnostics: set[Diagnostic] = field(default_factory=set)


# --- backends --------------------------------------------------------------


def _live(pod: Pod) -> bool:
    return pod.phase not in _DONE_PHASES


def _backend(pod: Pod, service: Service, sp: ServicePort, slice_port: int | None) -> Backend:
    target = sp.target_port if sp.target_port is not None else sp.port
    number: int | None = target if isinstance(target, int) else slice_port
    if isinstance(target, str):
        named = next((c for c in pod.container_ports
                      if c.name == target and c.protocol == sp.protocol), None)
        number = named.port if named is not None else slice_port
    return Backend(namespace=pod.meta.namespace, labels=pod.meta.labels, pod=pod, port=number,
                   port_name=target if isinstance(target, str) else None,
                   protocol=sp.protocol)


def service_backends(state: ClusterState, service: Service, sp: ServicePort) -> list[Backend]:
    """The pods behind ``service``:``sp``: EndpointSlice targetRefs, else the selector's pods.

    When neither names a known Pod, one stand-in backend carries the Service
    selector's labels, so policies that select on those labels still apply.
    """
    ns = service.meta.namespace
    out: dict[tuple[str, str], Backend] = {}
    unresolved = 0
    slice_port: int | None = None
    for sl in state.slices_by_service.get(service.meta.key, ()):
        port = next((p.port for p in sl.ports if p.name == sp.name), None)
        slice_port = slice_port or port
        if not state.pods:
            unresolved += len(sl.endpoints)  # no Pod is known: none can be looked up
            continue
        for ep in sl.endpoints:
            ref = ep.target_ref
            pod = state.pods.get((ref.namespace or ns, ref.name)) if ref and ref.kind == "Pod" \
                else None
            if pod is None:
                unresolved += 1
                continue
            out[pod.meta.key] = _backend(pod, service, sp, port)
    if out and not unresolved:
        return [out[k] for k in sorted(out)]
    if service.selector:
        selector = service.selector
        for key, pod in state.pods.items():  # the result is sorted below
            if pod.meta.namespace == ns and _live(pod) and all(
                    pod.meta.labels.get(k) == v for k, v in selector.items()):
                out.setdefault(key, _backend(pod, service, sp, slice_port))
        if not out:
            target = sp.target_port if sp.target_port is not None else sp.port
            return [Backend(namespace=ns, labels=dict(selector), pod=None,
                            port=target if isinstance(target, int) else slice_port,
                            port_name=target if isinstance(target, str) else None,
                            protocol=sp.protocol)]
    return [out[k] for k in sorted(out)]


# --- peers -----------------------------------------------------------------


def _bad(policy: NetworkPolicy, path: str, message: str,
         reason: Reason = Reason.INVALID_VALUE) -> Diagnostic:
    return Diagnostic(policy.meta.ref, path, reason, message)


def ip_block_range(policy: NetworkPolicy, block: IPBlock, path: str,
                   diags: set[Diagnostic]) -> IPRange | None:
    """The normalized range of an ipBlock; None (with a diagnostic) when any part is invalid.

    An invalid ``except`` drops the whole block, not just the hole: ignoring
    a hole would admit the clients it was meant to keep out.
    """
    got = _parse_block(block.cidr, block.except_)
    if isinstance(got, IPRange):
        return got
    where, message = got
    diags.add(_bad(policy, f"{path}{where}", message))
    return None


@lru_cache(maxsize=4096)
def _parse_block(cidr: str, except_: tuple[str, ...]) -> IPRange | tuple[str, str]:
    """An ipBlock's range, or (the field below the block, why) when it is invalid.

    Memoized: it depends on the strings alone, and the same blocks (the
    cluster's or the office's CIDRs) recur in many policies; parsing them per
    policy and per Service was a large part of translating many policies.
    """
    try:
        net = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        return ".cidr", f"{cidr!r} is not a valid CIDR; the peer is ignored (fail closed)"
    holes: list[str] = []
    for i, raw in enumerate(except_):
        try:
            hole = ipaddress.ip_network(raw.strip(), strict=False)
        except ValueError:
            return (f".except[{i}]", f"{raw!r} is not a valid CIDR; "
                    "the whole ipBlock is ignored (fail closed)")
        if hole.version != net.version or not hole.subnet_of(net):  # type: ignore[arg-type]
            return (f".except[{i}]", f"{raw} is outside cidr {net}; "
                    "the whole ipBlock is ignored (fail closed)")
        holes.append(str(hole))
    return IPRange(cidr=str(net), except_=tuple(sorted(set(holes), key=_net_key)))


@lru_cache(maxsize=4096)
def _net_key(cidr: str) -> tuple[int, int, int]:
    """Sort key of a normalized CIDR: family, then address, then prefix length (memoized)."""
    net = ipaddress.ip_network(cidr)
    return (net.version, int(net.network_address), net.prefixlen)


def _namespaces(state: ClusterState) -> dict[str, Mapping[str, str]]:
    """Namespace name -> labels; namespaces known only from their pods get the name label."""
    out: dict[str, Mapping[str, str]] = {
        p.meta.namespace: {"kubernetes.io/metadata.name": p.meta.namespace}
        for p in state.pods.values()
    }
    out.update({n.meta.name: n.meta.labels for n in state.namespaces.values()})
    return out


def _pod_ranges(state: ClusterState, policy: NetworkPolicy, peer: PolicyPeer) -> set[IPRange]:
    if peer.namespace_selector is None:
        namespaces = {policy.meta.namespace}
    else:
        nss = peer.namespace_selector
        namespaces = {n for n, labels in _namespaces(state).items() if nss.matches(labels)}
    out: set[IPRange] = set()
    for pod in state.pods.values():
        if pod.meta.namespace not in namespaces or not _live(pod):
            continue
        if peer.pod_selector is None or peer.pod_selector.matches(pod.meta.labels):
            for ip in pod.pod_ips:
                try:
                    out.add(IPRange(cidr=str(ipaddress.ip_network(ip))))
                except ValueError:
                    continue
    return out


def peer_ranges(state: ClusterState, policy: NetworkPolicy, peer: PolicyPeer, path: str,
                diags: set[Diagnostic]) -> set[IPRange] | None:
    """The addresses one ``from`` peer stands for; None when the peer is invalid."""
    if peer.ip_block is not None:
        r = ip_block_range(policy, peer.ip_block, f"{path}.ipBlock", diags)
        return None if r is None else {r}
    if peer.pod_selector is None and peer.namespace_selector is None:
        diags.add(_bad(policy, path, "a peer needs ipBlock, podSelector or namespaceSelector; "
                       "it is ignored (fail closed)", Reason.MISSING_FIELD))
        return None
    return _pod_ranges(state, policy, peer)


# --- ports -----------------------------------------------------------------


def _resolve_named(policy: NetworkPolicy, pp: PolicyPort, backend: Backend, path: str,
                   diags: set[Diagnostic]) -> bool:
    name = str(pp.port)
    pod = backend.pod
    if pod is not None and pod.container_ports:
        hit = next((c for c in pod.container_ports
                    if c.name == name and c.protocol == pp.protocol), None)
        if hit is None:
            diags.add(_bad(policy, path, f"named port {name!r} is not a container port of "
                           f"pod {pod.meta.namespace}/{pod.meta.name}; it matches nothing there",
                           Reason.PORT_NOT_FOUND))
            return False
        return hit.port == backend.port
    if backend.port_name is not None:
        return backend.port_name == name
    diags.add(_bad(policy, path, f"named port {name!r} cannot be resolved (no container ports "
                   "known and the Service targetPort is a number); it matches nothing "
                   "(fail closed)", Reason.PORT_NOT_FOUND))
    return False


def port_covers(policy: NetworkPolicy, pp: PolicyPort, backend: Backend, path: str,
                diags: set[Diagnostic]) -> bool:
    """Whether one ``ports`` entry admits traffic to the backend's target port."""
    if pp.protocol != backend.protocol:
        return False
    if pp.port is None:
        return True
    if isinstance(pp.port, str):
        return _resolve_named(policy, pp, backend, path, diags)
    if backend.port is None:
        return False
    return pp.port <= backend.port <= (pp.end_port or pp.port)


def rule_covers(policy: NetworkPolicy, rule: PolicyRule, backend: Backend, path: str,
                diags: set[Diagnostic]) -> bool:
    """Whether a rule's ``ports`` admit the target port (no or empty ``ports``: all)."""
    if not rule.ports:
        return True
    return any(port_covers(policy, pp, backend, f"{path}.ports[{i}]", diags)
               for i, pp in enumerate(rule.ports))


# --- policies --------------------------------------------------------------


def rule_allows(state: ClusterState, policy: NetworkPolicy, index: int, backend: Backend,
                diags: set[Diagnostic], cache: PeerCache | None = None) -> _Allowed:
    """What one ingress rule admits to ``backend``'s target port."""
    rule = policy.ingress[index]
    path = f"spec.ingress[{index}]"
    if not rule_covers(policy, rule, backend, path, diags):
        return _Allowed(everyone=False)
    if not rule.from_:
        return _Allowed(everyone=True)
    cache = {} if cache is None else cache
    key = (policy.meta.ref, index)
    found = cache.get(key)
    if found is None or found[0] is not policy:
        ranges: set[IPRange] = set()
        problems: set[Diagnostic] = set()
        for j, peer in enumerate(rule.from_):
            got = peer_ranges(state, policy, peer, f"{path}.from[{j}]", problems)
            if got is not None:
                ranges |= got
        found = cache[key] = (policy, frozenset(ranges), frozenset(problems))
    diags.update(found[2])
    # A rule whose peers were all invalid admits nobody: it is not "from: []".
    return _Allowed(everyone=False, ranges=found[1])


def policy_allows(state: ClusterState, policy: NetworkPolicy, backend: Backend,
                  diags: set[Diagnostic], cache: PeerCache | None = None) -> _Allowed:
    """The union of a policy's ingress rules for ``backend``."""
    ranges: set[IPRange] = set()
    for i in range(len(policy.ingress)):
        got = rule_allows(state, policy, i, backend, diags, cache)
        if got.everyone:
            return got
        ranges |= got.ranges
    return _Allowed(everyone=False, ranges=frozenset(ranges))


def _pod_allows(state: ClusterState, selecting: list[Selector], backend: Backend,
                diags: set[Diagnostic], cache: PeerCache) -> _Allowed:
    ranges: set[IPRange] = set()
    for sel in selecting:
        if sel.policy is None:
            continue  # rejected policy: selects, allows nothing
        got = policy_allows(state, sel.policy, backend, diags, cache)
        if got.everyone:
            return got
        ranges |= got.ranges
    return _Allowed(everyone=False, ranges=frozenset(ranges))


def set_name(refs: Iterable[ObjectRef]) -> str:
    """``np/<namespace>/<policy>[+<policy>...]``: the readable name of a union of policies."""
    refs = sorted(refs)
    return names.cap(f"np/{refs[0].namespace}/" + "+".join(r.name for r in refs))


def _sets_for(state: ClusterState, backends: list[Backend], sels: dict[str, NamespacePolicies],
              with_shadow: bool, diags: set[Diagnostic], cache: PeerCache
              ) -> tuple[list[ClientSet], set[str]]:
    """The distinct client sets the backends demand, and the distinct selections seen."""
    sets: dict[ClientSet, None] = {}
    seen: set[str] = set()
    for b in backends:
        selecting = sels[b.namespace].selecting(b.labels, with_shadow=with_shadow)
        seen.add(",".join(str(s.ref) for s in selecting))
        if not selecting:
            continue
        allowed = _pod_allows(state, selecting, b, diags, cache)
        if allowed.everyone:
            continue
        sets[ClientSet(name=set_name(s.ref for s in selecting),
                       refs=tuple(sorted(s.ref for s in selecting)),
                       ranges=tuple(sorted(allowed.ranges, key=_range_key)))] = None
    return list(sets), seen


def _range_key(r: IPRange) -> tuple[tuple[int, int, int], tuple[str, ...]]:
    return (_net_key(r.cidr), r.except_)


def service_policy(state: ClusterState, service: Service, sp: ServicePort,
                   index: PolicyIndex | None = None) -> Result:
    """The NetworkPolicy client sets of ``service``:``sp`` (see the module docs).

    ``index``: the translation's :class:`PolicyIndex` of ``state``; without
    one, the policies of the namespaces involved are scanned for this call.
    """
    result = Result()

    def selectors(ns: str) -> NamespacePolicies:
        if index is not None:
            return index.namespace(ns)
        return NamespacePolicies.of(selectors_of(state, ns))

    if not selectors(service.meta.namespace).selectors:
        return result  # no policy can select the pods: open, without looking at them
    backends = service_backends(state, service, sp)
    sels = {ns: selectors(ns) for ns in {b.namespace for b in backends}}
    peers: PeerCache = index.peers(state) if index is not None else {}
    enforced, seen = _sets_for(state, backends, sels, False, result.diagnostics, peers)
    result.enforced = _dedupe_names(enforced)
    if len(seen) > 1:
        result.diagnostics.add(Diagnostic(
            service.meta.ref, f"spec.ports[{service.port_position(sp)}]",
            Reason.POLICY_DIVERGENCE,
            f"pods behind port {sp.port} are selected by different NetworkPolicy sets "
            f"({'; '.join(sorted(s or 'none' for s in seen))}); the gateway allows only "
            "clients every pod would accept"))
    chosen = [s for b in backends
              for s in sels[b.namespace].selecting(b.labels, with_shadow=True)]
    result.diagnostics.update(d for s in chosen if (d := _mode_problem(s)) is not None)
    if any(s.shadow for s in chosen):
        shadow, _ = _sets_for(state, backends, sels, True, result.diagnostics, peers)
        result.shadow = _dedupe_names(shadow)
    return result


def _mode_problem(sel: Selector) -> Diagnostic | None:
    """A ``kxds.io/policy-mode`` other than ``shadow`` or ``enforce``: enforced, and reported."""
    value = None if sel.policy is None else sel.policy.meta.annotations.get(SHADOW_ANNOTATION)
    if sel.policy is None or value is None or value.strip().lower() in ("shadow", "enforce"):
        return None
    return _bad(sel.policy, f"metadata.annotations[{SHADOW_ANNOTATION}]",
                f"{value!r} is not 'shadow' or 'enforce'; the policy is enforced")


def _dedupe_names(sets: list[ClientSet]) -> tuple[ClientSet, ...]:
    """Give sets sharing a name (same policies, different ports per pod) distinct names."""
    out: list[ClientSet] = []
    used: dict[str, int] = {}
    for s in sorted(sets, key=lambda c: (c.name, [(r.cidr, r.except_) for r in c.ranges])):
        n = used.get(s.name, 0)
        used[s.name] = n + 1
        out.append(s if n == 0 else ClientSet(name=names.cap(f"{s.name}#{n + 1}"),
                                                refs=s.refs, ranges=s.ranges))
    return tuple(out)
