"""Annotations that narrow who may reach a route, which kxds cannot honour yet, fail closed."""

from __future__ import annotations

from kxds import ir
from kxds.kube.loader import load_text
from kxds.translators.config import TranslateConfig
from kxds.translators.edge import translate

SERVICE = """apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: next, namespace: default}
spec: {ports: [{name: http, port: 80}]}
"""


def ingress(name: str, host: str, annotations: dict[str, str], service: str = "web") -> str:
    notes = ", ".join(f"{k}: {v!r}" for k, v in annotations.items())
    return (f"---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: "
            f"{{name: {name}, namespace: default, annotations: {{{notes}}}}}\n"
            f"spec:\n  ingressClassName: kxds\n  rules:\n  - host: {host}\n    http:\n"
            f"      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {service},"
            " port: {number: 80}}}}]\n")


def actions(translation: object, host: str) -> list[object]:
    assert isinstance(translation, object)
    tables = translation.ir.route_tables  # type: ignore[attr-defined]
    return [r.action for t in tables for vh in t.virtual_hosts if host in vh.domains
            for r in vh.routes]


def test_a_passthrough_host_with_authentication_gets_no_chain() -> None:
    """TLS passthrough bypasses the HTTP routes: the host's handshake is refused instead."""
    state = load_text(SERVICE + ingress("vault", "vault.example.com", {
        "nginx.ingress.kubernetes.io/ssl-passthrough": "true",
        "nginx.ingress.kubernetes.io/auth-type": "basic"})
                      + ingress("other", "other.example.com", {
                          "nginx.ingress.kubernetes.io/ssl-passthrough": "true"}))
    t = translate(state, TranslateConfig())
    chains = [c for lis in t.ir.listeners if isinstance(lis, ir.TlsListener) for c in lis.chains]
    assert any("other.example.com" in c.server_names for c in chains)  # passthrough works
    assert not any("vault.example.com" in c.server_names for c in chains)
    assert any(d.field.endswith("[nginx.ingress.kubernetes.io/auth-type]")
               for d in t.diagnostics)


def test_a_passthrough_host_with_external_authentication_gets_no_chain() -> None:
    """Requests inside a passthrough TLS stream cannot be checked: no chain either."""
    state = load_text(SERVICE + ingress("vault", "vault.example.com", {
        "nginx.ingress.kubernetes.io/ssl-passthrough": "true",
        "nginx.ingress.kubernetes.io/auth-url": "http://auth.example.com/check"})
                      + ingress("other", "other.example.com", {
                          "nginx.ingress.kubernetes.io/ssl-passthrough": "true"}))
    t = translate(state, TranslateConfig())
    chains = [c for lis in t.ir.listeners if isinstance(lis, ir.TlsListener) for c in lis.chains]
    assert any("other.example.com" in c.server_names for c in chains)
    assert not any("vault.example.com" in c.server_names for c in chains)
    assert any(d.field.endswith("[nginx.ingress.kubernetes.io/auth-url]")
               and "passthrough" in d.message for d in t.diagnostics)


def test_a_canary_with_authentication_is_dropped_and_the_main_route_serves() -> None:
    state = load_text(SERVICE + ingress("main", "shop.example.com", {})
                      + ingress("canary", "shop.example.com", {
                          "nginx.ingress.kubernetes.io/canary": "true",
                          "nginx.ingress.kubernetes.io/canary-weight": "50",
                          "nginx.ingress.kubernetes.io/auth-url": "http://auth/verify"},
                          service="next"))
    (action,) = actions(translate(state, TranslateConfig()), "shop.example.com")
    assert isinstance(action, ir.Forward)
    assert [b.cluster for b in action.backends] == ["default/web/80"]  # no share for next


def test_snippets_pass_only_with_the_flag_and_authentication_never() -> None:
    state = load_text(SERVICE + ingress("snip", "a.example.com", {
        "nginx.ingress.kubernetes.io/server-snippet": "deny all;"})
                      + ingress("auth", "b.example.com", {
                          "nginx.ingress.kubernetes.io/auth-url": "http://$host/verify"}))
    for ignore, snippet_served in ((False, False), (True, True)):
        t = translate(state, TranslateConfig(ignore_snippets=ignore))
        (snip,) = actions(t, "a.example.com")
        (auth,) = actions(t, "b.example.com")
        assert isinstance(snip, ir.Forward) is snippet_served
        assert isinstance(auth, ir.DirectResponse) and auth.status == 503


def test_an_httproute_carries_its_backends_networkpolicy_rules_like_an_ingress() -> None:
    """A NetworkPolicy restricting the Service's pods to some client addresses restricts
    an HTTPRoute to it as it does an Ingress route: it never serves every client."""
    state = load_text("""apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.0.0.1], targetRef: {kind: Pod, name: web-0}}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: default, labels: {app: web}}
status: {podIP: 10.0.0.1}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: office, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress: [{from: [{ipBlock: {cidr: 192.168.0.0/16}}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kxds}
spec: {controllerName: kxds.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: kxds
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [route.example.com]
  rules: [{backendRefs: [{name: web, port: 80}]}]
""" + ingress("web", "ingress.example.com", {}))
    t = translate(state, TranslateConfig())
    routes = {vh.domains[0]: r for table in t.ir.route_tables for vh in table.virtual_hosts
              for r in vh.routes}
    assert routes["ingress.example.com"].access is not None
    assert routes["route.example.com"].access == routes["ingress.example.com"].access
