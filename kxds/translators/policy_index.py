"""Which NetworkPolicies may select the pods of a namespace, indexed once per translation.

Every route (and passthrough chain, and per-node listener) asks which
policies apply to the pods of its Service. A :class:`PolicyIndex` answers
from the policies grouped by namespace and, within one, indexed by a label
each policy's ``podSelector`` requires, so that neither the policies of the
cluster nor those of a namespace are scanned per question.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kxds.diagnostics import Diagnostic, ObjectRef
from kxds.ir import IPRange
from kxds.kube.models import ClusterState, NetworkPolicy

PeerCache = dict[tuple[ObjectRef, int],
                 tuple[NetworkPolicy, frozenset[IPRange], frozenset[Diagnostic]]]
"""A rule's sources and the problems of its peers, by (policy, rule index), with
the policy they were computed for.

They depend on the policy, the Pods and the Namespaces, not on the Service
or the backend pod, so one translation computes each once.
"""

SHADOW_ANNOTATION = "kxds.io/policy-mode"
"""``shadow`` installs a policy's rules as Envoy shadow rules: counted, not enforced.

``enforce`` (the default) enforces them; any other value is reported and the
policy is enforced, since a typo must not turn a rule off.
"""


def is_shadow(policy: NetworkPolicy) -> bool:
    """``kxds.io/policy-mode: shadow``: a dry run, evaluated and counted but not enforced."""
    return policy.meta.annotations.get(SHADOW_ANNOTATION, "").strip().lower() == "shadow"


@dataclass(frozen=True, slots=True, eq=False)
class Selector:
    """A policy that selects pods: a parsed one, or a rejected one (``policy`` None)."""

    ref: ObjectRef
    policy: NetworkPolicy | None
    shadow: bool = False


def selectors_of(state: ClusterState, namespace: str) -> tuple[Selector, ...]:
    """The policies that may select pods of ``namespace`` for ingress, sorted by ref."""
    return _all_selectors(state, namespace).get(namespace, ())


def _all_selectors(state: ClusterState, only: str | None = None
                   ) -> dict[str, tuple[Selector, ...]]:
    """:func:`selectors_of` every namespace (or ``only``), in one pass over the policies."""
    found: dict[str, dict[ObjectRef, Selector]] = {}
    for p in state.network_policies.values():
        ns = p.meta.namespace
        if (only is None or ns == only) and "Ingress" in p.policy_types:
            found.setdefault(ns, {})[p.meta.ref] = Selector(p.meta.ref, p, is_shadow(p))
    for d in state.problems:
        if d.ref.kind == "NetworkPolicy" and (only is None or d.ref.namespace == only):
            # A rejected policy wins over a parsed one of the same name.
            found.setdefault(d.ref.namespace, {})[d.ref] = Selector(d.ref, None)
    return {ns: tuple(sorted(by_ref.values(), key=lambda s: s.ref))
            for ns, by_ref in sorted(found.items())}


@dataclass(frozen=True, slots=True, eq=False)
class NamespacePolicies:
    """The policies that may select pods of one namespace, indexed by a label they require.

    Finding the policies that select a pod checks only those requiring one of
    its labels (plus those that require none), not every policy of the
    namespace: with a policy per Service, that scan was quadratic.
    """

    selectors: tuple[Selector, ...]
    by_label: Mapping[tuple[str, str], tuple[int, ...]]
    """Positions of the selectors whose ``matchLabels`` start with this pair."""
    always: tuple[int, ...]
    """Positions of the rejected policies and of selectors without ``matchLabels``."""

    @classmethod
    def of(cls, selectors: tuple[Selector, ...]) -> NamespacePolicies:
        by_label: dict[tuple[str, str], list[int]] = {}
        always: list[int] = []
        for i, s in enumerate(selectors):
            if s.policy is None or not s.policy.pod_selector.match_labels:
                always.append(i)
            else:
                by_label.setdefault(s.policy.pod_selector.match_labels[0], []).append(i)
        return cls(selectors, {k: tuple(v) for k, v in by_label.items()}, tuple(always))

    def selecting(self, labels: Mapping[str, str], *, with_shadow: bool) -> list[Selector]:
        """The policies selecting a pod with ``labels``, sorted by ref."""
        hits = list(self.always)
        for item in labels.items():
            hits += self.by_label.get(item, ())
        hits.sort()
        out = []
        for i in hits:
            s = self.selectors[i]
            if s.shadow and not with_shadow:
                continue
            if s.policy is None or s.policy.pod_selector.matches(labels):
                out.append(s)
        return out


_NO_POLICIES = NamespacePolicies((), {}, ())


@dataclass(frozen=True, slots=True)
class PolicyIndex:
    """The policies that may select pods, by namespace, for one translation.

    Every route of a translation asks which policies apply to its Service;
    scanning every policy per route made translation quadratic (3.5 s for
    5,000 Services with 500 policies, most of it in that scan). A translator
    builds this once with :meth:`of` and passes it to each
    :func:`~kxds.translators.network_policy.service_policy` call. It belongs to
    the state it was built from.
    """

    by_namespace: Mapping[str, NamespacePolicies]
    _peers: list[tuple[object, object, PeerCache]] = field(
        default_factory=list, compare=False, repr=False)
    """The :meth:`peers` cache, with the Pods and Namespaces it was computed from."""

    @classmethod
    def of(cls, state: ClusterState) -> PolicyIndex:
        """Index every policy of ``state`` (and every policy the parser rejected)."""
        return cls({ns: NamespacePolicies.of(sels) for ns, sels in _all_selectors(state).items()})

    def get(self, namespace: str) -> tuple[Selector, ...]:
        """The policies of ``namespace``, sorted by ref."""
        return self.namespace(namespace).selectors

    def namespace(self, namespace: str) -> NamespacePolicies:
        """The policies of ``namespace`` with their label index."""
        return self.by_namespace.get(namespace, _NO_POLICIES)

    def peers(self, state: ClusterState) -> PeerCache:
        """The rule sources found so far for the Pods and Namespaces of ``state``.

        Shared by every Service of a translation: a policy whose peers select
        pods (a namespace-wide "allow from monitoring", say) reads every Pod,
        and doing that once per Service was quadratic. Kept while the
        translations asking are of states with the very same Pods and
        Namespaces (which are immutable), and started afresh otherwise.

        Whoever uses the cache depends on every Pod and Namespace, even when its
        answer was computed for someone else: both are read whole here, so an
        incremental translation (:mod:`kxds.incremental`) records that dependency
        for every query that asks.
        """
        _ = (len(state.pods), len(state.namespaces))
        for pods, namespaces, cache in self._peers:
            if pods is state.pods and namespaces is state.namespaces:
                return cache
        cache = {}
        self._peers[:] = [(state.pods, state.namespaces, cache)]
        return cache
