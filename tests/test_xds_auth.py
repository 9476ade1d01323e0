"""mTLS on the xDS port: identities from client certificates, claims checked, SDS to nodes empty.

In-process: the real gRPC server with TLS credentials, driven by a gRPC
client that plays Envoy with a certificate of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc
from xds_support import (
    XdsTestClient,
    cluster,
    make_node,
    resources,
    run_async,
    secret,
)

from kxds.certs.make import KeyPair, make_ca, make_client, make_leaf
from kxds.envoy.resource import CLUSTER, SECRET
from kxds.xds.auth import Authorizer, IdentityRefused, check_claims, peer_id
from kxds.xds.cache import SnapshotCache
from kxds.xds.identity import node_identity
from kxds.xds.metrics import XdsMetrics
from kxds.xds.server import XdsServer
from kxds.xds.tls import TlsFiles, plaintext_refusal, server_credentials

SERVER_NAME = "kxds.kxds.svc"


class Pki:
    """A CA, kxds's serving certificate, and its files."""

    def __init__(self, tmp: Path) -> None:
        self.ca = make_ca("kxds xds CA")
        self.server = make_leaf(self.ca, [SERVER_NAME])
        self.files = TlsFiles(tmp / "tls.crt", tmp / "tls.key", tmp / "ca.crt")
        self.files.cert.write_bytes(self.server.cert_pem)
        self.files.key.write_bytes(self.server.key_pem)
        self.files.client_ca.write_bytes(self.ca.cert_pem)

    def client(self, uri: str) -> KeyPair:
        return make_client(self.ca, uri)


class TlsClient(XdsTestClient):
    """:class:`XdsTestClient` over TLS, with an optional client certificate."""

    def __init__(self, target: str, node: Any, ca: bytes, pair: KeyPair | None,
                 delta: bool = False) -> None:
        super().__init__(target, node, delta)
        self.creds = grpc.ssl_channel_credentials(
            ca, pair.key_pem if pair else None, pair.cert_pem if pair else None)

    async def __aenter__(self) -> TlsClient:
        self._channel = grpc.aio.secure_channel(
            self.target, self.creds, options=[("grpc.ssl_target_name_override", SERVER_NAME)])
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self._channel)
        self._call = (stub.DeltaAggregatedResources() if self.delta
                      else stub.StreamAggregatedResources())
        return self


def _cache() -> SnapshotCache:
    cache = SnapshotCache()
    view = resources(cluster("default/web/80"), secret("default/tls", b"PRIVATE"))
    cache.set_view("edge/default", view)
    cache.set_view("edge/blue", view)
    # A node view that (wrongly) carries a Secret: the server must still not send it.
    cache.set_view("node/n1", view)
    cache.set_view("node/n2", view)
    cache.mark_synced()
    return cache


@contextlib.asynccontextmanager
async def tls_server(pki: Pki, cache: SnapshotCache
                     ) -> AsyncIterator[tuple[XdsServer, XdsMetrics, str]]:
    metrics = XdsMetrics()
    server = XdsServer(cache, metrics, authorizer=Authorizer(metrics.registry))
    port = await server.start("127.0.0.1:0", server_credentials(pki.files))
    try:
        yield server, metrics, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


