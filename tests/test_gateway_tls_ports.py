"""Gateway ``TLS`` listeners on ports beside the edge's own (pure translation).

A TLS listener (Passthrough or Terminate) on any port but the edge's gets the
Envoy TLS listener of that port (``https/<port>``), shared with the HTTPS
listeners there and split by SNI, with only the Routes of the listeners on that
port. SNI names are taken per port: the same hostname on two ports is two
listeners, and an Ingress's TLS host takes it on the edge TLS listener only.
The golden case ``gateway-tls-ports`` shows the whole output (and Envoy
validates it); e2e/test_gateway_tls_ports.py sends connections through Envoy.
"""

from __future__ import annotations

import pytest
from test_gateway_ports import gateway, listener_conditions, run

from kxds.certs.make import make_ca, make_leaf, tls_secret_yaml
from kxds.ir import PassthroughChain, TlsListener
from kxds.translators.config import TranslateConfig
from kxds.translators.translation import Translation

SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: tlsweb, namespace: default}
spec: {ports: [{name: https, port: 443}]}
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: default}
spec: {ports: [{name: https, port: 443}]}
"""


def tls_route(name: str, parent: str, backend: str, hostnames: str = "[pt.test]") -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{parent}]
  hostnames: {hostnames}
  rules: [{{backendRefs: [{{name: {backend}, port: 443}}]}}]
"""


def chains(result: Translation, port: int) -> dict[str, tuple[str, str | None]]:
    """SNI name -> (cluster, secret) of the TLS listener of ``port``."""
    (lis,) = [x for x in result.ir.listeners
              if isinstance(x, TlsListener) and x.port == port]
    return {(c.server_names or ("",))[0]: (c.cluster, c.secret)
            for c in lis.chains if isinstance(c, PassthroughChain)}


def test_a_passthrough_listener_on_a_port_of_its_own() -> None:
    result = run(SERVICES, gateway("gw", "[{name: pt, port: 9443, protocol: TLS, "
                                         "hostname: pt.test, tls: {mode: Passthrough}}]"),
                 tls_route("r", "{name: gw}", "tlsweb"))
    assert chains(result, 9443) == {"pt.test": ("default/tlsweb/443", None)}
    # Nothing of it on the edge TLS listener.
    assert not [x for x in result.ir.listeners
                if isinstance(x, TlsListener) and x.port == TranslateConfig().https_port]
    conds = listener_conditions(result.gateway_status, "gw", "pt")
    assert conds["Accepted"][:2] == (True, "Accepted")
    assert conds["Programmed"][:2] == (True, "Programmed")


def test_terminate_and_https_listeners_share_their_port_by_sni() -> None:
    pair = make_leaf(make_ca(), ["term.test", "web.test"])
    result = run(SERVICES, tls_secret_yaml("default", "cert", pair), gateway("gw", """
  - {name: term, port: 9443, protocol: TLS, hostname: term.test,
     tls: {mode: Terminate, certificateRefs: [{name: cert}]}}
  - {name: web, port: 9443, protocol: HTTPS, hostname: web.test,
     tls: {certificateRefs: [{name: cert}]}}"""),
                 tls_route("r", "{name: gw, sectionName: term}", "tlsweb", "[]"))
    assert chains(result, 9443) == {"term.test": ("default/tlsweb/443", "default/cert")}
    (lis,) = [x for x in result.ir.listeners if x.name == "https/9443"]
    assert isinstance(lis, TlsListener)
    assert sorted(c.server_names for c in lis.chains) == [("term.test",), ("web.test",)]


