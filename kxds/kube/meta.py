"""Object metadata and label selectors: what every model of :mod:`kxds.kube.models` shares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from kxds.diagnostics import ObjectRef

Key = tuple[str, str]
"""``(namespace, name)``; namespace is ``""`` for cluster-scoped objects."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Meta:
    """The part of ``metadata`` kxds uses."""

    kind: str
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    uid: str = ""
    resource_version: str = ""
    creation_timestamp: str = ""
    """RFC 3339 as the API writes it; sorts chronologically as a string."""
    generation: int = 0
    """``metadata.generation``: what Gateway API status reports as ``observedGeneration``
    (0 when absent, as in hand-written manifests)."""
    _ref: ObjectRef | None = field(default=None, init=False, repr=False, compare=False)
    """:attr:`ref`, made on first use: translation asks for it many times per object,
    and one shared value spares the IR a copy per node. Not part of the value."""

    @property
    def ref(self) -> ObjectRef:
        ref = self._ref
        if ref is None:
            ref = ObjectRef(self.kind, self.namespace, self.name)
            object.__setattr__(self, "_ref", ref)  # a cache: the value stays the same
        return ref

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)


# --- label selectors -------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Requirement:
    """One ``matchExpressions`` entry; operator is In, NotIn, Exists or DoesNotExist."""

    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        if self.operator == "In":
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelSelector:
    """A ``metav1.LabelSelector``. The empty selector matches everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.match_expressions
        )

    @property
    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions
