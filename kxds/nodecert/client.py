"""``kxds node-cert``: obtain the node's certificate from kxds, and renew it before it expires.

Run beside a per-node Envoy (an init container with ``--once``, then a
sidecar): it makes a private key and a CSR, posts the CSR with the pod's
projected ServiceAccount token to kxds's node certificate endpoint
(:mod:`kxds.nodecert.issuer`), and writes into ``--out-dir``

* ``tls.key``  the private key (mode 0600; it never leaves the node),
* ``tls.crt``  the certificate chain naming ``spiffe://kxds/node/<node>``,
* ``ca.crt``   the CA,

each atomically (a temporary file, then a rename), and ``sds.yaml``, the
file-based SDS resource naming the first two (``kxds bootstrap --tls-sds``):
Envoy watches the directory and uses a renewed certificate without a restart.
It renews when two thirds
of the certificate's lifetime have passed, and retries failures with a
capped backoff while the current certificate is still valid.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kxds.certs.issue import make_csr, make_key, not_after
from kxds.envoy.bootstrap import client_sds_yaml

log = logging.getLogger("kxds.nodecert.client")


class IssueFailed(Exception):
    """kxds did not issue a certificate; the message says why."""


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Where to ask, as whom, and where to write."""

    url: str
    """``https://HOST:PORT`` of kxds's node certificate endpoint."""
    ca_file: Path
    """The CA that signed kxds's serving certificate."""
    token_file: Path
    node: str
    out_dir: Path


def add_node_cert_flags(p: argparse.ArgumentParser) -> None:
    """The flags of ``kxds node-cert``."""
    p.add_argument("--url", required=True, help="kxds's node certificate endpoint "
                   "(https://kxds.kxds.svc:18443)")
    p.add_argument("--ca", type=Path, required=True, metavar="FILE",
                   help="CA bundle to verify kxds's certificate")
    p.add_argument("--token-file", type=Path, required=True, metavar="FILE",
                   help="the projected ServiceAccount token (audience kxds)")
    p.add_argument("--node-name", required=True, help="this node's name (downward API)")
    p.add_argument("--out-dir", type=Path, required=True, metavar="DIR")
    p.add_argument("--once", action="store_true",
                   help="obtain a certificate (unless the current one is fresh) and exit")


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def request_certificate(opts: ClientOptions, csr: bytes, timeout: float = 10.0
                        ) -> tuple[bytes, bytes]:
    """Ask kxds for a certificate for ``csr``: (chain PEM, CA PEM); raises :class:`IssueFailed`."""
    context = ssl.create_default_context(cafile=str(opts.ca_file))
    token = opts.token_file.read_text().strip()
    body = json.dumps({"node": opts.node, "csr": csr.decode()}).encode()
    req = urllib.request.Request(opts.url.rstrip("/") + "/v1/node-certificate", data=body,
                                 method="POST", headers={"Authorization": f"Bearer {token}",
                                                         "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")[:500]
        raise IssueFailed(f"HTTP {e.code}: {detail}") from None
    except (OSError, ValueError) as e:
        raise IssueFailed(f"{type(e).__name__}: {e}") from None
    return str(doc["certificate"]).encode(), str(doc["ca"]).encode()


def obtain(opts: ClientOptions) -> dt.datetime:
    """Obtain a new certificate and write the three files; returns its expiry."""
    key = make_key()
    chain, ca = request_certificate(opts, make_csr(key))
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(opts.out_dir / "ca.crt", ca)
    write_atomically(opts.out_dir / "tls.key", key, 0o600)
    write_atomically(opts.out_dir / "tls.crt", chain)
    sds = client_sds_yaml(str(opts.out_dir / "tls.crt"), str(opts.out_dir / "tls.key"))
    sds_file = opts.out_dir / "sds.yaml"
    if not sds_file.exists() or sds_file.read_text() != sds:
        write_atomically(sds_file, sds.encode())
    expiry = not_after(chain)
    log.info("event=node_cert_obtained node=%s not_after=%s", opts.node, expiry.isoformat())
    return expiry


def renew_at(cert_file: Path, now: dt.datetime) -> dt.datetime | None:
    """When the certificate in ``cert_file`` is due for renewal (2/3 of its life); None
    when there is none to keep."""
    try:
        from cryptography import x509

        cert = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
    except (OSError, ValueError):
        return None
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * 2 / 3 if end > now else None


def run(opts: ClientOptions, once: bool, max_backoff: float = 60.0) -> int:
    """Keep a fresh certificate in ``opts.out_dir``; with ``once``, until the first one."""
    backoff = 1.0
    while True:
        now = dt.datetime.now(dt.UTC)
        due = renew_at(opts.out_dir / "tls.crt", now)
        if due is not None and due > now:
            if once:
                return 0
            time.sleep(min((due - now).total_seconds(), 3600))
            continue
        try:
            obtain(opts)
            backoff = 1.0
        except IssueFailed as e:
            log.error("event=node_cert_failed node=%s error=%r", opts.node, str(e))
            if once and due is None and backoff >= max_backoff:
                return 1
            time.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)
