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
* ``/debug/views``  the groups and the size of their views;
* ``/debug/gateway-api``  the Gateway API status kxds computed (conditions per
  GatewayClass, Gateway, listener and Route parent), written to the API by the
  leader, shown here for every source.

The debug pages show names, versions, sources and errors, never resource
bodies (so never a private key). They answer on ``--admin-address``, loopback
by default; ``--metrics-address`` serves an instance without them
(``debug=False``) that may be public.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST

from kxds.envoy.resource import SHORT_NAMES
from kxds.xds.cache import SnapshotCache
from kxds.xds.httpd import Request, Response, SmallHttpServer
from kxds.xds.metrics import XdsMetrics

log = logging.getLogger("kxds.xds.admin")



def _json(status: int, doc: Any) -> Response:
    return status, "application/json", (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _text(status: int, text: str) -> Response:
    return status, "text/plain; charset=utf-8", (text + "\n").encode()


class AdminServer:
    """Serves ``/metrics``, ``/healthz``, ``/readyz`` and ``/debug/*``."""

    def __init__(self, cache: SnapshotCache, metrics: XdsMetrics,
                 ready: Callable[[], bool] | None = None,
                 held: Callable[[], str | None] | None = None, *, debug: bool = True,
                 health: Callable[[], str] | None = None,
                 pages: Mapping[str, Callable[[], str]] | None = None) -> None:
        self.cache = cache
        self.metrics = metrics
        self.debug = debug
        """False: ``/metrics``, ``/healthz`` and ``/readyz`` only (the public address)."""
        self.ready: Callable[[], bool] = ready if ready is not None else (lambda: cache.synced)
        self.pages = dict(pages or {})
        """More debug pages (path -> their text), e.g. the Gateway API status."""
        self.health = health
        """The body of ``/healthz`` (what was restarted, if anything); always 200."""
        self.held = held
        """Why the source holds back its input (``/readyz`` answers 503 with it), or None."""
        self._http = SmallHttpServer("admin", self._handle)

    async def start(self, address: str) -> int:
        """Listen on ``host:port`` (port 0 picks one); returns the bound port."""
        return await self._http.start(address)

    async def stop(self) -> None:
        """Stop listening."""
        await self._http.stop()

    async def _handle(self, request: Request) -> Response:
        return self.route(request.method, request.target)

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
        if path in self.pages:
            return _text(200, self.pages[path]())
        if path == "/debug/views":
            return _json(200, {group: {"seq": view.seq, "bytes": view.byte_size(),
                                       "resources": {SHORT_NAMES.get(t, t): len(r)
                                                     for t, r in view.resources.items()}}
                               for group, view in self.cache})
        return _text(404, "not found; try /metrics /healthz /readyz /debug/nodes "
                          "/debug/config_dump?node=ID /debug/views")

    def _config_dump(self, nodes: list[str]) -> Response:
        if not nodes:
            # ``time``: when the dump was taken (Unix seconds), for a reader that measures
            # when the nodes reached a state rather than when it had read the answer.
            return _json(200, {"time": time.time(),
                               "nodes": [rec.dump() for rec in self.cache.nodes.all()]})
        rec = self.cache.nodes.get(nodes[0])
        if rec is None:
            return _json(404, {"error": f"no node {nodes[0]!r}"})
        return _json(200, rec.dump())
