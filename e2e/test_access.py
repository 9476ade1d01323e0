"""Client-IP access rules through the real Envoy: NetworkPolicy, annotations, client IP modes.

Clients bind distinct loopback addresses (127.0.0.2, 127.0.0.3, 127.0.0.10) and
reach the gateway on 127.0.0.1; each host name routes to a Service whose pods
carry their own NetworkPolicies, all served by one echo backend.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.harness import (
    EchoBackend,
    Envoy,
    Gateway,
    remove_manifests,
    wait_for,
    write_manifests,
)

pytestmark = pytest.mark.e2e

A, B, C = "127.0.0.2", "127.0.0.3", "127.0.0.10"


def backend(name: str, echo: EchoBackend, port: int = 80) -> str:
    """A Service whose one pod (labelled app=<name>) is the echo backend."""
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: main, port: {port}, targetPort: {echo.port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: main, port: {echo.port}}}]
endpoints:
- addresses: ["{echo.host}"]
  targetRef: {{kind: Pod, namespace: default, name: {name}-0}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}-0, namespace: default, labels: {{app: {name}}}}}
status: {{podIP: 10.0.0.1}}
"""


def ingress(name: str, service: str, port: int = 80, annotations: str = "{}") -> str:
    return f"""
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: default, annotations: {annotations}}}
spec:
  ingressClassName: kxds
  rules:
  - host: {name}.test
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {{service: {{name: {service}, port: {{number: {port}}}}}}}
"""


def policy(name: str, app: str, ingress_rules: str, annotations: str = "{}") -> str:
    return f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}, namespace: default, annotations: {annotations}}}
spec:
  podSelector: {{matchLabels: {{app: {app}}}}}
  policyTypes: [Ingress]
  ingress: {ingress_rules}
