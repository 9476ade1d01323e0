"""Typed access to the fields of a raw Kubernetes object, and Kubernetes' own name rules.

Every accessor names the field it reads in the :class:`Invalid` it raises, and
quotes the offending value through :func:`kxds.diagnostics.show`, so a message
is one bounded line whatever the input holds (a deeply nested value, a YAML
alias expanding to millions of nodes, a newline in a name).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar

from kxds.diagnostics import Reason, show
from kxds.kube import models as m

T = TypeVar("T")

_DECIMAL = re.compile(r"[0-9]+")
"""ASCII digits only: ``str.isdigit`` accepts ``'²'``, which ``int`` then refuses."""

# https://kubernetes.io/docs/concepts/overview/working-with-objects/names/
# (apimachinery/pkg/util/validation: IsDNS1123Label, IsDNS1123Subdomain, IsDNS1035Label).
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL = re.compile(_LABEL)
DNS1123_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_RULES: Mapping[str, tuple[re.Pattern[str], int, str]] = {
    "label": (DNS1123_LABEL, 63, "a DNS-1123 label (lower-case letters, digits and '-', "
              "starting and ending with a letter or digit, at most 63 characters)"),
    "subdomain": (DNS1123_SUBDOMAIN, 253, "a DNS-1123 subdomain (lower-case letters, digits, "
                  "'-' and '.', each part starting and ending with a letter or digit, at most "
                  "253 characters)"),
    "dns1035": (DNS1035_LABEL, 63, "a DNS-1035 label (lower-case letters, digits and '-', "
                "starting with a letter, ending with a letter or digit, at most 63 characters)"),
}


_PORT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def is_port_name(value: str) -> bool:
    """Kubernetes' ``IsValidPortName`` (IANA_SVC_NAME, RFC 6335 section 5.1)."""
    return (len(value) <= 15 and _PORT_NAME.fullmatch(value) is not None
            and "--" not in value and any("a" <= c <= "z" for c in value))


