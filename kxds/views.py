"""Building one view: a ClusterState translated, checked and built into resources.

:func:`build_edge` builds the view every edge group shares and
:func:`build_node` the view of one per-node proxy. Both are pure but for the
:class:`ViewMemo` the caller passes, which keeps what the next build of the
same view reuses (see :mod:`kxds.memo`), and both run in a worker thread.

A snapshot that fails the consistency check (:func:`kxds.ir.consistency_problems`),
or whose translation raises (a bug), is returned as rejected: the caller
keeps serving the last good one.

A rebuild creates many short-lived objects and few cycles: the cyclic
garbage collector is paused while it translates and builds (a full
collection over a large snapshot costs more than the translation), and runs
again afterwards.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from kxds.diagnostics import Diagnostic
from kxds.envoy import build_resources, endpoint_resource
from kxds.envoy.resource import ENDPOINT, Resource, Resources
from kxds.errors import InconsistentSnapshotError
from kxds.ir import IR, consistency_problems
from kxds.kube.models import ClusterState
from kxds.memo import TranslationMemo
from kxds.translators.config import NodeInfo, TranslateConfig
from kxds.translators.edge import translate
from kxds.translators.node import NodeInputs, patch_node, translate_node
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


class _GcPause:
    """Pauses the cyclic garbage collector while any rebuild runs (builds may
    overlap in worker threads; the collector is process-wide, so it comes back
    when the last one ends, and only if it was on before the first)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._active == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._active += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0 and self._was_enabled:
                gc.enable()


gc_paused = _GcPause()
"""Held around every translate + build (also by the benchmark, to measure the same)."""


@dataclass(slots=True)
class ViewMemo:
    """What one view's rebuilds reuse from the previous one (see :mod:`kxds.memo`)."""

    translation: TranslationMemo = field(default_factory=TranslationMemo)
    resources: TranslationMemo = field(default_factory=TranslationMemo)
    ir: IR | None = None
    """The IR of the last published build, and its resources."""
    built: Resources | None = None
    node_last: _NodeBuild | None = None
    """A per-node view's last build and what it was built from (see :func:`build_node`)."""


@dataclass(frozen=True, slots=True)
class _NodeBuild:
    inputs: NodeInputs
    state: ClusterState
    translation: Translation
    built: Built


def _checked(ir: IR, memo: TranslationMemo | None = None) -> Resources:
    problems = consistency_problems(ir)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise InconsistentSnapshotError("; ".join(problems[:5]) + more)
    return build_resources(ir, memo)


def _patched(old: IR | None, built: Resources | None, new: IR) -> Resources | None:
    """``built`` with the endpoints of ``new``, when ``new`` differs from ``old`` only
    in the contents of EDS load assignments; None otherwise.

    An EndpointSlice change (see :func:`kxds.translators.edge.translate`) gives an
    IR that shares every other tuple with the last one: then only the changed
    ClusterLoadAssignments are serialized, every other type keeps its very
    mapping (the cache recognizes it by identity), and no consistency check
    is needed, since every name is where it was.
    """
    if old is None or built is None:
        return None
    if new is old:
        return built
    if not (new.clusters is old.clusters and new.listeners is old.listeners
            and new.route_tables is old.route_tables and new.secrets is old.secrets
            and len(new.load_assignments) == len(old.load_assignments)):
        return None
    endpoints = built.get(ENDPOINT, {})
    changed: dict[str, Resource] = {}
    for after, before in zip(new.load_assignments, old.load_assignments, strict=True):
        if after is before:
            continue
        if after.cluster != before.cluster or after.cluster not in endpoints:
            return None  # renamed, or a STRICT_DNS cluster that carries its endpoints
        changed[after.cluster] = endpoint_resource(after)
    return {**built, ENDPOINT: {**endpoints, **changed}}


def _resources(ir: IR, memo: ViewMemo | None) -> Resources:
    """The resources of ``ir``: patched from the last build when only endpoints moved."""
    if memo is None:
        return _checked(ir)
    resources = _patched(memo.ir, memo.built, ir)
    if resources is None:
        resources = _checked(ir, memo.resources)
    memo.ir, memo.built = ir, resources
    return resources


def build_edge(state: ClusterState, config: TranslateConfig,
               memo: ViewMemo | None = None) -> Built:
    """Translate and build the edge view (pure but for ``memo``; runs in a worker thread)."""
    return _build(lambda: translate(state, config, memo.translation if memo else None), state, memo)


def build_node(state: ClusterState, config: TranslateConfig, node: NodeInfo,
               memo: ViewMemo | None = None) -> Built:
    """Translate and build one per-node view (pure but for ``memo``; runs in a worker thread).

    With ``memo``, a state that changed nothing a per-node view reads (a
    ClusterIP Service's EndpointSlice, an Ingress) gives the last view again
    without translating: every node's view is rebuilt on every change, so this
    is what keeps per-node proxies cheap in a busy cluster.
    """
    if memo is None:
        return _build(lambda: translate_node(state, config, node), state, memo)
    inputs, last = NodeInputs.of(state, config, node), memo.node_last
    if last is not None and inputs.same(last.inputs):
        return last.built
    translations: list[Translation] = []

    def run() -> Translation:
        changed = inputs.changed_slices(last.inputs) if last is not None else None
        patched = None if last is None or changed is None else patch_node(
            last.translation, last.state, state, config, node, changed)
        translations.append(patched or translate_node(state, config, node))
        return translations[0]

    built = _build(run, state, memo)
    if built.resources is not None:
        memo.node_last = _NodeBuild(inputs, state, translations[0], built)
    return built


def _build(run: Callable[[], Translation], state: ClusterState,
           memo: ViewMemo | None) -> Built:
    try:
        with gc_paused:
            translation = run()
            return Built(_resources(translation.ir, memo), translation.diagnostics)
    except InconsistentSnapshotError as e:
        return Built(None, state.problems, rejected=f"inconsistent: {e}")
    except Exception as e:  # a translator bug: keep serving the last good view
        log.exception("event=translation_failed")
        return Built(None, state.problems, rejected=f"{type(e).__name__}: {e}")