def _refused(metrics: XdsMetrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("kxds_xds_identity_refused_total",
                                              {"reason": reason})
    return value or 0.0


@run_async
async def test_an_edge_certificate_gets_its_groups_view_with_secrets(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    async with tls_server(pki, _cache()) as (_, _, target):
        node = make_node("edge-1", "edge", cluster="blue")
        async with TlsClient(target, node, pki.ca.cert_pem,
                             pki.client("spiffe://kxds/edge/blue")) as c:
            await c.send(CLUSTER)
            resp = await c.recv()
            assert [r.type_url for r in resp.resources] == [CLUSTER]
            await c.ack(resp)
            await c.send(SECRET, resource_names=["default/tls"])
            resp = await c.recv()
            assert len(resp.resources) == 1 and b"PRIVATE" in resp.resources[0].value


async def _refused_at_handshake(client: TlsClient) -> None:
    async with client as c:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await c.send(CLUSTER)
        with pytest.raises(EOFError):
            await c.recv()
        assert await c.status() == grpc.StatusCode.UNAVAILABLE


@run_async
async def test_a_client_without_a_certificate_is_refused_at_the_handshake(
        tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    async with tls_server(pki, _cache()) as (_, _, target):
        await _refused_at_handshake(TlsClient(target, make_node("edge-1", "edge"),
                                              pki.ca.cert_pem, None))


@run_async
async def test_a_certificate_of_another_ca_is_refused(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    other = make_client(make_ca("another CA"), "spiffe://kxds/edge/default")
    async with tls_server(pki, _cache()) as (_, _, target):
        await _refused_at_handshake(TlsClient(target, make_node("edge-1", "edge"),
                                              pki.ca.cert_pem, other))


REFUSALS = [
    pytest.param("spiffe://kxds/node/n1", make_node("x", "edge"), "role", id="node-cert-as-edge"),
    pytest.param("spiffe://kxds/node/n1", make_node("x", "node", node_name="n2"), "node_name",
                 id="node-cert-other-node"),
    pytest.param("spiffe://kxds/node/n1", make_node("n2", "node"), "node_name",
                 id="node-cert-other-node-by-id"),
    pytest.param("spiffe://kxds/edge/default", make_node("x", "edge", cluster="blue"), "group",
                 id="edge-cert-other-group"),
    pytest.param("spiffe://kxds/edge/default", make_node("x", "node", node_name="n1"), "role",
                 id="edge-cert-as-node"),
    pytest.param("spiffe://other/edge/default", make_node("x", "edge"), "no_identity",
                 id="other-trust-domain"),
]


@pytest.mark.parametrize(("uri", "node", "reason"), REFUSALS)
def test_a_claim_the_certificate_does_not_allow_is_permission_denied(
        tmp_path: Path, uri: str, node: Any, reason: str) -> None:
    @run_async
    async def run() -> None:
        pki = Pki(tmp_path)
        async with tls_server(pki, _cache()) as (_, metrics, target):
            async with TlsClient(target, node, pki.ca.cert_pem, pki.client(uri)) as c:
                await c.send(CLUSTER)
                with pytest.raises(EOFError):
                    await c.recv()
                assert await c.status() == grpc.StatusCode.PERMISSION_DENIED
                assert "certificate" in await c.details()
            assert _refused(metrics, reason) == 1
    run()


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_sds_to_a_node_identity_is_empty(tmp_path: Path, delta: bool) -> None:
    @run_async
    async def run() -> None:
        pki = Pki(tmp_path)
        async with tls_server(pki, _cache()) as (_, _, target):
            node = make_node("node-n1", "node", node_name="n1")
            async with TlsClient(target, node, pki.ca.cert_pem,
                                 pki.client("spiffe://kxds/node/n1"), delta=delta) as c:
                await c.send(CLUSTER)
                resp = await c.recv()
                assert len(resp.resources) == 1
                await c.ack(resp)
                if delta:
                    await c.send(SECRET, resource_names_subscribe=["default/tls"])
                    resp = await c.recv()  # told it does not exist
                    assert list(resp.resources) == []
                    assert list(resp.removed_resources) == ["default/tls"]
                else:
                    await c.send(SECRET, resource_names=["default/tls"])
                    await c.nothing(0.5)
    run()


@run_async
async def test_without_tls_a_node_still_gets_no_secrets() -> None:
    from xds_support import serving

    async with serving(_cache()) as (_, target):
        async with XdsTestClient(target, make_node("node-n1", "node", node_name="n1"),
                                 delta=True) as c:
            await c.send(SECRET, resource_names_subscribe=["default/tls"])
            resp = await c.recv()
            assert list(resp.resources) == [] and list(resp.removed_resources) == ["default/tls"]
        async with XdsTestClient(target, make_node("edge-1", "edge"), delta=True) as c:
            await c.send(SECRET, resource_names_subscribe=["default/tls"])
            resp = await c.recv()
            assert [r.name for r in resp.resources] == ["default/tls"]


def test_check_claims_takes_the_identity_the_certificate_names() -> None:
    from kxds.certs.spiffe import ProxyId

    ident = node_identity(make_node("x", "node", node_name="n1"))
    assert check_claims(ident, ProxyId("node", "n1")).group == "node/n1"
    edge = node_identity(make_node("x", "edge"))
    assert check_claims(edge, ProxyId("edge", "default")).group == "edge/default"
    with pytest.raises(IdentityRefused):
        peer_id({})


@pytest.mark.parametrize(("address", "insecure", "refused"), [
    ("127.0.0.1:18000", False, False),
    ("[::1]:18000", False, False),
    ("localhost:18000", False, False),
    ("0.0.0.0:18000", False, True),
    ("[::]:18000", False, True),
    ("10.0.0.5:18000", False, True),
    ("kxds.example:18000", False, True),
    ("0.0.0.0:18000", True, False),
])
def test_plaintext_only_on_loopback(address: str, insecure: bool, refused: bool) -> None:
    reason = plaintext_refusal(address, insecure)
    assert (reason is not None) == refused
    if reason:
        assert "--xds-insecure" in reason and "--xds-tls-cert" in reason
