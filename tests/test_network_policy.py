"""NetworkPolicy semantics and the other client-IP rules, checked as IP membership.

Each case builds a small cluster from YAML, asks for the access policy of one
Service port and checks which client addresses it admits, so the tests say
what a client sees rather than how the IR happens to be shaped.
"""

from __future__ import annotations

import ipaddress
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kxds.ir import AccessPolicy, ClientSet, IPRange
from kxds.kube.loader import load_text
from kxds.kube.models import ClusterState
from kxds.translators import network_policy
from kxds.translators.access import route_access, service_access

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: %(target)s}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.0.0.5]
  targetRef: {kind: Pod, name: web-0, namespace: default}
- addresses: [10.0.0.6]
  targetRef: {kind: Pod, name: web-1, namespace: default}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: default, labels: {app: web, tier: a}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.0.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: default, labels: {app: web, tier: b}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.0.0.6}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops, labels: {team: ops}}
---
apiVersion: v1
kind: Pod
metadata: {name: probe, namespace: ops, labels: {role: probe}}
status: {podIP: 10.1.0.7}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, labels: {role: client}}
status: {podIP: 10.0.0.9}
"""


def state(*policies: str, target: str = "8080", extra: str = "") -> ClusterState:
    docs = [SERVICE % {"target": target}, extra]
    docs += [textwrap.dedent(p) for p in policies]
    return load_text("\n---\n".join(d for d in docs if d.strip()))


def np(name: str, spec: str, annotations: str = "") -> str:
    more = f", annotations: {annotations}" if annotations else ""
    meta = f"{{name: {name}, namespace: default{more}}}"
    return (f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {meta}\n"
            f"spec:\n{textwrap.indent(textwrap.dedent(spec).strip(), '  ')}\n")


def access(s: ClusterState) -> tuple[AccessPolicy | None, list[str]]:
    svc = s.services[("default", "web")]
    policy, diags = service_access(s, svc, svc.ports[0])
    return policy, [f"{d.reason.value} {d.field}" for d in diags]


def in_set(ip: str, cs: ClientSet) -> bool:
    addr = ipaddress.ip_address(ip)
    return any(_in_range(addr, r) for r in cs.ranges)


def _in_range(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, r: IPRange) -> bool:
    net = ipaddress.ip_network(r.cidr)
    if addr.version != net.version or addr not in net:
        return False
    return not any(addr in ipaddress.ip_network(e) for e in r.except_)


def allowed(policy: AccessPolicy | None, ip: str) -> bool:
    return policy is None or all(in_set(ip, cs) for cs in policy.all_of)


def shadow_allowed(policy: AccessPolicy | None, ip: str) -> bool:
    assert policy is not None and policy.shadow
    return all(in_set(ip, cs) for cs in policy.shadow)


OFFICE = """
podSelector: {matchLabels: {app: web}}
ingress:
- from: [{ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.128/25]}}]
"""


def test_no_policy_is_open() -> None:
    policy, diags = access(state())
    assert policy is None and diags == []


def test_policy_in_other_namespace_or_for_other_pods_is_open() -> None:
    other = np("other", "podSelector: {matchLabels: {app: db}}\ningress: []")
    egress = np("egress", "podSelector: {}\npolicyTypes: [Egress]\negress: []")
    assert access(state(other, egress))[0] is None


def test_single_allow_with_except() -> None:
    policy, diags = access(state(np("office", OFFICE)))
    assert diags == []
    assert allowed(policy, "192.0.2.1") and allowed(policy, "192.0.2.127")
    assert not allowed(policy, "192.0.2.128") and not allowed(policy, "198.51.100.1")
    assert policy is not None and [c.name for c in policy.all_of] == ["np/default/office"]


def test_deny_all_and_empty_from_allows_all() -> None:
    deny = access(state(np("deny", "podSelector: {}\npolicyTypes: [Ingress]")))[0]
    assert not allowed(deny, "192.0.2.1") and not allowed(deny, "::1")
    everyone = access(state(np("all", "podSelector: {}\ningress: [{}]")))[0]
    assert everyone is None
    empty_from = access(state(np("all", "podSelector: {}\ningress: [{from: []}]")))[0]
    assert empty_from is None


def test_two_policies_are_additive() -> None:
    a = np("a", "podSelector: {}\ningress: [{from: [{ipBlock: {cidr: 192.0.2.0/24}}]}]")
    b = np("b", "podSelector: {}\ningress: [{from: [{ipBlock: {cidr: 198.51.100.0/24}}]}]")
    policy, _ = access(state(a, b))
    assert allowed(policy, "192.0.2.9") and allowed(policy, "198.51.100.9")
    assert not allowed(policy, "203.0.113.1")
    assert policy is not None and policy.all_of[0].name == "np/default/a+b"


@pytest.mark.parametrize(("ports", "target", "restricted"), [
    ("[{port: 8080}]", "8080", True),
    ("[{port: 9090}]", "8080", False),
    ("[{port: 8000, endPort: 8100}]", "8080", True),
    ("[{port: 8081, endPort: 8100}]", "8080", False),
    ("[{port: http}]", "8080", True),
    ("[{port: metrics}]", "8080", False),
    ("[{port: http}]", "http", True),
    ("[{protocol: UDP, port: 8080}]", "8080", False),
    ("[{protocol: TCP}]", "8080", True),
    ("[]", "8080", True),
], ids=["number", "other-number", "range", "range-miss", "named-on-pod", "named-miss",
        "named-target", "udp", "all-tcp", "empty-ports"])
def test_ports_select_which_rules_apply(ports: str, target: str, restricted: bool) -> None:
    """A rule whose ports miss the target port adds nothing: the pod stays selected."""
    spec = f"podSelector: {{}}\ningress: [{{from: [{{ipBlock: {{cidr: 192.0.2.0/24}}}}], " \
           f"ports: {ports}}}]"
    policy, _ = access(state(np("p", spec), target=target))
    assert allowed(policy, "192.0.2.1") is restricted
    assert not allowed(policy, "198.51.100.1")


def test_named_port_resolved_on_service_target_port_without_pods() -> None:
    svc = """
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: web}]
"""
    spec = "podSelector: {matchLabels: {app: api}}\n" \
           "ingress: [{from: [{ipBlock: {cidr: 192.0.2.0/24}}], ports: [{port: web}]}]"
    s = state(np("p", spec), extra=svc)
    api = s.services[("default", "api")]
    policy, diags = service_access(s, api, api.ports[0])
    assert allowed(policy, "192.0.2.1") and not allowed(policy, "198.51.100.1")
    assert diags == []


def test_pod_and_namespace_selector_peers_become_pod_ips() -> None:
    spec = """
