"""``kxds serve``: the long-running process, wired from its command-line flags.

One source (a manifest directory, or the Kubernetes API with leader election,
Ingress status and Events beside it) publishes states to the controller, which
sets views in the snapshot cache that the xDS server serves; the admin server
exposes metrics, health and debug pages. Everything stops cleanly on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kxds.diagnostics import Diagnostic
from kxds.gateway_status_writer import GatewayStatusWriter
from kxds.gc_policy import gc_paused
from kxds.kube.api import ApiOptions, ApiSource
from kxds.kube.client import KubeClient
from kxds.kube.events import EventRecorder
from kxds.kube.leader import LeaderElector, default_identity
from kxds.kube.limits import LimitCounter, limits_from_flags
from kxds.kube.models import ClusterState
from kxds.kube.status import StatusConfig, StatusWriter
from kxds.supervise import Supervisor
from kxds.translators.config import TranslateConfig
from kxds.xds.tls import TlsFiles

if TYPE_CHECKING:
    from kxds.controller import Controller
    from kxds.xds.admin import AdminServer
    from kxds.xds.cache import SnapshotCache
    from kxds.xds.metrics import XdsMetrics
    from kxds.xds.server import XdsServer
from kxds.xds.limits import XdsLimits

log = logging.getLogger("kxds")

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class Source(Protocol):
    """A source of ClusterStates (manifest directory, Kubernetes API)."""

    async def run(self, publish: Callable[[ClusterState], None]) -> None: ...


def api_enabled(args: argparse.Namespace) -> bool:
    """Whether the flags ask for the API source (instead of manifests)."""
    return bool(getattr(args, "kubeconfig", None) or getattr(args, "in_cluster", False))


def make_source(args: argparse.Namespace, config: TranslateConfig,
                counter: LimitCounter | None = None) -> Source:
    """The source named by the flags; raises SystemExit with a message when none is."""
    if args.manifests is not None:
        from kxds.kube.manifests import ManifestOptions, ManifestSource

        if not args.manifests.is_dir():
            raise SystemExit(f"kxds serve: --manifests {args.manifests}: not a directory")
        options = ManifestOptions(
            limits=limits_from_flags(args),
            max_delete_fraction=getattr(args, "max_delete_fraction", 0.5),
            allow_empty=getattr(args, "allow_empty", False),
            node_port_range=config.node_port_range)
        return ManifestSource(args.manifests, options=options, counter=counter)
    if api_enabled(args):
        client = KubeClient.from_config(args.kubeconfig, in_cluster=args.in_cluster)
        extra = (config.default_certificate,) if config.default_certificate else ()
        return ApiSource(client, ApiOptions(namespace=args.namespace, extra_secrets=extra,
                                            limits=limits_from_flags(args),
                                            secret_namespaces=args.watch_namespaces))
    raise SystemExit("kxds serve: give --manifests DIR, --kubeconfig FILE or --in-cluster")


def limits_from_args(args: argparse.Namespace) -> XdsLimits:
    """The :class:`XdsLimits` the flags of :func:`kxds.cli.add_xds_limit_flags` give."""
    return XdsLimits(
        max_subscribed_names=args.max_subscribed_names,
        max_message_bytes=args.max_message_bytes,
        max_streams_per_client=args.max_streams_per_client,
        max_groups_per_client=args.max_groups_per_client,
        max_groups=args.max_groups,
        nack_retry_initial=args.nack_retry_initial,
        nack_retry_max=max(args.nack_retry_max, args.nack_retry_initial))


def _pod_namespace() -> str:
    """The namespace kxds runs in (downward API variable, or the service account's)."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


class KubeRuntime:
    """The API source's companions: leader election, Ingress status and Events."""

    def __init__(self, source: ApiSource, status: StatusWriter | None,
                 elector: LeaderElector | None, events: EventRecorder | None) -> None:
        self.source = source
        self.status = status
        self.gateway_status: GatewayStatusWriter | None = None
        self.elector = elector
        self.events = events
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def is_leader(self) -> bool:
        return self.elector is None or self.elector.is_leader

    def record_diagnostics(self, diagnostics: Iterable[Diagnostic]) -> None:
        """Give the complete current diagnostics after each rebuild (for Events)."""
        if self.events is not None:
            self.events.record(diagnostics, self.source.last, self.source.store.uid)

    async def stop(self) -> None:
        """Cancel the tasks; the elector releases its Lease on the way out."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def start_status_and_leader(args: argparse.Namespace, source: ApiSource,
                            config: TranslateConfig) -> KubeRuntime:
    """Start leader election, the status writer and the Event recorder (in the running loop)."""
    client = source.client
    runtime = KubeRuntime(source, None, None, None)
    is_leader = lambda: runtime.is_leader  # noqa: E731 - late-bound: elector set below
    publish = None
    if args.publish_service:
        ns, _, name = args.publish_service.partition("/")
        publish = (ns, name) if name else ("default", ns)
    if publish or args.publish_address:
        runtime.status = StatusWriter(
            client, StatusConfig(publish_service=publish, publish_address=args.publish_address),
            config.ingress_class, is_leader=is_leader)
        source.subscribe(runtime.status.update)
    ingress_status = runtime.status
    # Gateway API status: always (the spec asks every implementation for it); the
    # Gateways' addresses are the Ingresses' published ones, when there are some.
    runtime.gateway_status = GatewayStatusWriter(
        client, is_leader=is_leader,
        addresses=ingress_status.published if ingress_status is not None else lambda: None)
    if args.events:
        runtime.events = EventRecorder(client, instance=socket.gethostname(), is_leader=is_leader)
    if args.leader_elect:
        writers = [w for w in (ingress_status, runtime.gateway_status) if w is not None]

        def started() -> None:
            for w in writers:
                w.poke()

        runtime.elector = LeaderElector(
            client, args.lease_namespace or _pod_namespace(), args.lease_name,
            args.leader_identity or default_identity(),
            lease_duration=args.lease_duration, renew_deadline=args.renew_deadline,
            retry_period=args.retry_period, on_started=started)
    for job in (runtime.elector, runtime.status, runtime.gateway_status, runtime.events):
        if job is not None:
            runtime.tasks.append(asyncio.create_task(job.run()))
    if getattr(args, "lb_pool", None):
        # LoadBalancer address allocation (--lb-pool): writes Service status, leader only.
        from kxds.kube.lbpool import ApiStatusWriter, PoolAllocator

        allocator = PoolAllocator(args.lb_pool, ApiStatusWriter(client), is_leader=is_leader)
        source.subscribe(allocator.update)
        runtime.tasks.append(asyncio.create_task(allocator.run()))
    return runtime


@dataclass(slots=True)
class XdsSecurity:
    """What the xDS security flags ask for, checked before anything listens."""

    credentials: Any = None
    """gRPC server credentials (TLS, client certificates required), or None: plaintext."""
    tls: TlsFiles | None = None


def xds_security(args: argparse.Namespace) -> XdsSecurity:
    """Check the TLS flags; raises SystemExit saying why when they are unusable or
    would serve plaintext beyond loopback (fail closed)."""
    from kxds.xds.tls import TlsConfigError, plaintext_refusal, server_credentials

    given = [f for f in ("xds_tls_cert", "xds_tls_key", "xds_client_ca") if getattr(args, f)]
    if given and len(given) != 3:
        raise SystemExit("kxds serve: --xds-tls-cert, --xds-tls-key and --xds-client-ca "
                         "go together (a proxy's identity is checked against the client CA)")
    if not given:
        reason = plaintext_refusal(args.xds_address, args.xds_insecure)
        if reason is not None:
            raise SystemExit(f"kxds serve: refusing plaintext xDS: {reason}")
        if args.xds_insecure:
            log.warning("event=xds_insecure address=%s message=%r", args.xds_address,
                        "plaintext xDS: any client that reaches it can pose as any proxy")
        return XdsSecurity()
    if args.xds_insecure:
        raise SystemExit("kxds serve: --xds-insecure contradicts the --xds-tls-* flags")
    tls = TlsFiles(args.xds_tls_cert, args.xds_tls_key, args.xds_client_ca)
    try:
        return XdsSecurity(server_credentials(tls), tls)
    except TlsConfigError as e:
        raise SystemExit(f"kxds serve: xDS TLS: {e}") from None


STARTUP_COLLECTOR_LIMIT = 60.0
"""Seconds at most that start-up keeps the cyclic garbage collector off (see
:func:`_collector_back_on`)."""


async def serve(args: argparse.Namespace, config: TranslateConfig) -> int:
    """Run the source, the controller, the xDS server and the admin server until signalled.

    Set up in the order that makes a restart quickest: the source starts listing
    first (the longest part of a start with the API source), the xDS port
    listens next (a proxy that connects is held until the first snapshot,
    then answered), and the controller and the rest are set up while both wait.
    """
    security = xds_security(args)
    with ExitStack() as startup, ExitStack() as on_exit:
        # Released at the first snapshot (or the limit), or here when serve stops or
        # fails before: see _collector_back_on.
        startup.enter_context(gc_paused)
        return await _serve(args, config, security, startup, on_exit)


async def _serve(args: argparse.Namespace, config: TranslateConfig, security: XdsSecurity,
                 startup: ExitStack, on_exit: ExitStack) -> int:
    """:func:`serve`; ``on_exit`` undoes what must not outlive it however it ends (the
    API source's watches, started before a set-up that may fail: the xDS port taken)."""
    from kxds.xds.cache import SnapshotCache
    from kxds.xds.metrics import XdsMetrics

    cache = SnapshotCache()
    metrics = XdsMetrics()
    metrics.attach(cache)
    source = make_source(args, config, LimitCounter(metrics.registry))
    if isinstance(source, ApiSource):
        source.start()
        on_exit.callback(source.stop)
    server = await start_xds(args, cache, metrics, security)
    collector = asyncio.create_task(
        _collector_back_on(cache, STARTUP_COLLECTOR_LIMIT, startup))

    controller = _controller(args, config, cache, metrics)
    # A manifest source holding back a mass removal makes /readyz say so (503).
    held = lambda: getattr(source, "held", None)  # noqa: E731 - read at each request
    supervisor = Supervisor(metrics.registry)
    admin = _admin_server(cache, metrics, held, supervisor, controller)
    extra = await start_extra_servers(args, cache, metrics, security, held, supervisor.health)
    kube = _kube_runtime(args, source, config, controller)
    await admin.start(args.admin_address)
    log.info("event=serving xds=%s admin=%s", args.xds_address, args.admin_address)

    stop = _stop_on_signals()
    # A source or controller that raises (a bug) is restarted, never the end of kxds.
    tasks: list[asyncio.Task[None]] = [
        asyncio.create_task(supervisor.run("source", lambda: source.run(controller.publish))),
        asyncio.create_task(supervisor.run("controller", controller.run)),
    ]
    await stop.wait()
    collector.cancel()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    log.info("event=stopping")
    await _stop_servers(kube, server, admin, extra)
    return 0


def _controller(args: argparse.Namespace, config: TranslateConfig, cache: SnapshotCache,
                metrics: XdsMetrics) -> Controller:
    from kxds.controller import Controller

    return Controller(cache, config, holdoff=args.holdoff_ms / 1000,
                      max_holdoff=args.max_holdoff_ms / 1000, metrics=metrics,
                      node_grace=args.group_grace)


def _admin_server(cache: SnapshotCache, metrics: XdsMetrics, held: Callable[[], str | None],
                  supervisor: Supervisor, controller: Controller) -> AdminServer:
    """The admin server on ``--admin-address``: metrics, health and the debug pages."""
    from kxds.xds.admin import AdminServer

    return AdminServer(cache, metrics=metrics, held=held, health=supervisor.health,
                       pages={"/debug/gateway-api": partial(_gateway_page, controller)})


def _kube_runtime(args: argparse.Namespace, source: Source, config: TranslateConfig,
                  controller: Controller) -> KubeRuntime | None:
    """With the API source: leader election, Ingress status and Events beside it, fed
    by the controller after each rebuild."""
    if not isinstance(source, ApiSource):
        return None
    kube = start_status_and_leader(args, source, config)
    controller.on_diagnostics = kube.record_diagnostics
    if kube.gateway_status is not None:
        controller.on_gateway_status = kube.gateway_status.update
    return kube


def _stop_on_signals() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _stop_servers(kube: KubeRuntime | None, server: XdsServer, admin: AdminServer,
                        extra: list[Callable[[], Awaitable[None]]]) -> None:
    """Stop the API companions, then the xDS server, the admin server and the others."""
    if kube is not None:
        await kube.stop()
    await server.stop(1.0)
    await admin.stop()
    for stop_extra in extra:
        await stop_extra()

async def start_xds(args: argparse.Namespace, cache: SnapshotCache, metrics: XdsMetrics,
                    security: XdsSecurity) -> XdsServer:
    """Listen for proxies on ``--xds-address``; they are held until the first snapshot."""
    from kxds.xds.server import XdsServer

    authorizer = None
    if security.credentials is not None:
        from kxds.xds.auth import Authorizer  # with its certificate parser: only for TLS

        authorizer = Authorizer(metrics.registry, args.xds_trust_domain)
    server = XdsServer(cache, metrics=metrics, authorizer=authorizer,
                       limits=limits_from_args(args))
    await server.start(args.xds_address, security.credentials)
    return server


async def _collector_back_on(cache: SnapshotCache, limit: float, startup: ExitStack) -> None:
    """Release start-up's pause of the cyclic garbage collector (:data:`gc_paused`,
    held in ``startup``) once the first snapshot is served, or after ``limit``
    seconds (an API that never answers must not leave it off).

    Start-up allocates the parsed cluster and the first views, nearly all of it
    long-lived and little of it cyclic garbage: collections meanwhile rescan the
    growing heap for nothing (5,000 Services through the API source: 0.35 s of
    CPU). The first rebuild freezes what it kept (:mod:`kxds.controller`), so the
    collections after this one scan only what is new.
    """
    deadline = time.monotonic() + limit
    try:
        while not cache.synced and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        startup.close()


async def start_extra_servers(args: argparse.Namespace, cache: SnapshotCache,
                              metrics: XdsMetrics, security: XdsSecurity,
                              held: Callable[[], str | None] | None = None,
                              health: Callable[[], str] | None = None,
                              ) -> list[Callable[[], Awaitable[None]]]:
    """The metrics-only server and the node certificate issuer, when asked for;
    returns how to stop them."""
    from kxds.nodecert.issuer import start_issuer
    from kxds.xds.admin import AdminServer

    stops: list[Callable[[], Awaitable[None]]] = []
    if args.metrics_address:
        public = AdminServer(cache, metrics=metrics, held=held, debug=False, health=health)
        await public.start(args.metrics_address)
        stops.append(public.stop)
    issuer = await start_issuer(args)
    if issuer is not None:
        stops.append(issuer.stop)
    return stops


def _gateway_page(controller: Controller) -> str:
    """``/debug/gateway-api``: one line per condition of the served edge view."""
    from kxds.translators.gateway_status import status_lines

    status = controller.gateway_status
    lines = list(status_lines(status)) if status is not None else []
    return "\n".join(lines) if lines else "no GatewayClass, Gateway or Route of ours"
