"""Prototype for M2: does splitting the edge route table make Envoy's apply time independent of N?

Run alone: ``.venv/bin/python -m bench.proto_srds [--sizes 100,1000,3000] [--repeats 10]``.

A minimal SotW ADS server (this module; not kxds) serves the real Envoy one
listener, one static cluster (a local HTTP backend) and N routes over N/4
virtual hosts (four Prefix paths each, like the M2 scenario), in two layouts:

- ``single``: what kxds serves today, one RouteConfiguration with every
  virtual host (RDS); a route added to one host resends the whole table;
- ``scoped``: scoped routes (SRDS), the scope chosen by the ``:authority``
  header (the host name before any ``:port``), one ScopedRouteConfiguration and
  one RouteConfiguration per host; a route added to one host resends that
  host's RouteConfiguration alone.

Per layout and N, an Exact path is added to one host at a time: the sample is
the time from the push until a GET of it through Envoy first answers 200, and
what Envoy's ``update_duration`` histograms gained (its own apply time). The
layouts differ in meaning too: a scope key is matched exactly, so wildcard
hosts (``*.example.com``) and the catch-all virtual host (rules without a
host, the default backend) have no scope of their own (see the README's
DESIGN notes on M2).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2, scoped_route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

from bench.m2 import first_200
from bench.m8_scenarios import applied, totals
from bench.procs import Envoy, free_port, http_get, start_backend, stop, stop_all
from bench.timing import Summary

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SRDS = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"
WILDCARD = {CDS, LDS, SRDS}
BACKEND = "backend"
PATHS = 4


def _any(msg: Any) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


def host(j: int) -> str:
    return f"h{j}.example"


Dress = Callable[[route_components_pb2.Route, int, int], None]
"""Adds fields to route ``k`` of host ``j`` (``bench.proto_route_shape``)."""


def vhost(j: int, extra: list[str], dress: Dress | None = None
          ) -> route_components_pb2.VirtualHost:
    routes = [route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(path=p),
        route=route_components_pb2.RouteAction(cluster=BACKEND)) for p in extra]
    routes += [route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix=f"/p{j}-{k}"),
        route=route_components_pb2.RouteAction(cluster=BACKEND)) for k in range(PATHS)]
    if dress is not None:
        for k, route in enumerate(routes):
            dress(route, j, k)
    return route_components_pb2.VirtualHost(name=host(j), domains=[host(j)], routes=routes)


class Layout:
    """The resources of one layout, rebuilt per change; ``changed`` names what moved."""

    def __init__(self, scoped: bool, hosts: int, port: int, backend_port: int,
                 dress: Dress | None = None) -> None:
        self.scoped, self.hosts, self.port, self.backend_port = scoped, hosts, port, backend_port
        self.dress = dress
        self.extra: dict[int, list[str]] = {}

    def route_configs(self, only: int | None = None) -> dict[str, Any]:
        if self.scoped:
            js = range(self.hosts) if only is None else [only]
            return {f"scope-{j}": route_pb2.RouteConfiguration(
                name=f"scope-{j}", virtual_hosts=[vhost(j, self.extra.get(j, []), self.dress)])
                for j in js}
        return {"all": route_pb2.RouteConfiguration(
            name="all", virtual_hosts=[vhost(j, self.extra.get(j, []), self.dress)
                                       for j in range(self.hosts)])}

    def resources(self) -> dict[str, dict[str, Any]]:
        cluster = cluster_pb2.Cluster(
            name=BACKEND, type=cluster_pb2.Cluster.STATIC,
            load_assignment=endpoint_pb2.ClusterLoadAssignment(
                cluster_name=BACKEND, endpoints=[endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(
                            address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
                                address="127.0.0.1", port_value=self.backend_port))))])]))
        hcm = hcm_pb2.HttpConnectionManager(
            stat_prefix="edge",
            http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router",
                                             typed_config=_any(router_pb2.Router()))])
        if self.scoped:
            extractor = hcm_pb2.ScopedRoutes.ScopeKeyBuilder.FragmentBuilder \
                .HeaderValueExtractor(name=":authority", element_separator=":", index=0)
            hcm.scoped_routes.CopyFrom(hcm_pb2.ScopedRoutes(
                name="hosts", rds_config_source=_ads(),
                scope_key_builder=hcm_pb2.ScopedRoutes.ScopeKeyBuilder(fragments=[
                    hcm_pb2.ScopedRoutes.ScopeKeyBuilder.FragmentBuilder(
                        header_value_extractor=extractor)]),
                scoped_rds=hcm_pb2.ScopedRds(scoped_rds_config_source=_ads())))
        else:
            hcm.rds.CopyFrom(hcm_pb2.Rds(config_source=_ads(), route_config_name="all"))
        listener = listener_pb2.Listener(
            name="http", address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
                address="127.0.0.1", port_value=self.port)),
            filter_chains=[listener_components_pb2.FilterChain(filters=[
                listener_components_pb2.Filter(name="envoy.filters.network.http_connection_manager",
                                               typed_config=_any(hcm))])])
        out: dict[str, dict[str, Any]] = {CDS: {BACKEND: cluster}, LDS: {"http": listener},
                                          RDS: self.route_configs()}
        if self.scoped:
            key = scoped_route_pb2.ScopedRouteConfiguration.Key
            out[SRDS] = {f"scope-{j}": scoped_route_pb2.ScopedRouteConfiguration(
                name=f"scope-{j}", route_configuration_name=f"scope-{j}",
                key=key(fragments=[key.Fragment(string_key=host(j))]))
                for j in range(self.hosts)}
        return out


class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """SotW ADS: answers each new subscription; :meth:`push` sends changed resources."""

    def __init__(self, resources: dict[str, dict[str, Any]]) -> None:
        self.resources = resources
        self.version = 1
        self.nonce = itertools.count(1)
        self.queues: list[asyncio.Queue[tuple[str, dict[str, Any] | None]]] = []
        self.nacks: list[str] = []

    def push(self, type_url: str, changed: dict[str, Any]) -> None:
        self.version += 1
        self.resources[type_url].update(changed)
        for q in self.queues:
            q.put_nowait((type_url, changed))

    async def StreamAggregatedResources(self, request_iterator: Any, context: Any
                                        ) -> AsyncIterator[Any]:
        queue: asyncio.Queue[tuple[str, dict[str, Any] | None]] = asyncio.Queue()
        self.queues.append(queue)
        subs: dict[str, set[str]] = {}

        async def read() -> None:
            async for req in request_iterator:
                if req.error_detail.message:
                    self.nacks.append(req.error_detail.message)
                names = set(req.resource_names)
                if subs.get(req.type_url) != names:
                    subs[req.type_url] = names
                    queue.put_nowait((req.type_url, None))

        reader = asyncio.create_task(read())
        try:
            while True:
                type_url, changed = await queue.get()
                if type_url not in subs:
                    continue
                pool = changed if changed is not None else self.resources.get(type_url, {})
                names = subs[type_url]
                if type_url in WILDCARD and changed is not None:
                    pool = self.resources[type_url]
                items = [m for n, m in sorted(pool.items())
                         if type_url in WILDCARD or n in names]
                if not items and type_url not in WILDCARD:
                    continue
                yield discovery_pb2.DiscoveryResponse(
                    version_info=str(self.version), type_url=type_url,
                    resources=[_any(m) for m in items], nonce=str(next(self.nonce)))
        finally:
            reader.cancel()
            self.queues.remove(queue)


async def one(scoped: bool, n: int, repeats: int, backend_port: int,
              dress: Dress | None = None) -> dict[str, Any]:
    hosts = n // PATHS
    port = free_port()
    layout = Layout(scoped, hosts, port, backend_port, dress)
    ads = Ads(layout.resources())
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    xds_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    label = "scoped" if scoped else "single"
    envoy = Envoy(f"srds-{label}-{n}", xds_port, flush_on_admin=True)
    try:
        await first_200(port, host(hosts - 1), f"/p{hosts - 1}-0", timeout=120.0)
        # A host no virtual host names: 404 in both layouts here (no catch-all), but
        # the single table could hold a "*" virtual host; a scope key cannot.
        unmatched, _ = await http_get(port, "/p0-0", host="unknown.example")
        def change(j: int) -> Callable[[], None]:
            changed = layout.route_configs(only=j if scoped else None)
            return lambda: ads.push(RDS, changed)

        lat, apply = await path_samples(envoy, port, hosts, repeats, layout.extra, change)
        return result(label, n, hosts, lat, apply, ads.nacks, unmatched_host_status=unmatched)
    finally:
        envoy.stop()
        await server.stop(0)


async def path_samples(envoy: Envoy, port: int, hosts: int, repeats: int,
                       extra: dict[int, list[str]], change: Callable[[int], Callable[[], None]]
                       ) -> tuple[Summary, Summary]:
    """An Exact path added to one host at a time (two first to warm up): the time from
    the push (``change(j)`` prepares it, untimed) to the path's first 200 through Envoy,
    and what Envoy's ``update_duration`` histograms gained (its own apply time)."""
    lat, apply = [], []
    for r in range(repeats + 2):
        j = (r * 7) % hosts
        path = f"/new-{r}"
        extra.setdefault(j, []).append(path)
        status, _ = await http_get(port, path, host=host(j))
        assert status == 404, status  # the host's own virtual host lacks it
        push = change(j)
        before = await totals(envoy)
        t0 = time.perf_counter()
        push()
        t1 = await first_200(port, host(j), path)
        await asyncio.sleep(0.2)
        seconds, _ = applied(before, await totals(envoy))
        if r >= 2:
            lat.append(t1 - t0)
            apply.append(seconds)
    return Summary.of(lat), Summary.of(apply)


