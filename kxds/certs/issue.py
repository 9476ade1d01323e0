"""Certificate signing requests: made by a proxy's side, signed by kxds.

The requester keeps its private key: it sends a CSR, which proves it holds
the key (the CSR's self-signature), and gets back a certificate that names
only what the issuer decided (the identity it verified), whatever the CSR
asked for.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from kxds.certs.make import KeyPair, sign_leaf


class CsrError(ValueError):
    """A CSR that cannot be signed; the message is for the requester."""


def make_key() -> bytes:
    """A new private key (ECDSA P-256), PEM PKCS#8."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_csr(key_pem: bytes) -> bytes:
    """A CSR (PEM) for ``key_pem``, with an empty subject: the issuer decides the names."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(
        key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def sign_csr(ca: KeyPair, csr_pem: bytes, uri: str, lifetime: dt.timedelta,
             now: dt.datetime) -> bytes:
    """A client certificate for the key of ``csr_pem`` naming only ``uri``, valid from a
    minute before ``now`` for ``lifetime``: the PEM chain (leaf, CA)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise CsrError("not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise CsrError("the CSR's signature does not verify")
    public = csr.public_key()
    if not (isinstance(public, ec.EllipticCurvePublicKey)
            or (isinstance(public, rsa.RSAPublicKey) and public.key_size >= 2048)):
        raise CsrError("the CSR's key must be ECDSA, or RSA of 2048 bits or more")
    start = now - dt.timedelta(minutes=1)
    return sign_leaf(ca, public, "", [x509.UniformResourceIdentifier(uri)],
                     [ExtendedKeyUsageOID.CLIENT_AUTH], start, now + lifetime)


def not_after(cert_pem: bytes) -> dt.datetime:
    """When the first certificate of a PEM chain expires."""
    return x509.load_pem_x509_certificates(cert_pem)[0].not_valid_after_utc
