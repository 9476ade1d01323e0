"""Small echo backends for the sandbox and the end-to-end tests.

``python -m kxds.sandbox.echo http|tcp|udp --name N [--host H] [--port P]``

- ``http``: answers every request with JSON ``{backend, path, host, method,
  headers, client, client_port, peer}``; ``client`` is the peer address, or the
  source address of the PROXY protocol header with ``--proxy-protocol``. A
  request header ``x-echo-status: 503`` sets the response status, and
  ``x-echo-delay-ms: 2000`` delays the answer (at most 30 s). With
  ``--tls-cert``/``--tls-key`` it serves HTTPS (and reports the SNI it saw).
- ``tcp``: replies to every chunk received with ``"<name> <client> "`` + the chunk.
- ``udp``: replies to every datagram with ``"<name> <client> "`` + the datagram.

The first line on stdout is the bound port (useful with ``--port 0``).
Standard library only, so it runs in any container with Python.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any, cast

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


class ProxyHeaderError(ValueError):
    """The connection did not start with a valid PROXY protocol header."""


def read_proxy_header(read: Callable[[int], bytes],
                      readline: Callable[[int], bytes]) -> tuple[str, int] | None:
    """Consume a PROXY v1 or v2 header; return the client (address, port).

    Returns None for v1 ``UNKNOWN`` and v2 ``LOCAL`` (health checks from the
    proxy itself). See https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
    """
    first = read(1)
    if first == b"P":  # v1: "PROXY TCP4 src dst sport dport\r\n", at most 107 bytes
        line = (first + readline(107)).decode("ascii", "replace").rstrip("\r\n")
        parts = line.split(" ")
        if parts[0] != "PROXY" or len(parts) < 2:
            raise ProxyHeaderError(f"bad PROXY v1 line {line!r}")
        if parts[1] == "UNKNOWN":
            return None
        if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
            raise ProxyHeaderError(f"bad PROXY v1 line {line!r}")
        return parts[2], int(parts[4])
    if first != PROXY_V2_SIGNATURE[:1] or first + read(11) != PROXY_V2_SIGNATURE:
        raise ProxyHeaderError("no PROXY protocol header")
    ver_cmd, family, length = struct.unpack("!BBH", read(4))
    body = read(length)
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError(f"bad PROXY v2 version {ver_cmd >> 4}")
    if ver_cmd & 0x0F == 0:  # LOCAL
        return None
    if family >> 4 == 1 and len(body) >= 12:  # AF_INET
        return str(ipaddress.IPv4Address(body[0:4])), struct.unpack("!H", body[8:10])[0]
    if family >> 4 == 2 and len(body) >= 36:  # AF_INET6
        return str(ipaddress.IPv6Address(body[0:16])), struct.unpack("!H", body[32:34])[0]
    return None


# --- HTTP ------------------------------------------------------------------


class EchoHandler(BaseHTTPRequestHandler):
    """Answers every method with a JSON description of the request."""

    protocol_version = "HTTP/1.1"  # keep-alive, as Envoy's upstream pool expects
    server: EchoHTTPServer
    proxied: tuple[str, int] | None = None

    def handle(self) -> None:
        if self.server.proxy_protocol:
            try:
                self.proxied = read_proxy_header(self.rfile.read, self.rfile.readline)
            except (ProxyHeaderError, OSError, struct.error) as e:
                self.log_message("closing connection: %s", e)
                return
        super().handle()

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        peer_ip, peer_port = self.client_address[:2]
        client = self.proxied or (peer_ip, peer_port)
        sni = getattr(self.connection, "sni_seen", None)
        body = json.dumps({
            "backend": self.server.name,
            "path": self.path,
            "host": self.headers.get("host", ""),
            "method": self.command,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "client": client[0],
            "client_port": client[1],
            "peer": peer_ip,
            "sni": sni,
        }, sort_keys=True).encode() + b"\n"
        status = int(self.headers.get("x-echo-status") or 200)
        delay_ms = int(self.headers.get("x-echo-delay-ms") or 0)
        if delay_ms > 0:
            time.sleep(min(delay_ms, 30_000) / 1000)
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-echo-backend", self.server.name)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _answer

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class EchoHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP/1.1 server carrying the echo settings."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], name: str, *,
                 proxy_protocol: bool = False, verbose: bool = False,
                 tls: ssl.SSLContext | None = None) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, EchoHandler)
        self.name = name
        self.proxy_protocol = proxy_protocol
        self.verbose = verbose
        self.tls = tls

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.tls is not None:
            # Handshake in the handler thread, not the accept loop.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)


def _tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.sni_callback = _remember_sni
    return ctx


def _remember_sni(sock: Any, name: str | None, ctx: ssl.SSLContext) -> None:
    """Keep the client's SNI on the socket (``server_hostname`` is None on a server's)."""
    sock.sni_seen = name


# --- TCP and UDP -----------------------------------------------------------


async def _tcp_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      name: str, proxy_protocol: bool) -> None:
    peer = writer.get_extra_info("peername")
    client = peer[0]
    try:
        if proxy_protocol:
            header = await _read_proxy_async(reader)
            client = header[0] if header else client
        while data := await reader.read(65536):
            writer.write(f"{name} {client} ".encode() + data)
            await writer.drain()
    except (ProxyHeaderError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
            ConnectionError, struct.error):
        pass
    finally:
        writer.close()


async def _read_proxy_async(reader: asyncio.StreamReader) -> tuple[str, int] | None:
    first = await reader.readexactly(1)
    if first == b"P":
        rest = await reader.readuntil(b"\n")
        chunks = iter([first, rest])
        return read_proxy_header(lambda n: next(chunks), lambda n: next(chunks))
    sig_rest = await reader.readexactly(11)
    fixed = await reader.readexactly(4)
    body = await reader.readexactly(struct.unpack("!H", fixed[2:4])[0])
    data = first + sig_rest + fixed + body
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        pos += n
        return data[pos - n:pos]

    return read_proxy_header(take, take)


class _UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, name: str) -> None:
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector datagram transport is not a DatagramTransport subclass.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(f"{self.name} {addr[0]} ".encode() + data, addr)


async def _serve_l4(kind: str, name: str, host: str, port: int, proxy_protocol: bool,
                    out: IO[str]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if kind == "tcp":
        server = await asyncio.start_server(
            lambda r, w: _tcp_client(r, w, name, proxy_protocol), host, port)
        bound = server.sockets[0].getsockname()[1]
        print(bound, file=out, flush=True)
        async with server:
            await stop.wait()
    else:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpEcho(name), local_addr=(host, port))
        print(transport.get_extra_info("sockname")[1], file=out, flush=True)
        await stop.wait()
        transport.close()


def serve_http(name: str, host: str, port: int, *, proxy_protocol: bool = False,
               tls: ssl.SSLContext | None = None, verbose: bool = False,
               out: IO[str] = sys.stdout) -> None:
    """Serve HTTP echo until SIGTERM/SIGINT."""
    server = EchoHTTPServer((host, port), name, proxy_protocol=proxy_protocol,
                            verbose=verbose, tls=tls)
    print(server.server_address[1], file=out, flush=True)

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with server:
        server.serve_forever(poll_interval=0.2)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m kxds.sandbox.echo``."""
    p = argparse.ArgumentParser(prog="python -m kxds.sandbox.echo",
                                description=__doc__.split("\n")[0])
    p.add_argument("kind", choices=("http", "tcp", "udp"))
    p.add_argument("--name", default="echo", help="reported in every reply")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed first)")
    p.add_argument("--proxy-protocol", action="store_true",
                   help="expect a PROXY v1/v2 header on every TCP connection")
    p.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate chain")
    p.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    p.add_argument("--verbose", action="store_true", help="log every request")
    args = p.parse_args(argv)
    if args.kind == "http":
        tls = _tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
        serve_http(args.name, args.host, args.port, proxy_protocol=args.proxy_protocol,
                   tls=tls, verbose=args.verbose)
    else:
        asyncio.run(_serve_l4(args.kind, args.name, args.host, args.port,
                              args.proxy_protocol, sys.stdout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
