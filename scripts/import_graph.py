"""Print kxds's import graph between its packages and top-level modules.

``make imports`` runs it: one line per package, then the packages it imports
(directly, anywhere in its modules). The direction is enforced by the
import-linter contracts in pyproject.toml (``lint-imports``, run by ``make test``).
"""

from __future__ import annotations

import grimp


def unit(module: str) -> str:
    """``kxds.translators.edge`` -> ``kxds.translators``; ``kxds.cli`` stays."""
    parts = module.split(".")
    return ".".join(parts[:2])


def main() -> None:
    graph = grimp.build_graph("kxds")
    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        source = unit(module)
        edges.setdefault(source, set())
        for imported in graph.find_modules_directly_imported_by(module):
            target = unit(imported)
            if target != source and target != "kxds":
                edges[source].add(target)
    for source in sorted(edges, key=lambda s: (-len(edges[s]), s)):
        if source == "kxds":
            continue
        targets = ", ".join(t.removeprefix("kxds.") for t in sorted(edges[source])) or "-"
        print(f"{source.removeprefix('kxds.'):<14} -> {targets}")


if __name__ == "__main__":
    main()
