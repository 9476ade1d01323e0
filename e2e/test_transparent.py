"""Transparent source addresses end to end: what an unmodified pod sees of the client.

In network namespaces (:mod:`e2e.netns`): a client, a node running kxds and a
per-node Envoy (both inside the node's namespace; kxds on its loopback), and a
pod running unmodified TCP and UDP echoes that reply with the peer address they
saw. One test per node: set up (``kxds node-routing apply``, bootstrap
``--transparent``) and not set up (neither).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.harness import envoy_binary, kxds_command, parse_metric, wait_for
from e2e.netns import CLIENT_IP, NODE_OUTSIDE_IP, NODE_POD_IP, POD_IP, Topology, unavailable
from kxds.envoy.bootstrap import BootstrapOptions, bootstrap_yaml

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(bool(reason := unavailable()), reason=reason or "")]

XDS, ADMIN, ENVOY_ADMIN = 18000, 19100, 9901
"""Fixed ports: the node's namespace is new, so nothing else holds them."""

TCP_ECHO, UDP_ECHO, ECHO_NOT_PP = 7000, 7001, 7002


def _service(name: str, port: int, annotations: str = "") -> str:
    return textwrap.dedent(f"""\
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: {name}, namespace: shop, annotations: {{{annotations}}}}}
        spec:
          type: NodePort
          externalTrafficPolicy: Local
          internalTrafficPolicy: Local
          ports:
          - {{name: tcp, port: {port}, nodePort: {port}}}
          - {{name: udp, port: {port}, protocol: UDP, nodePort: {port}}}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: {name}-1
          namespace: shop
          labels: {{kubernetes.io/service-name: {name}}}
        addressType: IPv4
        ports: [{{name: tcp, port: {TCP_ECHO if name != "pp" else ECHO_NOT_PP}}},
                {{name: udp, port: {UDP_ECHO}, protocol: UDP}}]
        endpoints: [{{addresses: [{POD_IP}], nodeName: n1}}]
        """)


MANIFESTS = (
    # The default for externalTrafficPolicy Local: the client's address.
    _service("local", 30080)
    + _service("node", 30081, "kxds.io/source-ip: node")
    # A PROXY v1 header (text, so an echo that does not read it shows it).
    + _service("pp", 30082, "kxds.io/source-ip: proxy-protocol, "
                            "kxds.io/upstream-proxy-protocol: v1")
)


class Node:
    """The namespaces, with the echoes, kxds and a per-node Envoy running."""

    def __init__(self, tmp: Path, *, set_up: bool) -> None:
        self.net = net = Topology(tmp)
        for kind, port in (("tcp", TCP_ECHO), ("udp", UDP_ECHO), ("tcp", ECHO_NOT_PP)):
            net.start(net.pod, f"echo-{kind}-{port}", [
                *kxds_command()[:1], "-m", "kxds.sandbox.echo", kind, "--name", "pod",
                "--host", POD_IP, "--port", str(port)])
        if set_up:
            net.run(net.node, [*kxds_command(), "node-routing", "apply"])
        manifests = tmp / "manifests"
        manifests.mkdir()
        (manifests / "services.yaml").write_text(MANIFESTS)
        self.kxds = net.start(net.node, "kxds", [
            *kxds_command(), "serve", "--manifests", str(manifests),
            "--xds-address", f"127.0.0.1:{XDS}", "--admin-address", f"127.0.0.1:{ADMIN}",
            "--holdoff-ms", "10"])
        bootstrap = tmp / "bootstrap.yaml"
        bootstrap.write_text(bootstrap_yaml(BootstrapOptions(
            role="node", node_id="n1", node_name="n1", xds_host="127.0.0.1", xds_port=XDS,
            admin_port=ENVOY_ADMIN, transparent=set_up)))
        self.envoy = net.start(net.node, "envoy", [
            envoy_binary(), "-c", str(bootstrap), "--use-dynamic-base-id", "--concurrency", "1",
            "--drain-time-s", "1", "--parent-shutdown-time-s", "2"])

    def metric(self, name: str, labels: dict[str, str]) -> float | None:
        return parse_metric(self.net.get(self.net.node, f"http://127.0.0.1:{ADMIN}/metrics"),
                            name, labels)

    def seen(self, kind: str, port: int) -> str:
        """The echo's reply to a message from the client through the node's ``port``,
        once the listener answers."""
        def reply() -> str | None:
            for proc in (self.kxds, self.envoy):
                assert proc.alive(), proc.diagnostics()
            return self.net.send(kind, NODE_OUTSIDE_IP, port, "hello") or None
        return wait_for(reply, timeout=20, interval=0.2, what=f"{kind} reply on {port}")


@pytest.fixture
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Node]:
    made = Node(tmp_path, set_up=request.param)
    try:
        yield made
    finally:
        made.net.close()


def _peer(reply: str) -> str:
    """The peer address in an echo's reply (``pod <peer> <data>``)."""
    name, peer, _ = reply.split(" ", 2)
    assert name == "pod", reply
    return peer


@pytest.mark.parametrize("node", [True], indirect=True, ids=["set-up"])
def test_set_up_node_gives_pods_the_client_address(node: Node) -> None:
    views = {(kind, service): node.seen(kind, port)
             for service, port in (("local", 30080), ("node", 30081))
             for kind in ("tcp", "udp")}
    print("the pod saw:", views)
    assert {k: _peer(v) for k, v in views.items()} == {
        ("tcp", "local"): CLIENT_IP, ("udp", "local"): CLIENT_IP,
        ("tcp", "node"): NODE_POD_IP, ("udp", "node"): NODE_POD_IP,
    }
    # The PROXY header reaches the pod as the first bytes; the connection is the node's.
    reply = node.seen("tcp", 30082)
    print("the pod saw with proxy-protocol:", repr(reply))
    assert reply.startswith(f"pod {NODE_POD_IP} PROXY TCP4 {CLIENT_IP} {NODE_OUTSIDE_IP} ")
    assert reply.endswith("hello")
    # Only the pp Service's UDP port falls back (no PROXY protocol for UDP).
    assert node.metric("kxds_source_ip_fallbacks", {"group": "node/n1"}) == 1


@pytest.mark.parametrize("node", [False], indirect=True, ids=["not-set-up"])
def test_node_without_set_up_falls_back_and_says_so(node: Node) -> None:
    views = {kind: node.seen(kind, 30080) for kind in ("tcp", "udp")}
    print("the pod saw without the set-up:", views)
    assert {k: _peer(v) for k, v in views.items()} == {"tcp": NODE_POD_IP, "udp": NODE_POD_IP}
    # local's TCP and UDP ports, and pp's UDP port.
    assert node.metric("kxds_source_ip_fallbacks", {"group": "node/n1"}) == 3
    log = node.kxds.log_path.read_text()
    for proto in ("TCP", "UDP"):
        assert (f"Service shop/local: spec.externalTrafficPolicy: Fallback: port 30080/{proto}: "
                "the backend sees the node's address instead of the client's: the node is not "
                "set up for it") in log
