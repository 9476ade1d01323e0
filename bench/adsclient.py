"""Light ADS clients: K gRPC streams that subscribe to endpoint resources and ACK.

Run as ``python -m bench.adsclient --port P --streams K --protocol sotw|delta
--names a,b,...``. Each stream is its own node (``<prefix>-<i>``, role edge,
gateway group ``default``), subscribes to the named ClusterLoadAssignments and
ACKs every response at once. One JSON line per response goes to stdout:
``{"s": stream, "t": wall time after the ACK was queued, "n": resources,
"v": {name: version}}``; ``{"ready": true}`` once every stream has its first
response. ``--role node``: each stream is a per-node proxy (node metadata
``node_name`` = its node id) instead; ``--listeners``: each stream also
subscribes to every listener (wildcard LDS on the same ADS stream);
``--reconnect``: a stream that ends (kxds gone) is opened again, as Envoy does,
saying what it holds (SotW ``version_info`` per type, delta
``initial_resource_versions``); one ``{"reconnected": stream, "t": ...}`` line
per new stream, and every response on it is a line as above. ``--no-versions``:
lines without ``"v"`` (a reader that only counts responses keeps no copy of
every stream's names).
Versions are those kxds uses: the SHA-256 prefix of the resource bytes
(SotW) or the resource's version field (delta).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
STREAMS_PER_CHANNEL = 100


def node(node_id: str, role: str = "edge") -> base_pb2.Node:
    meta = struct_pb2.Struct()
    meta.update({"role": role, **({"node_name": node_id} if role == "node" else {})})
    return base_pb2.Node(id=node_id, cluster="default", metadata=meta)


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class Stream:
    def __init__(self, index: int, prefix: str, names: list[str], delta: bool,
                 first: asyncio.Event, started: list[int], total: int,
                 role: str = "edge", listeners: bool = False, reconnect: bool = False,
                 versions: bool = True) -> None:
        self.index, self.prefix, self.names, self.delta = index, prefix, names, delta
        self.role, self.listeners, self.reconnect = role, listeners, reconnect
        self.versions = versions
        self.held: dict[str, dict[str, str]] = {}
        """Delta: per type, the versions of the resources this stream holds."""
        self.accepted: dict[str, str] = {}
        """SotW: per type, the version_info last ACKed."""
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.first, self.started, self.total = first, started, total
        self.got_first = False

    async def requests(self, queue: asyncio.Queue[Any]) -> AsyncIterator[Any]:
        while True:
            yield await queue.get()

    def initial(self) -> list[Any]:
        """The first requests of a stream, saying what a reconnecting one holds."""
        me = node(f"{self.prefix}-{self.index}", self.role)
        if self.delta:
            out = [discovery_pb2.DeltaDiscoveryRequest(
                node=me, type_url=EDS, resource_names_subscribe=self.names,
                initial_resource_versions=self.held.get(EDS, {}))]
            if self.listeners:
                out.append(discovery_pb2.DeltaDiscoveryRequest(
                    type_url=LDS, initial_resource_versions=self.held.get(LDS, {})))
            return out
        out = [discovery_pb2.DiscoveryRequest(node=me, type_url=EDS, resource_names=self.names,
                                              version_info=self.accepted.get(EDS, ""))]
        if self.listeners:
            out.append(discovery_pb2.DiscoveryRequest(type_url=LDS,
                                                      version_info=self.accepted.get(LDS, "")))
        return out

    def on_response(self, resp: Any) -> None:
        if self.delta:
            versions = {r.name: r.version for r in resp.resources}
            held = self.held.setdefault(resp.type_url, {})
            held.update(versions)
            for gone in resp.removed_resources:
                held.pop(gone, None)
            self.queue.put_nowait(discovery_pb2.DeltaDiscoveryRequest(
                type_url=resp.type_url, response_nonce=resp.nonce))
        else:
            versions = {}
            for any_ in resp.resources:
                name = any_.value[2:2 + any_.value[1]].decode() if any_.value[:1] == b"\n" \
                    else "?"
                versions[name] = hashlib.sha256(any_.value).hexdigest()[:16]
            self.accepted[resp.type_url] = resp.version_info
            self.queue.put_nowait(discovery_pb2.DiscoveryRequest(
                type_url=resp.type_url, version_info=resp.version_info,
                response_nonce=resp.nonce,
                resource_names=self.names if resp.type_url == EDS else []))
        now = time.time()
        if not self.got_first:
            self.got_first = True
            self.started[0] += 1
            if self.started[0] == self.total:
                self.first.set()
            return
        emit({"s": self.index, "t": now, "n": len(versions), "type": resp.type_url,
              **({"v": versions} if self.versions else {})})

    async def run(self, stub: Any) -> None:
        while True:
            self.queue = asyncio.Queue()
            for request in self.initial():
                self.queue.put_nowait(request)
            call = (stub.DeltaAggregatedResources if self.delta
                    else stub.StreamAggregatedResources)(self.requests(self.queue))
            try:
                async for resp in call:
                    self.on_response(resp)
            except grpc.aio.AioRpcError:
                if not self.reconnect:
                    raise
            if not self.reconnect:
                return
            # Envoy's retry backoff starts near half a second, jittered.
            await asyncio.sleep(0.1 + 0.4 * random.random())
            emit({"reconnected": self.index, "t": time.time()})


async def main_async(args: argparse.Namespace) -> None:
    names = [n for n in args.names.split(",") if n]
    first = asyncio.Event()
    started = [0]
    # Reconnecting clients retry about as often as Envoy (gRPC's default backoff
    # grows to two minutes).
    options = ([("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 1000)] if args.reconnect else [])
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{args.port}", options=options)
                for _ in range(-(-args.streams // STREAMS_PER_CHANNEL))]
    stubs = [ads_pb2_grpc.AggregatedDiscoveryServiceStub(c) for c in channels]
    streams = [Stream(i, args.prefix, names, args.protocol == "delta", first, started,
                      args.streams, args.role, args.listeners, args.reconnect,
                      not args.no_versions)
               for i in range(args.streams)]
    tasks = [asyncio.create_task(s.run(stubs[i // STREAMS_PER_CHANNEL]))
             for i, s in enumerate(streams)]
    await first.wait()
    emit({"ready": True, "t": time.time()})
    # Runs until the parent closes stdin (or kills the process).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for t in tasks:
        t.cancel()
    for c in channels:
        await c.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--streams", type=int, required=True)
    p.add_argument("--protocol", choices=("sotw", "delta"), default="sotw")
    p.add_argument("--names", required=True)
    p.add_argument("--prefix", default="light")
    p.add_argument("--role", choices=("edge", "node"), default="edge")
    p.add_argument("--listeners", action="store_true", help="also subscribe to every listener")
    p.add_argument("--reconnect", action="store_true",
                   help="open a stream again when it ends, saying what it holds")
    p.add_argument("--no-versions", action="store_true",
                   help="response lines without the resources' versions")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
