"""The IR as YAML, and back.

The golden tests write the IR of every translation in this form (``ir.yaml``)
and review it like code; the IR -> Envoy golden tier reads IR written by hand
in the same form, to test the Envoy builders without Kubernetes input. The
writer (:func:`dump_ir`, :func:`to_plain`) and the reader (:func:`load_ir`,
:func:`from_plain`) are exact inverses:

* an IR dataclass is a mapping of its fields in declaration order; a field at
  its default value is left out, and the reader puts the default back;
* a member of a union of several IR classes (a listener kind, a filter chain
  kind, a route action, a secret kind) is tagged with its class name:
  ``{TlsListener: {name: ..., ...}}``;
* an enum is its value, a tuple a list, an :class:`~kxds.diagnostics.ObjectRef`
  its text (``Service default/web``, or ``Kind name`` without a namespace).

The reader is strict, because a person writes its input: an unknown or
missing field, an unknown tag or a value of the wrong type (``"80"`` for a
port, ``1`` for a flag) raises :class:`IRYamlError` naming the place
(``ir.listeners[1].TlsListener.port``). It checks shapes, not meaning: whether
the IR names only what it holds is :func:`kxds.ir.consistency_problems`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal, Union

import yaml

from kxds import ir
from kxds.diagnostics import Diagnostic, ObjectRef
from kxds.errors import KxdsError

try:
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader


class IRYamlError(KxdsError, ValueError):
    """Text that does not describe an IR; the message names the place and the problem."""


# --- the shape of the IR, from its type hints --------------------------------


def _is_ir_class(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp) and tp is not ObjectRef


def _union_members(tp: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return typing.get_args(tp)
    return None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def tagged_classes() -> frozenset[type]:
    """The IR classes written with their name as a tag: members of a union of IR classes.

    Found from the type hints of :class:`kxds.ir.IR` down, so a new member of
    such a union (a new listener kind) is tagged without being listed anywhere.
    """
    found: set[type] = set()
    seen: set[type] = set()

    def walk(tp: Any) -> None:
        members = _union_members(tp)
        if members is not None:
            classes = [m for m in members if _is_ir_class(m)]
            if len(classes) > 1:
                found.update(classes)
            for m in members:
                walk(m)
        elif typing.get_origin(tp) is tuple:
            for arg in typing.get_args(tp):
                if arg is not Ellipsis:
                    walk(arg)
        elif _is_ir_class(tp) and tp not in seen:
            seen.add(tp)
            for hint in _hints(tp).values():
                walk(hint)

    walk(ir.IR)
    return frozenset(found)


# --- writing -----------------------------------------------------------------


def parse_ref(text: str) -> ObjectRef:
    """The :class:`ObjectRef` whose text is ``text`` (``Kind ns/name`` or ``Kind name``)."""
    kind, _, key = text.partition(" ")
    namespace, slash, name = key.partition("/")
    if not slash:
        namespace, name = "", key
    return ObjectRef(kind, namespace, name)


def _ref_text(ref: ObjectRef) -> str:
    text = str(ref)
    if not ref.kind or not ref.name or parse_ref(text) != ref:
        raise IRYamlError(f"{ref!r} has no text form that reads back as the same reference")
    return text


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def to_plain(value: Any) -> Any:
    """An IR value (or any part of one) as plain YAML data; see the module docstring."""
    if isinstance(value, ObjectRef):
        return _ref_text(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if item != _default(f):
                fields[f.name] = to_plain(item)
        return {type(value).__name__: fields} if type(value) in tagged_classes() else fields
    if isinstance(value, (tuple, list)):
        return [to_plain(v) for v in value]
    return value


def dump_ir(model: ir.IR, diagnostics: Iterable[Diagnostic] = ()) -> str:
    """``model`` as YAML: ``diagnostics`` (one line each) first, then ``ir``."""
    data = {"diagnostics": [str(d) for d in diagnostics], "ir": to_plain(model)}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100,
                          allow_unicode=True)


# --- reading -----------------------------------------------------------------


def load_ir(text: str, origin: str = "<ir>") -> ir.IR:
    """The IR of a document :func:`dump_ir` wrote, or one written by hand in its shape.

    The document is a mapping with the key ``ir`` and optionally
    ``diagnostics``, a list of lines; those are what a translation said about
    its input and are not part of the IR, so they are checked for shape only.
    Raises :class:`IRYamlError`, prefixed with ``origin``, for anything else.
    """
    try:
        doc = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise IRYamlError(f"{origin}: not YAML: {e}") from None
    try:
        if not isinstance(doc, dict) or "ir" not in doc:
            raise IRYamlError("expected a mapping with the key `ir` (and optionally "
                              "`diagnostics`)")
        extra = [k for k in doc if k not in ("ir", "diagnostics")]
        if extra:
            raise IRYamlError(f"unknown key {extra[0]!r} beside `ir`")
        lines = doc.get("diagnostics", [])
        if not isinstance(lines, list) or not all(isinstance(d, str) for d in lines):
            raise IRYamlError("diagnostics: expected a list of strings")
        model: ir.IR = from_plain(ir.IR, doc["ir"], "ir")
    except IRYamlError as e:
        raise IRYamlError(f"{origin}: {e}") from None
    return model


def from_plain(tp: Any, data: Any, path: str = "value") -> Any:
    """The value of IR type ``tp`` (a class, a union, ``tuple[X, ...]``, ...) that
    :func:`to_plain` renders as ``data``. ``path`` names ``data`` in errors."""
    members = _union_members(tp)
    if members is not None:
        return _read_union(members, data, path)
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if any(type(data) is type(a) and data == a for a in allowed):
            return data
        raise _error(path, f"expected one of {_choices(allowed)}, got {_show(data)}")
    if origin is tuple:
        item, *rest = typing.get_args(tp)
        if rest != [Ellipsis]:
            raise KxdsError(f"{path}: the IR YAML reader knows only tuple[X, ...], not {tp}")
        if not isinstance(data, list):
            raise _error(path, f"expected a list, got {_show(data)}")
        return tuple(from_plain(item, v, f"{path}[{i}]") for i, v in enumerate(data))
    if tp is ObjectRef:
        return _read_ref(data, path)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _read_enum(tp, data, path)
    if _is_ir_class(tp):
        if tp in tagged_classes():
            return _read_tagged((tp,), data, path)
        return _read_fields(tp, data, path)
    if tp in _SCALARS:
        if type(data) is tp:
            return data
        if tp is float and type(data) is int:
            return float(data)
        raise _error(path, f"expected {_SCALARS[tp]}, got {_show(data)}")
    raise KxdsError(f"{path}: the IR YAML reader does not know the type {tp!r}")


_SCALARS: dict[Any, str] = {str: "a string", int: "an integer", bool: "true or false",
                            float: "a number"}


def _error(path: str, why: str) -> IRYamlError:
    return IRYamlError(f"{path}: {why}")


def _show(data: Any) -> str:
    if isinstance(data, dict):
        return "a mapping"
    if isinstance(data, list):
        return "a list"
    if data is None:
        return "null"
    return f"{data!r} ({type(data).__name__})"


def _choices(values: Iterable[Any]) -> str:
    return ", ".join(repr(v) for v in values)


def _read_union(members: tuple[Any, ...], data: Any, path: str) -> Any:
    if data is None:
        if type(None) in members:
            return None
        raise _error(path, "expected a value, got null")
    options = [m for m in members if m is not type(None)]
    tagged = [m for m in options if _is_ir_class(m) and m in tagged_classes()]
    if tagged and len(tagged) == len(options):
        return _read_tagged(tuple(tagged), data, path)
    if len(options) == 1:
        return from_plain(options[0], data, path)
    raise KxdsError(f"{path}: the IR YAML reader cannot tell {members} apart")


def _read_tagged(classes: tuple[type, ...], data: Any, path: str) -> Any:
    names = {c.__name__: c for c in classes}
    if not isinstance(data, dict) or len(data) != 1:
        raise _error(path, f"expected a mapping with one key, the kind ({_choices(names)}), "
                           f"got {_show(data)}")
    ((tag, body),) = data.items()
    cls = names.get(tag)
    if cls is None:
        raise _error(path, f"expected the kind ({_choices(names)}) as the key, got {tag!r}")
    return _read_fields(cls, body, f"{path}.{tag}")


def _read_fields(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise _error(path, f"expected a mapping of {cls.__name__} fields ({{}} when all are "
                           f"at their default), got {_show(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise _error(path, f"{cls.__name__} has no field {key!r} "
                               f"(it has: {', '.join(fields)})")
    missing = [n for n, f in fields.items()
               if n not in data and _default(f) is dataclasses.MISSING]
    if missing:
        raise _error(path, f"{cls.__name__} needs {', '.join(missing)}")
    hints = _hints(cls)
    return cls(**{k: from_plain(hints[k], v, f"{path}.{k}") for k, v in data.items()})


def _read_ref(data: Any, path: str) -> ObjectRef:
    if isinstance(data, str):
        ref = parse_ref(data)
        if ref.kind and ref.name and " " not in ref.key and str(ref) == data:
            return ref
    raise _error(path, f"expected an object reference `Kind namespace/name` or `Kind name`, "
                       f"got {_show(data)}")


def _read_enum(tp: type[enum.Enum], data: Any, path: str) -> enum.Enum:
    values = {m.value: m for m in tp}
    if isinstance(data, str) and data in values:
        return values[data]
    raise _error(path, f"expected one of {_choices(values)}, got {_show(data)}")
