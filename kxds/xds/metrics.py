"""Prometheus metrics of the xDS server, in a registry of their own.

Each :class:`XdsMetrics` owns a ``CollectorRegistry`` so that several servers
(in tests) never collide in the global registry. Names follow the Prometheus
conventions; push latency is measured from ``set_view`` to Envoy's ACK, like
Istio's ``pilot_proxy_convergence_time``.
"""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from kxds.envoy.resource import SHORT_NAMES, TYPE_ORDER
from kxds.xds.cache import SnapshotCache, View

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def short(type_url: str) -> str:
    """The label value for a type URL (``clusters``, ``endpoints``, ...)."""
    return SHORT_NAMES.get(type_url, "unknown")


class XdsMetrics:
    """All metrics kxds exposes on ``/metrics``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.connected = Gauge("kxds_xds_connected_proxies", "Connected xDS streams",
                               ["group", "protocol"], registry=r)
        self.responses = Counter("kxds_xds_responses", "xDS responses sent",
                                 ["type", "protocol"], registry=r)
        self.response_bytes = Counter("kxds_xds_response_bytes", "Bytes of xDS responses sent",
                                      ["type", "protocol"], registry=r)
        self.resources_sent = Counter("kxds_xds_resources_sent", "Resources sent in responses",
                                      ["type", "protocol"], registry=r)
        self.nacks = Counter("kxds_xds_nacks", "NACKs received", ["type"], registry=r)
        self.acks = Counter("kxds_xds_acks", "ACKs received", ["type"], registry=r)
        self.bad_requests = Counter("kxds_xds_bad_requests", "Requests ignored or refused",
                                    ["reason"], registry=r)
        self.limit_hits = Counter("kxds_xds_limit_hits",
                                  "Requests or streams refused by a limit (--max-* flags)",
                                  ["limit"], registry=r)
        self.nack_retries = Counter("kxds_xds_nack_retries",
                                    "Rejected resources sent again after a passing error",
                                    ["type"], registry=r)
        self.convergence = Histogram(
            "kxds_proxy_convergence_time_seconds",
            "Delay from a view being set to the proxy ACKing it, per type",
            ["type"], buckets=_LATENCY_BUCKETS, registry=r)
        self.view_resources = Gauge("kxds_view_resources", "Resources in a group's view",
                                    ["group", "type"], registry=r)
        self.view_bytes = Gauge("kxds_view_bytes", "Serialized bytes of a group's view",
                                ["group"], registry=r)
        self._observed: dict[str, tuple[int, ...]] = {}
        """Each group's resource counts and bytes as last set on the gauges."""
        # Each stream's responses and ACKs count into a few series (per type and
        # protocol): found once, not by label on every one (3 against 1 microseconds).
        self._sent: dict[tuple[str, str], tuple[Counter, Counter, Counter]] = {}
        self._acked: dict[str, tuple[Counter, Histogram]] = {}
        self.rebuilds = Counter("kxds_rebuilds", "Configuration rebuilds", registry=r)
        self.rebuild_seconds = Histogram("kxds_rebuild_duration_seconds",
                                         "Time to translate and build one configuration",
                                         buckets=_LATENCY_BUCKETS, registry=r)
        self.rebuild_seq = Gauge("kxds_rebuild_sequence", "Sequence number of the last rebuild",
                                 registry=r)
        self.loop_tasks = Gauge("kxds_event_loop_tasks",
                                "Tasks alive on kxds's event loop (streams, sources, servers)",
                                registry=r)
        self.loop_tasks.set_function(_loop_tasks)

    def attach(self, cache: SnapshotCache) -> None:
        """Follow the cache's views (resources and bytes per group)."""
        cache.view_listeners.append(self.observe_view)
        cache.removal_listeners.append(self.forget_group)
        for group, view in cache:
            self.observe_view(group, view)

    def observe_view(self, group: str, view: View) -> None:
        """Record the size of a group's new view (the gauges are set only when it differs
        from the last one's: a nodePort moved sets 500 node views of the same size)."""
        sizes = (*(len(view.of_type(t)) for t in TYPE_ORDER), view.byte_size())
        if self._observed.get(group) == sizes:
            return
        self._observed[group] = sizes
        for type_url, count in zip(TYPE_ORDER, sizes, strict=False):
            self.view_resources.labels(group, short(type_url)).set(count)
        self.view_bytes.labels(group).set(sizes[-1])

    def forget_group(self, group: str) -> None:
        """A group's view was removed: drop its series, so label sets do not pile up."""
        self._observed.pop(group, None)
        series: list[tuple[Gauge, tuple[str, ...]]] = [
            (self.view_resources, (group, short(t))) for t in TYPE_ORDER]
        series += [(self.view_bytes, (group,))]
        series += [(self.connected, (group, p)) for p in ("sotw", "delta")]
        for metric, labels in series:
            with contextlib.suppress(KeyError):  # never observed
                metric.remove(*labels)

    def observe_rebuild(self, seconds: float, seq: int | None = None) -> None:
        """The controller's hook: one rebuild took ``seconds``."""
        self.rebuilds.inc()
        self.rebuild_seconds.observe(seconds)
        if seq is not None:
            self.rebuild_seq.set(seq)

    def observe_response(self, type_url: str, protocol: str, nbytes: int, count: int) -> None:
        """One response was written."""
        series = self._sent.get((type_url, protocol))
        if series is None:
            labels = (short(type_url), protocol)
            series = self._sent[(type_url, protocol)] = (
                self.responses.labels(*labels), self.response_bytes.labels(*labels),
                self.resources_sent.labels(*labels))
        responses, sent_bytes, resources = series
        responses.inc()
        sent_bytes.inc(nbytes)
        resources.inc(count)

    def observe_ack(self, type_url: str, seconds: float) -> None:
        """A proxy ACKed a response ``seconds`` after its view was set."""
        series = self._acked.get(type_url)
        if series is None:
            label = short(type_url)
            series = self._acked[type_url] = (self.acks.labels(label),
                                              self.convergence.labels(label))
        series[0].inc()
        series[1].observe(seconds)

    def render(self) -> bytes:
        """The text exposition format."""
        return bytes(generate_latest(self.registry))


def _loop_tasks() -> float:
    """Read at scrape time, on the event loop (the admin server runs there)."""
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # scraped from outside a running loop (a test)
        return 0.0
