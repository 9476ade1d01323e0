"""A deliberately tiny HTTP/1.1 server on asyncio streams: one request per connection.

kxds serves two small HTTP endpoints, the admin pages and the node
certificate issuer, and needs no web framework for them. This server reads
one request (head bounded in size, body bounded, both within a deadline),
hands it to a handler and writes its answer; a malformed or slow request is
answered 400, a body over the bound 413.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("kxds.xds.httpd")

MAX_HEADER_BYTES = 16 * 1024
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
           500: "Internal Server Error", 503: "Service Unavailable"}

Response = tuple[int, str, bytes]
"""Status, content type and body."""


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]
    """Lower-case names."""
    body: bytes


Handler = Callable[[Request], Awaitable[Response]]


class SmallHttpServer:
    """Listens on an address and answers each connection's one request with ``handler``."""

    def __init__(self, name: str, handler: Handler, *, context: ssl.SSLContext | None = None,
                 max_body: int = 0, deadline: float = 10.0,
                 bad_request: Response = (400, "text/plain; charset=utf-8", b"bad request\n"),
                 too_large: Response = (413, "text/plain; charset=utf-8",
                                        b"request too large\n")) -> None:
        self.name = name
        """What the log lines call it (``event=<name>_listening``)."""
        self.handler = handler
        self.context = context
        self.max_body = max_body
        """Largest request body read (0: requests carry none)."""
        self.deadline = deadline
        self.bad_request, self.too_large = bad_request, too_large
        """The answers to a malformed request and to one whose body is too large."""
        self._server: asyncio.Server | None = None

    async def start(self, address: str) -> int:
        """Listen on ``host:port`` (port 0 picks one); returns the bound port."""
        host, _, port = address.rpartition(":")
        self._server = await asyncio.start_server(self._client, host.strip("[]") or None,
                                                  int(port), ssl=self.context)
        bound = int(self._server.sockets[0].getsockname()[1])
        log.info("event=%s_listening address=%s port=%d", self.name, address, bound)
        return bound

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method = "GET"
        try:
            async with asyncio.timeout(self.deadline):
                request = await self._read(reader)
            if isinstance(request, Request):
                method = request.method
                status, ctype, body = await self.handler(request)
            else:
                status, ctype, body = request
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ValueError, UnicodeDecodeError):
            status, ctype, body = self.bad_request
        except (ConnectionError, ssl.SSLError):
            writer.close()
            return
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()
        try:
            writer.write(head + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> Request | Response:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEADER_BYTES:
            raise ValueError("header too large")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if length > self.max_body:
            return self.too_large
        return Request(method, target, headers, await reader.readexactly(length))
