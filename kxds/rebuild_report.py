"""What the controller tells of its rebuilds, in its log and its metrics.

Each problem found in the input is logged once, when it first appears, and once
when it is resolved; the current ones are counted by reason (``kxds_diagnostics``).
Objects left alone as another controller's are logged once, at debug. A view not
published (inconsistent, or its translation failed) is logged and counted by group
(``kxds_snapshots_rejected``). Each node group's diagnostics are kept (their union
is the node views' problems), and its transparent-source fallbacks counted
(``kxds_source_ip_fallbacks``); a forgotten group's series are dropped.
"""

from __future__ import annotations

import contextlib
import logging

from prometheus_client import CollectorRegistry, Counter, Gauge

from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.views import Built

log = logging.getLogger("kxds.controller")


class _Tally:
    """Each group's diagnostics, and their union: node views of a class share one
    tuple, so the union costs the distinct tuples, not the groups."""

    def __init__(self) -> None:
        self._of: dict[str, tuple[Diagnostic, ...]] = {}
        self._uses: dict[int, tuple[tuple[Diagnostic, ...], int]] = {}
        """id of a tuple held -> it, and how many groups hold it."""

    def put(self, group: str, diagnostics: tuple[Diagnostic, ...]) -> None:
        old = self._of.get(group)
        if old is diagnostics:
            return
        self.remove(group)
        self._of[group] = diagnostics
        _, uses = self._uses.get(id(diagnostics), (diagnostics, 0))
        self._uses[id(diagnostics)] = (diagnostics, uses + 1)

    def remove(self, group: str) -> None:
        old = self._of.pop(group, None)
        if old is None:
            return
        _, uses = self._uses[id(old)]
        if uses > 1:
            self._uses[id(old)] = (old, uses - 1)
        else:
            del self._uses[id(old)]

    def union(self) -> set[Diagnostic]:
        out: set[Diagnostic] = set()
        for diagnostics, _ in self._uses.values():
            out.update(diagnostics)
        return out


class RebuildReport:
    """The controller's log of problems and its metrics of them; see the module docs."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.logged: set[Diagnostic] = set()
        """The problems logged as current."""
        self._skipped: set[ObjectRef] = set()
        self._counted: dict[str, tuple[Diagnostic, ...]] = {}
        """Each node group's diagnostics as last counted in ``kxds_source_ip_fallbacks``."""
        self._nodes = _Tally()
        """Each node group's diagnostics as last built (rejected or not), and their union."""
        self._rejected = Counter("kxds_snapshots_rejected", "Snapshots not published "
                                 "(inconsistent, or translation failed)", ["group"],
                                 registry=registry)
        self._diagnostics = Gauge("kxds_diagnostics", "Problems found in the input, by reason",
                                  ["reason"], registry=registry)
        self._fallbacks = Gauge("kxds_source_ip_fallbacks", "Service ports whose backends "
                                "see the node's address instead of the client's they were "
                                "to see, by node group (Fallback diagnostics say why)",
                                ["group"], registry=registry)

    def skipped(self, skipped: tuple[ObjectRef, ...]) -> None:
        """One debug line per object left alone as another controller's, when it
        first is (not every rebuild)."""
        now = set(skipped)
        for ref in sorted(now - self._skipped):
            log.debug("event=skipped_not_ours object=%s reason=another_ingress_class", ref)
        self._skipped = now

    def rejected(self, group: str, built: Built) -> None:
        """``group``'s view ``built`` is not published: its last good one stays."""
        self._rejected.labels(group).inc()
        log.error("event=snapshot_rejected group=%s reason=%r keeping=last_good",
                  group, built.rejected)

    def diagnostics(self, diagnostics: set[Diagnostic]) -> None:
        """Log each problem once, when it first appears; count the current ones (again
        only when they changed: a rebuild may carry thousands)."""
        if diagnostics == self.logged:
            return
        for d in sorted(diagnostics - self.logged):
            log.warning("event=diagnostic %s", d)
        for d in sorted(self.logged - diagnostics):
            log.info("event=diagnostic_resolved %s", d)
        self.logged = diagnostics
        by_reason: dict[str, int] = {}
        for d in diagnostics:
            by_reason[d.reason.value] = by_reason.get(d.reason.value, 0) + 1
        self._diagnostics.clear()
        for reason, count in by_reason.items():
            self._diagnostics.labels(reason).set(count)

    def node_built(self, group: str, built: Built) -> None:
        """A node group's view was built: keep its diagnostics, and count its rejection
        or its fallbacks."""
        self._nodes.put(group, built.diagnostics)
        if built.resources is None:
            self.rejected(group, built)
        elif self._counted.get(group) is not built.diagnostics:  # node views share theirs
            self._counted[group] = built.diagnostics
            self._fallbacks.labels(group).set(
                sum(1 for d in built.diagnostics if d.reason is Reason.FALLBACK))

    def node_diagnostics(self) -> set[Diagnostic]:
        """The problems of every node group's last view."""
        return self._nodes.union()

    def forget(self, group: str) -> None:
        """A group was forgotten: drop what is kept and counted of it."""
        self._counted.pop(group, None)
        self._nodes.remove(group)
        with contextlib.suppress(KeyError):  # never built
            self._fallbacks.remove(group)
        with contextlib.suppress(KeyError):  # never rejected
            self._rejected.remove(group)
