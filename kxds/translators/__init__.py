"""Pure translation: ClusterState -> IR, plus the problems found on the way.

``translate(state, config)`` builds the edge gateway's IR;
``translate_node(state, config, node)`` builds one per-node proxy's IR.
Neither does I/O, reads a clock or keeps globals; each concern (services,
ingress, network_policy, tls, node) lives in its own module.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kxds.diagnostics import Diagnostic
from kxds.errors import KxdsError
from kxds.ir import IR, consistency_problems
from kxds.kube.models import ClusterState
from kxds.memo import TranslationMemo
from kxds.translators.config import NodeInfo, TranslateConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class Translation:
    """An IR and every problem found in the input (sorted, without duplicates)."""

    ir: IR
    diagnostics: tuple[Diagnostic, ...] = ()


class TranslationBug(KxdsError):
    """The translators built an IR that names something it lacks: a bug, not bad input."""


def sorted_diagnostics(*groups: Iterable[Diagnostic]) -> tuple[Diagnostic, ...]:
    """All diagnostics of ``groups``, each once, in a stable order."""
    return tuple(sorted({d for g in groups for d in g}))


def translate(state: ClusterState, config: TranslateConfig | None = None,
              memo: TranslationMemo | None = None) -> Translation:
    """The edge gateway's IR: a cluster per Service port, the Ingress routes and listeners.

    ``memo``: results of earlier translations to reuse where their inputs are
    unchanged (:mod:`kxds.memo`); the IR is the same without it.
    """
    from kxds.translators import ingress, services, tls

    config = config or TranslateConfig()
    if memo is not None:
        memo.start()
    svc = services.translate_services(state, memo)
    cluster_names = {c.name for c in svc.clusters}
    listener, table, ingress_problems = ingress.translate_ingresses(state, config, cluster_names,
                                                                    memo)
    result = IR(
        clusters=tuple(svc.clusters),
        load_assignments=tuple(svc.load_assignments),
        listeners=(listener,),
        route_tables=(table,),
    )
    # TLS: the HTTPS listener, its route table, secrets, redirects and backend TLS.
    result, tls_problems = tls.apply_tls(result, state, config,
                                         ingress.our_ingresses(state, config),
                                         config.tls_now, ingress.policy_index(state, memo))
    problems = consistency_problems(result)
    if problems:
        raise TranslationBug("; ".join(problems))
    if memo is not None:
        memo.sweep()
    return Translation(
        ir=result,
        diagnostics=sorted_diagnostics(state.problems, svc.diagnostics, ingress_problems,
                                       tls_problems),
    )


def translate_node(state: ClusterState, config: TranslateConfig, node: NodeInfo) -> Translation:
    """The IR of the per-node proxy on ``node``."""
    from kxds.translators.node import translate_node as _translate_node

    return _translate_node(state, config, node)
