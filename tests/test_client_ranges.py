"""Client CIDRs as patterns over Envoy's ``address:port`` strings (table tests; Python's
``re`` reads these patterns as RE2 does)."""

from __future__ import annotations

import re

import pytest

from kxds.envoy.client_ranges import address_pattern


@pytest.mark.parametrize(("cidrs", "inside", "outside"), [
    (("10.0.0.0/8",), ["10.0.0.1:1", "10.255.255.255:65535"], ["11.0.0.1:1", "110.0.0.1:1"]),
    (("192.168.4.0/22",), ["192.168.4.9:80", "192.168.7.255:80"],
     ["192.168.8.1:80", "192.168.3.1:80", "192.168.40.1:80"]),
    (("127.0.0.2/32", "172.16.0.0/12"), ["127.0.0.2:5", "172.31.0.1:5"],
     ["127.0.0.20:5", "127.0.0.3:5", "172.32.0.1:5"]),
    (("0.0.0.0/0",), ["1.2.3.4:1"], ["[::1]:1"]),
    (("2001:db8::1/128",), ["[2001:db8::1]:443"], ["[2001:db8::2]:443", "2001:db8::1:443"]),
], ids=["slash8", "slash22", "two", "all-v4", "v6-one"])
def test_address_pattern(cidrs: tuple[str, ...], inside: list[str], outside: list[str]) -> None:
    pattern = re.compile(address_pattern(cidrs))
    assert all(pattern.fullmatch(a) for a in inside)
    assert not any(pattern.fullmatch(a) for a in outside)

