"""SDS secrets: serving certificates and CA bundles, each its own xDS resource.

Listeners and clusters only name a secret (``sds_config: {ads: {}}``), so a
rotated certificate changes this resource alone and Envoy swaps it in for new
handshakes without touching listeners or open connections
(https://www.envoyproxy.io/docs/envoy/latest/configuration/security/secret).
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from kxds import ir


def sds_config(name: str) -> secret_pb2.SdsSecretConfig:
    """A reference to the secret ``name``, fetched over the ADS stream."""
    return secret_pb2.SdsSecretConfig(name=name, sds_config=config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3))


def build_secret(secret: ir.Secret) -> secret_pb2.Secret:
    """The Envoy ``Secret`` for ``secret`` (PEM carried inline in the SDS resource)."""
    if isinstance(secret, ir.TLSCertificate):
        return secret_pb2.Secret(name=secret.name, tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_string=secret.certificate_chain),
            private_key=base_pb2.DataSource(inline_string=secret.private_key)))
    return secret_pb2.Secret(name=secret.name, validation_context=(
        common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_string=secret.trusted_ca))))
