"""Node certificates by token: kxds's endpoint, TokenReview against the fake API, the client.

The issuer runs in-process over HTTPS; tokens are made by the fake API
server for Pods it holds, and reviewed by it as the real one does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from fakeapi import FakeApi

from kxds.certs.make import KeyPair, make_ca, make_leaf
from kxds.certs.spiffe import cert_ids
from kxds.kube.client import KubeClient
from kxds.nodecert.client import ClientOptions, IssueFailed, obtain, renew_at
from kxds.nodecert.issuer import IssuerServer, NodeCertIssuer
from kxds.nodecert.review import TokenRefused, verdict


def pod(name: str, node: str, sa: str = "kxds-node", ns: str = "kxds") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"nodeName": node, "serviceAccountName": sa, "containers": []}}


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi().start()
    for p in (pod("proxy-a", "n1"), pod("proxy-b", "n2"), pod("other", "n1", sa="default")):
        fake.apply(p)
    yield fake
    fake.stop()


class Setup:
    def __init__(self, tmp: Path, api: FakeApi) -> None:
        self.ca = make_ca("kxds xds CA")
        server = make_leaf(self.ca, ["127.0.0.1"])
        (tmp / "srv.crt").write_bytes(server.cert_pem)
        (tmp / "srv.key").write_bytes(server.key_pem)
        (tmp / "ca.pem").write_bytes(self.ca.cert_pem)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(tmp / "srv.crt", tmp / "srv.key")
        self.issuer = NodeCertIssuer(self.ca, KubeClient.for_url(api.url),
                                     lifetime=dt.timedelta(hours=24))
        self.tmp = tmp
        self.api = api

    def request(self, token: str, node: str, out: str = "out") -> tuple[Path, Any]:
        token_file = self.tmp / f"token-{out}"
        token_file.write_text(token)

        async def main() -> Any:
            server = IssuerServer(self.issuer, self.context)
            port = await server.start("127.0.0.1:0")
            try:
                opts = ClientOptions(url=f"https://127.0.0.1:{port}", ca_file=self.tmp / "ca.pem",
                                     token_file=token_file, node=node, out_dir=self.tmp / out)
                return await asyncio.to_thread(_try_obtain, opts)
            finally:
                await server.stop()
        return self.tmp / out, asyncio.run(main())


def _try_obtain(opts: ClientOptions) -> dt.datetime | IssueFailed:
    try:
        return obtain(opts)
    except IssueFailed as e:
        return e


def test_a_valid_token_gets_a_short_lived_certificate_for_its_own_node(
        tmp_path: Path, api: FakeApi) -> None:
    s = Setup(tmp_path, api)
    out, expiry = s.request(api.issue_token("kxds", "kxds-node", "proxy-a", ("kxds",)), "n1")
    assert isinstance(expiry, dt.datetime), expiry
    now = dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=23) < expiry - now <= dt.timedelta(hours=24)
    chain = x509.load_pem_x509_certificates((out / "tls.crt").read_bytes())
    assert [str(i) for i in cert_ids(chain[0])] == ["node/n1"]
    chain[0].verify_directly_issued_by(x509.load_pem_x509_certificate(s.ca.cert_pem))
    assert (out / "ca.crt").read_bytes() == s.ca.cert_pem
    assert stat.S_IMODE((out / "tls.key").stat().st_mode) == 0o600
    KeyPair(cert_pem=(out / "tls.crt").read_bytes(), key_pem=(out / "tls.key").read_bytes()).load()
    # Renewal is due after two thirds of the lifetime, not before.
    due = renew_at(out / "tls.crt", now)
    assert due is not None and dt.timedelta(hours=15) < due - now < dt.timedelta(hours=17)
    assert api.count("POST", "/apis/authentication.k8s.io/v1/tokenreviews") == 1


@pytest.mark.parametrize(("case", "status", "words"), [
    ("wrong-audience", 401, "audience"),
    ("no-audience", 401, "audience"),
    ("pod-on-another-node", 403, "not on node 'n1'"),
    ("other-service-account", 403, "may not obtain"),
    ("pod-deleted", 401, "not found"),
    ("garbage", 401, "invalid bearer token"),
])
def test_a_token_that_does_not_prove_the_node_is_refused(
        tmp_path: Path, api: FakeApi, case: str, status: int, words: str) -> None:
    s = Setup(tmp_path, api)
    token = {
        "wrong-audience": lambda: api.issue_token("kxds", "kxds-node", "proxy-a", ("vault",)),
        "no-audience": lambda: api.issue_token("kxds", "kxds-node", "proxy-a"),
        "pod-on-another-node": lambda: api.issue_token("kxds", "kxds-node", "proxy-b", ("kxds",)),
        "other-service-account": lambda: api.issue_token("kxds", "default", "other", ("kxds",)),
        "pod-deleted": lambda: api.issue_token("kxds", "kxds-node", "proxy-a", ("kxds",)),
        "garbage": lambda: "not-a-token",
    }[case]()
    if case == "pod-deleted":
        api.delete("v1", "Pod", "kxds", "proxy-a")
    out, result = s.request(token, "n1")
    assert isinstance(result, IssueFailed)
    assert str(result).startswith(f"HTTP {status}") and words in str(result), result
    assert not (out / "tls.crt").exists() and not (out / "tls.key").exists()


def test_a_malformed_csr_or_node_name_is_a_bad_request(tmp_path: Path, api: FakeApi) -> None:
    s = Setup(tmp_path, api)
    server = IssuerServer(s.issuer, s.context)
    token = api.issue_token("kxds", "kxds-node", "proxy-a", ("kxds",))
    auth = {"authorization": f"Bearer {token}"}
    status, body = asyncio.run(server.answer(
        "POST", "/v1/node-certificate", auth, b'{"node": "n1", "csr": "nope"}'))
    assert status == 400 and b"certificate signing request" in body
    status, body = asyncio.run(server.answer(
        "POST", "/v1/node-certificate", auth, b'{"node": "N1/../x", "csr": "nope"}'))
    assert status == 400
    status, _ = asyncio.run(server.answer("POST", "/v1/node-certificate", {}, b'{"node": "n1", '
                                          b'"csr": "x"}'))
    assert status == 401
    assert asyncio.run(server.answer("GET", "/v1/node-certificate", auth, b""))[0] == 405


def test_verdict_needs_a_pod_and_a_node_claim() -> None:
    base = {"authenticated": True, "audiences": ["kxds"],
            "user": {"username": "system:serviceaccount:kxds:kxds-node", "extra": {}}}
    with pytest.raises(TokenRefused, match="not bound to a pod"):
        verdict(base, "kxds", "n1", ["kxds/kxds-node"])
    base["user"]["extra"] = {"authentication.kubernetes.io/pod-name": ["p"]}  # type: ignore[index]
    with pytest.raises(TokenRefused, match="names no node"):
        verdict(base, "kxds", "n1", ["kxds/kxds-node"])
    user = {"username": "alice", "extra": {}}
    with pytest.raises(TokenRefused, match="service account"):
        verdict({**base, "user": user}, "kxds", "n1", ["kxds/kxds-node"])
