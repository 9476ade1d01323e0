"""First 200 through Envoy, polled from a process of its own: ``python -m bench.prober PORT``.

Reads ``HOST PATH`` lines on stdin. For each, sends GETs 1 ms apart (a new
connection each) to Envoy on 127.0.0.1:PORT until one answers 200, and writes
``{"t": T}``, T the ``time.monotonic()`` of that answer (CLOCK_MONOTONIC: one
clock for every process on the machine), or ``{"error": ...}`` after 20 s.

M2 polls from here rather than from the benchmark's own event loop, where kxds
runs: a client polling inside kxds's process would take the interpreter from
it while it rebuilds, which no client of a real gateway does.
"""

from __future__ import annotations

import json
import socket
import sys
import time

TIMEOUT = 20.0
INTERVAL = 0.001
"""Between two GETs: polling without a pause would take a core from Envoy (2 cores)."""


def status(port: int, host: str, path: str) -> int:
    """One GET (Connection: close); the response's status, 0 when it failed."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                      .encode())
            head = s.recv(64)
    except OSError:
        return 0
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def first_200(port: int, host: str, path: str) -> dict[str, object]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if status(port, host, path) == 200:
            return {"t": time.monotonic()}
        time.sleep(INTERVAL)
    return {"error": f"no 200 from {host}{path} in {TIMEOUT}s"}


def main() -> None:
    port = int(sys.argv[1])
    for line in sys.stdin:
        host, path = line.split()
        sys.stdout.write(json.dumps(first_200(port, host, path)) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
