"""The xDS channel over mTLS with the real Envoy, and no private key on any debug page or log.

kxds serves xDS with TLS and client certificates made by ``kxds certgen``;
an edge Envoy with the edge group's certificate gets its configuration; an
Envoy holding a node certificate that asks for the edge view, or for another
node's, is refused (PERMISSION_DENIED) and gets nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from e2e.harness import EchoBackend, Envoy, Kxds, Process, free_port, kxds_command, wait_for
from kxds.certs.make import KeyPair, make_ca, make_client, make_leaf, tls_secret_yaml
from kxds.envoy.bootstrap import XdsTls, client_sds_yaml
from kxds.nodecert.client import write_atomically

pytestmark = pytest.mark.e2e

WEB = """
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: default, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: web, namespace: default}}
spec:
  ingressClassName: kxds
  tls: [{{hosts: [secure.test], secretName: secure}}]
  defaultBackend: {{service: {{name: web, port: {{number: 80}}}}}}
"""


def _certgen(out: Path) -> None:
    subprocess.run([*kxds_command(), "certgen", "--out-dir", str(out), "--dns-name",
                    "127.0.0.1", "--edge-group", "default"], check=True, timeout=60)


def _tls(certs: Path, stem: str) -> XdsTls:
    return XdsTls(cert=str(certs / f"{stem}.crt"), key=str(certs / f"{stem}.key"),
                  ca=str(certs / "ca.crt"))


def _key_lines(pem: bytes) -> list[str]:
    """The base64 lines of a PEM key: any of them in a page or log is a leak."""
    return [line for line in pem.decode().splitlines() if line and not line.startswith("-----")]


@pytest.fixture
def setup(tmp_path: Path, manifests_dir: Path, echo: Callable[..., EchoBackend],
          started: list[Process]) -> tuple[Kxds, Path, KeyPair]:
    certs = tmp_path / "certs"
    _certgen(certs)
    web = echo("web")
    served = make_leaf(make_ca("ingress CA"), ["secure.test"])
    (manifests_dir / "web.yaml").write_text(WEB.format(port=web.port) + "---\n"
                                            + tls_secret_yaml("default", "secure", served))
    kxds = Kxds(tmp_path, ["--manifests", str(manifests_dir), "--listen-address", "127.0.0.1",
                           "--http-port", str(free_port()), "--https-port", str(free_port()),
                           "--xds-tls-cert", str(certs / "kxds.crt"),
                           "--xds-tls-key", str(certs / "kxds.key"),
                           "--xds-client-ca", str(certs / "ca.crt")])
    started.append(kxds)
    kxds.wait_ready()
    return kxds, certs, served


def _node_cert(certs: Path, node: str) -> str:
    ca = KeyPair(cert_pem=(certs / "ca.crt").read_bytes(), key_pem=(certs / "ca.key").read_bytes())
    pair = make_client(ca, f"spiffe://kxds/node/{node}", hours=1)
    (certs / f"node-{node}.crt").write_bytes(pair.cert_pem)
    (certs / f"node-{node}.key").write_bytes(pair.key_pem)
    return f"node-{node}"


def test_edge_envoy_over_mtls_gets_its_config_and_no_key_leaks(
        tmp_path: Path, setup: tuple[Kxds, Path, KeyPair], started: list[Process]) -> None:
    kxds, certs, served = setup
    envoy = Envoy(tmp_path, kxds.xds_address, tls=_tls(certs, "edge-default"))
    started.append(envoy)
    # The listeners and the Secret (with its key) arrived over mTLS.
    envoy.wait_until(lambda e: '"name": "default/secure"' in json.dumps(
        e.config_dump("dynamic_active_secrets")), what="the Secret over SDS")
    envoy.wait_until(lambda e: len(e.listener_names()) >= 2, what="listeners")
    assert kxds.metric("kxds_xds_connected_proxies", {"group": "edge/default"}) == 1
    pages = ["/debug/nodes", "/debug/views", "/debug/config_dump", "/metrics",
             f"/debug/config_dump?node={envoy.node_id}"]
    texts = [kxds.get(p)[1] for p in pages]
    assert envoy.node_id in texts[0]
    envoy.stop()
    kxds.stop()
    texts.append(kxds.log_path.read_text())
    assert "event=response" in texts[-1]  # debug logging was on while the Secret went out
    secrets = [served.key_pem, (certs / "kxds.key").read_bytes(),
               (certs / "edge-default.key").read_bytes(), (certs / "ca.key").read_bytes()]
    for text in texts:
        assert "PRIVATE KEY" not in text
        for key in secrets:
            for line in _key_lines(key):
                assert line not in text


@pytest.mark.parametrize(("node_cert", "kwargs", "reason"), [
    ("n1", {"role": "edge"}, "role"),
    ("n1", {"role": "node", "node_name": "n2", "node_id": "node-n2"}, "node_name"),
], ids=["node-cert-asks-edge", "node-cert-asks-other-node"])
def test_an_envoy_with_a_node_certificate_cannot_take_another_view(
        tmp_path: Path, setup: tuple[Kxds, Path, KeyPair], started: list[Process],
        node_cert: str, kwargs: dict[str, str], reason: str) -> None:
    kxds, certs, _ = setup
    envoy = Envoy(tmp_path, kxds.xds_address, tls=_tls(certs, _node_cert(certs, node_cert)),
                  **kwargs)  # type: ignore[arg-type]
    started.append(envoy)
    wait_for(lambda: (kxds.metric("kxds_xds_identity_refused_total", {"reason": reason})
                      or 0) >= 1, what=f"refusal ({reason})")
    # Refused, it keeps reconnecting (connected for an instant each time): what
    # matters is that it never received a configuration.
    assert envoy.stat("cluster_manager.cds.update_success") == 0
    assert envoy.stat("listener_manager.lds.update_success") == 0
    assert envoy.listener_names() == set()
    assert re.search(rf"event=identity_refused .*reason={reason}", kxds.log_path.read_text())
    # The same Envoy with its own node's claim is served.
    own = Envoy(tmp_path, kxds.xds_address, tls=_tls(certs, f"node-{node_cert}"),
                role="node", node_name=node_cert, node_id=f"node-{node_cert}", name="own")
    started.append(own)
    own.wait_until(lambda e: e.stats().get("control_plane.connected_state") == 1,
                   what="own node connected")


def test_an_envoy_without_tls_is_refused(tmp_path: Path, setup: tuple[Kxds, Path, KeyPair],
                                         started: list[Process]) -> None:
    kxds, _, _ = setup
    envoy = Envoy(tmp_path, kxds.xds_address)
    started.append(envoy)
    envoy.wait_until(lambda e: e.stat("cluster.xds_cluster.upstream_cx_connect_fail")
                     + e.stat("cluster.xds_cluster.upstream_cx_destroy") >= 1,
                     what="a failed connection")
    assert envoy.listener_names() == set()
    assert kxds.metric("kxds_xds_connected_proxies", {"group": "edge/default"}) in (None, 0)


def _client_serials(envoy: Envoy) -> set[str]:
    """Serial numbers of the client certificates Envoy holds in its contexts."""
    certs = json.loads(envoy.admin("/certs"))["certificates"]
    return {c["serial_number"] for ctx in certs for c in ctx.get("cert_chain", [])}


def test_a_renewed_node_certificate_is_used_without_a_restart(
        tmp_path: Path, setup: tuple[Kxds, Path, KeyPair], started: list[Process]) -> None:
    """The node's Envoy reads its certificate through the SDS file ``kxds node-cert``
    writes, and takes the renewed one when node-cert renames new files in."""
    kxds, certs, _ = setup
    ca = KeyPair(cert_pem=(certs / "ca.crt").read_bytes(), key_pem=(certs / "ca.key").read_bytes())
    out = tmp_path / "node-cert"
    out.mkdir()

    def renew() -> str:
        pair = make_client(ca, "spiffe://kxds/node/n1", hours=1)
        # As node-cert writes them: each file renamed into place, the key first.
        write_atomically(out / "tls.key", pair.key_pem, 0o600)
        write_atomically(out / "tls.crt", pair.cert_pem)
        serial = format(x509.load_pem_x509_certificate(pair.cert_pem).serial_number, "x")
        return serial.zfill(len(serial) + len(serial) % 2)  # as Envoy shows it: whole bytes

    first = renew()
    (out / "sds.yaml").write_text(client_sds_yaml(str(out / "tls.crt"), str(out / "tls.key")))
    envoy = Envoy(tmp_path, kxds.xds_address, role="node", node_name="n1", node_id="node-n1",
                  tls=XdsTls(sds=str(out / "sds.yaml"), ca=str(certs / "ca.crt")))
    started.append(envoy)
    envoy.wait_until(lambda e: e.stats().get("control_plane.connected_state") == 1,
                     what="the node Envoy connected over mTLS")
    assert first in _client_serials(envoy)
    second = renew()
    envoy.wait_until(lambda e: second in _client_serials(e) and first not in _client_serials(e),
                     what="the renewed certificate loaded")
    assert envoy.stats().get("control_plane.connected_state") == 1
