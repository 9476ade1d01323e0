"""Secrets: serving certificates and CA bundles (Envoy SDS resources)."""

from __future__ import annotations

from dataclasses import dataclass

from kxds.diagnostics import ObjectRef


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSCertificate:
    """A serving certificate and its key: an Envoy SDS ``Secret`` with
    ``tls_certificate``, named by :class:`TerminatedChain` ``secret``."""

    name: str
    """The SDS secret name (``default/wild-cert``)."""
    ref: ObjectRef
    """The ``kubernetes.io/tls`` Secret."""
    certificate_chain: str
    """PEM: the certificate, then the intermediates."""
    private_key: str
    """PEM. Redacted in config dumps."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidationContext:
    """CA certificates that a backend's certificate must chain to: an Envoy SDS
    ``Secret`` with ``validation_context``, named by :class:`UpstreamTLS`
    ``validation_secret``."""

    name: str
    """The SDS secret name (``default/api-ca/ca``)."""
    ref: ObjectRef
    """The Secret holding the CA bundle."""
    trusted_ca: str
    """PEM: one or more CA certificates."""


Secret = TLSCertificate | ValidationContext
"""Any secret kind: each is one Envoy SDS ``Secret`` resource named by its ``name``."""
