"""The echo backends: PROXY protocol parsing, and HTTP/TCP/UDP replies from a real process."""

from __future__ import annotations

import io
import json
import socket
import struct
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest

from kxds.sandbox.echo import PROXY_V2_SIGNATURE, ProxyHeaderError, read_proxy_header


def parse(data: bytes) -> tuple[str, int] | None:
    stream = io.BytesIO(data)
    return read_proxy_header(stream.read, stream.readline)


def v2(command: int, family: int, body: bytes) -> bytes:
    header = bytes([0x20 | command, family]) + struct.pack("!H", len(body))
    return PROXY_V2_SIGNATURE + header + body


@pytest.mark.parametrize(("data", "expected"), [
    (b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\nGET /", ("192.0.2.1", 56324)),
    (b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 80\r\n", ("2001:db8::1", 4000)),
    (b"PROXY UNKNOWN\r\n", None),
    (v2(1, 0x11, bytes([192, 0, 2, 7, 10, 0, 0, 1]) + struct.pack("!HH", 1234, 80)),
     ("192.0.2.7", 1234)),
    (v2(1, 0x21, socket.inet_pton(socket.AF_INET6, "2001:db8::7") + bytes(16)
        + struct.pack("!HH", 9, 80)), ("2001:db8::7", 9)),
    (v2(0, 0x00, b""), None),  # LOCAL: a health check from the proxy itself
], ids=["v1-tcp4", "v1-tcp6", "v1-unknown", "v2-inet", "v2-inet6", "v2-local"])
def test_proxy_header(data: bytes, expected: tuple[str, int] | None) -> None:
    assert parse(data) == expected


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\n", b"PROXY TCP4 1.2.3.4\r\n",
                                  b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x00"])
def test_missing_or_bad_proxy_header(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse(data)


@pytest.fixture
def echo(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    kind, *extra = request.param
    proc = subprocess.Popen([sys.executable, "-m", "kxds.sandbox.echo", kind, "--name", "e1",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        yield kind, int(proc.stdout.readline())
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize("echo", [["http"]], indirect=True)
def test_http_echo(echo: tuple[str, int]) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{echo[1]}/a/b?c=d",
                                 headers={"Host": "x.test", "X-One": "1"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.headers["x-echo-backend"] == "e1"
        doc = json.loads(r.read())
    assert doc["backend"] == "e1" and doc["path"] == "/a/b?c=d" and doc["host"] == "x.test"
    assert doc["method"] == "GET" and doc["headers"]["x-one"] == "1"
    assert doc["client"] == "127.0.0.1"


@pytest.mark.parametrize("echo", [["http", "--proxy-protocol"]], indirect=True)
def test_http_echo_reports_the_proxied_client(echo: tuple[str, int]) -> None:
    with socket.create_connection(("127.0.0.1", echo[1]), timeout=5) as s:
        s.sendall(b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\n"
                  b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    doc = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert (doc["client"], doc["client_port"], doc["peer"]) == ("203.0.113.9", 5555, "127.0.0.1")


@pytest.mark.parametrize("echo", [["tcp"]], indirect=True)
def test_tcp_echo(echo: tuple[str, int]) -> None:
    with socket.create_connection(("127.0.0.1", echo[1]), timeout=5) as s:
        s.sendall(b"hello")
        assert s.recv(100) == b"e1 127.0.0.1 hello"


@pytest.mark.parametrize("echo", [["udp"]], indirect=True)
def test_udp_echo(echo: tuple[str, int]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(b"ping", ("127.0.0.1", echo[1]))
        assert s.recv(100) == b"e1 127.0.0.1 ping"
