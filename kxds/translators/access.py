"""Which clients may reach a Service through the gateway: one :class:`AccessPolicy`.

Three sources of client-IP rules, combined by intersection (a client must be
allowed by every one of them):

* the NetworkPolicies of the Service's pods (:mod:`kxds.translators.network_policy`);
* the Service's ``spec.loadBalancerSourceRanges``;
* the Ingress annotations ``nginx.ingress.kubernetes.io/whitelist-source-range``,
  ``.../allowlist-source-range`` and ``.../denylist-source-range``, and the same
  names under ``kxds.io/`` (comma-separated CIDRs or addresses, as ingress-nginx
  reads them).

Bad entries fail closed. An invalid entry of an allow list or of
``loadBalancerSourceRanges`` is dropped (the list admits fewer clients; a list
left empty admits nobody). A deny list with an invalid entry cannot say whom
it meant to keep out, so it admits nobody, as ingress-nginx denies a location
whose deny list does not parse.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable

from kxds import names
from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.ir import AccessPolicy, ClientSet, IPRange
from kxds.kube.models import ClusterState, Ingress, Service, ServicePort
from kxds.translators import network_policy
from kxds.translators.network_policy import ALL_V4, ALL_V6, EVERYONE, PolicyIndex

ALLOW_ANNOTATIONS = (
    ("nginx.ingress.kubernetes.io/whitelist-source-range", "nginx-whitelist"),
    ("nginx.ingress.kubernetes.io/allowlist-source-range", "nginx-allowlist"),
    ("kxds.io/whitelist-source-range", "whitelist"),
    ("kxds.io/allowlist-source-range", "allowlist"),
)
"""Allow-list annotations and the short name each gives its client set."""

DENY_ANNOTATIONS = (
    ("nginx.ingress.kubernetes.io/denylist-source-range", "nginx-denylist"),
    ("kxds.io/denylist-source-range", "denylist"),
)


def parse_ranges(values: list[str], ref: ObjectRef, field: str,
                 diags: list[Diagnostic]) -> tuple[list[IPRange], bool]:
    """Normalize CIDRs or plain addresses; returns (ranges, every entry was valid).

    ``field`` may contain ``{i}``, replaced by the entry's index.
    """
    out: set[str] = set()
    ok = True
    for i, raw in enumerate(values):
        try:
            out.add(str(ipaddress.ip_network(raw.strip(), strict=False)))
        except ValueError:
            ok = False
            diags.append(Diagnostic(ref, field.format(i=i), Reason.INVALID_VALUE,
                                    f"{raw.strip()!r} is not a valid CIDR or IP address"))
    return [IPRange(cidr=c) for c in sorted(out, key=_key)], ok


def _key(cidr: str) -> tuple[int, int, int]:
    net = ipaddress.ip_network(cidr)
    return (net.version, int(net.network_address), net.prefixlen)


def _split(value: str) -> list[str]:
    return [v for v in (p.strip() for p in value.split(",")) if v]


def source_ranges_set(service: Service, diags: list[Diagnostic]) -> ClientSet | None:
    """``spec.loadBalancerSourceRanges`` as a client set; None when unset."""
    if not service.load_balancer_source_ranges:
        return None
    ranges, _ = parse_ranges(list(service.load_balancer_source_ranges), service.meta.ref,
                             "spec.loadBalancerSourceRanges[{i}]", diags)
    ns, name = service.meta.key
    return ClientSet(name=names.cap(f"service/{ns}/{name}/source-ranges"),
                     refs=(service.meta.ref,), ranges=tuple(ranges))


def annotation_sets(ingress: Ingress, diags: list[Diagnostic]) -> list[ClientSet]:
    """The allow and deny list annotations of ``ingress``, one client set each."""
    annotations = ingress.meta.annotations
    if not annotations:
        return []  # the common case, asked once per route: no parsing at all
    ref = ingress.meta.ref
    base = f"ingress/{ingress.meta.namespace}/{ingress.meta.name}"
    out: list[ClientSet] = []
    for key, short in ALLOW_ANNOTATIONS:
        values = _split(annotations.get(key, ""))
        if values:
            ranges, _ = parse_ranges(values, ref, f"metadata.annotations[{key}]", diags)
            out.append(ClientSet(name=names.cap(f"{base}/{short}"), refs=(ref,),
                                 ranges=tuple(ranges)))
    for key, short in DENY_ANNOTATIONS:
        values = _split(annotations.get(key, ""))
        if not values:
            continue
        holes, ok = parse_ranges(values, ref, f"metadata.annotations[{key}]", diags)
        out.append(ClientSet(name=names.cap(f"{base}/{short}"), refs=(ref,),
                             ranges=_everyone_but(holes) if ok else ()))
    return out


def _everyone_but(holes: list[IPRange]) -> tuple[IPRange, ...]:
    v4 = tuple(h.cidr for h in holes if ":" not in h.cidr)
    v6 = tuple(h.cidr for h in holes if ":" in h.cidr)
    return (IPRange(cidr=ALL_V4, except_=v4), IPRange(cidr=ALL_V6, except_=v6))


def _combine(name: str, policy_sets: tuple[ClientSet, ...],
             shadow_sets: tuple[ClientSet, ...] | None,
             extra: list[ClientSet]) -> AccessPolicy | None:
    all_of = (*policy_sets, *extra)
    shadow: tuple[ClientSet, ...] = ()
    if shadow_sets is not None:
        # The shadow rules show what would happen were the shadow-mode policies
        # enforced: the whole intersection, with an allow-all set when that is open.
        shadow = (*shadow_sets, *extra) or (ClientSet(
            name=names.cap(f"{name}/shadow-open"), refs=(), ranges=EVERYONE),)
    if not all_of and not shadow:
        return None
    return AccessPolicy(name=name, all_of=all_of, shadow=shadow)


def service_access(state: ClusterState, service: Service, port: ServicePort,
                   index: PolicyIndex | None = None
                   ) -> tuple[AccessPolicy | None, list[Diagnostic]]:
    """The access policy of ``service``:``port`` from NetworkPolicy and source ranges.

    For listeners that reach a Service without an Ingress (TLS passthrough,
    per-node TCP listeners). None means open. ``index``: the translation's
    :class:`~kxds.translators.network_policy.PolicyIndex` of ``state``, built
    once and passed to every call (without it each call scans the policies).
    """
    return _access(state, None, service, port, index)


def route_access(
    state: ClusterState, ingress: Ingress | None, service: Service, port: ServicePort,
    index: PolicyIndex | None = None,
) -> tuple[AccessPolicy | None, list[Diagnostic]]:
    """The access policy of a route from ``ingress`` to ``service``:``port``; None is open.

    ``index`` as for :func:`service_access`.
    """
    return _access(state, ingress, service, port, index)


def _access(state: ClusterState, ingress: Ingress | None, service: Service,
            port: ServicePort, index: PolicyIndex | None
            ) -> tuple[AccessPolicy | None, list[Diagnostic]]:
    diags: list[Diagnostic] = []
    result = network_policy.service_policy(state, service, port, index)
    extra: list[ClientSet] = []
    lb = source_ranges_set(service, diags)
    if lb is not None:
        extra.append(lb)
    ns, svc = service.meta.key
    name = f"{ns}/{svc}/{port.port}"
    if ingress is not None:
        from_annotations = annotation_sets(ingress, diags)
        if from_annotations:
            extra += from_annotations
            name = f"{ingress.meta.namespace}/{ingress.meta.name}/{svc}/{port.port}"
    policy = _combine(names.cap(name), result.enforced, result.shadow, extra)
    return policy, sorted(set(diags) | result.diagnostics)


def all_admit(policies: Iterable[AccessPolicy | None]) -> AccessPolicy | None:
    """Only the clients every one of ``policies`` admits (None admits everyone): a
    request split by weight may reach any of the backends, so it must pass all
    their rules."""
    out: AccessPolicy | None = None
    for p in policies:
        if p is None:
            continue
        if out is None:
            out = p
            continue
        sets = {s.name: s for s in (*out.all_of, *p.all_of)}
        shadow = {s.name: s for s in (*out.shadow, *p.shadow)}
        out = dataclasses.replace(out, all_of=tuple(sets[k] for k in sorted(sets)),
                                  shadow=tuple(shadow[k] for k in sorted(shadow)))
    return out
