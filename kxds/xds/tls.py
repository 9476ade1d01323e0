"""TLS for the xDS port: server credentials that require client certificates.

kxds serves gRPC over TLS with ``require_client_auth``: a proxy without a
certificate signed by the client CA never gets past the handshake. The
files are read again when they change (a rotated Kubernetes Secret volume):
gRPC asks :class:`_Reloader` for the configuration before each new
handshake, and open streams keep the session they have.

Plaintext is for loopback: :func:`plaintext_refusal` says why a plaintext
address elsewhere is refused unless the operator insists (``--xds-insecure``).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from kxds.envoy.bootstrap import parse_address
from kxds.errors import KxdsError

log = logging.getLogger("kxds.xds.tls")


class TlsConfigError(KxdsError):
    """The TLS files of the xDS port are missing or unreadable."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The xDS port's certificate chain, its key, and the CA that signs proxies' certificates."""

    cert: Path
    key: Path
    client_ca: Path


def _stamp(files: TlsFiles) -> tuple[tuple[int, int, int], ...]:
    out = []
    for path in (files.cert, files.key, files.client_ca):
        st = path.stat()
        out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def _read(files: TlsFiles) -> tuple[bytes, bytes, bytes]:
    try:
        cert, key, ca = (p.read_bytes() for p in (files.cert, files.key, files.client_ca))
    except OSError as e:
        raise TlsConfigError(f"cannot read {e.filename}: {e.strerror}") from None
    for name, data, marker in (("certificate", cert, b"-----BEGIN CERTIFICATE"),
                               ("key", key, b"PRIVATE KEY-----"),
                               ("client CA", ca, b"-----BEGIN CERTIFICATE")):
        if marker not in data:
            raise TlsConfigError(f"the xDS {name} file holds no PEM {name}")
    return cert, key, ca


class _Reloader:
    """gRPC's certificate configuration fetcher: a new configuration when the files changed."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self.lock = threading.Lock()
        self.stamp = _stamp(files)

    def initial(self) -> Any:
        cert, key, ca = _read(self.files)
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def __call__(self) -> Any:
        with self.lock:
            try:
                stamp = _stamp(self.files)
                if stamp == self.stamp:
                    return None
                config = self.initial()
            except (OSError, TlsConfigError) as e:
                # Half-written files (a non-atomic update): keep serving the last good ones.
                log.warning("event=xds_tls_reload_failed error=%r keeping=last_good", str(e))
                return None
            self.stamp = stamp
            log.info("event=xds_tls_reloaded cert=%s", self.files.cert)
            return config


def server_credentials(files: TlsFiles) -> Any:
    """gRPC server credentials for ``files``, requiring a client certificate signed by
    ``files.client_ca``; raises :class:`TlsConfigError` when the files are unusable."""
    try:
        reloader = _Reloader(files)
    except OSError as e:
        raise TlsConfigError(f"cannot read {e.filename}: {e.strerror}") from None
    return grpc.dynamic_ssl_server_credentials(reloader.initial(), reloader,
                                               require_client_authentication=True)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP literal or ``localhost``) is reachable only from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


def plaintext_refusal(address: str, insecure: bool) -> str | None:
    """Why serving xDS in plaintext on ``address`` is refused; None when it is allowed."""
    host, _ = parse_address(address)
    if insecure or is_loopback(host):
        return None
    return (f"--xds-address {address} is not a loopback address, and without TLS any "
            "client that reaches it could pose as any proxy and read every private key "
            "served over SDS; give --xds-tls-cert, --xds-tls-key and --xds-client-ca "
            "(see `kxds certgen`), or --xds-insecure to serve plaintext anyway")
