"""Building one view: a ClusterState translated, checked and built into resources.

:func:`build_edge` builds the view every edge group shares and
:func:`build_node` the view of one per-node proxy. Both are pure but for the
:class:`ViewMemo` the caller passes, which keeps what the next build of the
same view reuses (see :mod:`kxds.incremental`), and both run in a worker thread.

A snapshot that fails the consistency check (:func:`kxds.ir.consistency_problems`),
or whose translation raises (a bug), is returned as rejected: the caller
keeps serving the last good one.

The garbage collector's part is the controller's (see :mod:`kxds.controller`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import operator
from collections.abc import Callable
from dataclasses import dataclass, field

from kxds.diagnostics import Diagnostic, ObjectRef
from kxds.envoy.build import BuildCache, build_resources
from kxds.envoy.resource import Resources
from kxds.errors import InconsistentSnapshotError
from kxds.incremental import Store
from kxds.ir import IR, consistency_problems
from kxds.kube.models import ClusterState
from kxds.translators.config import NodeInfo, TranslateConfig
from kxds.translators.edge import translate
from kxds.translators.gateway_status import GatewayApiStatus
from kxds.translators.node import translate_node
from kxds.translators.translation import Translation

log = logging.getLogger("kxds.views")


@dataclass(frozen=True, slots=True)
class Built:
    """The outcome of building one group's view."""

    resources: Resources | None
    """None when the snapshot was rejected."""
    diagnostics: tuple[Diagnostic, ...] = ()
    rejected: str | None = None
    """Why the snapshot was not published (consistency problems or a bug)."""
    bounds: frozenset[dt.datetime] = frozenset()
    """When a certificate check of the view may change its verdict (see
    :attr:`~kxds.translators.translation.Translation.bounds`)."""
    skipped: tuple[ObjectRef, ...] = ()
    """Objects left alone as another controller's (see ``Translation.skipped``)."""
    gateway_status: GatewayApiStatus | None = None
    """The Gateway API status the edge view computed (None for node views)."""

    def with_resources(self, resources: Resources | None) -> Built:
        """This outcome with ``resources`` instead: ``dataclasses.replace`` at half its
        cost (a fleet's change makes one per node view; every field is named here, a
        test checks that none is missing)."""
        return Built(resources, self.diagnostics, self.rejected, self.bounds, self.skipped,
                     self.gateway_status)


@dataclass(slots=True)
class ViewMemo:
    """What one view's rebuilds reuse: its query store (the translation, see
    :mod:`kxds.incremental`) and its last build (the resources, see
    :class:`~kxds.envoy.build.BuildCache`). Owned by the view: dropped with it."""

    store: Store = field(default_factory=Store)
    build: BuildCache = field(default_factory=BuildCache)


def _checked(ir: IR, memo: ViewMemo | None) -> Resources:
    """The resources of ``ir``, once it passed the consistency check.

    The check is skipped when only load assignments changed since the last
    build, under the same names: every name is where it was.
    """
    last = memo.build.last if memo is not None else None
    if last is None or not _same_names(last[0], ir):
        # The last build's IR passed: what it shares with this one is not checked again.
        problems = consistency_problems(ir, last[0] if last is not None else None)
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise InconsistentSnapshotError("; ".join(problems[:5]) + more)
    return build_resources(ir, memo.build if memo is not None else None)


def _same_names(old: IR, new: IR) -> bool:
    """Whether ``new`` is ``old`` but for the contents of its load assignments."""
    return (new.clusters is old.clusters and new.listeners is old.listeners
            and new.route_tables is old.route_tables and new.secrets is old.secrets
            and len(new.load_assignments) == len(old.load_assignments)
            and all(a.cluster == b.cluster for a, b in itertools.compress(
                zip(new.load_assignments, old.load_assignments, strict=True),
                map(operator.is_not, new.load_assignments, old.load_assignments))))


def build_edge(state: ClusterState, config: TranslateConfig,
               memo: ViewMemo | None = None) -> Built:
    """Translate and build the edge view (pure but for ``memo``; runs in a worker thread)."""
    return _build(lambda: translate(state, config, memo.store if memo else None), state, memo)


def build_node(state: ClusterState, config: TranslateConfig, node: NodeInfo,
               memo: ViewMemo | None = None) -> Built:
    """Translate and build one per-node view (pure but for ``memo``; runs in a worker thread).

    With ``memo``, a state that changed nothing a per-node view reads (a
    ClusterIP Service's EndpointSlice, an Ingress) gives the last view again
    without translating: every node's view is rebuilt on every change, so this
    is what keeps per-node proxies cheap in a busy cluster.
    """
    return _build(lambda: translate_node(state, config, node, memo.store if memo else None),
                  state, memo)


def _build(run: Callable[[], Translation], state: ClusterState,
           memo: ViewMemo | None) -> Built:
    try:
        translation = run()
        return Built(_checked(translation.ir, memo), translation.diagnostics,
                     bounds=translation.bounds, skipped=translation.skipped,
                     gateway_status=translation.gateway_status)
    except InconsistentSnapshotError as e:
        return Built(None, state.problems, rejected=f"inconsistent: {e}")
    except Exception as e:  # a translator bug: keep serving the last good view
        log.exception("event=translation_failed")
        return Built(None, state.problems, rejected=f"{type(e).__name__}: {e}")
