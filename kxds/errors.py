"""The root of kxds's exceptions.

User mistakes in Kubernetes objects are never exceptions: they are
:class:`kxds.diagnostics.Diagnostic` values. Exceptions are for bugs and for
conditions the program cannot continue from.
"""

from __future__ import annotations


class KxdsError(Exception):
    """Root of every exception kxds raises on purpose."""


class InconsistentSnapshotError(KxdsError):
    """A built snapshot refers to a resource it does not contain."""
