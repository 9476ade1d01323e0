"""Who may be served what: a proxy's identity comes from its client certificate.

With TLS on the xDS port every stream's peer has presented a certificate
signed by the client CA (gRPC refuses the handshake otherwise). Its URI SAN
(:mod:`kxds.certs.spiffe`) says who the proxy is; what the bootstrap
claims in its first request (metadata ``role``, ``node.cluster``, metadata
``node_name``) must agree, or the stream is refused with
``PERMISSION_DENIED``, logged (``event=identity_refused``) and counted in
``kxds_xds_identity_refused_total{reason}``. So a proxy is served only its
certificate's view: an edge certificate the view of its group, a node
certificate the view of its node.

Independently of TLS, a per-node proxy is never sent Secrets
(:class:`SecretFilter`): private keys go only to edge proxies.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType

from cryptography import x509
from prometheus_client import CollectorRegistry, Counter

from kxds.certs.spiffe import TRUST_DOMAIN, ProxyId, cert_ids
from kxds.envoy.resource import SECRET
from kxds.errors import KxdsError
from kxds.xds.cache import View
from kxds.xds.identity import NodeIdentity

log = logging.getLogger("kxds.xds.auth")

AuthContext = Mapping[str, Sequence[bytes]]
"""gRPC's ``context.auth_context()``: property name -> values."""


class IdentityRefused(KxdsError):
    """A stream whose certificate and bootstrap do not agree (or that has no identity)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def peer_id(auth: AuthContext, trust_domain: str = TRUST_DOMAIN) -> ProxyId:
    """The identity the peer's (already verified) certificate names."""
    pems = auth.get("x509_pem_cert") or ()
    if not pems:
        raise IdentityRefused("no_certificate", "the client presented no certificate")
    cert = x509.load_pem_x509_certificate(bytes(pems[0]))
    ids = cert_ids(cert, trust_domain)
    if len(ids) != 1:
        found = "no" if not ids else "more than one"
        raise IdentityRefused(
            "no_identity", f"the client certificate names {found} spiffe://{trust_domain}/"
            "edge/<group> or .../node/<node> identity")
    return ids[0]


def check_claims(claimed: NodeIdentity, cert: ProxyId) -> NodeIdentity:
    """``claimed`` when the bootstrap's claims match the certificate; else refuse."""
    if claimed.role != cert.role:
        raise IdentityRefused("role", f"certificate of {cert} but node metadata role "
                                      f"{claimed.role!r}")
    if cert.role == "edge" and claimed.cluster != cert.name:
        raise IdentityRefused("group", f"certificate of {cert} but node.cluster "
                                       f"{claimed.cluster!r}")
    if cert.role == "node" and claimed.node_name != cert.name:
        raise IdentityRefused("node_name", f"certificate of {cert} but node name "
                                           f"{claimed.node_name!r}")
    return claimed


class Authorizer:
    """Checks each stream's claimed identity against its client certificate."""

    def __init__(self, registry: CollectorRegistry, trust_domain: str = TRUST_DOMAIN) -> None:
        self.trust_domain = trust_domain
        self.refused = Counter("kxds_xds_identity_refused",
                               "xDS streams refused: the client certificate does not allow "
                               "what the bootstrap claims", ["reason"], registry=registry)

    def check(self, claimed: NodeIdentity, auth: AuthContext, peer: str = "") -> NodeIdentity:
        """The identity to serve; raises :class:`IdentityRefused` (logged and counted)."""
        try:
            return check_claims(claimed, peer_id(auth, self.trust_domain))
        except IdentityRefused as e:
            log.warning("event=identity_refused node=%s peer=%s reason=%s message=%r",
                        claimed.node_id, peer, e.reason, str(e))
            self.refused.labels(e.reason).inc()
            raise


class SecretFilter:
    """The view a stream is served: a per-node proxy's never holds Secrets.

    Per-node views carry no Secrets today; this keeps it so whatever the
    translators do. The filtered view keeps every other type's mapping
    object, so streams still see by identity what did not change; it is
    made once per view and group.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[View, View]] = {}

    def view(self, identity: NodeIdentity, view: View) -> View:
        """``view`` as ``identity`` may see it."""
        if identity.role == "edge" or SECRET not in view.resources:
            return view
        last = self._last.get(identity.group)
        if last is not None and last[0] is view:
            return last[1]
        kept = {t: m for t, m in view.resources.items() if t != SECRET}
        filtered = replace(view, resources=MappingProxyType(kept),
                           versions={t: v for t, v in view.versions.items() if t != SECRET})
        self._last[identity.group] = (view, filtered)
        return filtered

    def forget(self, group: str) -> None:
        """A group's view was removed (a cache removal listener)."""
        self._last.pop(group, None)
