"""What the fields of kxds's routes cost Envoy: one table of N routes, shaped several ways.

Run alone: ``.venv/bin/python -m bench.proto_route_shape [--routes 3000] [--repeats 10]
[--rounds 2]``.

The one-table layout of ``bench.proto_srds`` (a minimal ADS server, the real
Envoy, N Prefix routes over N/4 virtual hosts), its routes dressed as kxds
dresses an Ingress's (a name, a path-separated prefix, ``timeout: 0s`` and
``idle_timeout``) with and without route metadata naming the Ingress (which
kxds set on every Ingress route until this measurement), and bare. Per shape:
a path added to one host -> first 200 through Envoy, and Envoy's apply time.
The shapes run in turn, ``--rounds`` times, so a busy moment does not fall on
one shape alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from envoy.config.route.v3 import route_components_pb2

from bench.procs import start_backend, stop, stop_all
from bench.proto_srds import Dress, one


def _kxds(metadata: bool) -> Dress:
    def dress(route: route_components_pb2.Route, j: int, k: int) -> None:
        if route.match.prefix:
            route.match.path_separated_prefix = route.match.prefix
        route.route.timeout.SetInParent()
        route.route.idle_timeout.seconds = 60
        route.name = f"ingress/ns-{j % 20}/ing-{j:05d}/rule/0/path/{k}"
        if metadata:
            meta = route.metadata.filter_metadata["kxds"]
            meta.fields["ingress"].string_value = f"ns-{j % 20}/ing-{j:05d}"
    return dress


SHAPES: dict[str, Dress | None] = {
    "bare": None, "kxds-with-metadata": _kxds(True), "kxds": _kxds(False)}


async def run(routes: int, repeats: int, rounds: int) -> list[dict[str, Any]]:
    backend, backend_port = start_backend("shape-backend")
    out = []
    try:
        for _ in range(rounds):
            for label, dress in SHAPES.items():
                r = await one(False, routes, repeats, backend_port, dress)
                out.append({"shape": label, **r})
                print(f"{label}: first 200 p50 {r['first_200_p50_s'] * 1e3:.1f} ms, "
                      f"Envoy apply p50 {r['envoy_apply_p50_s'] * 1e3:.1f} ms", flush=True)
    finally:
        stop(backend)
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.proto_route_shape", description=__doc__)
    p.add_argument("--routes", type=int, default=3000)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default="")
    args = p.parse_args()
    try:
        results = asyncio.run(run(args.routes, args.repeats, args.rounds))
    finally:
        stop_all()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
