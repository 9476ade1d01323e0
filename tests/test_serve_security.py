"""``kxds serve`` and ``kxds certgen`` security flags: refusals at start, the metrics-only
address, Secrets written as files, manifests and through the (fake) API."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from fakeapi import FakeApi, kubeconfig

from e2e.harness import free_port
from kxds.certgen import run_certgen
from kxds.certs.check import check_key_pair
from kxds.certs.spiffe import cert_ids
from kxds.cli import _parser
from kxds.xds.admin import AdminServer
from kxds.xds.cache import SnapshotCache
from kxds.xds.metrics import XdsMetrics


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Refused before anything listens; were it not, it would serve until the timeout.
    return subprocess.run([sys.executable, "-m", "kxds.cli", "serve", "--manifests",
                           str(tmp_path), "--admin-address", f"127.0.0.1:{free_port()}", *args],
                          capture_output=True, text=True, timeout=60)


def test_plaintext_on_a_non_loopback_address_is_refused_at_start(tmp_path: Path) -> None:
    done = _serve(tmp_path, "--xds-address", "0.0.0.0:18000")
    assert done.returncode != 0
    assert "refusing plaintext xDS" in done.stderr and "--xds-insecure" in done.stderr
    assert "xds_listening" not in done.stderr


@pytest.mark.parametrize(("args", "words"), [
    (["--xds-tls-cert", "x.crt"], "go together"),
    (["--xds-tls-cert", "missing.crt", "--xds-tls-key", "k", "--xds-client-ca", "c"],
     "cannot read"),
    (["--xds-insecure", "--xds-tls-cert", "a", "--xds-tls-key", "b", "--xds-client-ca", "c"],
     "contradicts"),
])
def test_unusable_tls_flags_are_refused_at_start(tmp_path: Path, args: list[str],
                                                 words: str) -> None:
    done = _serve(tmp_path, "--xds-address", f"127.0.0.1:{free_port()}", *args)
    assert done.returncode != 0 and words in done.stderr, done.stderr


def test_the_metrics_address_serves_no_debug_page() -> None:
    cache = SnapshotCache()
    public = AdminServer(cache, XdsMetrics(), debug=False)
    assert public.route("GET", "/metrics")[0] == 200
    assert public.route("GET", "/healthz")[0] == 200
    for path in ("/debug/nodes", "/debug/config_dump", "/debug/views"):
        assert public.route("GET", path)[0] == 404
        assert AdminServer(cache, XdsMetrics()).route("GET", path)[0] == 200


def _certgen(*args: str) -> int:
    return run_certgen(_parser().parse_args(["certgen", *args]))


def _decode(secret: dict[str, object], key: str) -> bytes:
    data = secret["data"]
    assert isinstance(data, dict)
    return base64.b64decode(data[key])


def test_certgen_writes_files_and_secret_manifests(tmp_path: Path) -> None:
    assert _certgen("--out-dir", str(tmp_path / "files"), "--secrets-dir", str(tmp_path / "s"),
                    "--edge-group", "default", "--edge-group", "blue",
                    "--dns-name", "xds.example.com") == 0
    files = tmp_path / "files"
    names = check_key_pair((files / "kxds.crt").read_bytes(), (files / "kxds.key").read_bytes(),
                           None).dns_names
    assert {"kxds.kxds.svc", "kxds.kxds.svc.cluster.local", "xds.example.com"} <= set(names)
    for group in ("default", "blue"):
        cert = x509.load_pem_x509_certificates((files / f"edge-{group}.crt").read_bytes())[0]
        assert [str(i) for i in cert_ids(cert)] == [f"edge/{group}"]
        assert (files / f"edge-{group}.key").stat().st_mode & 0o077 == 0
    docs = {p.stem: yaml.safe_load(p.read_text()) for p in (tmp_path / "s").glob("*.yaml")}
    assert sorted(docs) == ["kxds-ca", "kxds-edge-blue", "kxds-edge-default", "kxds-xds-ca",
                            "kxds-xds-tls"]
    assert set(docs["kxds-xds-ca"]["data"]) == {"ca.crt"}
    tls = docs["kxds-xds-tls"]
    assert tls["type"] == "kubernetes.io/tls" and tls["metadata"]["namespace"] == "kxds"
    assert _decode(tls, "ca.crt") == _decode(docs["kxds-ca"], "tls.crt")


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi().start()
    yield fake
    fake.stop()


def test_certgen_applies_secrets_once_and_keeps_them(tmp_path: Path, api: FakeApi) -> None:
    config = kubeconfig(api.url, str(tmp_path / "kubeconfig"))
    assert _certgen("--apply", "--kubeconfig", config) == 0
    first = api.get("v1", "Secret", "kxds", "kxds-ca")
    assert first is not None and api.get("v1", "Secret", "kxds", "kxds-edge-default")
    assert _certgen("--apply", "--kubeconfig", config) == 0  # a Job run again
    assert api.get("v1", "Secret", "kxds", "kxds-ca") == first
    assert _certgen("--apply", "--kubeconfig", config, "--overwrite") == 0
    again = api.get("v1", "Secret", "kxds", "kxds-ca")
    assert again is not None and again["data"] != first["data"]


def test_certgen_refuses_a_bad_group_name(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="not a valid edge name"):
        _certgen("--out-dir", str(tmp_path), "--edge-group", "Bad/Group")
