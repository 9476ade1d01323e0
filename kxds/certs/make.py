"""Making X.509 certificates: a CA, the serving and client certificates it signs.

Used by ``kxds certgen``, the node certificate issuer, the sandbox's HTTPS
host, the end-to-end tests and the golden test data; checking the
certificates users give kxds is :mod:`kxds.certs.check`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyPair:
    """A PEM certificate (chain) and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes

    def load(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return x509.load_pem_x509_certificates(self.cert_pem)[0], key


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _validity(not_before: dt.datetime | None, days: int) -> tuple[dt.datetime, dt.datetime]:
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    return start, start + dt.timedelta(days=days)


def make_ca(common_name: str = "kxds test CA", *, not_before: dt.datetime | None = None,
            days: int = 3650) -> KeyPair:
    """A self-signed CA (ECDSA P-256)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start, end = _validity(not_before, days)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return KeyPair(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_pem_key(key))


def host_names(hosts: list[str] | tuple[str, ...]) -> list[x509.GeneralName]:
    """DNS names or IP addresses as subject alternative names."""
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    return sans


def sign_leaf(ca: KeyPair, public_key: CertificatePublicKeyTypes, common_name: str,
              sans: list[x509.GeneralName], usage: list[x509.ObjectIdentifier],
              start: dt.datetime, end: dt.datetime) -> bytes:
    """A leaf certificate for ``public_key`` signed by ``ca``: the PEM chain (leaf, CA).

    Only what is given here goes into it (never what a requester asked for).
    """
    ca_cert, ca_key = ca.load()
    # RFC 5280 4.2.1.6: with an empty subject, the SAN extension is critical.
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(ca_cert.subject).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(min(end, ca_cert.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName(sans), critical=bool(not common_name))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM) + ca.cert_pem


def make_leaf(ca: KeyPair, hosts: list[str] | tuple[str, ...], *,
              not_before: dt.datetime | None = None, days: int = 825,
              uris: tuple[str, ...] = ()) -> KeyPair:
    """A serving certificate for ``hosts`` (DNS names or IP addresses) signed by ``ca``,
    also naming ``uris`` (URI SANs, such as a SPIFFE identity).

    ``cert_pem`` holds the leaf followed by the CA, as a Secret's ``tls.crt`` would.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(not_before, days)
    names = [*host_names(hosts), *(x509.UniformResourceIdentifier(u) for u in uris)]
    chain = sign_leaf(ca, key.public_key(), hosts[0], names,
                      [ExtendedKeyUsageOID.SERVER_AUTH], start, end)
    return KeyPair(cert_pem=chain, key_pem=_pem_key(key))


def make_client(ca: KeyPair, uri: str, *, not_before: dt.datetime | None = None,
                hours: float = 24 * 365) -> KeyPair:
    """A client certificate whose only name is the URI SAN ``uri`` (a proxy identity)."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    chain = sign_leaf(ca, key.public_key(), "", [x509.UniformResourceIdentifier(uri)],
                      [ExtendedKeyUsageOID.CLIENT_AUTH], start, start + dt.timedelta(hours=hours))
    return KeyPair(cert_pem=chain, key_pem=_pem_key(key))


def tls_secret_yaml(namespace: str, name: str, pair: KeyPair) -> str:
    """A ``kubernetes.io/tls`` Secret manifest holding ``pair`` (``stringData``, readable PEM)."""
    def block(pem: bytes) -> str:
        return "".join(f"    {line}\n" for line in pem.decode().splitlines())

    return (f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n"
            f"  namespace: {namespace}\ntype: kubernetes.io/tls\nstringData:\n"
            f"  tls.crt: |\n{block(pair.cert_pem)}  tls.key: |\n{block(pair.key_pem)}")
