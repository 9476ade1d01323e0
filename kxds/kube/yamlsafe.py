"""YAML documents read with a budget: aliases cannot blow a few bytes up into gigabytes.

A YAML alias (``*a``) stands for the whole node its anchor (``&a``) names, so
eight levels of nine aliases each describe 9^8 (43 million) nodes in under
500 bytes. PyYAML builds such a document cheaply, as a graph that shares the
aliased node, but anything that later walks it as the tree it means (a
message quoting the value, a conversion to text) walks every copy. Each
document's *expanded* size (every alias counted as a copy of what it names)
is therefore measured on the composed node graph, in time linear in the
graph, before a Python object is built from it; a document over the budget,
or one whose aliases form a cycle, is refused with a diagnostic naming the
file and the document. Nesting depth needs no check here: libyaml refuses
documents nested deeper than 1000 levels.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import yaml

try:  # libyaml's C loader is about 8x faster (see DESIGN.md).
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - only without libyaml
    _Loader = yaml.SafeLoader


class TooLarge(Exception):
    """A document over the node budget (or with recursive aliases)."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def expanded_size(root: yaml.Node, budget: int) -> int:
    """Nodes in ``root`` with every alias expanded; raises :class:`TooLarge` over ``budget``.

    Iterative (no recursion limit) and memoized per node, so its cost is the
    size of the graph, not of the tree it stands for.
    """
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            size = 1 + sum(sizes[id(c)] for c in _children(node))
            if size > budget:
                raise TooLarge(f"expands to more than {budget} nodes")
            sizes[key] = size
            open_.discard(key)
            continue
        if key in sizes:
            continue
        if key in open_:
            raise TooLarge("an alias refers to a node that contains it")
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


def documents(text: str, budget: int) -> Iterator[tuple[int, int, Any | TooLarge]]:
    """``(index, line, object or TooLarge)`` per document; YAML errors raise ``yaml.YAMLError``."""
    loader = _Loader(text)
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            line = node.start_mark.line + 1 if node is not None else 0
            try:
                expanded_size(node, budget)
            except TooLarge as e:
                yield index, line, e
            else:
                yield index, line, loader.construct_document(node)
            index += 1
    finally:
        loader.dispose()


def flatten(doc: Any) -> Iterator[Any]:
    """The objects of a document: ``kind: List`` items (nested Lists too), else the document."""
    stack = [doc]
    while stack:
        current = stack.pop()
        is_list = isinstance(current, Mapping) and current.get("kind") == "List"
        if is_list and isinstance(current.get("items"), list):
            stack.extend(reversed(current["items"]))
        elif current is not None:
            yield current
