"""Client-IP access policies as Envoy RBAC filters, and the client address headers.

One :class:`~kxds.ir.AccessPolicy` admits a client that is in every one of its
client sets. It becomes an RBAC config with ``action: DENY`` and one policy
per client set, "the client is *not* in this set": a request is refused as
soon as one set refuses it. Envoy then names the refusing set in the
response details (``rbac_access_denied_matched_policy[np/default/office]``),
in the ``enforced_effective_policy_id`` dynamic metadata, and, with
``track_per_rule_stats``, in a per-policy stat
(``http.<listener>.rbac.policy.<set>.denied``). The set names are readable
(``np/<ns>/<policy>``, ``service/<ns>/<name>/source-ranges``,
``ingress/<ns>/<name>/allowlist``), so the stats say which rule bit.

Principals match ``remote_ip``: the client address as the connection manager
derived it. Listeners always set ``use_remote_address``, so that address is
the socket peer in ``peer`` mode, the address ``xff_num_trusted_hops`` picks
from X-Forwarded-For in ``xff`` mode, and the PROXY header's source in
``proxy-protocol`` mode. (``direct_remote_ip`` is always the socket peer: in the
latter two modes that is the balancer in front, not the client.)

HTTP: every connection manager carries an RBAC filter with no rules (Envoy
treats an RBAC filter without ``rules`` as allowing everything), and each route
with a policy overrides it with ``RBACPerRoute``. A policy change is then a
route (RDS) change only, and never touches the listener. TCP and TLS
passthrough: :func:`build_network_rbac`.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as net_rbac_pb2

from kxds import ir
from kxds.envoy.common import pack, stat_name
from kxds.envoy.filter_names import HTTP_RBAC, NETWORK_RBAC

DENIED_BODY = "access denied\n"
"""The body of a 403 from an access rule: short, and naming nothing internal.

Envoy's own body, ``RBAC: access denied``, tells a stranger which proxy and
which mechanism stand in front of the service; a local reply mapper replaces it.
"""

REAL_IP_HEADER = "x-real-ip"




# --- principals ------------------------------------------------------------


def _ip(cidr: str) -> rbac_pb2.Principal:
    principal = rbac_pb2.Principal()
    _fill_ip(principal, cidr)
    return principal


def _fill_ip(principal: rbac_pb2.Principal, cidr: str) -> None:
    address, prefix_len = _cidr_parts(cidr)
    remote = principal.remote_ip
    remote.address_prefix = address
    remote.prefix_len.value = prefix_len  # present even when 0: "0.0.0.0/0" keeps its /0


@lru_cache(maxsize=4096)
def _cidr_parts(cidr: str) -> tuple[str, int]:
    """A CIDR's network address and prefix length (memoized: the same few CIDRs recur)."""
    net = ipaddress.ip_network(cidr)
    return str(net.network_address), net.prefixlen


# The principals are filled in place: with upb, setting the fields of a message
# already in its parent is several times faster than building sub-messages and
# copying them in, and the policies of every route of a large cluster are built
# on a cold start.


def _fill_any_of(principal: rbac_pb2.Principal, cidrs: tuple[str, ...]) -> None:
    """OR of addresses; ``or_ids`` needs at least one, and one needs no wrapper."""
    if len(cidrs) == 1:
        _fill_ip(principal, cidrs[0])
        return
    ids = principal.or_ids.ids
    for cidr in cidrs:
        _fill_ip(ids.add(), cidr)


def _fill_range(principal: rbac_pb2.Principal, r: ir.IPRange) -> None:
    if not r.except_:
        _fill_ip(principal, r.cidr)
        return
    ids = principal.and_ids.ids
    _fill_ip(ids.add(), r.cidr)
    _fill_any_of(ids.add().not_id, r.except_)


def range_principal(r: ir.IPRange) -> rbac_pb2.Principal:
    """Clients inside ``r.cidr`` and outside each of ``r.except_``."""
    principal = rbac_pb2.Principal()
    _fill_range(principal, r)
    return principal


def _fill_outside(principal: rbac_pb2.Principal, clients: ir.ClientSet) -> None:
    if not clients.ranges:
        principal.any = True
        return
    inside = principal.not_id
    if len(clients.ranges) == 1:
        _fill_range(inside, clients.ranges[0])
        return
    ids = inside.or_ids.ids
    for r in clients.ranges:
        _fill_range(ids.add(), r)


def outside_principal(clients: ir.ClientSet) -> rbac_pb2.Principal:
    """Clients *not* in ``clients`` (everyone, when the set is empty)."""
    principal = rbac_pb2.Principal()
    _fill_outside(principal, clients)
    return principal


def build_rules(sets: tuple[ir.ClientSet, ...]) -> rbac_pb2.RBAC:
    """DENY rules refusing a client outside any of ``sets``: one policy per set."""
    rules = rbac_pb2.RBAC(action=rbac_pb2.RBAC.DENY)
    for s in sets:
        key = stat_name(s.name)
        if key in rules.policies:
            del rules.policies[key]  # two names alike as stat names: the later set wins
        policy = rules.policies[key]
        policy.permissions.add().any = True
        _fill_outside(policy.principals.add(), s)
    return rules


# --- HTTP ------------------------------------------------------------------


