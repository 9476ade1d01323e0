"""The identities of proxies on the xDS channel: SPIFFE-style URI SANs.

A proxy's client certificate names exactly one of

* ``spiffe://kxds/edge/<group>``: an edge gateway of the group ``<group>``
  (Envoy's ``node.cluster``; ``default`` when the bootstrap leaves it unset);
* ``spiffe://kxds/node/<node name>``: the per-node proxy of that Kubernetes node.

The trust domain (``kxds``) is a parameter, so two installations sharing a CA
can still be told apart. Names are Kubernetes-style: lower-case letters,
digits, ``-`` and ``.``, at most 253 characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509

TRUST_DOMAIN = "kxds"
ROLES = ("edge", "node")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class ProxyId:
    """A proxy identity a certificate carries."""

    role: str
    """``edge`` or ``node``."""
    name: str
    """The edge group, or the node name."""

    def uri(self, trust_domain: str = TRUST_DOMAIN) -> str:
        """The URI SAN naming this identity."""
        return f"spiffe://{trust_domain}/{self.role}/{self.name}"

    def __str__(self) -> str:
        return f"{self.role}/{self.name}"


def valid_name(name: str) -> bool:
    """Whether ``name`` may be an edge group or node name in an identity."""
    return bool(_NAME.match(name))


def proxy_id(role: str, name: str) -> ProxyId:
    """A checked :class:`ProxyId`; raises ValueError for an unknown role or a bad name."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if not valid_name(name):
        raise ValueError(f"{name!r} is not a valid {role} name (lower-case DNS label chars)")
    return ProxyId(role, name)


def parse_uri(uri: str, trust_domain: str = TRUST_DOMAIN) -> ProxyId | None:
    """The identity a URI SAN names, or None when it names none of ours."""
    prefix = f"spiffe://{trust_domain}/"
    if not uri.startswith(prefix):
        return None
    role, sep, name = uri[len(prefix):].partition("/")
    if not sep or role not in ROLES or not valid_name(name):
        return None
    return ProxyId(role, name)


def cert_ids(cert: x509.Certificate, trust_domain: str = TRUST_DOMAIN) -> list[ProxyId]:
    """Every identity of ours that ``cert``'s URI SANs name."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    found = (parse_uri(u, trust_domain) for u in uris)
    return [i for i in found if i is not None]