podSelector: {}
ingress:
- from:
  - podSelector: {matchLabels: {role: client}}
  - namespaceSelector: {matchLabels: {team: ops}}
    podSelector: {matchLabels: {role: probe}}
"""
    policy, _ = access(state(np("peers", spec)))
    assert allowed(policy, "10.0.0.9") and allowed(policy, "10.1.0.7")
    assert not allowed(policy, "10.0.0.5") and not allowed(policy, "192.0.2.1")


PEER_PODS = """
apiVersion: v1
kind: Pod
metadata: {name: ops-other, namespace: ops, labels: {role: other}}
status: {podIP: 10.1.0.8}
---
apiVersion: v1
kind: Pod
metadata: {name: local-probe, namespace: default, labels: {role: probe}}
status: {podIP: 10.0.0.10}
---
apiVersion: v1
kind: Namespace
metadata: {name: spoof, labels: {team: dev, kubernetes.io/metadata.name: ops}}
---
apiVersion: v1
kind: Pod
metadata: {name: spoof-probe, namespace: spoof, labels: {role: probe}}
status: {podIP: 10.2.0.7}
"""


@pytest.mark.parametrize(("peers", "admitted"), [
    # One peer with both selectors: pods matching both (AND).
    ("[{namespaceSelector: {matchLabels: {team: ops}}, "
     "podSelector: {matchLabels: {role: probe}}}]", {"10.1.0.7"}),
    # The same selectors as two peers: pods matching either (OR).
    ("[{namespaceSelector: {matchLabels: {team: ops}}}, "
     "{podSelector: {matchLabels: {role: probe}}}]", {"10.1.0.7", "10.1.0.8", "10.0.0.10"}),
    # The name label is the control plane's: a namespace cannot claim another's name.
    ("[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ops}}}]",
     {"10.1.0.7", "10.1.0.8"}),
    # An empty namespaceSelector is every namespace.
    ("[{namespaceSelector: {}, podSelector: {matchLabels: {role: probe}}}]",
     {"10.1.0.7", "10.0.0.10", "10.2.0.7"}),
], ids=["and", "or", "name-label", "all-namespaces"])
def test_selector_peers_and_versus_or(peers: str, admitted: set[str]) -> None:
    policy, _ = access(state(np("peers", f"podSelector: {{}}\ningress: [{{from: {peers}}}]"),
                             extra=PEER_PODS))
    pods = {"10.0.0.5", "10.0.0.6", "10.0.0.9", "10.0.0.10", "10.1.0.7", "10.1.0.8",
            "10.2.0.7"}
    assert {ip for ip in pods if allowed(policy, ip)} == admitted


def test_policy_index_gives_what_a_fresh_scan_gives() -> None:
    """A translation indexes the policies once; the index changes no answer."""
    a = np("a", "podSelector: {matchLabels: {tier: a}}\n"
                "ingress: [{from: [{ipBlock: {cidr: 192.0.2.0/24}}]}]")
    bad = np("typo", "podSelector: {matchExpressions: [{key: app, operator: Is}]}")
    for s in (state(), state(a), state(a, bad)):
        svc = s.services[("default", "web")]
        index = network_policy.PolicyIndex.of(s)
        assert service_access(s, svc, svc.ports[0], index) == \
            service_access(s, svc, svc.ports[0])


def test_divergent_pods_get_the_intersection() -> None:
    a = np("a", "podSelector: {matchLabels: {tier: a}}\n"
                "ingress: [{from: [{ipBlock: {cidr: 192.0.2.0/24}}]}]")
    b = np("b", "podSelector: {matchLabels: {tier: b}}\n"
                "ingress: [{from: [{ipBlock: {cidr: 192.0.2.0/25}}]}]")
    policy, diags = access(state(a, b))
    assert allowed(policy, "192.0.2.1") and not allowed(policy, "192.0.2.200")
    assert diags == ["PolicyDivergence spec.ports[0]"]
    only_a, diags = access(state(a))
    assert not allowed(only_a, "198.51.100.1") and diags == ["PolicyDivergence spec.ports[0]"]


EXCEPT0 = "spec.ingress[0].from[0].ipBlock.except[0]"


@pytest.mark.parametrize(("block", "field"), [
    ("{cidr: 192.0.2.0/33}", "spec.ingress[0].from[0].ipBlock.cidr"),
    ("{cidr: nonsense}", "spec.ingress[0].from[0].ipBlock.cidr"),
    ("{cidr: 192.0.2.0/24, except: [198.51.100.0/28]}", EXCEPT0),
    ("{cidr: 192.0.2.0/24, except: [192.0.2.0/33]}", EXCEPT0),
    ("{cidr: 192.0.2.0/24, except: ['::/64']}", EXCEPT0),
], ids=["prefix", "garbage", "except-outside", "except-invalid", "except-family"])
def test_invalid_ip_block_fails_closed(block: str, field: str) -> None:
    spec = f"podSelector: {{}}\ningress: [{{from: [{{ipBlock: {block}}}]}}]"
    policy, diags = access(state(np("bad", spec)))
    assert diags == [f"InvalidValue {field}"]
    assert not allowed(policy, "192.0.2.1") and not allowed(policy, "198.51.100.1")


def test_invalid_peer_keeps_the_valid_ones() -> None:
    spec = "podSelector: {}\ningress: [{from: [{ipBlock: {cidr: 192.0.2.0/40}}, " \
           "{ipBlock: {cidr: 198.51.100.0/24}}]}]"
    policy, _ = access(state(np("mixed", spec)))
    assert allowed(policy, "198.51.100.1") and not allowed(policy, "192.0.2.1")


def test_unknown_named_port_is_reported_and_matches_nothing() -> None:
    spec = "podSelector: {}\ningress: [{from: [{ipBlock: {cidr: 192.0.2.0/24}}], " \
           "ports: [{port: metrics}]}]"
    policy, diags = access(state(np("named", spec)))
    assert not allowed(policy, "192.0.2.1")
    assert set(diags) == {"PortNotFound spec.ingress[0].ports[0]"}


def test_policy_rejected_by_the_parser_denies_its_namespace() -> None:
    bad = np("typo", "podSelector: {matchExpressions: [{key: app, operator: Is, values: [web]}]}\n"
                     "ingress: [{}]")
    s = state(bad)
    assert s.network_policies == {} and s.problems
    policy, _ = access(s)
    assert policy is not None and not allowed(policy, "192.0.2.1")
    assert policy.all_of[0].name == "np/default/typo"


def test_shadow_policy_is_not_enforced() -> None:
    shadow = np("dry", OFFICE, annotations="{kxds.io/policy-mode: shadow}")
    policy, _ = access(state(shadow))
    assert policy is not None and policy.all_of == ()
    assert allowed(policy, "198.51.100.1")
    assert shadow_allowed(policy, "192.0.2.1") and not shadow_allowed(policy, "198.51.100.1")
    # Next to an enforced policy, the shadow shows the union the pair would allow.
    enforced = np("vpn", "podSelector: {}\ningress: [{from: [{ipBlock: {cidr: 203.0.113.0/24}}]}]")
    policy, _ = access(state(shadow, enforced))
    assert allowed(policy, "203.0.113.1") and not allowed(policy, "192.0.2.1")
    assert shadow_allowed(policy, "192.0.2.1") and shadow_allowed(policy, "203.0.113.1")


@pytest.mark.parametrize(("mode", "enforced", "diags"), [
    ("enforce", True, []),
    ("Shadow", False, []),
    ("dry-run", True, ["InvalidValue metadata.annotations[kxds.io/policy-mode]"]),
], ids=["enforce", "shadow", "typo"])
def test_policy_mode_values(mode: str, enforced: bool, diags: list[str]) -> None:
    """A mode kxds does not know is reported and enforced: a typo never turns a rule off."""
    policy, problems = access(state(np("office", OFFICE, f"{{kxds.io/policy-mode: {mode}}}")))
    assert allowed(policy, "198.51.100.1") is not enforced
    assert problems == diags


def test_load_balancer_source_ranges_intersect() -> None:
    svc = SERVICE % {"target": "8080"}
    svc = svc.replace("  selector: {app: web}\n",
                      "  selector: {app: web}\n  loadBalancerSourceRanges: [192.0.2.0/25, bad]\n")
    s = load_text(svc + "\n---\n" + np("office", OFFICE))
    web = s.services[("default", "web")]
    policy, diags = service_access(s, web, web.ports[0])
    assert [d.field for d in diags] == ["spec.loadBalancerSourceRanges[1]"]
    assert allowed(policy, "192.0.2.1") and allowed(policy, "192.0.2.127")
    assert not allowed(policy, "192.0.2.130") and not allowed(policy, "198.51.100.1")


def _ingress(annotations: str) -> str:
    return f"""
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: shop, namespace: default, annotations: {annotations}}}
spec:
  defaultBackend: {{service: {{name: web, port: {{number: 80}}}}}}
