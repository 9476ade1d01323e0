"""What a translation returns: an IR and the problems found in the input."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from kxds.diagnostics import Diagnostic
from kxds.errors import KxdsError
from kxds.ir import IR


@dataclass(frozen=True, slots=True, kw_only=True)
class Translation:
    """An IR and every problem found in the input (sorted, without duplicates)."""

    ir: IR
    diagnostics: tuple[Diagnostic, ...] = ()
    bounds: frozenset[dt.datetime] = frozenset()
    """When a certificate check of this translation may change its verdict (the
    ``not_before`` and ``not_after`` of each certificate checked)."""


class TranslationBug(KxdsError):
    """The translators built an IR that names something it lacks: a bug, not bad input."""


def sorted_diagnostics(*groups: Iterable[Diagnostic]) -> tuple[Diagnostic, ...]:
    """All diagnostics of ``groups``, each once, in a stable order."""
    return tuple(sorted({d for g in groups for d in g}))
