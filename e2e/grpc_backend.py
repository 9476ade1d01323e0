"""A gRPC backend for the end-to-end tests: every unary method of every service
answers JSON bytes naming the backend, the method's path and the request metadata.

Run as ``python e2e/grpc_backend.py NAME [CERT KEY]``; it prints its port, then
serves on 127.0.0.1 until stopped, over TLS with the PEM files CERT and KEY when
given (ALPN ``h2``). Generic handlers with raw bytes: no generated code.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

import grpc


class _Echo(grpc.GenericRpcHandler):
    def __init__(self, name: str) -> None:
        self.name = name

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method  # type: ignore[attr-defined]

        def answer(request: bytes, context: Any) -> bytes:
            return json.dumps({
                "backend": self.name, "method": method,
                "metadata": {k: v for k, v in context.invocation_metadata()
                             if isinstance(v, str)},
            }).encode()
        return grpc.unary_unary_rpc_method_handler(answer)


def main() -> None:
    server = grpc.server(_thread_pool())
    server.add_generic_rpc_handlers((_Echo(sys.argv[1]),))
    if len(sys.argv) > 3:
        with open(sys.argv[2], "rb") as cert, open(sys.argv[3], "rb") as key:
            credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
        port = server.add_secure_port("127.0.0.1:0", credentials)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    threading.Event().wait()


def _thread_pool() -> Any:
    from concurrent.futures import ThreadPoolExecutor
    return ThreadPoolExecutor(max_workers=4)


if __name__ == "__main__":
    main()
