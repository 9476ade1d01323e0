"""Which Ingresses belong to kxds: the IngressClass decision, in one place.

The translators serve exactly these Ingresses, and the status writer writes
load-balancer status on exactly these; both ask this module with the class
name kxds was started with (``--ingress-class``), so the two never disagree.
See https://kubernetes.io/docs/concepts/services-networking/ingress/#ingress-class.
"""

from __future__ import annotations

import logging
from collections import Counter

from kxds.diagnostics import Diagnostic, ObjectRef, escape
from kxds.kube.models import ClusterState, Ingress

log = logging.getLogger(__name__)

CONTROLLER_NAME = "kxds.io/ingress-controller"
"""``spec.controller`` of the IngressClasses kxds serves."""

CLASS_ANNOTATION = "kubernetes.io/ingress.class"
"""The legacy (pre-``ingressClassName``) way to pick an Ingress controller."""


def is_ours(ingress: Ingress, state: ClusterState, ingress_class: str) -> bool:
    """Whether ``ingress`` belongs to the controller of class ``ingress_class``.

    ``spec.ingressClassName`` naming our class (or an IngressClass whose
    controller is ours); else the legacy ``kubernetes.io/ingress.class``
    annotation; else, for an Ingress with neither, a default IngressClass of ours.
    """
    return _is_ours(ingress, state, ingress_class, _default_class_is_ours(state))


def _default_class_is_ours(state: ClusterState) -> bool:
    return any(c.is_default and c.controller == CONTROLLER_NAME
               for c in state.ingress_classes.values())


def _is_ours(ingress: Ingress, state: ClusterState, ingress_class: str,
             default_is_ours: bool) -> bool:
    return _asks_ours(ingress.ingress_class_name, ingress.meta.annotations.get(CLASS_ANNOTATION),
                      state, ingress_class, default_is_ours)


def _asks_ours(name: str | None, annotated: str | None, state: ClusterState,
               ingress_class: str, default_is_ours: bool) -> bool:
    if name is not None:
        cls = state.ingress_classes.get(("", name))
        return name == ingress_class or (cls is not None and cls.controller == CONTROLLER_NAME)
    if annotated is not None:
        return annotated == ingress_class
    return default_is_ours


def problems_of_ours(state: ClusterState, ingress_class: str
                     ) -> tuple[list[Diagnostic], list[ObjectRef]]:
    """The parse problems to report, and the Ingresses whose problems are skipped.

    An Ingress kxds could not read is still another controller's when it asks
    for another class: its problem is that controller's to report, not ours
    (no diagnostic, no Event). One asking for our class, or for none while a
    default IngressClass of ours exists, is reported as usual.
    """
    default_is_ours = _default_class_is_ours(state)
    ours: list[Diagnostic] = []
    skipped: list[ObjectRef] = []
    for d in state.problems:
        if d.asked_class is None or _asks_ours(*d.asked_class, state, ingress_class,
                                                 default_is_ours):
            ours.append(d)
        else:
            skipped.append(d.ref)
    return ours, skipped


def age_order(ingress: Ingress) -> tuple[str, str, str]:
    """Sort key putting the oldest Ingress first (it wins conflicts)."""
    return (ingress.meta.creation_timestamp, ingress.meta.namespace, ingress.meta.name)


def our_ingresses(state: ClusterState, ingress_class: str) -> list[Ingress]:
    """The Ingresses of class ``ingress_class``, oldest first."""
    default_is_ours = _default_class_is_ours(state)
    return sorted((i for i in state.ingresses.values()
                   if _is_ours(i, state, ingress_class, default_is_ours)), key=age_order)


def _claimed_class(ingress: Ingress) -> str:
    """The class an Ingress asks for, as a user would name it."""
    if ingress.ingress_class_name is not None:
        return ingress.ingress_class_name
    return ingress.meta.annotations.get(CLASS_ANNOTATION, "") or "(none, no default of ours)"


def skipped_summary(state: ClusterState, ingress_class: str) -> list[str]:
    """One line per class of the Ingresses kxds leaves alone, e.g.
    ``3 Ingresses of class nginx: not ours (--ingress-class kxds)``.

    Each such Ingress is skipped with one debug line and no diagnostic: it is
    another controller's, not a mistake.
    """
    default_is_ours = _default_class_is_ours(state)
    counts: Counter[str] = Counter()
    for ing in state.ingresses.values():
        if not _is_ours(ing, state, ingress_class, default_is_ours):
            log.debug("skipping Ingress %s: class %s is not ours", escape(ing.meta.ref.key),
                      escape(_claimed_class(ing)))
            counts[_claimed_class(ing)] += 1
    return [f"{n} Ingress{'es' if n > 1 else ''} of class {escape(cls)}: not ours "
            f"(--ingress-class {escape(ingress_class)})" for cls, n in sorted(counts.items())]