def build_route_rbac(policy: ir.AccessPolicy) -> http_rbac_pb2.RBACPerRoute:
    """Per-route config of the HTTP RBAC filter enforcing ``policy``.

    Per-route ``rules_stat_prefix`` would only rename dynamic metadata keys
    (Envoy keeps the listener filter's stat names), so the policy's name
    reaches the stats through the per-policy stats instead.
    """
    config = http_rbac_pb2.RBAC(track_per_rule_stats=True)
    if policy.all_of:
        config.rules.CopyFrom(build_rules(policy.all_of))
    if policy.shadow:
        config.shadow_rules.CopyFrom(build_rules(policy.shadow))
    return http_rbac_pb2.RBACPerRoute(rbac=config)


def http_filter() -> hcm_pb2.HttpFilter:
    """The connection manager's RBAC filter: no rules (allow all) until a route overrides it.

    ``shadow_rules_stat_prefix`` keeps the dry-run counters apart from the
    enforced ones: ``rbac.shadow.policy.<set>.shadow_denied``.
    """
    config = http_rbac_pb2.RBAC(shadow_rules_stat_prefix="shadow.")
    return hcm_pb2.HttpFilter(name=HTTP_RBAC, typed_config=pack(config))


def local_reply_config() -> hcm_pb2.LocalReplyConfig:
    """Replace the body of Envoy's own 403s (access rules) with :data:`DENIED_BODY`.

    Only replies Envoy generates pass through the mapper, so a 403 from a
    backend keeps its own body.
    """
    forbidden = accesslog_pb2.AccessLogFilter(status_code_filter=accesslog_pb2.StatusCodeFilter(
        comparison=accesslog_pb2.ComparisonFilter(
            op=accesslog_pb2.ComparisonFilter.EQ,
            value=base_pb2.RuntimeUInt32(default_value=403, runtime_key="kxds.denied_status"))))
    return hcm_pb2.LocalReplyConfig(mappers=[hcm_pb2.ResponseMapper(
        filter=forbidden, body=base_pb2.DataSource(inline_string=DENIED_BODY))])


def real_ip_header() -> base_pb2.HeaderValueOption:
    """``X-Real-IP``: the client address Envoy derived, replacing whatever the client sent."""
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=REAL_IP_HEADER,
                                    value="%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)


# --- UDP: the admitted sources as plain CIDRs --------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _collapse(nets: list[Network]) -> list[Network]:
    v4 = [n for n in nets if n.version == 4]
    v6 = [n for n in nets if n.version == 6]
    return [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]


def subtract(nets: list[Network], holes: list[Network]) -> list[Network]:
    """The addresses of ``nets`` outside every one of ``holes``, as CIDRs."""
    for hole in holes:
        rest: list[Network] = []
        for n in nets:
            if n.version != hole.version or not n.overlaps(hole):
                rest.append(n)
            elif not n.subnet_of(hole):  # type: ignore[arg-type]
                # Two CIDRs that overlap nest: the hole lies inside ``n``.
                rest += n.address_exclude(hole)  # type: ignore[arg-type]
        nets = rest
    return _collapse(nets)


def intersect(a: list[Network], b: list[Network]) -> list[Network]:
    """The addresses in both ``a`` and ``b``, as CIDRs."""
    out = [x if x.subnet_of(y) else y  # type: ignore[arg-type]
           for x in a for y in b if x.version == y.version and x.overlaps(y)]
    return _collapse(out)


def set_networks(clients: ir.ClientSet) -> list[Network]:
    """The addresses of a client set, excepts removed, as CIDRs."""
    out: list[Network] = []
    for r in clients.ranges:
        out += subtract([ipaddress.ip_network(r.cidr)],
                        [ipaddress.ip_network(e) for e in r.except_])
    return _collapse(out)


def admitted_networks(policy: ir.AccessPolicy) -> list[Network]:
    """Every client address ``policy`` admits, as CIDRs (IPv4 first).

    For UDP, where Envoy has no RBAC filter: the ``udp_proxy`` matcher routes
    only sources in these ranges, and drops the rest.
    """
    nets: list[Network] = [ipaddress.ip_network(c) for c in ("0.0.0.0/0", "::/0")]
    for clients in policy.all_of:
        nets = intersect(nets, set_networks(clients))
    return nets


# --- TCP -------------------------------------------------------------------


def build_network_rbac(policy: ir.AccessPolicy) -> listener_components_pb2.Filter:
    """A network RBAC filter enforcing ``policy`` on each TCP connection.

    Put it before ``tcp_proxy``. Its stats are ``<policy>.rbac.allowed`` and
    ``.denied`` (the stat prefix names the policy). Envoy decides on the
    connection's first bytes from the client; a denied client is disconnected.
    """
    prefix = stat_name(policy.name) + "."
    config = net_rbac_pb2.RBAC(stat_prefix=prefix)
    if policy.all_of:
        config.rules.CopyFrom(build_rules(policy.all_of))
    if policy.shadow:
        config.shadow_rules.CopyFrom(build_rules(policy.shadow))
        config.shadow_rules_stat_prefix = "shadow."
    return listener_components_pb2.Filter(name=NETWORK_RBAC, typed_config=pack(config))
