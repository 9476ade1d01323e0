"""More ingress-nginx annotations through the real Envoy: mirroring, hashing, load
balancing, connect timeouts, host aliases, www redirects, rate limit allowlists, retry
timeouts, and the --hide-response-headers flag.

Backends: echo servers (``kxds.sandbox.echo``) and a recorder started by this
module, which notes every request it gets (a mirror's copies).
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.harness import EchoBackend, Gateway, LoopbackHttp, QuietHandler, wait_for
from e2e.test_annotations import N, RawBackend, _ingress, _service

pytestmark = pytest.mark.e2e


class Recorder(LoopbackHttp):
    """An HTTP server on loopback that records (method, path, host, body) of each request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, bytes]] = []
        recorder = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def _record(self) -> None:
                size = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(size) if size else b""
                recorder.seen.append((self.command, self.path, self.headers.get("host", ""),
                                      body))
                self.send_response(200)
                self.send_header("content-length", "6")
                self.send_header("x-echo-backend", "mirror")
                self.end_headers()
                self.wfile.write(b"mirror")

            do_GET = do_POST = _record

        super().__init__(Handler)


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, recorder: Recorder) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("upstream")
    echoes = {n: EchoBackend(n, tmp) for n in ("main", "h1", "h2", "h3", "fast")}
    raw = RawBackend()  # answers after 3 s
    manifests = tmp / "manifests"
    docs = [
        _service("main", [echoes["main"]]), _service("shadow", [recorder.port]),
        _service("hashed", [echoes["h1"], echoes["h2"], echoes["h3"]]),
        _service("halfslow", [echoes["fast"], raw.port]),
        _ingress("retry-fast", "retry-fast.test", "halfslow", {
            N + "proxy-next-upstream": "error timeout non_idempotent",
            N + "proxy-next-upstream-tries": "3", N + "proxy-next-upstream-timeout": "1"}),
        _ingress("no-retry", "no-retry.test", "halfslow", {
            N + "proxy-next-upstream": "error timeout",
            N + "proxy-next-upstream-tries": "3", N + "proxy-next-upstream-timeout": "1"}),
        _ingress("mirrored", "mirror.test", "main", {
            N + "mirror-target": "http://shadow.default.svc/$request_uri"}),
        _ingress("plain", "plain.test", "hashed", {}),
        _ingress("allow", "allow.test", "main", {
            N + "limit-rps": "1", N + "limit-burst-multiplier": "2",
            N + "limit-allowlist": "127.0.0.2/32, 10.0.0.0/8"}),
        _ingress("alias", "alias.test", "main", {
            N + "server-alias": "other-name.test", N + "from-to-www-redirect": "true"}),
        _ingress("by-header", "by-header.test", "hashed", {N + "upstream-hash-by": "$http_x_user"}),
        _ingress("by-client", "by-client.test", "hashed", {N + "upstream-hash-by": "$remote_addr"}),
        _ingress("ewma", "ewma.test", "hashed", {
            N + "load-balance": "ewma", N + "proxy-connect-timeout": "2"}),
    ]
    manifests.mkdir()
    (manifests / "all.yaml").write_text("".join(docs))
    g = Gateway(tmp, manifests)
    try:
        g.wait_backend("/", "mirror.test", (200, "main"))
        yield g
    finally:
        g.stop()
        raw.close()
        for e in echoes.values():
            e.stop()


def test_mirror_target_gets_a_copy_and_the_client_the_main_answer(
        gw: Gateway, recorder: Recorder) -> None:
    assert gw.backend("/copy/1?x=1", host="mirror.test") == (200, "main")
    wait_for(lambda: any(p == "/copy/1?x=1" for _, p, _, _ in recorder.seen),
             what="the mirrored GET")
    method, _, host, _ = next(s for s in recorder.seen if s[1] == "/copy/1?x=1")
    assert method == "GET" and host == "shadow.default.svc"
    conn = http.client.HTTPConnection("127.0.0.1", gw.http_port, timeout=5)
    try:
        conn.request("POST", "/posted", body=b"payload-42", headers={"Host": "mirror.test"})
        resp = conn.getresponse()
        assert (resp.status, resp.getheader("x-echo-backend")) == (200, "main")
    finally:
        conn.close()
    wait_for(lambda: any(s[1] == "/posted" for s in recorder.seen), what="the mirrored POST")
    assert next(s for s in recorder.seen if s[1] == "/posted")[3] == b"payload-42"


