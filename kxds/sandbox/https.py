"""The sandbox's HTTPS host: a certificate made at start, its Secret and a TLS Ingress.

``kxds sandbox`` calls :func:`write_https_host` after copying ``examples/``:
a fresh CA and a certificate for :data:`HOST` are generated (nothing secret
is kept in the repository), written as a ``kubernetes.io/tls`` Secret plus an
Ingress with ``spec.tls`` into the watched directory, and the CA is saved so
that ``curl --cacert`` can verify what Envoy serves over SDS.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from kxds.certs.make import make_ca, make_leaf, tls_secret_yaml

HOST = "secure.example.com"
SECRET = "secure-example-tls"
BACKEND = "web"


def https_manifests(ca_dir: Path, host: str = HOST, service: str = BACKEND) -> str:
    """The Secret and Ingress serving ``host`` over HTTPS; writes ``ca_dir/ca.crt``."""
    ca = make_ca("kxds sandbox CA", days=30)
    leaf = make_leaf(ca, [host], days=30)
    ca_dir.mkdir(parents=True, exist_ok=True)
    (ca_dir / "ca.crt").write_bytes(ca.cert_pem)
    ingress = {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "secure", "namespace": "default"},
        "spec": {
            "ingressClassName": "kxds",
            "tls": [{"hosts": [host], "secretName": SECRET}],
            "rules": [{"host": host, "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}],
        },
    }
    return tls_secret_yaml("default", SECRET, leaf) + "---\n" + json.dumps(ingress) + "\n"


def write_https_host(manifests: Path, ca_dir: Path) -> Path:
    """Write the HTTPS host's manifests into ``manifests``; returns the CA file's path."""
    (manifests / "sandbox-https.yaml").write_text(https_manifests(ca_dir))
    return ca_dir / "ca.crt"


def https_backend(https_port: int, ca_file: Path, host: str = HOST) -> str | None:
    """Which echo backend answers ``https://host/`` through Envoy (SNI ``host``), or None.

    The certificate must verify against ``ca_file`` for ``host``.
    """
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", https_port), timeout=2),
                               server_hostname=host)
    except (OSError, ssl.SSLError):
        return None
    conn = http.client.HTTPConnection(host, https_port, timeout=2)
    conn.sock = sock
    try:
        conn.request("GET", "/", headers={"Host": host})
        resp = conn.getresponse()
        resp.read()
        return resp.getheader("x-echo-backend")
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def curl_lines(http_port: int, https_port: int, ca_file: Path, host: str = HOST) -> list[str]:
    """The curl commands showing the HTTPS host and its redirect."""
    return [
        f"curl --cacert {ca_file} --resolve {host}:{https_port}:127.0.0.1 "
        f"https://{host}:{https_port}/    # {BACKEND}: TLS with a generated certificate (SNI)",
        f"curl -i -H 'Host: {host}' http://127.0.0.1:{http_port}/    "
        "# 301 to https: hosts with TLS redirect",
    ]


def wait_https_host(https_port: int, ca_file: Path, timeout: float,
                    check: Callable[[], None]) -> None:
    """Poll until the HTTPS host answers from its backend; ``check`` raises if a child died."""
    deadline = time.monotonic() + timeout
    while https_backend(https_port, ca_file) != BACKEND:
        check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"https://{HOST}/ is not answering from {BACKEND}")
        time.sleep(0.1)
