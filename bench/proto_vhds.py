"""Prototype for M2: does VHDS make Envoy's apply of one changed virtual host independent of N?

Run alone: ``.venv/bin/python -m bench.proto_vhds [--sizes 100,1000,3000] [--repeats 10]``.

A minimal *delta* ADS server (this module; not kxds) serves the real Envoy
(delta xDS) one listener, one static cluster (a local HTTP backend) and N
routes over N/4 virtual hosts (four Prefix paths each, like the M2 scenario),
plus a wildcard virtual host (``*.wild.example``) and a catch-all (``*``), in
two layouts:

- ``single``: one RouteConfiguration holding every virtual host (RDS), as kxds
  serves today; a route added to one host resends the whole table;
- ``vhds``: the same RouteConfiguration without virtual hosts, but with
  ``vhds`` (Virtual Host Discovery): every virtual host is a resource of its
  own, named ``<route configuration>/<host>``, all sent when Envoy subscribes
  (so no request waits for an on-demand fetch); a route added to one host
  sends that one virtual host.

Per layout and N, an Exact path is added to one host at a time: the sample is
the time from the push until a GET of it through Envoy first answers 200, and
what Envoy's ``update_duration`` histograms gained (its own apply time). A
request for a host no virtual host names must reach the catch-all in both
layouts (unlike scoped routes, ``bench/proto_srds.py``: a virtual host's
domains, wildcards included, match as in one table).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from bench.m2 import first_200
from bench.procs import Envoy, free_port, http_get
from bench.proto_srds import (
    BACKEND,
    PATHS,
    RDS,
    Layout,
    _ads,
    _any,
    cli,
    host,
    path_samples,
    result,
    vhost,
)

VHDS = "type.googleapis.com/envoy.config.route.v3.VirtualHost"
TABLE = "all"
WILD = "*.wild.example"


def _extra_hosts() -> list[Any]:
    """A wildcard virtual host and the catch-all, both forwarding every path."""
    def forward_all(name: str) -> Any:
        return rc.VirtualHost(name=name, domains=[name], routes=[rc.Route(
            match=rc.RouteMatch(prefix="/"), route=rc.RouteAction(cluster=BACKEND))])
    return [forward_all(WILD), forward_all("*")]


class VhdsLayout(Layout):
    """:class:`bench.proto_srds.Layout` with delta-only layouts: one table, or VHDS."""

    def __init__(self, vhds: bool, hosts: int, port: int, backend_port: int) -> None:
        super().__init__(False, hosts, port, backend_port)
        self.vhds = vhds

    def virtual_hosts(self, only: int | None = None) -> dict[str, Any]:
        js = range(self.hosts) if only is None else [only]
        out = {f"{TABLE}/{host(j)}": vhost(j, self.extra.get(j, [])) for j in js}
        if only is None:
            out.update({f"{TABLE}/{vh.name}": vh for vh in _extra_hosts()})
        return out

    def table(self) -> dict[str, Any]:
        if self.vhds:
            return {TABLE: route_pb2.RouteConfiguration(
                name=TABLE, vhds=route_pb2.Vhds(config_source=_ads()))}
        return {TABLE: route_pb2.RouteConfiguration(
            name=TABLE, virtual_hosts=list(self.virtual_hosts().values()))}

    def all_resources(self) -> dict[str, dict[str, Any]]:
        out = super().resources()
        out[RDS] = self.table()
        if self.vhds:
            out[VHDS] = self.virtual_hosts()
        return out


class DeltaAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """Delta ADS: answers each type's first request with every resource of it (the
    route table by name; VHDS with every virtual host of the table it names);
    :meth:`push` sends changed resources to every stream."""

    def __init__(self, resources: dict[str, dict[str, Any]]) -> None:
        self.resources = resources
        self.version = itertools.count(2)
        self.nonce = itertools.count(1)
        self.queues: list[asyncio.Queue[tuple[str, dict[str, Any]]]] = []
        self.nacks: list[str] = []

    def push(self, type_url: str, changed: dict[str, Any]) -> None:
        self.resources[type_url].update(changed)
        for q in self.queues:
            q.put_nowait((type_url, changed))

    async def DeltaAggregatedResources(self, request_iterator: Any, context: Any
                                       ) -> AsyncIterator[Any]:
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.queues.append(queue)
        started: set[str] = set()

        async def read() -> None:
            async for req in request_iterator:
                if req.error_detail.message:
                    self.nacks.append(req.error_detail.message)
                if req.type_url not in started and not req.response_nonce:
                    started.add(req.type_url)
                    queue.put_nowait((req.type_url, self.resources.get(req.type_url, {})))

        reader = asyncio.create_task(read())
        try:
            while True:
                type_url, changed = await queue.get()
                if type_url not in started or not changed:
                    continue
                version = str(next(self.version))
                yield discovery_pb2.DeltaDiscoveryResponse(
                    system_version_info=version, type_url=type_url,
                    nonce=str(next(self.nonce)),
                    resources=[discovery_pb2.Resource(name=n, version=version,
                                                      resource=_any(m))
                               for n, m in sorted(changed.items())])
        finally:
            reader.cancel()
            self.queues.remove(queue)


async def one(vhds: bool, n: int, repeats: int, backend_port: int) -> dict[str, Any]:
    hosts = n // PATHS
    port = free_port()
    layout = VhdsLayout(vhds, hosts, port, backend_port)
    ads = DeltaAds(layout.all_resources())
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    xds_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    label = "vhds" if vhds else "single"
    envoy = Envoy(f"vhds-{label}-{n}", xds_port, delta=True, flush_on_admin=True)
    try:
        await first_200(port, host(hosts - 1), f"/p{hosts - 1}-0", timeout=120.0)
        unmatched, _ = await http_get(port, "/p0-0", host="unknown.example")
        wildcard, _ = await http_get(port, "/any", host="a.wild.example")
        def change(j: int) -> Callable[[], None]:
            type_url = VHDS if vhds else RDS
            changed = layout.virtual_hosts(only=j) if vhds else layout.table()
            return lambda: ads.push(type_url, changed)

        lat, apply = await path_samples(envoy, port, hosts, repeats, layout.extra, change)
        return result(label, n, hosts, lat, apply, ads.nacks, unmatched_host_status=unmatched,
                      wildcard_host_status=wildcard)
    finally:
        envoy.stop()
        await server.stop(0)


def main() -> None:
    cli("python -m bench.proto_vhds", __doc__, one, "vhds")


if __name__ == "__main__":
    main()
