"""Problems found in user input, as data.

Every stage that rejects part of its input returns :class:`Diagnostic` values
beside its output. A diagnostic names the object (:class:`ObjectRef`), the
field, a closed :class:`Reason` and a sentence for humans, so that logs,
``kxds validate``, metrics and Kubernetes Events all say the same thing.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import reprlib
from dataclasses import dataclass

MAX_VALUE_CHARS = 200
"""How much of a value from the input :func:`show` copies into a message or log line."""

MAX_MESSAGE_CHARS = 1000
"""A diagnostic's message (and each part of its object reference) is cut to this."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_REPR = reprlib.Repr()
_REPR.maxlevel = 3  # nested values are shown three levels deep: never a recursion
_REPR.maxstring = _REPR.maxother = MAX_VALUE_CHARS + 20
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8


def escape(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """``text`` safe for one log line: control characters escaped, cut to ``limit``.

    A newline in a name must not start a forged log line, so every control
    character (and the Unicode line separators) becomes its ``\\x..`` escape;
    a longer text ends in ``...`` and its full length.
    """
    if len(text) > limit:
        text = f"{text[:limit]}...({len(text)} chars)"
    if _CONTROL.search(text):
        text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    return text


def show(value: object, limit: int = MAX_VALUE_CHARS) -> str:
    """A value from the input as a message shows it: ``repr``-like, bounded and one line.

    Deeply nested or alias-expanded values are shown a few levels deep only
    (:mod:`reprlib`), so describing a value never costs more than its first
    few hundred characters.
    """
    if isinstance(value, str):
        more = f"...({len(value)} chars)" if len(value) > limit else ""
        return repr(value[:limit]) + more  # repr escapes every non-printable character
    return escape(_REPR.repr(value), limit)


@dataclass(frozen=True, slots=True, order=True)
class ObjectRef:
    """The Kubernetes object (or manifest file) something came from."""

    kind: str
    namespace: str
    name: str

    def __post_init__(self) -> None:
        # A ref is built from input: keep it one bounded line wherever it is printed.
        for part in ("kind", "namespace", "name"):
            value = getattr(self, part)
            if len(value) > MAX_VALUE_CHARS or _CONTROL.search(value):
                object.__setattr__(self, part, escape(value))

    def __str__(self) -> str:
        if self.namespace:
            return f"{self.kind} {self.namespace}/{self.name}"
        return f"{self.kind} {self.name}"

    @property
    def key(self) -> str:
        """``namespace/name``, or ``name`` for cluster-scoped objects."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


class Reason(enum.StrEnum):
    """Why part of the input was rejected. Closed: add a member, never a free string."""

    INVALID_YAML = "InvalidYAML"
    MISSING_FIELD = "MissingField"
    INVALID_VALUE = "InvalidValue"
    UNSUPPORTED = "Unsupported"
    BACKEND_NOT_FOUND = "BackendNotFound"
    PORT_NOT_FOUND = "PortNotFound"
    SECRET_NOT_FOUND = "SecretNotFound"
    INVALID_SECRET = "InvalidSecret"
    CONFIG_MAP_NOT_FOUND = "ConfigMapNotFound"
    CONFLICT = "Conflict"
    NOT_ALLOWED = "NotAllowed"
    POLICY_DIVERGENCE = "PolicyDivergence"
    INVALID_NAME = "InvalidName"
    """A name Kubernetes itself would refuse (DNS label or subdomain rules)."""
    TOO_MANY = "TooMany"
    """More items than the Kubernetes API allows (ports, endpoints, ...)."""
    TOO_LARGE = "TooLarge"
    """Input over one of kxds's limits (file size, YAML expansion); skipped."""
    DUPLICATE = "Duplicate"
    """The same object defined twice; the first (by file path) is used."""
    DEPRECATED_API = "DeprecatedAPI"
    """An old API version, converted as the API server converted it."""
    ALLOCATED = "Allocated"
    """A value the API server would have filled in (a nodePort), chosen by kxds."""
    FALLBACK = "Fallback"
    """Served, but with less than was asked for where it is served (the message says
    what is used instead and why): a transparent source address on a node not set up
    for it."""
    INTERNAL_ERROR = "InternalError"
    """kxds failed on this object (a bug); the object is left out, the rest goes on."""


@dataclass(frozen=True, slots=True, order=True)
class Diagnostic:
    """One problem with one object: which object, which field, why."""

    ref: ObjectRef
    field: str
    reason: Reason
    message: str
    asked_class: tuple[str | None, str | None] | None = dataclasses.field(
        default=None, compare=False, repr=False)
    """For an Ingress kxds could not read: the class it asks for
    (``spec.ingressClassName``, the legacy ``kubernetes.io/ingress.class``
    annotation), so its problem is reported only when the Ingress is ours."""

    def __post_init__(self) -> None:
        # Messages quote input; one bounded line each, whoever wrote them.
        for part, limit in (("field", MAX_VALUE_CHARS), ("message", MAX_MESSAGE_CHARS)):
            value = getattr(self, part)
            if len(value) > limit or _CONTROL.search(value):
                object.__setattr__(self, part, escape(value, limit))

    def __str__(self) -> str:
        return f"{self.ref.kind} {self.ref.key}: {self.field}: {self.reason.value}: {self.message}"
