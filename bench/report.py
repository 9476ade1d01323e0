"""Results: one :class:`Metric` per id, printed as a table and written as Markdown and JSON."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.internal import api_implementation


@dataclass(slots=True, kw_only=True)
class Metric:
    """One measured figure against its target.

    ``met`` is None when the metric could not be measured (``error`` says why).
    Durations are in seconds in ``value`` when ``unit`` is ``s``; ``cal`` is the
    same duration divided by the calibration unit.
    """

    id: str
    title: str
    value: float | None
    unit: str
    target: str
    met: bool | None
    cal: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from bench.procs import envoy_version

    try:
        envoy = envoy_version()
    except (RuntimeError, OSError) as e:
        envoy = f"unavailable ({e})"
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "protobuf_backend": api_implementation.Type(),
        "protobuf": _version("protobuf"),
        "grpcio": _version("grpcio"),
        "envoy": envoy,
        "platform": platform.platform(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "-"


def fmt_value(m: Metric) -> str:
    if m.value is None:
        return "n/a"
    if m.unit == "s":
        v = f"{m.value * 1e3:.1f} ms" if m.value < 10 else f"{m.value:.1f} s"
    elif m.unit in ("ratio", "x"):
        v = f"{m.value:.2f}"
    elif m.unit == "KB":
        v = f"{m.value:.1f} KB"
    elif m.unit == "MB":
        v = f"{m.value:.1f} MB"
    else:
        v = f"{m.value:g} {m.unit}".strip()
    return v + (f" ({m.cal:.1f} u)" if m.cal is not None else "")


def status(m: Metric) -> str:
    return "met" if m.met else "NOT MET" if m.met is False else "not measured"


def table(metrics: list[Metric]) -> str:
    rows = ["| id | metric | value | target | status |", "| --- | --- | --- | --- | --- |"]
    for m in metrics:
        note = f" ({m.error})" if m.error else ""
        rows.append(f"| {m.id} | {m.title} | {fmt_value(m)} | {m.target} | {status(m)}{note} |")
    return "\n".join(rows)


def markdown(metrics: list[Metric], info: dict[str, Any], run: dict[str, Any]) -> str:
    lines = ["# kxds benchmark results", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [f"- run: {json.dumps(run, sort_keys=True)}", ""]
    lines += ["`u` = calibration units: durations divided by the time this machine takes to",
              "serialize 1,000 reference Envoy clusters with protobuf, measured in this run",
              "right before each metric (`calibration_unit_s` in its details).", ""]
    lines += [table(metrics), "", "## Details", ""]
    for m in metrics:
        lines += [f"### {m.id}: {m.title}", "", "```json",
                  json.dumps(m.details, indent=2, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines)


def write(metrics: list[Metric], info: dict[str, Any], run: dict[str, Any],
          directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "latest.md").write_text(markdown(metrics, info, run), encoding="utf-8")
    # One object per metric id at the top level, beside the machine and run settings.
    doc: dict[str, Any] = {m.id: asdict(m) for m in metrics}
    doc["machine"] = info
    doc["run"] = run
    (directory / "latest.json").write_text(
        json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    print(table(metrics), file=sys.stdout, flush=True)
