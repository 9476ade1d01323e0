"""Network namespaces for end-to-end tests that need more than loopback.

:class:`Topology` builds three namespaces joined by veth pairs, as a node sits
between an outside client and a pod on it::

    client 198.51.100.2/24 ── 198.51.100.1/24 node 203.0.113.1/24 ── 203.0.113.2/24 pod
                                                              (pod's default route: the node)

Only documentation addresses (RFC 5737), only inside these namespaces. Names
are unique per run (parallel runs never clash), and :meth:`Topology.close`
stops every process started in them and deletes every namespace and link made,
whatever happened before.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from e2e.harness import Process

CLIENT_IP, NODE_OUTSIDE_IP, NODE_POD_IP, POD_IP = (
    "198.51.100.2", "198.51.100.1", "203.0.113.1", "203.0.113.2")


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)"
    name = f"kxprobe{os.getpid()}{secrets.token_hex(2)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True,
                          check=False)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Topology:
    """Three namespaces (client, node, pod) and two veth pairs; see the module docstring."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        tag = f"kxt{os.getpid() % 10000}{secrets.token_hex(2)}"
        self.client, self.node, self.pod = (f"{tag}-{n}" for n in ("client", "node", "pod"))
        self._namespaces: list[str] = []
        self._links: list[str] = []
        self.processes: list[Process] = []
        try:
            self._build(tag)
        except BaseException:
            self.close()
            raise

    def _build(self, tag: str) -> None:
        for ns in (self.client, self.node, self.pod):
            _ip("netns", "add", ns)
            self._namespaces.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for (a_ns, a_ip), (b_ns, b_ip), a, b in (
                ((self.client, CLIENT_IP), (self.node, NODE_OUTSIDE_IP), f"{tag}c", f"{tag}n"),
                ((self.node, NODE_POD_IP), (self.pod, POD_IP), f"{tag}p", f"{tag}q")):
            _ip("link", "add", a, "type", "veth", "peer", "name", b)
            self._links += [a, b]
            for ns, dev, address in ((a_ns, a, a_ip), (b_ns, b, b_ip)):
                _ip("link", "set", dev, "netns", ns)
                _ip("-n", ns, "addr", "add", f"{address}/24", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
        _ip("-n", self.pod, "route", "add", "default", "via", NODE_POD_IP)
        # A node forwards, as a Kubernetes node does: without the set-up, a pod's
        # reply to the client's address would pass the node by, not reach Envoy.
        self.run(self.node, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])

    def run(self, ns: str, argv: Sequence[str]) -> str:
        """Run ``argv`` in ``ns`` to completion; its stdout (raises on failure)."""
        done = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True,
                              text=True, check=False, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"in {ns}: {' '.join(argv)}: exit {done.returncode}: "
                               f"{done.stderr.strip()}")
        return done.stdout

    def start(self, ns: str, name: str, argv: Sequence[str]) -> Process:
        """Start a long-running process in ``ns`` (stopped by :meth:`close`)."""
        proc = Process(name, ["ip", "netns", "exec", ns, *argv], self.tmp / f"{name}.log")
        self.processes.append(proc)
        return proc

    def get(self, ns: str, url: str) -> str:
        """GET ``url`` from inside ``ns`` (a namespace's loopback is its own)."""
        return self.run(ns, [sys.executable, "-c", _GET, url])

    def send(self, kind: str, host: str, port: int, payload: str) -> str:
        """Send ``payload`` from the client namespace over TCP (then half-close and read
        to the end) or as one UDP datagram (and read one back); the reply's text."""
        return self.run(self.client, [sys.executable, "-c", _CLIENT, kind, host, str(port),
                                      payload])

    def close(self) -> None:
        """Stop every process, delete every namespace and leftover link; never raises."""
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                proc.stop()
        for ns in self._namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        for link in self._links:  # only still there if moving it into a namespace failed
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)


_GET = textwrap.dedent("""\
    import sys, urllib.request
    with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
        sys.stdout.write(r.read().decode())
    """)

_CLIENT = textwrap.dedent("""\
    import socket, sys
    kind, host, port, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if kind == "tcp":
        with socket.create_connection((host, port), timeout=3) as s:
            s.sendall(payload.encode())
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(payload.encode(), (host, port))
            data = s.recv(4096)
    sys.stdout.write(data.decode("latin-1"))
    """)
