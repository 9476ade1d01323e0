"""The edge gateway's translation: ClusterState -> IR, plus the problems found on the way.

EndpointSlices change far more often than anything else (STYLE.md "Split the
cache by churn"). The edge translation reads them in two places only: a
Service's clusters and load assignments (:func:`services.translate_service`)
and the pods behind a Service for NetworkPolicy access rules
(:func:`network_policy.service_policy`, used by every route and passthrough
chain to that Service). So when, since the memo's last translation, only
EndpointSlices changed, :func:`translate` recomputes those two for the
Services concerned and, when neither their clusters, problems nor access
rules moved, patches the new load assignments into the last IR instead of
translating everything again: the same IR either way, in time proportional
to the change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from kxds.ir import IR, LoadAssignment, consistency_problems
from kxds.kube.ingress_class import our_ingresses
from kxds.kube.models import ClusterState, EndpointSlice
from kxds.memo import TranslationMemo
from kxds.translators import ingress, network_policy, services, tls
from kxds.translators.config import TranslateConfig
from kxds.translators.translation import Translation, TranslationBug, sorted_diagnostics


def translate(state: ClusterState, config: TranslateConfig | None = None,
              memo: TranslationMemo | None = None) -> Translation:
    """The edge gateway's IR: a cluster per Service port, the Ingress routes and listeners.

    ``memo``: results of earlier translations to reuse where their inputs are
    unchanged (:mod:`kxds.memo`); the IR is the same without it.
    """
    config = config or TranslateConfig()
    if memo is not None:
        previous = memo.previous if isinstance(memo.previous, _Previous) else None
        patched = _endpoints_only(previous, state, config, memo) if previous else None
        if patched is not None:
            return patched
    translation, assignments = _translate(state, config, memo)
    if memo is not None:
        memo.previous = _Previous(state, config, translation, assignments)
    return translation


def _translate(state: ClusterState, config: TranslateConfig, memo: TranslationMemo | None
               ) -> tuple[Translation, Mapping[str, int] | None]:
    """The whole translation, and the index of its load assignments (see :class:`_Previous`)."""
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
                                         our_ingresses(state, config.ingress_class),
                                         config.tls_now, ingress.policy_index(state, memo))
    problems = consistency_problems(result)
    if problems:
        raise TranslationBug("; ".join(problems))
    if memo is not None:
        memo.sweep()
    translation = Translation(
        ir=result,
        diagnostics=sorted_diagnostics(state.problems, svc.diagnostics, ingress_problems,
                                       tls_problems),
    )
    return translation, _assignment_index(result, svc.load_assignments)


@dataclass(frozen=True, slots=True)
class _Previous:
    """The memo's last edge translation, which an EndpointSlice-only change patches."""

    state: ClusterState
    config: TranslateConfig
    translation: Translation
    assignments: Mapping[str, int] | None
    """Cluster name -> position in ``translation.ir.load_assignments``; None when the
    later stages added or changed load assignments (TLS twins copy their
    Service's): then the IR's load assignments are not just the Services' ones."""


def _assignment_index(ir: IR, assignments: list[LoadAssignment]) -> Mapping[str, int] | None:
    final = ir.load_assignments
    if len(final) != len(assignments) or any(
            a is not b for a, b in zip(final, assignments, strict=True)):
        return None
    return {a.cluster: i for i, a in enumerate(final)}


_SLICE_FIELDS = frozenset({"endpoint_slices", "slices_by_service", "problems"})
"""ClusterState fields the EndpointSlice-only shortcut allows to differ (problems: equal)."""


def _same_items(old: object, new: object) -> bool:
    """Whether two mappings hold the very same objects under the same keys."""
    if old is new:
        return True
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return old == new
    return len(old) == len(new) and all(new.get(k, _MISSING) is v for k, v in old.items())


_MISSING = object()


def _changed_services(old: Mapping[tuple[str, str], tuple[EndpointSlice, ...]],
                      new: Mapping[tuple[str, str], tuple[EndpointSlice, ...]]
                      ) -> set[tuple[str, str]]:
    """Keys of the Services whose EndpointSlices are not the same objects as before."""
    if old is new:
        return set()

    def same(a: tuple[EndpointSlice, ...], b: tuple[EndpointSlice, ...]) -> bool:
        return a is b or (len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True)))

    changed = {k for k, v in new.items() if not same(old.get(k, ()), v)}
    return changed | {k for k in old.keys() - new.keys() if old[k]}


def _only_slices_changed(previous: _Previous, state: ClusterState,
                         config: TranslateConfig) -> bool:
    """Whether ``state`` and ``config`` differ from the previous ones in EndpointSlices only."""
    old = previous.state
    if previous.assignments is None or old.problems != state.problems:
        return False
    # The certificate check instant moves every rebuild; it matters only when
    # there are Secrets to check.
    if config != previous.config and (state.secrets or dataclasses.replace(
            config, tls_now=previous.config.tls_now) != previous.config):
        return False
    return all(_same_items(getattr(old, f.name), getattr(state, f.name))
               for f in dataclasses.fields(ClusterState) if f.name not in _SLICE_FIELDS)


def _endpoints_only(previous: _Previous, state: ClusterState, config: TranslateConfig,
                    memo: TranslationMemo) -> Translation | None:
    """The translation of ``state`` as a patch of ``previous``, or None when it cannot be.

    Sound when only EndpointSlices changed and, for every Service whose slices
    changed, its clusters, problems and NetworkPolicy result are the same as
    before (the module docs say why that covers everything the slices reach).
    """
    if not _only_slices_changed(previous, state, config):
        return None
    index = previous.assignments
    assert index is not None
    old_slices, new_slices = previous.state.slices_by_service, state.slices_by_service
    policies = ingress.policy_index(state, memo)  # the policies are unchanged: the same index
    patch: dict[int, LoadAssignment] = {}
    for key in _changed_services(old_slices, new_slices):
        service = state.services.get(key)
        if service is None:
            continue  # slices of no Service are read by nothing
        before = services.translate_service(service, old_slices.get(key, ()))
        after = services.translate_service(service, new_slices.get(key, ()))
        if (after.clusters != before.clusters or after.diagnostics != before.diagnostics
                or [a.cluster for a in after.load_assignments]
                != [a.cluster for a in before.load_assignments]):
            return None
        for sp in service.ports:
            if (network_policy.service_policy(previous.state, service, sp, policies)
                    != network_policy.service_policy(state, service, sp, policies)):
                return None  # other pods back the Service: its access rules may differ
        for assignment in after.load_assignments:
            position = index.get(assignment.cluster)
            if position is None:
                return None
            if assignment != previous.translation.ir.load_assignments[position]:
                patch[position] = assignment
    old_ir = previous.translation.ir
    assignments = list(old_ir.load_assignments)
    for position, assignment in patch.items():
        assignments[position] = assignment
    translation = Translation(
        ir=dataclasses.replace(old_ir, load_assignments=tuple(assignments)) if patch else old_ir,
        diagnostics=previous.translation.diagnostics)
    memo.previous = _Previous(state, config, translation, index)
    return translation
