"""upstream-hash-by values -> hash inputs, and twin cluster names (table tests)."""

from __future__ import annotations

import pytest

from kxds import ir
from kxds.translators.upstream_lb import hash_inputs, twin_name

H = ir.HashKind


@pytest.mark.parametrize(("value", "expected"), [
    ("$remote_addr", ((H.CLIENT_IP, ""),)),
    ("$binary_remote_addr", ((H.CLIENT_IP, ""),)),
    ("$request_uri", ((H.PATH, ""),)),
    ("$host", ((H.HEADER, ":authority"),)),
    ("$http_x_user_id", ((H.HEADER, "x-user-id"),)),
    ("${cookie_session}", ((H.COOKIE, "session"),)),
    ("$arg_tenant", ((H.QUERY_PARAMETER, "tenant"),)),
    ("$remote_addr-$request_uri", ((H.CLIENT_IP, ""), (H.PATH, ""))),
    ("$Request_URI$request_uri", ((H.PATH, ""),)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_hash_inputs(value: str, expected: tuple[tuple[H, str], ...]) -> None:
    got = hash_inputs(value)
    assert not isinstance(got, str)
    assert tuple((h.kind, h.name) for h in got) == expected


@pytest.mark.parametrize("value", ["$server_name", "$uri", "plain text", "", "$http_"])
def test_hash_inputs_refused(value: str) -> None:
    assert isinstance(hash_inputs(value), str)


def test_twin_names() -> None:
    ring = ir.ClusterOptions(lb_policy=ir.LbPolicy.RING_HASH)
    assert twin_name("default/web/80", ring) == "default/web/80/lb=ring_hash"
    slow = ir.ClusterOptions(connect_timeout_ms=2500)
    assert twin_name("default/web/80/tls", slow) == (
        "default/web/80/tls/lb=round_robin/connect=2500ms")
    assert len(twin_name("n/" + "s" * 200 + "/80", ring)) <= 120
