"""Client ranges as RE2 patterns over an Envoy address string (``a.b.c.d:port``).

What matches a client address against CIDRs where Envoy only offers string
matching: the local rate limit's expression descriptor sees the client as
``source.address`` (the address the connection manager derived, with its
port). An IPv4 CIDR becomes a pattern of its fixed octets and the range of
its partial octet; IPv6 is written only as single addresses (``[addr]:port``),
and translators pass no wider IPv6 range.
"""

from __future__ import annotations

import ipaddress
import re


def _octet_pattern(low: int, high: int) -> str:
    if low == high:
        return str(low)
    if low == 0 and high == 255:
        return "[0-9]{1,3}"
    return "(?:" + "|".join(str(v) for v in range(low, high + 1)) + ")"


def _v4(net: ipaddress.IPv4Network) -> str:
    first = net.network_address.packed
    last = net.broadcast_address.packed
    return r"\.".join(_octet_pattern(a, b) for a, b in zip(first, last, strict=True))


def address_pattern(cidrs: tuple[str, ...]) -> str:
    """An RE2 pattern that a whole ``address:port`` string matches when the address is
    in one of ``cidrs`` (IPv4, or IPv6 /128)."""
    parts: list[str] = []
    for cidr in cidrs:
        net = ipaddress.ip_network(cidr, strict=False)
        if isinstance(net, ipaddress.IPv4Network):
            parts.append(_v4(net))
        else:
            parts.append(r"\[" + re.escape(str(net.network_address)) + r"\]")
    return "^(?:" + "|".join(parts) + r"):[0-9]+$"
