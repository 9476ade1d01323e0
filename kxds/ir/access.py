"""Client IP access rules: which clients may reach a route, chain or listener."""

from __future__ import annotations

from dataclasses import dataclass

from kxds.diagnostics import ObjectRef


@dataclass(frozen=True, slots=True, kw_only=True)
class IPRange:
    """A normalized CIDR, minus the CIDRs in ``except_`` (all inside it).

    In Envoy RBAC: ``remote_ip`` of ``cidr``, and-ed with the negation of the
    exceptions (NetworkPolicy ``ipBlock`` with ``except``).
    """

    cidr: str
    except_: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSet:
    """The client addresses one source of rules allows: the union of its ranges.

    Empty ``ranges`` allows nobody. ``name`` is stable and readable (it becomes
    an Envoy RBAC policy name and stat prefix), e.g. ``np/default/allow-office``.
    """

    name: str
    refs: tuple[ObjectRef, ...]
    """The objects whose rules make up the set (NetworkPolicies, a Service, an Ingress)."""
    ranges: tuple[IPRange, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessPolicy:
    """Which clients may reach a route, TLS passthrough chain, or TCP or UDP listener,
    by client IP. A client is allowed when it is in *every* set of ``all_of``.

    Sets in ``shadow`` are evaluated and counted but not enforced (dry-run).
    An AccessPolicy with no sets at all is never built: open means ``None``.
    In Envoy: an RBAC config with ``action: DENY`` and one policy per set
    ("the client is not in this set") — per-route HTTP RBAC config on routes,
    the network RBAC filter on TCP and passthrough chains, and on UDP a
    ``udp_proxy`` matcher that routes only the admitted sources
    (:mod:`kxds.envoy.rbac`).
    """

    name: str
    """Stable and readable: the network RBAC filter's stat prefix
    (``default/web/80``)."""
    all_of: tuple[ClientSet, ...] = ()
    shadow: tuple[ClientSet, ...] = ()
