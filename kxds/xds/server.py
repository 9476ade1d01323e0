"""The gRPC xDS server: ADS and the per-type services, SotW and delta.

One asyncio task pair per stream (a reader taking requests, a writer sending
what the stream's state machine decides), so a slow client only ever blocks
its own writer. The writer computes replies from the *latest* view when it is
ready to write: nothing queues up behind a client that does not read.

Resources go out as ``Any(type_url, value=resource.body)``: the bytes the
builders serialized once are reused for every stream and every group.

What a client may cost is capped (:mod:`kxds.xds.limits`): a request over
``max_message_bytes`` or a subscription over ``max_subscribed_names`` ends its
stream, and :mod:`kxds.xds.admission` refuses streams beyond the per-client and
global caps, all with ``RESOURCE_EXHAUSTED``. gRPC itself drops a request over
twice ``max_message_bytes`` before it is read (same status, gRPC's message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from envoy.service.cluster.v3 import cds_pb2_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.endpoint.v3 import eds_pb2_grpc
from envoy.service.listener.v3 import lds_pb2_grpc
from envoy.service.route.v3 import rds_pb2_grpc
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import any_pb2

from kxds.envoy.resource import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, TYPE_ORDER
from kxds.xds.admission import Admission, ClientKey, peer_client
from kxds.xds.auth import Authorizer, IdentityRefused, SecretFilter
from kxds.xds.cache import SnapshotCache, View, Watch
from kxds.xds.delta import DeltaStream
from kxds.xds.identity import InvalidNodeError, NodeIdentity, node_identity
from kxds.xds.limits import DEFAULTS, LimitReporter, XdsLimits
from kxds.xds.metrics import XdsMetrics
from kxds.xds.protocol import BadRequest, ProtocolStream, Reply
from kxds.xds.sotw import SotwStream

log = logging.getLogger("kxds.xds.server")

StreamFactory = Callable[[NodeIdentity, tuple[str, ...]], ProtocolStream]


def sotw_response(reply: Reply) -> Any:
    """A ``DiscoveryResponse`` for ``reply`` (resource bytes reused, not re-serialized)."""
    return discovery_pb2.DiscoveryResponse(
        version_info=reply.version, type_url=reply.type_url, nonce=reply.nonce,
        resources=[any_pb2.Any(type_url=r.type_url, value=r.body) for r in reply.resources])


def delta_response(reply: Reply) -> Any:
    """A ``DeltaDiscoveryResponse`` for ``reply``."""
    return discovery_pb2.DeltaDiscoveryResponse(
        system_version_info=reply.version, type_url=reply.type_url, nonce=reply.nonce,
        removed_resources=reply.removed,
        resources=[discovery_pb2.Resource(
            name=r.name, version=r.version,
            resource=any_pb2.Any(type_url=r.type_url, value=r.body)) for r in reply.resources])


class _Stream:
    """The async shell around one protocol state machine."""

    def __init__(self, server: XdsServer, machine: ProtocolStream, watch: Watch,
                 context: Any, fixed_type: str | None, client: str) -> None:
        self.server = server
        self.client = client
        self.machine = machine
        self.watch = watch
        self.context = context
        self.fixed_type = fixed_type
        self.done = False
        self.fatal: BadRequest | None = None

    def take(self, req: Any) -> bool:
        """Feed one request; False when the stream must end."""
        size, cap = req.ByteSize(), self.server.limits.max_message_bytes
        if size > cap:
            return self._refuse(BadRequest(
                "message_bytes", f"a request of {size} bytes; kxds reads at most {cap} "
                "(--max-message-bytes)", fatal=True, code="RESOURCE_EXHAUSTED"))
        if self.fixed_type is not None:
            if not req.type_url:
                req.type_url = self.fixed_type
            elif req.type_url != self.fixed_type:
                self.fatal = self.machine.bad(BadRequest(
                    "wrong_type", f"type {req.type_url!r} on the {self.fixed_type!r} service",
                    fatal=True))
                return False
        if log.isEnabledFor(logging.DEBUG):
            log.debug("event=request node=%s type=%s nonce=%s version=%s names=%d error=%s",
                      self.machine.identity.node_id, req.type_url, req.response_nonce,
                      getattr(req, "version_info", ""),
                      len(getattr(req, "resource_names", ()))
                      + len(getattr(req, "resource_names_subscribe", ())),
                      req.HasField("error_detail"))
        bad = self.machine.on_request(req)
        if bad is not None and bad.fatal:
            return self._refuse(bad)
        self.watch.notify()
        return True

    def _refuse(self, bad: BadRequest) -> bool:
        """End the stream for ``bad`` (a limit: counted, logged once per client)."""
        self.fatal = bad
        if bad.code == "RESOURCE_EXHAUSTED":
            self.server.limit_log.hit(bad.reason, self.client, bad.message)
        return False

    async def read(self, requests: AsyncIterator[Any]) -> None:
        try:
            async for req in requests:
                if not self.take(req):
                    break
                del req  # not held while waiting for the next one
        finally:
            self.done = True
            self.watch.event.set()

    async def write(self) -> None:
        encode = sotw_response if self.machine.protocol == "sotw" else delta_response
        while True:
            wake_at = self.machine.wake_at
            timeout = None if wake_at is None else max(0.0, wake_at - time.monotonic())
            with contextlib.suppress(TimeoutError):  # on timeout a held reply is due
                async with asyncio.timeout(timeout):
                    await self.watch.event.wait()
            self.watch.event.clear()
            if self.done:
                return
            await self._flush(encode)

    async def _flush(self, encode: Callable[[Reply], Any]) -> None:
        """Send what the latest view calls for. Its own frame: once it returns, an idle
        stream holds neither a view nor its last response message."""
        view = self.server.view(self.machine.identity)
        if view is None:
            return  # not synced yet, or the group's view is still being built
        for reply in self.machine.next_replies(view):
            message = encode(reply)
            await self.context.write(message)
            self.server.metrics.observe_response(reply.type_url, self.machine.protocol,
                                                 message.ByteSize(), len(reply.resources))
            log.debug("event=response node=%s type=%s nonce=%s resources=%d removed=%d",
                      self.machine.identity.node_id, reply.type_url, reply.nonce,
                      len(reply.resources), len(reply.removed))


class XdsServer:
    """Serves the cache's views over ADS and the per-type xDS services."""

    def __init__(self, cache: SnapshotCache, metrics: XdsMetrics | None = None,
                 *, authorizer: Authorizer | None = None, limits: XdsLimits = DEFAULTS,
                 client_key: ClientKey = peer_client) -> None:
        self.cache = cache
        self.metrics = metrics if metrics is not None else XdsMetrics()
        self.authorizer = authorizer
        """With TLS: checks each stream's claims against its client certificate."""
        self.secrets = SecretFilter()
        cache.removal_listeners.append(self.secrets.forget)
        self.limits = limits
        self.client_key = client_key
        """Who opened a stream, for the per-client caps (see :mod:`kxds.xds.admission`)."""
        self.admission = Admission(cache, limits)
        self.limit_log = LimitReporter(self.metrics)
        self._server: Any = None
        self._streams: set[asyncio.Task[Any]] = set()

    def view(self, identity: NodeIdentity) -> View | None:
        """The view ``identity`` is served now (per-node proxies never get Secrets)."""
        view = self.cache.view(identity.group)
        return None if view is None else self.secrets.view(identity, view)

    async def start(self, address: str, credentials: Any = None) -> int:
        """Listen on ``host:port`` (port 0 picks a free one); returns the bound port.

        With ``credentials`` (:func:`kxds.xds.tls.server_credentials`) the port
        speaks TLS and requires client certificates; give an :class:`Authorizer`
        too, so that streams are served what their certificate allows.
        """
        server = grpc.aio.server(options=[
            ("grpc.max_send_message_length", 256 * 1024 * 1024),
            # Over the limit kxds refuses (and counts) a request itself; this is
            # the hard ceiling gRPC enforces before reading one.
            ("grpc.max_receive_message_length", 2 * self.limits.max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ])
        _register(server, self)
        if credentials is not None:
            port = int(server.add_secure_port(address, credentials))
        else:
            port = int(server.add_insecure_port(address))
        if port == 0:
            raise OSError(f"cannot listen on {address}")
        await server.start()
        self._server = server
        log.info("event=xds_listening address=%s port=%d tls=%s", address, port,
                 credentials is not None)
        return port

    async def stop(self, grace: float | None = 1.0) -> None:
        """Stop accepting streams; end the open ones after ``grace`` seconds."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def serve(self, requests: AsyncIterator[Any], context: Any, protocol: str,
                    types: tuple[str, ...], fixed_type: str | None = None) -> None:
        """Run one stream to its end."""
        iterator = aiter(requests)
        try:
            first = await anext(iterator)
        except StopAsyncIteration:
            return
        identity = await self._identify(first, context)
        client = self.client_key(context, identity)
        refused = self.admission.admit(client, identity.group)
        if refused is not None:
            self.limit_log.hit(refused.reason, client, refused.message)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused.message)
        self.admission.opened(client, identity.group)
        factory = SotwStream if protocol == "sotw" else DeltaStream
        machine = factory(identity, self.cache.nodes, self.metrics, types, self.limits)
        watch = self.cache.watch(identity)
        stream = _Stream(self, machine, watch, context, fixed_type, client)
        gauge = self.metrics.connected.labels(identity.group, protocol)
        gauge.inc()
        log.info("event=stream_open node=%s group=%s protocol=%s service=%s",
                 identity.node_id, identity.group, protocol, fixed_type or "ads")
        failed = False
        try:
            taken = stream.take(first)
            del first  # an idle stream should not keep its first request (names, node)
            if taken:
                async with asyncio.TaskGroup() as tasks:
                    writer = tasks.create_task(stream.write())
                    await stream.read(iterator)
                    writer.cancel()
        except Exception:  # a bug, or the transport failing under us: end this stream only
            log.exception("event=stream_failed node=%s group=%s protocol=%s",
                          identity.node_id, identity.group, protocol)
            failed = True
        finally:
            gauge.dec()
            self.cache.cancel(watch)
            self.admission.closed(client, identity.group)
            machine.close()
            await _close(iterator)
            log.info("event=stream_closed node=%s group=%s protocol=%s",
                     identity.node_id, identity.group, protocol)
        if stream.fatal is not None:
            await context.abort(grpc.StatusCode[stream.fatal.code], stream.fatal.message)
        if failed:
            await context.abort(grpc.StatusCode.INTERNAL, "xDS stream failed; see kxds logs")

    async def _identify(self, first: Any, context: Any) -> NodeIdentity:
        try:
            if not first.HasField("node"):
                raise InvalidNodeError("the first request of a stream must carry the node")
            identity = node_identity(first.node)
        except InvalidNodeError as err:
            log.warning("event=bad_node node=%r message=%r", first.node.id[:64], str(err))
            self.metrics.bad_requests.labels("bad_node").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            raise  # abort raises; this keeps type checkers content
        if self.authorizer is None:
            return identity
        try:
            return self.authorizer.check(identity, context.auth_context(), context.peer())
        except IdentityRefused as err:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(err))
            raise


async def _close(iterator: AsyncIterator[Any]) -> None:
    """End gRPC's request iterator: it holds the last request it read (up to
    ``--max-message-bytes``) for as long as anything keeps the finished call,
    such as the exception an abort raises; a flood of refused large requests
    then kept its memory."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


