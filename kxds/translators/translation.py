"""What a translation returns: an IR and the problems found in the input."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.errors import KxdsError
from kxds.ir import IR
from kxds.translators.gateway_status import GatewayApiStatus

log = logging.getLogger("kxds.translators")

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Translation:
    """An IR and every problem found in the input (sorted, without duplicates)."""

    ir: IR
    diagnostics: tuple[Diagnostic, ...] = ()
    bounds: frozenset[dt.datetime] = frozenset()
    """When a certificate check of this translation may change its verdict (the
    ``not_before`` and ``not_after`` of each certificate checked)."""
    gateway_status: GatewayApiStatus = field(default_factory=GatewayApiStatus)
    """The status of every Gateway API object kxds controls (conditions as data)."""
    skipped: tuple[ObjectRef, ...] = ()
    """Objects left alone on purpose, as another controller's (Ingresses of another
    class): no diagnostic, no Event; the caller logs each once at debug level."""


class TranslationBug(KxdsError):
    """The translators built an IR that names something it lacks: a bug, not bad input."""


def sorted_diagnostics(*groups: Iterable[Diagnostic]) -> tuple[Diagnostic, ...]:
    """All diagnostics of ``groups``, each once, in a stable order."""
    return tuple(sorted({d for g in groups for d in g}))


def guarded(ref: ObjectRef, run: Callable[[], T], failed: Callable[[Diagnostic], T]) -> T:
    """``run()``; when it raises (a bug met on one object), ``failed`` of an
    ``InternalError`` diagnostic naming ``ref``.

    The guard around the translation of one object (a Service, an Ingress, a
    TLS Secret): that object alone is left out, and ``failed`` says how in a
    way that fails closed (its routes answer 503, its hosts get no plaintext
    in place of TLS); every other object is served. The traceback is logged
    for the bug report.
    """
    try:
        return run()
    except Exception as e:  # the guard: any bug, on one object
        log.error("event=translation_failed object=%s", ref, exc_info=True)
        return failed(Diagnostic(ref, "", Reason.INTERNAL_ERROR,
                                 f"kxds failed to translate this object ({type(e).__name__}); "
                                 "it is left out: please report it"))