"""


def ip_rule(*cidrs: str, excepts: tuple[str, ...] = (), port: int | None = None) -> str:
    peers = ", ".join(f"{{ipBlock: {{cidr: '{c}', except: {list(excepts)}}}}}" for c in cidrs)
    ports = f", ports: [{{port: {port}}}]" if port is not None else ""
    return f"{{from: [{peers}]{ports}}}"


def base_manifests(echo: EchoBackend) -> str:
    services = ["open", "office", "ports", "deny", "additive", "live", "shadow", "annotated"]
    # "annotated" gets its Ingress below, with annotations (one definition only).
    docs = [backend(s, echo) + (ingress(s, s) if s != "annotated" else "") for s in services]
    docs += [
        policy("office", "office", f"[{ip_rule('127.0.0.0/29', excepts=('127.0.0.3/32',))}]"),
        # Only the rule covering the target port (the echo's port) counts.
        policy("ports", "ports", f"[{ip_rule('127.0.0.10/32', port=echo.port)}, "
                                 f"{ip_rule('127.0.0.2/32', port=9)}]"),
        policy("deny", "deny", "[]"),
        policy("additive-a", "additive", f"[{ip_rule('127.0.0.2/32')}]"),
        policy("additive-b", "additive", f"[{ip_rule('127.0.0.3/32')}]"),
        policy("shadow", "shadow", f"[{ip_rule('127.0.0.2/32')}]",
               annotations="{kxds.io/policy-mode: shadow}"),
        ingress("annotated", "annotated",
                annotations="{nginx.ingress.kubernetes.io/denylist-source-range: 127.0.0.3}"),
    ]
    return "\n---\n".join(docs)


def get(gw: Gateway, host: str, source: str, **kwargs: object) -> tuple[int, bytes]:
    status, _, body = gw.get("/", host=f"{host}.test", source_ip=source, **kwargs)
    return status, body


def statuses(gw: Gateway, host: str, *sources: str) -> list[int]:
    return [get(gw, host, s)[0] for s in sources]


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoBackend]:
    backend = EchoBackend("web", tmp_path_factory.mktemp("echo"))
    yield backend
    backend.stop()


def start_gateway(tmp: Path, echo: EchoBackend, *args: str) -> Gateway:
    manifests = tmp / "manifests"
    write_manifests(manifests, "all.yaml", base_manifests(echo))
    gw = Gateway(tmp, manifests, args)
    try:
        wait_for(lambda: get(gw, "open", A)[0] == 200, what="the open route")
    except BaseException:
        gw.stop()
        raise
    return gw


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, echo: EchoBackend) -> Iterator[Gateway]:
    """kxds + Envoy with the default client IP source: the socket peer."""
    gateway = start_gateway(tmp_path_factory.mktemp("peer"), echo)
    yield gateway
    gateway.stop()


def test_allowed_excepted_and_outside(gw: Gateway) -> None:
    assert statuses(gw, "office", A, B, C) == [200, 403, 403]
    assert statuses(gw, "open", A, B, C) == [200, 200, 200]


def test_refusal_is_a_short_403_naming_nothing_internal(gw: Gateway) -> None:
    status, body = get(gw, "deny", A)
    assert (status, body) == (403, b"access denied\n")


def test_port_restricted_rules(gw: Gateway) -> None:
    assert statuses(gw, "ports", A, C) == [403, 200]


def test_deny_all_and_two_additive_policies(gw: Gateway) -> None:
    assert statuses(gw, "deny", A, B, C) == [403, 403, 403]
    assert statuses(gw, "additive", A, B, C) == [200, 200, 403]


def test_denylist_annotation(gw: Gateway) -> None:
    assert statuses(gw, "annotated", A, B, C) == [200, 403, 200]


def test_spoofed_x_forwarded_for_is_ignored_with_zero_trusted_hops(gw: Gateway) -> None:
    assert get(gw, "office", C, headers={"X-Forwarded-For": A, "X-Real-IP": A})[0] == 403
    status, body = get(gw, "office", A, headers={"X-Forwarded-For": "192.0.2.9",
                                                "X-Real-IP": "192.0.2.9"})
    seen = json.loads(body)["headers"]
    assert status == 200
    assert seen["x-real-ip"] == A
    assert seen["x-forwarded-for"] == f"192.0.2.9,{A}"


def test_stats_name_the_refusing_policy(gw: Gateway) -> None:
    assert envoy(gw)
    get(gw, "office", C)
    stats = envoy(gw).stats()
    denied = {k: v for k, v in stats.items() if k.endswith("policy.np/default/office.denied")}
    assert denied and all(v > 0 for v in denied.values()), sorted(
        k for k in stats if ".rbac." in k)


def test_shadow_policy_is_counted_not_enforced(gw: Gateway) -> None:
    before = _sum(gw, "policy.np/default/shadow.shadow_denied")
    assert statuses(gw, "shadow", A, C) == [200, 200]
    wait_for(lambda: _sum(gw, "policy.np/default/shadow.shadow_denied") >= before + 1,
             what="the shadow_denied counter")


def _sum(gw: Gateway, suffix: str) -> int:
    return sum(v for k, v in envoy(gw).stats().items() if k.endswith(suffix))


def envoy(gw: Gateway) -> Envoy:
    assert gw.envoy is not None
    return gw.envoy


def test_policy_added_and_removed_live(gw: Gateway) -> None:
    assert statuses(gw, "live", A, C) == [200, 200]
    write_manifests(gw.manifests, "live-policy.yaml",
                    policy("live", "live", f"[{ip_rule('127.0.0.2/32')}]"))
    try:
        wait_for(lambda: statuses(gw, "live", A, C) == [200, 403], what="the policy to apply")
    finally:
        remove_manifests(gw.manifests, "live-policy.yaml")
    wait_for(lambda: statuses(gw, "live", A, C) == [200, 200], what="the policy to go")


# --- TLS passthrough: the network RBAC filter ---------------------------------


def client_hello(sni: str) -> bytes:
    """The first flight of a TLS client for ``sni``, made without any network."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def passthrough_reply(port: int, source: str, sni: str) -> bytes:
    """What comes back after sending a ClientHello; b"" when the gateway hung up."""
    with socket.create_connection(("127.0.0.1", port), timeout=5,
                                  source_address=(source, 0)) as s:
        s.sendall(client_hello(sni))
        try:
            return s.recv(100)
        except ConnectionResetError:
            return b""


