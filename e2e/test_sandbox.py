"""``kxds sandbox`` on free ports: its printed curl lines work, and it stops cleanly."""

from __future__ import annotations

import contextlib
import http.client
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from e2e.harness import Process, http_get, wait_for

pytestmark = pytest.mark.e2e

CURL = re.compile(r"^\s*(curl .*?)\s+# (\S+?):? ")


@dataclass(frozen=True)
class Curl:
    """One printed curl line: what it requests and what its comment promises."""

    host: str
    url: str
    expect: str
    """The backend that answers, or a status code (``301``)."""
    ca_file: str | None = None


def parse_curl(line: str) -> Curl:
    """``curl [-i] [-H 'Host: h'] [--cacert CA --resolve h:port:ip] URL    # what: why``."""
    m = CURL.match(line)
    assert m is not None, line
    words = shlex.split(m.group(1))
    url = words[-1]
    host = urlsplit(url).hostname or ""
    if "-H" in words:
        host = words[words.index("-H") + 1].removeprefix("Host: ")
    ca = words[words.index("--cacert") + 1] if "--cacert" in words else None
    return Curl(host, url, m.group(2), ca)


def request(curl: Curl) -> tuple[int, str | None]:
    """Do what the curl line does: (status, answering backend)."""
    parts = urlsplit(curl.url)
    if curl.ca_file is None:
        status, headers, _ = http_get(curl.url, host=curl.host)
        return status, headers.get("x-echo-backend")
    # --resolve: connect to loopback, but send SNI and check the certificate for the host.
    ctx = ssl.create_default_context(cafile=curl.ca_file)
    conn = http.client.HTTPSConnection("127.0.0.1", parts.port, context=ctx, timeout=5)
    try:
        raw = socket.create_connection(("127.0.0.1", parts.port or 443), timeout=5)
        conn.sock = ctx.wrap_socket(raw, server_hostname=curl.host)
        conn.request("GET", parts.path or "/", headers={"Host": curl.host})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("x-echo-backend")
    finally:
        conn.close()


def check(curl: Curl) -> None:
    status, backend = request(curl)
    if curl.expect.isdigit():
        assert status == int(curl.expect), curl
    else:
        assert (status, backend) == (200, curl.expect), curl


def test_sandbox_serves_its_curl_lines_and_stops_cleanly(tmp_path: Path) -> None:
    sandbox = Process("sandbox", [sys.executable, "-m", "kxds.cli", "sandbox",
                                  "--http-port", "0", "--https-port", "0", "--xds-port", "0",
                                  "--admin-port", "0", "--envoy-admin-port", "0"],
                      tmp_path / "sandbox.log")
    try:
        def up() -> str | None:
            if not sandbox.alive():
                raise RuntimeError(sandbox.log_tail())
            text = sandbox.log_path.read_text()
            return text if "Ctrl-C stops everything." in text else None

        output = wait_for(up, timeout=60, what="the sandbox to be up")
        # Every printed line, the HTTPS one (CA + SNI via --resolve) and the
        # redirect (301) included, does what its comment says.
        curls = [parse_curl(line) for line in output.splitlines() if "curl " in line]
        assert len(curls) >= 6
        for curl in curls:
            check(curl)
        assert any(c.ca_file for c in curls) and any(c.expect == "301" for c in curls)
        # Envoy's HTTP and admin ports, and kxds's admin port.
        ports = [urlsplit(curls[0].url).port,
                 *map(int, re.findall(r"(?:Envoy admin|kxds metrics): http://127\.0\.0\.1:(\d+)/",
                                      output))]
        work = re.search(r"logs in (\S+)\)", output)
        assert work is not None
    finally:
        # Ctrl-C, as the README says (SIGINT); stop() then only reaps it, or
        # SIGTERMs and SIGKILLs it if it did not stop in time.
        with contextlib.suppress(ProcessLookupError):
            sandbox.proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            sandbox.proc.wait(20)
        code = sandbox.stop(timeout=20)
    assert code == 0, sandbox.log_tail()
    assert "kxds sandbox stopped." in sandbox.log_path.read_text()
    # Envoy and kxds are gone (nothing listens on their ports) and the work dir was removed.
    assert len(ports) == 3 and None not in ports, ports
    for port in ports:
        assert port is not None
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
    assert not Path(work.group(1)).exists()
