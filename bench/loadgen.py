"""Steady HTTP load through Envoy: ``python -m bench.loadgen PORT SECONDS RPS host/path...``.

Sends GETs over one keep-alive connection (reconnecting when Envoy closes
it), cycling through the given routes at about RPS requests per second, and
prints one JSON object at the end: counts by status, and the first few
failures with their route and time.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from collections import Counter


def main() -> None:
    port, seconds, rps = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    routes = [r.split("/", 1) for r in sys.argv[4:]]
    counts: Counter[str] = Counter()
    failures: list[dict[str, object]] = []
    conn: http.client.HTTPConnection | None = None
    start = time.monotonic()
    n = 0
    while (now := time.monotonic()) - start < seconds:
        host, path = routes[n % len(routes)]
        n += 1
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/" + path, headers={"Host": host})
            resp = conn.getresponse()
            resp.read()
            status = str(resp.status)
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            status = f"error:{type(e).__name__}"
            if conn is not None:
                conn.close()
            conn = None
        counts[status] += 1
        if not status.startswith("2") and len(failures) < 20:
            failures.append({"route": f"{host}/{path}", "status": status,
                             "at_s": round(now - start, 3)})
        delay = start + n / rps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    print(json.dumps({"counts": counts, "requests": n, "failures": failures,
                      "seconds": time.monotonic() - start}))


if __name__ == "__main__":
    main()