class Invalid(Exception):
    """A field makes the object unusable; carries the diagnostic's parts."""

    def __init__(self, field: str, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason
        self.message = message


def fail(field: str, message: str, reason: Reason = Reason.INVALID_VALUE) -> NoReturn:
    """Reject the object because of ``field``."""
    raise Invalid(field, reason, message)


def check_name(value: str, rule: str, field: str) -> str:
    """``value`` when it follows Kubernetes' ``rule`` (label, subdomain, dns1035), else fail."""
    pattern, limit, what = _RULES[rule]
    if len(value) > limit or not pattern.fullmatch(value):
        fail(field, f"{show(value)} is not {what}", Reason.INVALID_NAME)
    return value


def check_count(values: tuple[T, ...] | list[T], limit: int, field: str, why: str) -> None:
    """Refuse more than ``limit`` items in a list field; ``why`` cites the limit."""
    if len(values) > limit:
        fail(field, f"has {len(values)} items, more than {limit} ({why})", Reason.TOO_MANY)


# --- typed field access ----------------------------------------------------


def get_map(obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    """An object field (``{}`` when absent)."""
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        fail(f"{path}.{key}", f"must be an object, not {type(value).__name__}")
    return value


def get_list(obj: Mapping[str, Any], key: str, path: str) -> list[Any]:
    """A list field (``[]`` when absent)."""
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        fail(f"{path}.{key}", f"must be a list, not {type(value).__name__}")
    return value


def get_str(obj: Mapping[str, Any], key: str, path: str, *, required: bool = False) -> str | None:
    """A string field (None when absent or empty)."""
    value = obj.get(key)
    if value is None or value == "":
        if required:
            fail(f"{path}.{key}", "is required", Reason.MISSING_FIELD)
        return None
    if not isinstance(value, str):
        fail(f"{path}.{key}", f"must be a string, not {show(value)}")
    return value


def scalar(value: Any, field: str) -> str:
    """A string, number or boolean as the string the API would hold; anything else fails."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    fail(field, f"must be a string, not {show(value)}")


def str_list(obj: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
    """A list of strings (numbers are taken as their text), each item checked."""
    values = get_list(obj, key, path)
    # The common case without building an item path per element (start-up
    # parses tens of thousands of these).
    if all(type(v) is str for v in values):
        return tuple(values)
    return tuple(scalar(v, f"{path}.{key}[{i}]") for i, v in enumerate(values))


def get_int(
    obj: Mapping[str, Any], key: str, path: str, *, lo: int = 1, hi: int = 65535,
    required: bool = False,
) -> int | None:
    """An integer field within ``lo``-``hi`` (None when absent)."""
    value = obj.get(key)
    if value is None:
        if required:
            fail(f"{path}.{key}", "is required", Reason.MISSING_FIELD)
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        fail(f"{path}.{key}", f"must be an integer, not {show(value)}")
    if not lo <= value <= hi:
        fail(f"{path}.{key}", f"{show(value)} is outside {lo}-{hi}")
    return value


def get_int_or_str(obj: Mapping[str, Any], key: str, path: str) -> int | str | None:
    """An IntOrString port: a number 1-65535, or a name (a numeric string counts as a number)."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        if _DECIMAL.fullmatch(value):
            return get_int({key: int(value)}, key, path)
        if not is_port_name(value):
            fail(f"{path}.{key}", f"{show(value)} is neither a port number nor a port name "
                 "(IANA_SVC_NAME: at most 15 lower-case letters, digits and '-', with a letter)")
        return value
    return get_int(obj, key, path)


def get_bool(obj: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    """A boolean field (``default`` when absent)."""
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        fail(f"{path}.{key}", f"must be true or false, not {show(value)}")
    return value


def one_of(value: str | None, allowed: tuple[str, ...], field: str, default: str) -> str:
    """``value`` when it is one of ``allowed`` (``default`` when None)."""
    if value is None:
        return default
    if value not in allowed:
        fail(field, f"{show(value)} is not one of {', '.join(allowed)}")
    return value


def str_map(obj: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
    """A map of strings (labels, annotations, selectors); numbers and booleans as text."""
    raw = get_map(obj, key, path)
    if all(type(k) is str and type(v) is str for k, v in raw.items()):
        return dict(raw)  # the common case, without a path per entry
    out: dict[str, str] = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not isinstance(v, (str, int, float, bool)):
            fail(f"{path}.{key}", f"entry {show(k)} must map a string to a string")
        out[k] = scalar(v, f"{path}.{key}[{k}]")
    return out


def items(
    obj: Mapping[str, Any], key: str, path: str, parse: Callable[[Any, str], T]
) -> tuple[T, ...]:
    """Parse every element of a list field, each with its own indexed path."""
    out = []
    for i, raw in enumerate(get_list(obj, key, path)):
        item_path = f"{path}.{key}[{i}]"
        if not isinstance(raw, Mapping):
            fail(item_path, "must be an object")
        out.append(parse(raw, item_path))
    return tuple(out)


# --- label selectors -------------------------------------------------------


_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def parse_requirement(raw: Mapping[str, Any], path: str) -> m.Requirement:
    key = get_str(raw, "key", path, required=True)
    op = one_of(get_str(raw, "operator", path, required=True), _OPERATORS, f"{path}.operator", "")
    values = str_list(raw, "values", path)
    if op in ("In", "NotIn") and not values:
        fail(f"{path}.values", f"must not be empty for operator {op}")
    if op in ("Exists", "DoesNotExist") and values:
        fail(f"{path}.values", f"must be empty for operator {op}")
    assert key is not None
    return m.Requirement(key=key, operator=op, values=values)  # type: ignore[arg-type]


def parse_selector(raw: Mapping[str, Any], path: str) -> m.LabelSelector:
    return m.LabelSelector(
        match_labels=tuple(sorted(str_map(raw, "matchLabels", path).items())),
        match_expressions=items(raw, "matchExpressions", path, parse_requirement),
    )


# --- metadata --------------------------------------------------------------


NAME_RULES: Mapping[str, str] = {
    # As the API server validates metadata.name (pkg/apis/*/validation): Services
    # are DNS-1035 labels (ValidateServiceName), Namespaces DNS-1123 labels, the rest
    # DNS-1123 subdomains.
    "Service": "dns1035", "Namespace": "label",
}


def parse_meta(doc: Mapping[str, Any], kind: str, *, namespaced: bool) -> m.Meta:
    """``metadata``: the name and namespace checked as the API server checks them."""
    meta = get_map(doc, "metadata", "")
    name = get_str(meta, "name", "metadata", required=True)
    assert name is not None
    check_name(name, NAME_RULES.get(kind, "subdomain"), "metadata.name")
    namespace = (get_str(meta, "namespace", "metadata") or "default") if namespaced else ""
    check_name(namespace or "default", "label", "metadata.namespace")
    return m.Meta(
        kind=kind,
        namespace=namespace,
        name=name,
        labels=str_map(meta, "labels", "metadata"),
        annotations=str_map(meta, "annotations", "metadata"),
        uid=get_str(meta, "uid", "metadata") or "",
        resource_version=scalar(meta.get("resourceVersion") or "", "metadata.resourceVersion"),
        creation_timestamp=scalar(meta.get("creationTimestamp") or "",
                                  "metadata.creationTimestamp"),
        generation=get_int(meta, "generation", "metadata", lo=0, hi=2**63 - 1) or 0,
    )
