"""kxds's limits on its input, and how hitting one is reported.

Each limit is a ``kxds serve`` flag (README, "Limits"). Input over a limit is
skipped with a diagnostic naming it; the first hit of each limit is also
logged as a warning (later ones at debug level, so a hostile input cannot
flood the log) and every hit is counted in ``kxds_input_limit_hits_total``.
The Kubernetes API's own limits (ports and endpoints per EndpointSlice, name
rules) are checked by the parser as the API server checks them; they are not
flags, since the API server would refuse anything over them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from kxds.diagnostics import escape

log = logging.getLogger("kxds.kube.limits")

MAX_ENDPOINTS_PER_SLICE = 1000
"""discovery.k8s.io/v1 EndpointSlice ``endpoints``: "a maximum of 1000 endpoints"."""
MAX_PORTS_PER_SLICE = 100
"""EndpointSlice ``ports``: "Each slice may include a maximum of 100 ports"."""
MAX_ADDRESSES_PER_ENDPOINT = 100
"""Endpoint ``addresses``: "at least one address but no more than 100"."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The input limits; the defaults are the flags' defaults."""

    max_manifest_bytes: int = 32 * 1024 * 1024
    """A manifest file larger than this is reported and skipped (``--max-manifest-bytes``)."""
    max_document_nodes: int = 1_000_000
    """YAML nodes in one document, each alias counted as a copy of what it names
    (``--max-document-nodes``): a few hundred bytes of nested aliases can stand
    for billions of nodes; such a document is refused before it is built."""
    max_service_ports: int = 100
    """Ports of one Service (``--max-service-ports``). The Service API sets no
    maximum, but the EndpointSlices of a Service carry its ports, at most 100
    per slice; every port may become an Envoy listener or cluster, so the count is bounded."""


def limits_from_flags(args: Any) -> Limits:
    """The limits of the ``--max-*`` flags in an argparse namespace (defaults when absent)."""
    d = Limits()
    return Limits(
        max_manifest_bytes=getattr(args, "max_manifest_bytes", d.max_manifest_bytes),
        max_document_nodes=getattr(args, "max_document_nodes", d.max_document_nodes),
        max_service_ports=getattr(args, "max_service_ports", d.max_service_ports))


class LimitCounter:
    """Counts limit hits; logs the first hit of each limit as a warning."""

    def __init__(self, registry: Any | None = None) -> None:
        self._lock = threading.Lock()
        self._logged: set[str] = set()
        self.hits: dict[str, int] = {}
        """Hits per limit name since start (the metric's values, for tests and debugging)."""
        self._counter: Any = None
        if registry is not None:
            from prometheus_client import Counter

            self._counter = Counter("kxds_input_limit_hits", "Input refused by one of "
                                    "kxds's input limits", ["limit"], registry=registry)

    def hit(self, limit: str, subject: str, detail: str) -> None:
        """Input ``subject`` ran into ``limit`` (a flag name without dashes)."""
        with self._lock:
            self.hits[limit] = self.hits.get(limit, 0) + 1
            first = limit not in self._logged
            self._logged.add(limit)
        if self._counter is not None:
            self._counter.labels(limit).inc()
        level = logging.WARNING if first else logging.DEBUG
        log.log(level, "event=limit_hit limit=%s subject=%s detail=%s%s", limit,
                escape(subject), escape(detail),
                " (further hits: debug level, counted in kxds_input_limit_hits_total)"
                if first else "")