"""


@pytest.mark.parametrize(("annotations", "ok", "denied", "diags"), [
    ("{nginx.ingress.kubernetes.io/whitelist-source-range: '192.0.2.0/24, 198.51.100.7'}",
     ["192.0.2.1", "198.51.100.7"], ["198.51.100.8"], 0),
    ("{kxds.io/allowlist-source-range: '192.0.2.0/24,bad'}", ["192.0.2.1"], ["198.51.100.8"], 1),
    ("{kxds.io/allowlist-source-range: 'bad'}", [], ["192.0.2.1", "::1"], 1),
    ("{nginx.ingress.kubernetes.io/denylist-source-range: '192.0.2.0/24'}",
     ["198.51.100.8", "2001:db8::1"], ["192.0.2.1"], 0),
    ("{kxds.io/denylist-source-range: '192.0.2.0/24, 2001:db8::/32'}",
     ["198.51.100.8"], ["192.0.2.1", "2001:db8::1"], 0),
    ("{kxds.io/denylist-source-range: '192.0.2.0/24,10.0.0.0/99'}", [], ["198.51.100.8"], 1),
    ("{nginx.ingress.kubernetes.io/allowlist-source-range: '192.0.2.0/24', "
     "kxds.io/denylist-source-range: 192.0.2.128/25}", ["192.0.2.1"], ["192.0.2.129"], 0),
], ids=["nginx-whitelist", "allow-bad-entry", "allow-all-bad", "nginx-deny", "deny-v6",
        "deny-bad-entry", "allow-and-deny"])
def test_ingress_annotations(annotations: str, ok: list[str], denied: list[str],
                             diags: int) -> None:
    s = state(extra=_ingress(annotations))
    web = s.services[("default", "web")]
    policy, problems = route_access(s, s.ingresses[("default", "shop")], web, web.ports[0])
    assert len(problems) == diags
    assert all(allowed(policy, ip) for ip in ok)
    assert not any(allowed(policy, ip) for ip in denied)


def test_service_without_pods_uses_selector_labels() -> None:
    svc = """
