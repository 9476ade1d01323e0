"""Test support: an xDS client that speaks like Envoy, and tiny resource builders.

Used by the protocol conformance tests (``tests/test_xds_*.py``) and the
end-to-end xDS tests; it plays the Envoy side of a stream by hand so each rule
can be driven one message at a time. It lives with the tests, not in the
``kxds`` package: only ``kxds/envoy/`` builds Envoy configuration messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2
from google.protobuf import duration_pb2 as _duration_pb2

from kxds.diagnostics import ObjectRef
from kxds.envoy.resource import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, Resource, Resources
from kxds.xds.cache import SnapshotCache
from kxds.xds.limits import DEFAULTS, XdsLimits
from kxds.xds.metrics import XdsMetrics
from kxds.xds.server import XdsServer

_ = _duration_pb2  # the router filter's Any needs the well-known types loaded


def make_node(node_id: str = "envoy-1", role: str | None = "edge", cluster: str = "",
              **metadata: str) -> Any:
    """An ``envoy.config.core.v3.Node`` with the given metadata."""
    node = base_pb2.Node(id=node_id, cluster=cluster)
    if role is not None:
        node.metadata.fields["role"].string_value = role
    for key, value in metadata.items():
        node.metadata.fields[key].string_value = value
    return node


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


def _ref(name: str) -> tuple[ObjectRef, ...]:
    ns, _, rest = name.partition("/")
    return (ObjectRef("Service", ns, rest.split("/")[0] if rest else ns),)


def cluster(name: str, timeout_ms: int = 1000, **fields: Any) -> Resource:
    """An EDS cluster over ADS (``fields`` may set anything, e.g. an invalid value)."""
    msg = cluster_pb2.Cluster(
        name=name, type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads()), **fields)
    msg.connect_timeout.FromMilliseconds(timeout_ms)
    return Resource.of(CLUSTER, name, msg.SerializeToString(), _ref(name))


def endpoints(name: str, ports: Iterable[int], host: str = "127.0.0.1") -> Resource:
    """A ClusterLoadAssignment with one endpoint per port on ``host``."""
    lb = [endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address=host, port_value=port)))) for port in ports]
    msg = endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name, endpoints=[endpoint_components_pb2.LocalityLbEndpoints(
            lb_endpoints=lb)])
    return Resource.of(ENDPOINT, name, msg.SerializeToString(), _ref(name))


def route(name: str, cluster_name: str, domains: tuple[str, ...] = ("*",)) -> Resource:
    """A RouteConfiguration sending everything to ``cluster_name``."""
    msg = route_pb2.RouteConfiguration(name=name, virtual_hosts=[
        route_components_pb2.VirtualHost(name="all", domains=list(domains), routes=[
            route_components_pb2.Route(
                match=route_components_pb2.RouteMatch(prefix="/"),
                route=route_components_pb2.RouteAction(cluster=cluster_name))])])
    return Resource.of(ROUTE, name, msg.SerializeToString(), (ObjectRef("Ingress", "", name),))


def listener(name: str, port: int, route_name: str) -> Resource:
    """An HTTP listener on 127.0.0.1:``port`` taking its routes from RDS."""
    from envoy.extensions.filters.http.router.v3 import router_pb2

    router = any_pb2.Any()
    router.Pack(router_pb2.Router())
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=name, rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=route_name),
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=router)])
    packed = any_pb2.Any()
    packed.Pack(hcm)
    msg = listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address="127.0.0.1", port_value=port)),
        filter_chains=[listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
            name="envoy.filters.network.http_connection_manager", typed_config=packed)])])
    return Resource.of(LISTENER, name, msg.SerializeToString(), (ObjectRef("Ingress", "", name),))


def secret(name: str, value: bytes = b"x") -> Resource:
    """A generic Secret."""
    msg = secret_pb2.Secret(name=name)
    msg.generic_secret.secret.inline_bytes = value
    return Resource.of(SECRET, name, msg.SerializeToString())


def resources(*items: Resource) -> Resources:
    """Group resources into a view."""
    out: dict[str, dict[str, Resource]] = {}
    for item in items:
        out.setdefault(item.type_url, {})[item.name] = item
    return out


class XdsTestClient:
    """One xDS stream driven by hand: ``send`` requests, ``recv`` responses."""

    def __init__(self, target: str, node: Any, delta: bool = False) -> None:
        self.target = target
        self.node = node
        self.delta = delta
        self._channel: Any = None
        self._call: Any = None
        self._sent_node = False
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self.reading = True
        """Set False to play a client that stops reading its stream."""

    async def __aenter__(self) -> XdsTestClient:
        self._channel = grpc.aio.insecure_channel(self.target)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self._channel)
        self._call = (stub.DeltaAggregatedResources() if self.delta
                      else stub.StreamAggregatedResources())
        return self

    def _start_reader(self) -> None:
        # A cancelled read cancels a grpc.aio call, so one task reads for good
        # and recv() waits on its queue instead.
        if self._reader is None and self.reading:
            self._reader = asyncio.create_task(self._read_all())

    async def _read_all(self) -> None:
        try:
            while True:
                msg = await self._call.read()
                await self._inbox.put(msg)
                if msg is grpc.aio.EOF:
                    return
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            await self._inbox.put(grpc.aio.EOF)

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the stream and the channel."""
        if self._reader is not None:
            self._reader.cancel()
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None

    async def send(self, type_url: str, **fields: Any) -> None:
        """Send one request (the node only on the first, as Envoy does)."""
        cls = discovery_pb2.DeltaDiscoveryRequest if self.delta else discovery_pb2.DiscoveryRequest
        error = fields.pop("error", None)
        req = cls(type_url=type_url, **fields)
        if error is not None:
            req.error_detail.code = 3
            req.error_detail.message = error
        if not self._sent_node:
            req.node.CopyFrom(self.node)
            self._sent_node = True
        await self._call.write(req)
        self._start_reader()

    async def recv(self, timeout: float = 10.0) -> Any:
        """The next response; raises ``TimeoutError`` when none comes in time (a
        generous default: the suite runs on loaded machines)."""
        self._start_reader()
        msg = await asyncio.wait_for(self._inbox.get(), timeout)
        if msg is grpc.aio.EOF:
            raise EOFError("stream ended")
        return msg

    async def nothing(self, within: float = 0.3) -> None:
        """Assert that no response arrives ``within`` seconds."""
        try:
            msg = await self.recv(within)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected response: {msg}")

    async def status(self) -> Any:
        """The final gRPC status code of the stream."""
        return await self._call.code()

    async def details(self) -> str:
        """The final status message."""
        return str(await self._call.details())

    async def ack(self, resp: Any, names: Iterable[str] = ()) -> None:
        """ACK ``resp`` (SotW: echo its version; delta: its nonce)."""
        if self.delta:
            await self.send(resp.type_url, response_nonce=resp.nonce)
        else:
            await self.send(resp.type_url, version_info=resp.version_info,
                            response_nonce=resp.nonce, resource_names=list(names))


def run_async(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test function on a fresh event loop (no plugin needed)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 60))
    return wrapper


@contextlib.asynccontextmanager
async def serving(cache: SnapshotCache, metrics: XdsMetrics | None = None,
                  limits: XdsLimits = DEFAULTS) -> AsyncIterator[tuple[XdsServer, str]]:
    """An :class:`XdsServer` for ``cache`` on a free loopback port: ``(server, target)``."""
    server = XdsServer(cache, metrics, limits=limits)
    port = await server.start("127.0.0.1:0")
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)
