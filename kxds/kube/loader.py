"""Multi-document Kubernetes YAML (or JSON) -> :class:`ClusterState`.

The same loader serves the manifest source, the golden tests, ``kxds translate
-f`` and ``kxds validate -f``. Malformed YAML in one file is reported with its
path and line and the other files still load; ``kind: List`` is flattened.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.kube.models import ClusterState, Model
from kxds.kube.parse import parse_object

try:  # libyaml's C loader is about 8x faster (see DESIGN.md).
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - only without libyaml
    _Loader = yaml.SafeLoader

SUFFIXES = (".yaml", ".yml", ".json")


def manifest_files(path: Path) -> list[Path]:
    """``path`` itself, or every manifest file below it (hidden ones skipped), sorted."""
    if path.is_file():
        return [path]
    return sorted(
        p for p in path.rglob("*")
        if p.suffix in SUFFIXES and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


def _flatten(doc: Any) -> Iterator[Any]:
    is_list = isinstance(doc, Mapping) and doc.get("kind") == "List"
    if is_list and isinstance(doc.get("items"), list):
        for item in doc["items"]:
            yield from _flatten(item)
    elif doc is not None:
        yield doc


def load_documents(text: str, origin: str) -> tuple[list[Any], list[Diagnostic]]:
    """Every object in ``text``; a YAML error yields one diagnostic with the line."""
    try:
        docs = list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"line {mark.line + 1}" if mark is not None else "document"
        problem = getattr(e, "problem", None) or str(e)
        return [], [Diagnostic(ObjectRef("File", "", origin), line, Reason.INVALID_YAML, problem)]
    return [obj for doc in docs for obj in _flatten(doc)], []


def parse_documents(
    docs: Iterable[Any], origin: str
) -> tuple[list[Model], list[Diagnostic]]:
    objects: list[Model] = []
    problems: list[Diagnostic] = []
    for doc in docs:
        model, problem = parse_object(doc, origin)
        if model is not None:
            objects.append(model)
        if problem is not None:
            problems.append(problem)
    return objects, problems


def load_file(path: Path) -> tuple[list[Model], list[Diagnostic]]:
    """Parse one manifest file into models and problems."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return [], [Diagnostic(ObjectRef("File", "", str(path)), "file", Reason.INVALID_YAML,
                                str(e))]
    docs, problems = load_documents(text, str(path))
    objects, more = parse_documents(docs, str(path))
    return objects, problems + more


def load_text(text: str, origin: str = "<input>") -> ClusterState:
    """A ClusterState from YAML text (golden tests, bug reports)."""
    docs, problems = load_documents(text, origin)
    objects, more = parse_documents(docs, origin)
    return ClusterState.from_objects(objects, problems + more)


def load_path(path: Path) -> ClusterState:
    """A ClusterState from a manifest file or every manifest under a directory."""
    objects: list[Model] = []
    problems: list[Diagnostic] = []
    for file in manifest_files(path):
        o, p = load_file(file)
        objects += o
        problems += p
    return ClusterState.from_objects(objects, problems)