apiVersion: v1
kind: Service
metadata: {name: lone, namespace: default}
spec:
  selector: {app: lone}
  ports: [{name: http, port: 80}]
"""
    s = state(np("p", "podSelector: {matchLabels: {app: lone}}\ningress: []"), extra=svc)
    lone = s.services[("default", "lone")]
    policy, _ = service_access(s, lone, lone.ports[0])
    assert not allowed(policy, "192.0.2.1")


@settings(max_examples=60, deadline=None)
@given(cidr=st.tuples(st.integers(0, 2**32 - 1), st.integers(8, 32)),
       hole=st.integers(0, 8), probe=st.integers(0, 2**32 - 1))
def test_ip_block_matches_reference(cidr: tuple[int, int], hole: int, probe: int) -> None:
    """For any block and hole, the policy admits exactly cidr minus except."""
    net = ipaddress.ip_network((cidr[0], cidr[1]), strict=False)
    sub = ipaddress.ip_network((int(net.network_address), min(32, cidr[1] + hole)), strict=False)
    spec = f"podSelector: {{}}\ningress: [{{from: [{{ipBlock: {{cidr: '{net}', " \
           f"except: ['{sub}']}}}}]}}]"
    if sub == net:
        spec = f"podSelector: {{}}\ningress: [{{from: [{{ipBlock: {{cidr: '{net}'}}}}]}}]"
    policy, _ = access(state(np("p", spec)))
    ip = ipaddress.ip_address(probe)
    expected = ip in net and (sub == net or ip not in sub)
    assert allowed(policy, str(ip)) is expected



@settings(max_examples=80, deadline=None)
@given(value=st.text(alphabet="0123456789abcdef.:/, -x", max_size=40))
def test_untrusted_annotation_text_never_raises_and_fails_closed(value: str) -> None:
    """Any deny-list text: no exception; a list with any bad entry admits nobody."""
    s = state(extra=_ingress(f"{{kxds.io/denylist-source-range: '{value}'}}"))
    web = s.services[("default", "web")]
    policy, problems = route_access(s, s.ingresses[("default", "shop")], web, web.ports[0])
    if problems:
        assert policy is not None and policy.all_of[-1].ranges == ()


@settings(max_examples=80, deadline=None)
@given(cidr=st.text(alphabet="0123456789abcdef.:/x", max_size=30),
       hole=st.text(alphabet="0123456789abcdef.:/x", max_size=30))
def test_untrusted_ip_block_never_raises_and_never_opens(cidr: str, hole: str) -> None:
    spec = f"podSelector: {{}}\ningress: [{{from: [{{ipBlock: {{cidr: '{cidr}', " \
           f"except: ['{hole}']}}}}]}}]"
    policy, _ = access(state(np("p", spec)))
    assert policy is not None  # the pods stay selected whatever the block says