def test_one_hostname_on_two_ports_is_two_listeners_each_with_its_route() -> None:
    result = run(SERVICES,
                 gateway("one", "[{name: pt, port: 9443, protocol: TLS, hostname: pt.test, "
                                "tls: {mode: Passthrough}}]"),
                 gateway("two", "[{name: pt, port: 9444, protocol: TLS, hostname: pt.test, "
                                "tls: {mode: Passthrough}}]", "2024-01-02T00:00:00Z"),
                 tls_route("to-one", "{name: one}", "tlsweb"),
                 tls_route("to-two", "{name: two}", "other"))
    assert chains(result, 9443) == {"pt.test": ("default/tlsweb/443", None)}
    assert chains(result, 9444) == {"pt.test": ("default/other/443", None)}
    for gw in ("one", "two"):
        assert listener_conditions(result.gateway_status, gw, "pt")["Conflicted"][0] is False
    assert not result.diagnostics


def test_an_ingress_tls_host_is_the_edge_listeners_only() -> None:
    ingress = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ing, namespace: default}
spec:
  tls: [{hosts: [pt.test], secretName: cert}]
  rules: [{host: pt.test}]
"""
    result = run(SERVICES, ingress, tls_secret_yaml("default", "cert",
                                                    make_leaf(make_ca(), ["pt.test"])),
                 gateway("gw", "[{name: pt, port: 9443, protocol: TLS, hostname: pt.test, "
                               "tls: {mode: Passthrough}}]"),
                 tls_route("r", "{name: gw}", "tlsweb"))
    assert chains(result, 9443) == {"pt.test": ("default/tlsweb/443", None)}
    assert listener_conditions(result.gateway_status, "gw", "pt")["Accepted"][0] is True


@pytest.mark.parametrize(("listeners", "why"), [
    ("[{name: web, port: 9443, protocol: HTTP}, "
     "{name: l, port: 9443, protocol: TLS, tls: {mode: Passthrough}}]",
     "port 9443 already serves HTTP"),
    ("[{name: db, port: 9443, protocol: TCP}, "
     "{name: l, port: 9443, protocol: TLS, tls: {mode: Passthrough}}]",
     "port 9443 already serves TCP"),
    ("[{name: l, port: 80, protocol: TLS, tls: {mode: Passthrough}}]",
     "edge's own HTTP port"),
    ("[{name: l, port: 9901, protocol: TLS, tls: {mode: Passthrough}}]",
     "reserved on the edge Envoys"),
], ids=["http-first", "tcp-first", "port-80", "reserved"])
def test_a_tls_listener_on_a_port_taken_otherwise_is_unavailable(listeners: str,
                                                                 why: str) -> None:
    result = run(SERVICES, gateway("gw", listeners), tls_route("r", "{name: gw}", "tlsweb"))
    accepted = listener_conditions(result.gateway_status, "gw", "l")["Accepted"]
    assert accepted[:2] == (False, "PortUnavailable") and why in accepted[2], accepted
    assert not [x for x in result.ir.listeners if isinstance(x, TlsListener)]


def test_an_sni_name_an_https_listener_of_the_port_serves_is_not_a_tls_routes() -> None:
    """One chain per SNI name on a port (Envoy refuses a listener with two): the HTTPS
    listener keeps its name; the TLSRoute gets the rest, and the name on another port."""
    pair = make_leaf(make_ca(), ["*.example.com"])
    result = run(SERVICES, tls_secret_yaml("default", "cert", pair), gateway("gw", """
  - {name: web, port: 9443, protocol: HTTPS, hostname: '*.example.com',
     tls: {certificateRefs: [{name: cert}]}}
  - {name: any, port: 9443, protocol: TLS, tls: {mode: Passthrough}}
  - {name: other, port: 9444, protocol: TLS, tls: {mode: Passthrough}}"""),
                 tls_route("r", "{name: gw, sectionName: any}", "tlsweb",
                           "['*.example.com', db.test]"),
                 tls_route("r2", "{name: gw, sectionName: other}", "other",
                           "['*.example.com']"))
    assert chains(result, 9443) == {"db.test": ("default/tlsweb/443", None)}
    assert chains(result, 9444) == {"*.example.com": ("default/other/443", None)}
    [conflict] = [d for d in result.diagnostics if d.ref.name == "r"]
    assert "SNI *.example.com is already served by an HTTPS listener of Gateway " \
        "default/gw" in conflict.message, conflict
