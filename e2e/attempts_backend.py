"""An HTTP backend for the end-to-end retry tests: it counts the attempts of each
request and fails the first ones as the request asks.

Run as ``python e2e/attempts_backend.py``; it prints its port, then serves on
127.0.0.1 until stopped. A request ``/any/path?id=ID&fail=N&how=HOW&delay=MS`` is
attempt ``k`` of ``ID`` (counted from 1); while ``k <= N`` it fails after ``delay``
milliseconds (default 0), as ``how`` says:

* ``status`` (the default): it answers with the status of ``code`` (default 500);
* ``close``: it closes the connection without answering.

Afterwards it answers 200 at once. Every answer is JSON ``{"id", "attempt"}`` with the header
``x-attempt``; ``/count?id=ID`` answers how many attempts ``ID`` has had so far.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_counts: dict[str, int] = {}
_lock = threading.Lock()
MAX_IDS = 10_000
"""Request ids remembered; beyond that the counts start over (bounded memory)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        key = query.get("id", "")
        if url.path == "/count":
            with _lock:
                self._send(200, {"id": key, "attempts": _counts.get(key, 0)})
            return
        with _lock:
            if len(_counts) >= MAX_IDS:
                _counts.clear()
            attempt = _counts[key] = _counts.get(key, 0) + 1
        if attempt > int(query.get("fail", "0")):
            self._send(200, {"id": key, "attempt": attempt})
            return
        time.sleep(min(int(query.get("delay", "0")), 30_000) / 1000)
        if query.get("how") == "close":
            self.close_connection = True
            return
        self._send(int(query.get("code", "500")), {"id": key, "attempt": attempt})

    do_POST = do_PUT = do_OPTIONS = do_GET

    def _send(self, status: int, answer: dict[str, Any]) -> None:
        body = json.dumps(answer).encode() + b"\n"
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-attempt", str(answer.get("attempt", 0)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