def result(label: str, n: int, hosts: int, lat: Summary, apply: Summary, nacks: list[Any],
           **more: Any) -> dict[str, Any]:
    """One layout's figures at one size, printed as a JSON line as it comes."""
    out = {"layout": label, "routes": n, "hosts": hosts, "first_200_p50_s": lat.median,
           "first_200_p99_s": lat.p99, "envoy_apply_p50_s": apply.median,
           "envoy_apply_p99_s": apply.p99, "samples": lat.n, "nacks": nacks[:3], **more}
    print(json.dumps(out), flush=True)
    return out


OneRun = Callable[[bool, int, int, int], Awaitable[dict[str, Any]]]
"""One layout (one table, or split) at one size: (split, routes, repeats, backend port)."""


async def compare(one: OneRun, label: str, sizes: list[int], repeats: int
                  ) -> list[dict[str, Any]]:
    """Both layouts at every size, against one backend process."""
    backend, backend_port = start_backend(f"{label}-backend")
    try:
        return [await one(split, n, repeats, backend_port)
                for n in sizes for split in (False, True)]
    finally:
        stop(backend)


def cli(prog: str, doc: str | None, one: OneRun, label: str) -> None:
    """A prototype's command line: sizes, repeats, and where the results go."""
    p = argparse.ArgumentParser(prog=prog, description=doc)
    p.add_argument("--sizes", default="100,1000,3000")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default="")
    args = p.parse_args()
    try:
        results = asyncio.run(compare(one, label, [int(x) for x in args.sizes.split(",")],
                                      args.repeats))
    finally:
        stop_all()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


def main() -> None:
    cli("python -m bench.proto_srds", __doc__, one, "srds")


if __name__ == "__main__":
    main()
