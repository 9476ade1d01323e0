"""Golden cases: load a case's input, translate it, render IR and Envoy resources as YAML.

A case is a directory under ``tests/golden/``:

* ``input.yaml`` (or a directory ``input/`` of manifest files): Kubernetes objects;
* ``config.yaml`` (optional): ``TranslateConfig`` fields, and ``node: {name, zone}``
  to translate for a per-node proxy instead of the edge;
* ``ir.yaml`` and ``envoy.yaml``: the expected IR with diagnostics, and the
  Envoy resources as a config dump. ``pytest --update-golden`` rewrites them.
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any

import yaml

from kxds import ir
from kxds.diagnostics import Diagnostic, ObjectRef
from kxds.envoy import build_resources
from kxds.envoy.dump import resources_to_yaml
from kxds.kube.loader import load_documents, parse_documents
from kxds.kube.models import ClusterState, Model
from kxds.translators.config import NodeInfo, TranslateConfig
from kxds.translators.edge import translate
from kxds.translators.node import translate_node
from kxds.translators.translation import Translation

GOLDEN = Path(__file__).parent / "golden"

# IR union members are tagged with their class name so the reader knows which one.
_TAGGED = (ir.HttpListener, ir.TlsListener, ir.TcpListener, ir.UdpListener,
           ir.HealthCheckListener, ir.TerminatedChain, ir.PassthroughChain,
           ir.Forward, ir.DirectResponse, ir.Redirect, ir.TLSCertificate, ir.ValidationContext)


def cases() -> list[str]:
    """Every golden case, by directory name."""
    return sorted(p.name for p in GOLDEN.iterdir()
                  if p.is_dir() and ((p / "input.yaml").exists() or (p / "input").is_dir()))


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
    for key in ("default_certificate", "external_ip_cidrs", "node_port_range", "cluster_cidrs"):
        if key in raw:
            raw[key] = tuple(raw[key])
    return TranslateConfig(**raw), NodeInfo(**node) if node else None


def run(state: ClusterState, config: TranslateConfig, node: NodeInfo | None) -> Translation:
    """Translate ``state`` for the edge, or for ``node``."""
    return translate_node(state, config, node) if node else translate(state, config)


def render_case(case: str, objects: list[Model] | None = None,
                problems: list[Diagnostic] | None = None) -> tuple[str, str]:
    """``(ir.yaml, envoy.yaml)`` text of a case (optionally with its objects reordered)."""
    if objects is None or problems is None:
        objects, problems = load_case_objects(case)
    config, node = case_settings(case)
    result = run(ClusterState.from_objects(objects, problems), config, node)
    return render_ir(result), resources_to_yaml(build_resources(result.ir))


def to_plain(value: Any) -> Any:
    """IR values as plain YAML data: fields at their default are left out."""
    if isinstance(value, ObjectRef):
        return str(value)
    if isinstance(value, Diagnostic):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            default = (f.default if f.default is not dataclasses.MISSING
                       else f.default_factory() if f.default_factory is not dataclasses.MISSING
                       else dataclasses.MISSING)
            if item != default:
                fields[f.name] = to_plain(item)
        return {type(value).__name__: fields} if isinstance(value, _TAGGED) else fields
    if isinstance(value, (tuple, list)):
        return [to_plain(v) for v in value]
    return value


def render_ir(result: Translation) -> str:
    """The IR and the diagnostics of a translation as YAML."""
    data = {"diagnostics": [str(d) for d in result.diagnostics], "ir": to_plain(result.ir)}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100,
                          allow_unicode=True)