def _handler(server: XdsServer, protocol: str, types: tuple[str, ...],
             fixed: str | None) -> Callable[..., Any]:
    async def handle(self: object, requests: AsyncIterator[Any], context: Any) -> None:
        await server.serve(requests, context, protocol, types, fixed)
    return handle


_PER_TYPE = (
    (CLUSTER, cds_pb2_grpc, "ClusterDiscoveryService", "Clusters"),
    (ENDPOINT, eds_pb2_grpc, "EndpointDiscoveryService", "Endpoints"),
    (LISTENER, lds_pb2_grpc, "ListenerDiscoveryService", "Listeners"),
    (ROUTE, rds_pb2_grpc, "RouteDiscoveryService", "Routes"),
    (SECRET, sds_pb2_grpc, "SecretDiscoveryService", "Secrets"),
)


def _register(grpc_server: Any, server: XdsServer) -> None:
    """Add ADS and the five per-type services, built on xds-protos' servicers."""
    ads = type("Ads", (ads_pb2_grpc.AggregatedDiscoveryServiceServicer,), {
        "StreamAggregatedResources": _handler(server, "sotw", TYPE_ORDER, None),
        "DeltaAggregatedResources": _handler(server, "delta", TYPE_ORDER, None),
    })
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads(), grpc_server)
    for type_url, module, service, suffix in _PER_TYPE:
        base = getattr(module, f"{service}Servicer")
        servicer = type(service, (base,), {
            f"Stream{suffix}": _handler(server, "sotw", (type_url,), type_url),
            f"Delta{suffix}": _handler(server, "delta", (type_url,), type_url),
        })
        getattr(module, f"add_{service}Servicer_to_server")(servicer(), grpc_server)
