"""Golden cases: load a case's input, translate or build it, render the expected files.

Two tiers, one directory per case (``tests/golden/README.md`` describes them):

* ``tests/golden/<case>/``: Kubernetes objects (``input.yaml`` or ``input/``,
  and an optional ``config.yaml``) -> ``ir.yaml`` (the IR and the diagnostics)
  and one file of Envoy resources per type;
* ``tests/golden-ir/<case>/``: an IR written by hand (``ir.yaml``) -> one file
  of Envoy resources per type: the Envoy builders, tested without Kubernetes.

A type without resources has no file. ``pytest --update-golden`` rewrites the
expected files and deletes stale ones (see :func:`stale_files`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kxds import ir
from kxds.diagnostics import Diagnostic
from kxds.envoy.build import build_resources
from kxds.envoy.dump import resources_to_dict
from kxds.envoy.resource import SHORT_NAMES, TYPE_ORDER, Resources
from kxds.ir_yaml import dump_ir, load_ir
from kxds.kube.loader import load_documents, parse_documents
from kxds.kube.models import ClusterState, Model
from kxds.translators.config import NodeInfo, TracingConfig, TranslateConfig
from kxds.translators.edge import translate
from kxds.translators.node import translate_node
from kxds.translators.translation import Translation

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_IR = Path(__file__).parent / "golden-ir"

ENVOY_FILES = tuple(f"{SHORT_NAMES[t]}.yaml" for t in TYPE_ORDER)
"""The expected Envoy resources of a case, one file per type, in push order."""


@dataclass(frozen=True)
class Tier:
    """Where a tier's cases live and which files of a case are input, output or neither."""

    root: Path
    inputs: frozenset[str]
    """Names in a case directory that people write (files or directories)."""
    markers: frozenset[str]
    """Inputs of which one makes a directory a case."""
    outputs: frozenset[str]
    """Names the tests write, and so may delete."""


RETIRED_OUTPUTS = frozenset({"envoy.yaml"})
"""Outputs no longer written (every type was in one file): stale wherever they are."""

DOCS = frozenset({"README.md"})
"""Notes a person may keep in a tier's directory or in a case."""

INPUT_TIER = Tier(root=GOLDEN, inputs=frozenset({"input.yaml", "input", "config.yaml"}),
                  markers=frozenset({"input.yaml", "input"}),
                  outputs=frozenset({"ir.yaml", *ENVOY_FILES}))
IR_TIER = Tier(root=GOLDEN_IR, inputs=frozenset({"ir.yaml"}), markers=frozenset({"ir.yaml"}),
               outputs=frozenset(ENVOY_FILES))
TIERS = (INPUT_TIER, IR_TIER)


def is_case(tier: Tier, path: Path) -> bool:
    """Whether ``path`` is a case directory of ``tier`` (it holds an input)."""
    return path.is_dir() and any((path / m).exists() for m in tier.markers)


def tier_cases(tier: Tier) -> list[str]:
    """Every case of ``tier``, by directory name."""
    if not tier.root.is_dir():
        return []
    return sorted(p.name for p in tier.root.iterdir() if is_case(tier, p))


def cases() -> list[str]:
    """Every case of the Kubernetes -> IR -> Envoy tier, by directory name."""
    return tier_cases(INPUT_TIER)


def ir_cases() -> list[str]:
    """Every case of the IR -> Envoy tier, by directory name."""
    return tier_cases(IR_TIER)


# --- the Kubernetes input tier ---------------------------------------------


def load_case_objects(case: str) -> tuple[list[Model], list[Diagnostic]]:
    """The models and parse problems of a case's input (origins relative to the case)."""
    root = GOLDEN / case
    files = ([root / "input.yaml"] if (root / "input.yaml").exists()
             else sorted((root / "input").rglob("*.yaml")))
    objects: list[Model] = []
    problems: list[Diagnostic] = []
    for f in files:
        origin = str(f.relative_to(root))
        docs, bad = load_documents(f.read_text(encoding="utf-8"), origin)
        found, more = parse_documents(docs, origin)
        objects += found
        problems += bad + more
    return objects, problems


