"""What one xDS client may cost kxds, and how a limit being hit is reported.

Every limit is a ``kxds serve`` flag (see :data:`DEFAULTS` for the defaults
and why). A client over a limit is refused with gRPC ``RESOURCE_EXHAUSTED``
and a message naming the limit and its flag (what go-control-plane does with
a stream it will not serve: end it with a status, never half-serve it); each
refusal counts in ``kxds_xds_limit_hits_total{limit=...}``. The log line is
written once per limit and client, then at most once per
:data:`LOG_QUIET_SECONDS` with the number of refusals it left out, so a client
that reconnects in a loop cannot flood the log.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the command line reads the defaults without loading metrics
    from kxds.xds.metrics import XdsMetrics

log = logging.getLogger("kxds.xds.limits")

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class XdsLimits:
    """The caps on xDS clients (``kxds serve`` flags of the same names)."""

    max_subscribed_names: int = 10_000
    """Per stream and type, distinct resource names subscribed (and, on delta,
    ``initial_resource_versions`` entries). Envoy names one endpoint assignment
    per EDS cluster, one route table per listener and one secret per
    certificate. An edge's clusters are the Service ports it routes to, and
    Kubernetes' scalability threshold is 10,000 Services per cluster; a
    per-node proxy's are at most two per nodePort (2,768 in the default
    range). At about 180 bytes a name, a stream holds at most ~9 MB of names."""
    max_message_bytes: int = 4 * MiB
    """Largest request kxds reads (gRPC's own default, made explicit): Envoy's
    largest request (50,000 EDS names, or a delta reconnect's versions of them)
    is about 2-3 MB. gRPC refuses anything over twice this before kxds reads it."""
    max_streams_per_client: int = 32
    """Open streams per client (see :mod:`kxds.xds.admission`): an Envoy uses
    one ADS stream, or up to five per-type ones, twice during a hot restart."""
    max_groups_per_client: int = 16
    """Groups (``edge/<cluster>``, ``node/<name>``) one client may have streams
    in, or have left within the grace period: an Envoy is in one group."""
    max_groups: int = 10_000
    """Groups in all: twice Kubernetes' limit of 5,000 nodes, each of which
    has a ``node/<name>`` group, plus the edge groups."""
    nack_retry_initial: float = 1.0
    """Seconds before a resource rejected for a passing reason is sent again."""
    nack_retry_max: float = 60.0
    """The retry delay doubles up to this many seconds."""


DEFAULTS = XdsLimits()

LOG_QUIET_SECONDS = 600.0
"""After logging a limit hit for a client, repeats are only counted this long."""
MAX_LOGGED_CLIENTS = 1024
"""How many (limit, client) pairs the log suppression remembers."""


class LimitReporter:
    """Counts every limit hit; logs the first per limit and client (then rarely)."""

    def __init__(self, metrics: XdsMetrics | None) -> None:
        self.metrics = metrics
        self._last: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()

    def hit(self, limit: str, client: str, message: str, now: float | None = None) -> bool:
        """Record one refusal by ``limit`` of ``client``; True when it was logged."""
        if self.metrics is not None:
            self.metrics.limit_hits.labels(limit).inc()
        now = time.monotonic() if now is None else now
        key = (limit, client)
        logged_at, quiet = self._last.pop(key, (None, 0))
        if logged_at is not None and now - logged_at < LOG_QUIET_SECONDS:
            self._last[key] = (logged_at, quiet + 1)
            return False
        self._last[key] = (now, 0)
        while len(self._last) > MAX_LOGGED_CLIENTS:
            self._last.popitem(last=False)
        log.warning("event=limit_hit limit=%s client=%s message=%r suppressed_since_last=%d",
                    limit, client[:200], message, quiet)
        return True
