"""The admin endpoint: metrics, health, readiness and debug views over HTTP/1.1.

A deliberately tiny asyncio HTTP server (GET only, one request per
connection) so kxds needs no web framework:

* ``/metrics``  Prometheus text format;
* ``/healthz``  200 while the process runs;
* ``/readyz``   200 once the source has synced (the cache is answering), else 503;
* ``/debug/nodes``  connected (and recently disconnected) proxies;
* ``/debug/config_dump?node=ID``  what that node was sent, what it ACKed and
  NACKed, per type and resource, with versions, Envoy's error text and the
  Kubernetes objects each resource came from;
* ``/debug/views``  the groups and the size of their views.

The debug pages show names, versions, sources and errors, never resource
bodies (so never a private key). They answer on ``--admin-address``, loopback
by default; ``--metrics-address`` serves an instance without them
(``debug=False``) that may be public.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST

from kxds.envoy.resource import SHORT_NAMES
from kxds.xds.cache import SnapshotCache
from kxds.xds.metrics import XdsMetrics

log = logging.getLogger("kxds.xds.admin")

_MAX_HEADER_BYTES = 16 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}

Response = tuple[int, str, bytes]


def _json(status: int, doc: Any) -> Response:
    return status, "application/json", (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _text(status: int, text: str) -> Response:
    return status, "text/plain; charset=utf-8", (text + "\n").encode()


class AdminServer:
    """Serves ``/metrics``, ``/healthz``, ``/readyz`` and ``/debug/*``."""

    def __init__(self, cache: SnapshotCache, metrics: XdsMetrics,
                 ready: Callable[[], bool] | None = None,
                 held: Callable[[], str | None] | None = None, *, debug: bool = True,
                 health: Callable[[], str] | None = None) -> None:
        self.cache = cache
        self.metrics = metrics
        self.debug = debug
        """False: ``/metrics``, ``/healthz`` and ``/readyz`` only (the public address)."""
        self.ready: Callable[[], bool] = ready if ready is not None else (lambda: cache.synced)
        self.health = health
        """The body of ``/healthz`` (what was restarted, if anything); always 200."""
        self.held = held
        """Why the source holds back its input (``/readyz`` answers 503 with it), or None."""
        self._server: asyncio.Server | None = None

    async def start(self, address: str) -> int:
        """Listen on ``host:port`` (port 0 picks one); returns the bound port."""
        host, _, port = address.rpartition(":")
        self._server = await asyncio.start_server(self._client, host.strip("[]") or None,
                                                  int(port))
        bound = int(self._server.sockets[0].getsockname()[1])
        log.info("event=admin_listening address=%s port=%d", address, bound)
        return bound

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def route(self, method: str, target: str) -> Response:
        """The response for one request (pure, so it is easy to test)."""
        if method not in ("GET", "HEAD"):
            return _text(405, "only GET")
        url = urlsplit(target)
        query = parse_qs(url.query)
        path = url.path.rstrip("/") or "/"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, self.metrics.render()
        if path == "/healthz":
            # 200 even after restarts: a liveness failure would only add a crash loop.
            return _text(200, self.health() if self.health is not None else "ok")
        if path == "/readyz":
            held = self.held() if self.held is not None else None
            if held:
                return _text(503, f"held: {held}")
            return _text(200, "ready") if self.ready() else _text(503, "not synced")
        if not self.debug:
            return _text(404, "not found; try /metrics /healthz /readyz")
        if path == "/debug/nodes":
            return _json(200, [rec.summary() for rec in self.cache.nodes.all()])
        if path == "/debug/config_dump":
            return self._config_dump(query.get("node", []))
        if path == "/debug/views":
            return _json(200, {group: {"seq": view.seq, "bytes": view.byte_size(),
                                       "resources": {SHORT_NAMES.get(t, t): len(r)
                                                     for t, r in view.resources.items()}}
                               for group, view in self.cache})
        return _text(404, "not found; try /metrics /healthz /readyz /debug/nodes "
                          "/debug/config_dump?node=ID /debug/views")

    def _config_dump(self, nodes: list[str]) -> Response:
        if not nodes:
            return _json(200, {"nodes": [rec.dump() for rec in self.cache.nodes.all()]})
        rec = self.cache.nodes.get(nodes[0])
        if rec is None:
            return _json(404, {"error": f"no node {nodes[0]!r}"})
        return _json(200, rec.dump())

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if len(head) > _MAX_HEADER_BYTES:
                raise ValueError("header too large")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            status, ctype, body = self.route(method, target)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ValueError, UnicodeDecodeError):
            status, ctype, body = _text(400, "bad request")
            method = "GET"
        except ConnectionError:
            writer.close()
            return
        head_out = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                    f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n").encode()
        try:
            writer.write(head_out + (b"" if method == "HEAD" else body))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
