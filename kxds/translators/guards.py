"""Guards against Services that would point a proxy somewhere it must never go.

Anyone who may edit a Service in one namespace must not be able to make the
proxy reach the node itself or the cloud's metadata service. Contour's
CVE-2021-32783 (GHSA-5ph6-qq5x-7jwc) was an ExternalName Service naming
``localhost`` or ``127.0.0.1``, which turned the proxy's admin interface into an
open door; the same class covers link-local and instance metadata addresses.
These checks run for every proxy role, so they live apart from any one translator.
"""

from __future__ import annotations

import ipaddress

from kxds.diagnostics import Diagnostic, Reason
from kxds.kube.models import Service

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_FORBIDDEN_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network": 0.0.0.0 reaches local listeners on Linux
        "127.0.0.0/8",  # loopback: the proxy's own admin port
        "169.254.0.0/16",  # link-local, holds 169.254.169.254 (AWS, GCP, Azure metadata)
        "100.100.100.200/32",  # Alibaba Cloud instance metadata
        "::/128",
        "::1/128",
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS instance metadata over IPv6
    )
)
_FORBIDDEN_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost",
                              "ip6-loopback", "metadata.google.internal"})


def parse_ip(value: str) -> IPAddress | None:
    """``value`` as an IP address, or None when it is not a literal address."""
    try:
        return ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return None


def forbidden_target(host: str) -> str | None:
    """Why ``host`` (a name or IP literal) must not be an upstream, or None when it may be."""
    name = host.lower().rstrip(".")
    if name in _FORBIDDEN_NAMES or name.endswith(".localhost"):
        return f"{host!r} names the proxy's own host"
    ip = parse_ip(name)
    if ip is None:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 reaches 127.0.0.1
    for net in _FORBIDDEN_NETWORKS:
        if ip.version == net.version and ip in net:
            return f"{host} is inside {net} (loopback, link-local or instance metadata)"
    return None


def check_external_name(service: Service) -> Diagnostic | None:
    """A diagnostic when an ExternalName Service targets a forbidden address, else None.

    The cluster translation calls this for every role before it builds a
    STRICT_DNS cluster; a refused Service gets no cluster, so routes to it
    answer 503 like any unresolvable backend.
    """
    if service.type != "ExternalName" or not service.external_name:
        return None
    why = forbidden_target(service.external_name)
    if why is None:
        return None
    return Diagnostic(service.meta.ref, "spec.externalName", Reason.NOT_ALLOWED,
                      f"ExternalName target refused: {why}")
