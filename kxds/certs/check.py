"""Checking the X.509 certificates users give kxds.

Checking is pure (bytes and an instant in, a verdict out) so translators can
use it: :func:`check_key_pair` is what turns a ``kubernetes.io/tls`` Secret
into either the names its certificate covers or the reason it is unusable.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

_SIGNED = b"kxds key pair check"


@dataclass(frozen=True, slots=True, kw_only=True)
class CertInfo:
    """What kxds needs to know about a usable certificate."""

    dns_names: tuple[str, ...]
    """Lower-cased DNS subject alternative names (the common name when there are none)."""
    not_after: dt.datetime


class CertError(ValueError):
    """Why a certificate, key or CA bundle is unusable; the message is for humans."""


def _load_chain(cert_pem: bytes) -> list[x509.Certificate]:
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        # The parser's own message names library internals; keep ours stable.
        raise CertError("tls.crt is not a PEM certificate") from None
    return chain


def _dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        # RFC 6125 6.4.4: the CN is consulted only when there is no DNS SAN.
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return tuple(sorted({n.lower().rstrip(".") for n in names}))


def _key_matches(cert: x509.Certificate, key: object) -> bool:
    """Whether ``key`` signs what ``cert``'s public key verifies (works for every key type)."""
    public = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPrivateKey) and isinstance(public, rsa.RSAPublicKey):
            public.verify(key.sign(_SIGNED, padding.PKCS1v15(), hashes.SHA256()),
                          _SIGNED, padding.PKCS1v15(), hashes.SHA256())
        elif (isinstance(key, ec.EllipticCurvePrivateKey)
              and isinstance(public, ec.EllipticCurvePublicKey)):
            public.verify(key.sign(_SIGNED, ec.ECDSA(hashes.SHA256())),
                          _SIGNED, ec.ECDSA(hashes.SHA256()))
        elif (isinstance(key, ed25519.Ed25519PrivateKey)
              and isinstance(public, ed25519.Ed25519PublicKey)) or (
              isinstance(key, ed448.Ed448PrivateKey) and isinstance(public, ed448.Ed448PublicKey)):
            public.verify(key.sign(_SIGNED), _SIGNED)
        else:
            return False
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Inspected:
    """What a (certificate, key) pair says of itself, independent of the clock.

    Holds no key material: a caller may keep it as long as the Secret it came from.
    """

    names: tuple[str, ...] = ()
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    error: str | None = None


def inspect_key_pair(cert_pem: bytes, key_pem: bytes) -> Inspected:
    """Parse a serving certificate chain and its key, and check that they belong together.

    Parsing and the signature round trip cost ~0.3 ms (ECDSA) to ~2 ms (RSA):
    callers keep the result while the Secret is unchanged (the edge translation
    does, per Secret, in its query store), never in a process-wide cache.
    """
    try:
        leaf = _load_chain(cert_pem)[0]
    except CertError as e:
        return Inspected(error=str(e))
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return Inspected(error="tls.key is not an unencrypted PEM private key")
    if not _key_matches(leaf, key):
        return Inspected(error="tls.key does not match the certificate in tls.crt")
    return Inspected(names=_dns_names(leaf), not_before=leaf.not_valid_before_utc,
                      not_after=leaf.not_valid_after_utc)


def check_key_pair(cert_pem: bytes, key_pem: bytes, now: dt.datetime | None) -> CertInfo:
    """Check a serving certificate chain and its key; raise :class:`CertError` saying why not.

    The first certificate of the chain is the leaf; it must be valid at ``now``
    and its public key must match ``key_pem``. ``now`` comes from the caller (this
    reads no clock); None skips the validity period.
    """
    return check_validity(inspect_key_pair(cert_pem, key_pem), now)


def check_validity(found: Inspected, now: dt.datetime | None) -> CertInfo:
    """The :class:`CertInfo` of an inspected pair at ``now``; :class:`CertError` saying why not."""
    if found.error is not None:
        raise CertError(found.error)
    assert found.not_before is not None and found.not_after is not None
    if now is not None and now < found.not_before:
        raise CertError(f"certificate is not valid before {found.not_before.isoformat()}")
    if now is not None and now > found.not_after:
        raise CertError(f"certificate expired at {found.not_after.isoformat()}")
    if not found.names:
        raise CertError("certificate names no DNS host (no DNS SAN, no common name)")
    return CertInfo(dns_names=found.names, not_after=found.not_after)


def next_validity_change(bounds: Iterable[dt.datetime], now: dt.datetime) -> dt.datetime | None:
    """The first instant after ``now`` among ``bounds`` (the ``not_before`` and
    ``not_after`` of the certificates a translation checked): when a check made at
    ``now`` stops being true. The controller rebuilds then, so an expiring
    certificate fails closed on time instead of at the next unrelated change.
    """
    return min((edge for edge in bounds if edge >= now), default=None)


def check_ca_bundle(ca_pem: bytes) -> int:
    """Check a CA bundle (``ca.crt``); return how many certificates it holds."""
    return len(_load_chain(ca_pem))


def covers(dns_names: tuple[str, ...], host: str) -> bool:
    """Whether a certificate naming ``dns_names`` is valid for ``host`` (RFC 6125 6.4.3).

    A ``*.`` wildcard matches exactly one left-most label. A wildcard ``host``
    (an Ingress may list ``*.example.com``) is covered only by the same wildcard.
    """
    host = host.lower().rstrip(".")
    if host in dns_names:
        return True
    head, _, rest = host.partition(".")
    return bool(rest) and head != "*" and f"*.{rest}" in dns_names
