"""The RBAC builder: the Envoy config it emits admits exactly the clients the IR allows.

The generated protos are run through a small interpreter of Envoy's RBAC
semantics (DENY action: refused when any policy matches; principals as a tree
of and/or/not over ``remote_ip``), and compared with the IR's meaning on
random addresses. The real Envoy runs the same configs in e2e/test_access.py.
"""

from __future__ import annotations

import ipaddress

from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as net_rbac_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from kxds.envoy import rbac
from kxds.ir import AccessPolicy, ClientSet, IPRange

Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


def matches(p: rbac_pb2.Principal, addr: Addr) -> bool:
    kind = p.WhichOneof("identifier")
    if kind == "any":
        return True
    if kind == "remote_ip":
        net = ipaddress.ip_network(
            f"{p.remote_ip.address_prefix}/{p.remote_ip.prefix_len.value}")
        return addr.version == net.version and addr in net
    if kind == "and_ids":
        return all(matches(x, addr) for x in p.and_ids.ids)
    if kind == "or_ids":
        return any(matches(x, addr) for x in p.or_ids.ids)
    if kind == "not_id":
        return not matches(p.not_id, addr)
    raise AssertionError(f"unexpected principal {kind}")


def envoy_allows(rules: rbac_pb2.RBAC, addr: Addr) -> bool:
    assert rules.action == rbac_pb2.RBAC.DENY
    hit = any(any(matches(pr, addr) for pr in pol.principals)
              for pol in rules.policies.values())
    return not hit


def ir_allows(sets: tuple[ClientSet, ...], addr: Addr) -> bool:
    def in_range(r: IPRange) -> bool:
        net = ipaddress.ip_network(r.cidr)
        return (addr.version == net.version and addr in net
                and not any(addr in ipaddress.ip_network(e) for e in r.except_))
    return all(any(in_range(r) for r in s.ranges) for s in sets)


def v4_net(base: int, plen: int) -> ipaddress.IPv4Network:
    return ipaddress.ip_network((base, plen), strict=False)  # type: ignore[return-value]


@st.composite
def ip_ranges(draw: st.DrawFn) -> IPRange:
    net = v4_net(draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 30)))
    holes = draw(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 8)), max_size=3))
    excepts = sorted({str(v4_net(int(net.network_address) | (h % max(1, net.num_addresses)),
                                 min(32, net.prefixlen + d))) for h, d in holes})
    return IPRange(cidr=str(net), except_=tuple(excepts))


client_sets = st.lists(ip_ranges(), max_size=3).map(
    lambda rs: ClientSet(name="np/default/x", refs=(), ranges=tuple(rs)))


@settings(max_examples=150, deadline=None)
@given(sets=st.lists(client_sets, min_size=1, max_size=3),
       probes=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=20))
def test_rules_admit_exactly_the_intersection(sets: list[ClientSet], probes: list[int]) -> None:
    named = tuple(ClientSet(name=f"set/{i}", refs=(), ranges=s.ranges)
                  for i, s in enumerate(sets))
    rules = rbac.build_rules(named)
    assert sorted(rules.policies) == [f"set/{i}" for i in range(len(sets))]
    for n in probes:
        addr = ipaddress.IPv4Address(n)
        # Probe near range edges too: the first and last address of each range.
        candidates = [addr] + [ipaddress.ip_network(r.cidr)[0] for s in named for r in s.ranges]
        for a in candidates:
            assert envoy_allows(rules, a) is ir_allows(named, a), a


@settings(max_examples=150, deadline=None)
@given(sets=st.lists(client_sets, max_size=3),
       probes=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=20))
def test_admitted_networks_are_exactly_the_intersection(sets: list[ClientSet],
                                                        probes: list[int]) -> None:
    """The CIDRs a UDP listener routes are the addresses the policy admits, no more."""
    policy = AccessPolicy(name="p", all_of=tuple(sets))
    nets = rbac.admitted_networks(policy)
    edges = [ipaddress.ip_network(r.cidr)[i] for s in sets for r in s.ranges for i in (0, -1)]
    edges += [ipaddress.ip_network(e)[i] for s in sets for r in s.ranges for e in r.except_
              for i in (0, -1)]
    for a in [ipaddress.IPv4Address(n) for n in probes] + edges:
        routed = any(a.version == n.version and a in n for n in nets)
        assert routed is ir_allows(policy.all_of, a), a
    assert any(n.version == 6 for n in nets) is ir_allows(policy.all_of,
                                                         ipaddress.ip_address("2001:db8::1"))


def test_empty_set_refuses_everyone_and_ipv6_is_kept_apart() -> None:
    nobody = ClientSet(name="np/default/deny", refs=())
    v4_only = ClientSet(name="v4", refs=(), ranges=(IPRange(cidr="0.0.0.0/0"),))
    rules = rbac.build_rules((nobody,))
    assert not envoy_allows(rules, ipaddress.ip_address("192.0.2.1"))
    rules = rbac.build_rules((v4_only,))
    assert envoy_allows(rules, ipaddress.ip_address("192.0.2.1"))
    assert not envoy_allows(rules, ipaddress.ip_address("2001:db8::1"))


def _policy(shadow: bool = False) -> AccessPolicy:
    office = ClientSet(name="np/default/office.v2", refs=(),
                       ranges=(IPRange(cidr="192.0.2.0/24", except_=("192.0.2.128/25",)),))
    return AccessPolicy(name="default/web/80", all_of=() if shadow else (office,),
                        shadow=(office,) if shadow else ())


def test_route_config_enforces_and_counts_per_policy() -> None:
    per_route = rbac.build_route_rbac(_policy())
    assert isinstance(per_route, http_rbac_pb2.RBACPerRoute)
    assert per_route.rbac.track_per_rule_stats
    assert not per_route.rbac.HasField("shadow_rules")
    # Dots would split the stat name: the policy keeps its name otherwise.
    assert list(per_route.rbac.rules.policies) == ["np/default/office_v2"]


def test_shadow_only_policy_enforces_nothing() -> None:
    per_route = rbac.build_route_rbac(_policy(shadow=True))
    assert not per_route.rbac.HasField("rules")
    assert list(per_route.rbac.shadow_rules.policies) == ["np/default/office_v2"]


def test_listener_filter_allows_all_until_a_route_overrides() -> None:
    f = rbac.http_filter()
    config = http_rbac_pb2.RBAC()
    f.typed_config.Unpack(config)
    assert f.name == "envoy.filters.http.rbac"
    assert not config.HasField("rules") and not config.HasField("matcher")


def test_denied_body_names_nothing_internal() -> None:
    mapper = rbac.local_reply_config().mappers[0]
    assert mapper.filter.status_code_filter.comparison.value.default_value == 403
    body = mapper.body.inline_string
    assert body == rbac.DENIED_BODY and "rbac" not in body.lower() and "envoy" not in body.lower()


def test_network_filter_names_the_policy_in_its_stats() -> None:
    f = rbac.build_network_rbac(_policy())
    config = net_rbac_pb2.RBAC()
    f.typed_config.Unpack(config)
    assert f.name == "envoy.filters.network.rbac"
    assert config.stat_prefix == "default/web/80."
    assert list(config.rules.policies) == ["np/default/office_v2"]


def test_real_ip_header_overwrites_client_value() -> None:
    h = rbac.real_ip_header()
    assert h.header.key == "x-real-ip"
    assert h.header.value == "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"
    assert h.append_action == h.OVERWRITE_IF_EXISTS_OR_ADD
