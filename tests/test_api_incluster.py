"""``--in-cluster``: the pod's service account, HTTPS to the API, the bearer token sent.

The fake API serves HTTPS with a certificate from a CA written where
Kubernetes mounts the service account (``ca.crt`` beside ``token``), and
answers 401 to any request without the right token, so a sync proves the
client found the address, trusted the CA and authenticated.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeapi import FakeApi, SourceRunner
from test_api_source import FAST, all_failing, poll, populate, services

from kxds.certs.make import make_ca, make_leaf
from kxds.kube.api import ApiOptions, ApiSource
from kxds.kube.client import KubeClient

TOKEN = "service-account-token"


@pytest.fixture
def tls_api(tmp_path: Path) -> Iterator[tuple[FakeApi, Path]]:
    """An HTTPS fake API demanding ``TOKEN``, and a service-account directory for it."""
    ca = make_ca()
    leaf = make_leaf(ca, ["127.0.0.1"])
    (tmp_path / "api.crt").write_bytes(leaf.cert_pem)
    (tmp_path / "api.key").write_bytes(leaf.key_pem)
    fake = FakeApi(bookmark_interval=0.1, token=TOKEN,
                   tls=(str(tmp_path / "api.crt"), str(tmp_path / "api.key"))).start()
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(TOKEN)
    (account / "ca.crt").write_bytes(ca.cert_pem)
    yield fake, account
    fake.stop()


def in_cluster_source(api: FakeApi, account: Path, monkeypatch: pytest.MonkeyPatch
                      ) -> ApiSource:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
    client = KubeClient.from_config(in_cluster=True, service_account=account)
    return ApiSource(client, ApiOptions(**FAST))


def test_in_cluster_syncs_over_https_with_the_token(
        tls_api: tuple[FakeApi, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    api, account = tls_api
    populate(api)
    with SourceRunner(in_cluster_source(api, account, monkeypatch)) as run:
        run.wait(lambda s: services(s) == {"web"})
    assert api.url.startswith("https://")
    assert api.count("GET", "/api/v1/services") >= 1


@pytest.mark.parametrize("broken", ["token", "ca"])
def test_in_cluster_with_a_wrong_token_or_ca_publishes_nothing(
        tls_api: tuple[FakeApi, Path], monkeypatch: pytest.MonkeyPatch, broken: str) -> None:
    api, account = tls_api
    populate(api)
    if broken == "token":
        (account / "token").write_text("someone-else")
    else:
        (account / "ca.crt").write_bytes(make_ca("another CA").cert_pem)
    src = in_cluster_source(api, account, monkeypatch)
    with SourceRunner(src) as run:
        poll(lambda: all_failing(src), f"every kind to fail with a wrong {broken}")
        assert run.count == 0  # nothing published: no empty config from a failed login
