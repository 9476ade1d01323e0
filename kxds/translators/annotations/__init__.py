"""Ingress annotations, parsed in one place into typed values with their diagnostics.

:func:`parse` reads every annotation of an Ingress under
``nginx.ingress.kubernetes.io/`` and ``kxds.io/`` through the registry
(:mod:`.registry`): the ``kxds.io/`` spelling wins when both are set. What it
gives back is typed (:meth:`Parsed.get` with a registry entry returns that
entry's value type), and every problem is a diagnostic naming the Ingress and
the annotation:

* an annotation kxds does not implement: ``Unsupported``, saying what kxds
  does instead; the route is served without it;
* a value that does not parse: ``InvalidValue``; that annotation is not applied,
  and nothing else changes;
* an annotation that narrows access (authentication, snippets) kxds cannot
  honour yet is listed in :attr:`Parsed.narrowing` — the hook where the
  security rules make such routes fail closed.

Translators build IR from :class:`Parsed`; no Envoy builder sees annotation text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from kxds.diagnostics import Diagnostic, ObjectRef, Reason, show
from kxds.kube.models import Ingress
from kxds.translators.annotations.registry import REGISTRY
from kxds.translators.annotations.spec import KXDS, NGINX, Annotation, Status
from kxds.translators.annotations.values import BadValue

T = TypeVar("T")

__all__ = ["KXDS", "NGINX", "Annotation", "Parsed", "field_of", "parse"]


@dataclass(frozen=True, slots=True, eq=False)
class Parsed:
    """One Ingress's annotations, parsed: the values kxds applies and the problems."""

    ref: ObjectRef
    values: Mapping[str, Any]
    """Short name -> parsed value, for every annotation present and valid."""
    keys: Mapping[str, str]
    """Short name -> the full key the value came from (the ``kxds.io/`` one when both)."""
    diagnostics: tuple[Diagnostic, ...]
    narrowing: tuple[str, ...]
    """Full keys of annotations present that narrow access and are not enforced."""

    def get(self, annotation: Annotation[T]) -> T | None:
        """The value of ``annotation``, or None when absent or invalid."""
        value: T | None = self.values.get(annotation.name)
        return value

    def has(self, annotation: Annotation[Any]) -> bool:
        """Whether ``annotation`` is present with a valid value."""
        return annotation.name in self.values

    def field(self, annotation: Annotation[Any]) -> str:
        """The diagnostic field of ``annotation`` on this Ingress."""
        return field_of(self.keys.get(annotation.name, NGINX + annotation.name))

    def problem(self, annotation: Annotation[Any], message: str,
                reason: Reason = Reason.INVALID_VALUE) -> Diagnostic:
        """A diagnostic about ``annotation`` on this Ingress."""
        return Diagnostic(self.ref, self.field(annotation), reason, message)


def field_of(key: str) -> str:
    """The diagnostic field of the annotation ``key``."""
    return f"metadata.annotations[{key}]"


def _short(key: str) -> tuple[str, bool] | None:
    """(short name, under kxds.io/) for one of our prefixes, else None."""
    if key.startswith(KXDS):
        return key[len(KXDS):], True
    if key.startswith(NGINX):
        return key[len(NGINX):], False
    return None


def parse(ing: Ingress) -> Parsed:
    """Every annotation of ``ing`` under our prefixes, parsed through the registry."""
    ref = ing.meta.ref
    chosen: dict[str, str] = {}
    for key in sorted(ing.meta.annotations):
        split = _short(key)
        if split is not None and (split[1] or split[0] not in chosen):
            chosen[split[0]] = key  # sorted: kxds.io/ comes first, so it stays
    values: dict[str, Any] = {}
    diags: list[Diagnostic] = []
    narrowing: list[str] = []
    for short, key in chosen.items():
        spec = REGISTRY.get(short)
        raw = ing.meta.annotations[key]
        if spec is None or (spec.kxds_only and not key.startswith(KXDS)):
            diags.append(Diagnostic(ref, field_of(key), Reason.UNSUPPORTED,
                                    "not an annotation kxds knows; it has no effect"))
            continue
        if spec.status is Status.UNSUPPORTED:
            if spec.narrows:
                narrowing.append(key)
            diags.append(Diagnostic(ref, field_of(key), Reason.UNSUPPORTED,
                                    f"not supported: {spec.note}"))
            continue
        if spec.parse is None:
            continue
        try:
            values[short] = spec.parse(raw)
        except BadValue as e:
            if not spec.reported_elsewhere:
                diags.append(Diagnostic(ref, field_of(key), Reason.INVALID_VALUE,
                                        f"{show(raw)} {e}; the annotation is not applied"))
    return Parsed(ref, values, chosen, tuple(diags), tuple(narrowing))