def case_settings(case: str) -> tuple[TranslateConfig, NodeInfo | None]:
    """The translation config (and node, for per-node cases) of a case."""
    path = GOLDEN / case / "config.yaml"
    raw: dict[str, Any] = yaml.safe_load(path.read_text()) if path.exists() else {}
    raw = dict(raw or {})
    node = raw.pop("node", None)
    if "client_ip" in raw:
        raw["client_ip"] = ir.ClientIPConfig(**raw["client_ip"])
    if "tracing" in raw:
        raw["tracing"] = TracingConfig(**raw["tracing"])
    for key in ("default_certificate", "external_ip_cidrs", "node_port_range", "cluster_cidrs"):
        if key in raw:
            raw[key] = tuple(raw[key])
    return TranslateConfig(**raw), NodeInfo(**node) if node else None


def run(state: ClusterState, config: TranslateConfig, node: NodeInfo | None) -> Translation:
    """Translate ``state`` for the edge, or for ``node``."""
    return translate_node(state, config, node) if node else translate(state, config)


def translate_case(case: str, objects: list[Model] | None = None,
                   problems: list[Diagnostic] | None = None) -> Translation:
    """The translation of a case's input (optionally of its objects, reordered)."""
    if objects is None or problems is None:
        objects, problems = load_case_objects(case)
    config, node = case_settings(case)
    return run(ClusterState.from_objects(objects, problems), config, node)


def render_case(case: str, objects: list[Model] | None = None,
                problems: list[Diagnostic] | None = None) -> tuple[str, dict[str, str]]:
    """``(ir.yaml text, {Envoy file name: text})`` of a case."""
    result = translate_case(case, objects, problems)
    return render_ir(result), render_envoy(build_resources(result.ir))


def render_ir(result: Translation) -> str:
    """The IR and the diagnostics of a translation as YAML."""
    return dump_ir(result.ir, result.diagnostics)


def read_expected_ir(case: str) -> ir.IR:
    """The IR a case's expected ``ir.yaml`` describes."""
    path = GOLDEN / case / "ir.yaml"
    return load_ir(path.read_text(encoding="utf-8"), str(path.relative_to(GOLDEN.parent)))


# --- the IR input tier -----------------------------------------------------


def read_ir_case(case: str) -> ir.IR:
    """The hand-written IR of an IR-tier case."""
    path = GOLDEN_IR / case / "ir.yaml"
    return load_ir(path.read_text(encoding="utf-8"), str(path.relative_to(GOLDEN_IR.parent)))


def render_ir_case(case: str) -> dict[str, str]:
    """``{Envoy file name: text}`` of an IR-tier case."""
    return render_envoy(build_resources(read_ir_case(case)))


# --- Envoy output, and stale files -----------------------------------------


def render_envoy(resources: Resources) -> dict[str, str]:
    """One YAML text per resource type that has resources, by file name.

    Each text is a config dump with that one type (``clusters: [...]``), so the
    files of a case, concatenated in push order, are the whole config dump.
    """
    return {f"{kind}.yaml": yaml.safe_dump({kind: items}, sort_keys=False,
                                           default_flow_style=False, allow_unicode=True,
                                           width=100)
            for kind, items in resources_to_dict(resources).items()}


def stale_files(tier: Tier) -> tuple[list[Path], list[Path]]:
    """``(stale, unexpected)`` paths under a tier's directory.

    Stale: outputs of a directory that is no longer a case (its input is
    gone), and retired outputs; the tests wrote them, so ``--update-golden``
    deletes them. Unexpected: anything else that is neither input, output nor
    notes (``input.yml``, a ``config.yaml`` without an input): never deleted,
    since a person wrote it. Outputs of a type that has no resources any more
    are found by the golden test of their case, which renders it.
    """
    stale: list[Path] = []
    unexpected: list[Path] = []
    if not tier.root.is_dir():
        return stale, unexpected
    for entry in sorted(tier.root.iterdir()):
        if not entry.is_dir():
            if entry.name not in DOCS:
                unexpected.append(entry)
            continue
        case = is_case(tier, entry)
        for item in sorted(entry.iterdir()):
            name = item.name
            if item.is_file() and (name in RETIRED_OUTPUTS
                                   or (not case and name in tier.outputs)):
                stale.append(item)
            elif not (name in DOCS or (case and name in tier.inputs | tier.outputs)):
                unexpected.append(item)
    return stale, unexpected
