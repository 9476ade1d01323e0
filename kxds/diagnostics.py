"""Problems found in user input, as data.

Every stage that rejects part of its input returns :class:`Diagnostic` values
beside its output. A diagnostic names the object (:class:`ObjectRef`), the
field, a closed :class:`Reason` and a sentence for humans, so that logs,
``kxds validate``, metrics and Kubernetes Events all say the same thing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class ObjectRef:
    """The Kubernetes object (or manifest file) something came from."""

    kind: str
    namespace: str
    name: str

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
    CONFLICT = "Conflict"
    NOT_ALLOWED = "NotAllowed"
    POLICY_DIVERGENCE = "PolicyDivergence"


@dataclass(frozen=True, slots=True, order=True)
class Diagnostic:
    """One problem with one object: which object, which field, why."""

    ref: ObjectRef
    field: str
    reason: Reason
    message: str

    def __str__(self) -> str:
        return f"{self.ref.kind} {self.ref.key}: {self.field}: {self.reason.value}: {self.message}"
