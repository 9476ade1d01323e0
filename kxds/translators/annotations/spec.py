"""What the registry says about one annotation: its parser, status and Envoy mapping."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, TypeVar

from kxds.translators.annotations.values import Parser

T = TypeVar("T")

NGINX = "nginx.ingress.kubernetes.io/"
"""ingress-nginx's prefix."""
KXDS = "kxds.io/"
"""kxds's own prefix: the same short names, and it wins when both are set."""


class Status(enum.StrEnum):
    """How far kxds implements an annotation (the compatibility table's column)."""

    SUPPORTED = "supported"
    PARTIAL = "partial"
    """Implemented; the note says what differs from ingress-nginx."""
    UNSUPPORTED = "unsupported"
    """Reported on every Ingress carrying it; the note says why and what kxds does."""


class Family(enum.StrEnum):
    """The groups of the compatibility table."""

    PROTOCOLS = "Protocols and timeouts"
    CANARY = "Canary"
    REWRITES = "Rewrites and redirects"
    AFFINITY = "Session affinity and load balancing"
    HEADERS = "Headers and CORS"
    LIMITS = "Limits"
    LOGS = "Logs and tracing"
    TLS = "TLS"
    ACCESS = "Access control and authentication"
    SNIPPETS = "Snippets"
    ERRORS = "Errors, default backends and mirroring"
    BUFFERS = "Buffering and nginx tuning"
    OTHER = "Other"


@dataclass(frozen=True, slots=True, eq=False)
class Annotation(Generic[T]):
    """One annotation kxds knows, under ``nginx.ingress.kubernetes.io/`` and ``kxds.io/``.

    Compared by identity: each is declared once, in :mod:`.registry`.
    """

    name: str
    """The short name (``canary-weight``)."""
    family: Family
    status: Status
    envoy: str
    """The Envoy feature kxds uses (empty when unsupported)."""
    note: str = ""
    """For partial: what differs; for unsupported: why, and what kxds does instead."""
    parse: Parser[T] | None = None
    """None: read by no parser here (unsupported, or read by another module)."""
    narrows: bool = False
    """It narrows who may reach a route (auth, snippets): the security rules apply
    (an Ingress carrying one it cannot honour must fail closed)."""
    kxds_only: bool = False
    """Only under ``kxds.io/``: ingress-nginx has no such annotation."""
    reported_elsewhere: bool = False
    """Another translator (TLS, access rules) reads it and reports its own problems."""
    documented: bool = True
    """Listed in ingress-nginx's annotation documentation (the compatibility table)."""