@pytest.fixture(scope="module")
def tcp_echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoBackend]:
    backend = EchoBackend("tls-backend", tmp_path_factory.mktemp("tcp"), kind="tcp")
    yield backend
    backend.stop()


def test_tls_passthrough_refuses_a_denied_client(gw: Gateway, tcp_echo: EchoBackend) -> None:
    write_manifests(gw.manifests, "passthrough.yaml", "\n---\n".join([
        backend("pt", tcp_echo, port=443),
        ingress("pt", "pt", port=443,
                annotations="{nginx.ingress.kubernetes.io/ssl-passthrough: 'true'}"),
        policy("pt", "pt", f"[{ip_rule('127.0.0.2/32')}]"),
    ]))
    try:
        # The allowed client's bytes reach the backend, which echoes them with its name.
        wait_for(lambda: passthrough_reply(gw.https_port, A, "pt.test").startswith(
            b"tls-backend 127.0.0.1 "), what="the passthrough chain")
        assert passthrough_reply(gw.https_port, C, "pt.test") == b""
    finally:
        remove_manifests(gw.manifests, "passthrough.yaml")


# --- client IP from X-Forwarded-For and from PROXY protocol -------------------


def test_x_forwarded_for_with_one_trusted_hop(tmp_path: Path, echo: EchoBackend) -> None:
    """127.0.0.10 plays the balancer in front; the client is the last X-Forwarded-For entry."""
    gw = start_gateway(tmp_path, echo, "--client-ip-source", "xff", "--xff-trusted-hops", "1")
    try:
        status, body = get(gw, "office", C, headers={"X-Forwarded-For": A})
        assert status == 200
        seen = json.loads(body)["headers"]
        assert (seen["x-real-ip"], seen["x-forwarded-for"]) == (A, f"{A},{C}")
        # With fewer entries than trusted hops, the socket peer is the client.
        assert [get(gw, "office", ip)[0] for ip in (A, C)] == [200, 403]
        # A spoofed entry left of the balancer's own does not count.
        assert get(gw, "office", C, headers={"X-Forwarded-For": f"{A}, {B}"})[0] == 403
        assert get(gw, "office", C, headers={"X-Forwarded-For": B})[0] == 403
    finally:
        gw.stop()


def proxied_get(port: int, source: str, client: str | None, host: str) -> bytes:
    """An HTTP request behind a PROXY v1 header claiming ``client``; the raw response."""
    with socket.create_connection(("127.0.0.1", port), timeout=5,
                                  source_address=(source, 0)) as s:
        header = f"PROXY TCP4 {client} 127.0.0.1 40000 {port}\r\n" if client else ""
        s.sendall(header.encode() + f"GET / HTTP/1.1\r\nHost: {host}\r\n"
                  "Connection: close\r\n\r\n".encode())
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def test_proxy_protocol_client(tmp_path: Path, echo: EchoBackend) -> None:
    manifests = tmp_path / "manifests"
    write_manifests(manifests, "all.yaml", base_manifests(echo))
    gw = Gateway(tmp_path, manifests, ["--client-ip-source", "proxy-protocol"])
    try:
        port = gw.http_port
        def served() -> bytes | None:
            reply = proxied_get(port, C, A, "office.test")
            return reply if reply.startswith(b"HTTP/1.1 200") else None
        reply = wait_for(served, what="the PROXY client to be served")
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["headers"]["x-real-ip"] == A
        assert proxied_get(port, C, B, "office.test").startswith(b"HTTP/1.1 403")
        # Without the header the connection is refused, never served as the balancer's address.
        assert not proxied_get(port, A, None, "open.test").startswith(b"HTTP/1.1 200")
    finally:
        gw.stop()