def test_upstream_hash_by_header_and_client_address(gw: Gateway) -> None:
    chosen = {}
    for user in ("ann", "bob", "cy", "dee", "eve", "fay", "gus", "hal"):
        got = {gw.backend("/", host="by-header.test", headers={"x-user": user})
               for _ in range(8)}
        assert len(got) == 1 and next(iter(got))[0] == 200, (user, got)
        chosen[user] = next(iter(got))[1]
    # Eight users on a ring of three: more than one endpoint is used (all on one would
    # mean the header is not hashed); the odds of one endpoint for all are 3 * (1/3)^8.
    assert len(set(chosen.values())) > 1
    for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        got = {gw.backend("/", host="by-client.test", source_ip=source) for _ in range(8)}
        assert len(got) == 1, (source, got)


def test_plain_ingress_to_the_same_service_keeps_round_robin(gw: Gateway) -> None:
    # The hashing Ingresses have twin clusters of their own: this one still spreads.
    seen = {gw.backend("/", host="plain.test", headers={"x-user": "ann"})[1]
            for _ in range(30)}
    assert seen == {"h1", "h2", "h3"}


def test_load_balance_and_connect_timeout_on_a_twin_cluster(gw: Gateway) -> None:
    assert gw.envoy is not None
    seen = {gw.backend("/", host="ewma.test")[1] for _ in range(30)}
    assert seen == {"h1", "h2", "h3"}
    dump = gw.envoy.config_dump("dynamic_active_clusters")
    clusters = {c["cluster"]["name"]: c["cluster"] for c in dump["configs"]}
    twin = clusters["default/hashed/80/lb=least_request/connect=2000ms"]
    assert twin["lb_policy"] == "LEAST_REQUEST" and twin["connect_timeout"] == "2s"
    plain = clusters["default/hashed/80"]
    assert plain.get("lb_policy", "ROUND_ROBIN") == "ROUND_ROBIN"
    assert plain["connect_timeout"] == "5s"


def test_server_alias_and_www_redirect(gw: Gateway) -> None:
    assert gw.backend("/x", host="other-name.test") == (200, "main")
    assert gw.backend("/x", host="alias.test") == (200, "main")
    status, headers, _ = gw.get("/some/path?q=1", host="www.alias.test")
    assert status == 308
    # The port is dropped, as nginx's redirect to $scheme://host$request_uri does.
    assert headers["location"] == "http://alias.test/some/path?q=1"


def test_limit_allowlist_exempts_its_clients_only(gw: Gateway) -> None:
    allowed = [gw.get("/", host="allow.test", source_ip="127.0.0.2")[0] for _ in range(8)]
    assert allowed == [200] * 8
    limited = [gw.get("/", host="allow.test", source_ip="127.0.0.3")[0] for _ in range(6)]
    assert limited[:2] == [200, 200] and 429 in limited[2:]


def test_next_upstream_timeout_bounds_each_attempt(gw: Gateway) -> None:
    # One endpoint of two answers after 3 s: an attempt there is given up after 1 s and
    # the request tried on the other, so every answer is the fast one's, in well under 3 s.
    for _ in range(4):
        start = time.monotonic()
        assert gw.backend("/", host="retry-fast.test") == (200, "fast")
        assert time.monotonic() - start < 2.8
    # Without non_idempotent a timed-out attempt is not tried again: 504 after 1 s.
    answers = []
    for _ in range(4):
        start = time.monotonic()
        answers.append((gw.backend("/", host="no-retry.test")[0], time.monotonic() - start))
    assert {a for a, _ in answers} == {200, 504}
    assert all(took < 2.8 for a, took in answers if a == 504)


def test_hide_response_headers_flag(tmp_path: Path, gw: Gateway) -> None:
    # A gateway of its own (the flag is global), on the same manifests.
    hidden = Gateway(tmp_path, gw.manifests,
                     ["--hide-response-headers", "server,x-envoy-upstream-service-time,x-echo-*"])
    try:
        def served() -> tuple[int, dict[str, str], bytes] | None:
            got = hidden.get("/", host="mirror.test")
            return got if got[0] == 200 else None
        status, headers, body = wait_for(served, what="the route through the second gateway")
        assert json.loads(body)["backend"] == "main"
        assert not {"server", "x-envoy-upstream-service-time", "x-echo-backend"} & set(headers)
        status, headers, _ = hidden.get("/", host="no-such-host.test")  # Envoy's own 404
        assert status == 404 and "server" not in headers
    finally:
        hidden.stop()
    # The other gateway keeps them.
    status, headers, _ = gw.get("/", host="mirror.test")
    assert headers.get("server") == "envoy" and "x-envoy-upstream-service-time" in headers
