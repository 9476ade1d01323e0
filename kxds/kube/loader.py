"""Multi-document Kubernetes YAML (or JSON) -> :class:`ClusterState`.

The same loader serves the manifest source, the golden tests, ``kxds translate
-f`` and ``kxds validate -f``. Malformed YAML in one file is reported with its
path and line and the other files still load; ``kind: List`` is flattened.
Input is bounded (:class:`~kxds.kube.limits.Limits`): a file over the size
limit, or a document whose aliases expand past the node budget, is reported
and skipped. The same object (kind, namespace, name) defined twice is reported
as ``Duplicate`` and the first one, by file path, is used.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.kube.limits import LimitCounter, Limits
from kxds.kube.models import ClusterState, Model
from kxds.kube.nodeports import allocate_node_ports
from kxds.kube.parse import parse_object
from kxds.kube.yamlsafe import TooLarge, documents, flatten

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


def load_documents(text: str, origin: str, limits: Limits | None = None,
                   counter: LimitCounter | None = None) -> tuple[list[Any], list[Diagnostic]]:
    """Every object in ``text``; a YAML error yields one diagnostic with the line."""
    limits = limits or Limits()
    objects: list[Any] = []
    problems: list[Diagnostic] = []
    try:
        for index, line, doc in documents(text, limits.max_document_nodes):
            if isinstance(doc, TooLarge):
                problems.append(Diagnostic(
                    ObjectRef("File", "", origin), f"document {index + 1} (line {line})",
                    Reason.TOO_LARGE, f"{doc}, each YAML alias counted as a copy "
                    f"(--max-document-nodes {limits.max_document_nodes}); skipped"))
                (counter or LimitCounter()).hit("max_document_nodes", origin, str(doc))
                continue
            objects.extend(flatten(doc))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "document"
        problem = getattr(e, "problem", None) or str(e)
        return [], [Diagnostic(ObjectRef("File", "", origin), where, Reason.INVALID_YAML,
                               problem)]
    return objects, problems


def parse_documents(
    docs: Iterable[Any], origin: str, limits: Limits | None = None
) -> tuple[list[Model], list[Diagnostic]]:
    """Parse each raw object; models and problems (an object may give both)."""
    objects: list[Model] = []
    problems: list[Diagnostic] = []
    for doc in docs:
        model, problem = parse_object(doc, origin, limits)
        if model is not None:
            objects.append(model)
        if problem is not None:
            problems.append(problem)
    return objects, problems


def _read_at_most(f: BinaryIO, limit: int) -> bytes:
    """Up to ``limit`` bytes, in chunks: ``read(limit)`` would allocate ``limit`` at once."""
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        chunk = f.read(min(1 << 20, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def read_manifest(path: Path, limits: Limits, counter: LimitCounter | None = None
                  ) -> tuple[str | None, list[Diagnostic]]:
    """The text of a manifest file, unless it is unreadable or over ``max_manifest_bytes``."""
    ref = ObjectRef("File", "", str(path))
    try:
        with path.open("rb") as f:
            data = _read_at_most(f, limits.max_manifest_bytes + 1)
        if len(data) > limits.max_manifest_bytes:
            size = max(len(data), path.stat().st_size)
            (counter or LimitCounter()).hit("max_manifest_bytes", str(path), f"{size} bytes")
            return None, [Diagnostic(ref, "file", Reason.TOO_LARGE,
                                     f"is {size} bytes, more than --max-manifest-bytes "
                                     f"{limits.max_manifest_bytes}; skipped")]
        return data.decode("utf-8"), []
    except (OSError, UnicodeDecodeError) as e:
        return None, [Diagnostic(ref, "file", Reason.INVALID_YAML, str(e))]


def load_file(path: Path, limits: Limits | None = None, counter: LimitCounter | None = None
              ) -> tuple[list[Model], list[Diagnostic]]:
    """Parse one manifest file into models and problems."""
    limits = limits or Limits()
    text, problems = read_manifest(path, limits, counter)
    if text is None:
        return [], problems
    docs, problems = load_documents(text, str(path), limits, counter)
    objects, more = parse_documents(docs, str(path), limits)
    return objects, problems + more


def first_by_path(files: Sequence[tuple[str, Sequence[Model]]]
                  ) -> tuple[list[Model], list[Diagnostic]]:
    """Every object once: the first definition wins (``files`` in path order), each later
    one is reported as ``Duplicate``, naming both files."""
    seen: dict[tuple[str, str, str], str] = {}
    objects: list[Model] = []
    problems: list[Diagnostic] = []
    for origin, models in files:
        for obj in models:
            key = (obj.meta.kind, obj.meta.namespace, obj.meta.name)
            first = seen.get(key)
            if first is None:
                seen[key] = origin
                objects.append(obj)
                continue
            where = f"twice in {first}" if first == origin else f"in {first} and in {origin}"
            problems.append(Diagnostic(obj.meta.ref, "metadata.name", Reason.DUPLICATE,
                                       f"defined {where}; the first (by file path, then "
                                       "position) is used, the other ignored"))
    return objects, problems


def load_text(text: str, origin: str = "<input>", limits: Limits | None = None) -> ClusterState:
    """A ClusterState from YAML text (golden tests, bug reports)."""
    docs, problems = load_documents(text, origin, limits)
    objects, more = parse_documents(docs, origin, limits)
    objects, dups = first_by_path([(origin, objects)])
    return ClusterState.from_objects(objects, problems + more + dups)


def load_path(path: Path, limits: Limits | None = None,
              counter: LimitCounter | None = None,
              node_port_range: tuple[int, int] | None = None) -> ClusterState:
    """A ClusterState from a manifest file or every manifest under a directory.

    With ``node_port_range``, missing nodePorts are allocated as the manifest
    source allocates them (``kxds translate`` and ``validate`` see what ``serve`` serves).
    """
    files: list[tuple[str, Sequence[Model]]] = []
    problems: list[Diagnostic] = []
    for file in manifest_files(path):
        o, p = load_file(file, limits, counter)
        files.append((str(file), o))
        problems += p
    objects, dups = first_by_path(files)
    problems += dups
    if node_port_range is not None:
        objects, allocated = allocate_node_ports(objects, node_port_range)
        problems += allocated
    return ClusterState.from_objects(objects, problems)
