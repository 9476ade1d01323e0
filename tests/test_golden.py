"""Golden tests: every ``tests/golden/<case>/`` input gives exactly its expected output.

The expected files are reviewed like code; ``pytest --update-golden`` rewrites
them. Also checked here: the output does not depend on input order, and every
case's Envoy resources pass ``envoy --mode validate``.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from golden_support import GOLDEN, case_settings, cases, load_case_objects, render_case, run

from kxds.envoy import build_resources
from kxds.envoy.validate import find_envoy, validate_with_envoy
from kxds.ir import consistency_problems
from kxds.kube.models import ClusterState

CASES = cases()


def _check(path: Path, actual: str, update: bool) -> None:
    if update:
        path.write_text(actual, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"{path.relative_to(GOLDEN.parent)} is missing; run "
                    "`pytest tests/test_golden.py --update-golden` and review the new file")
    assert actual == path.read_text(encoding="utf-8"), (
        f"{path.relative_to(GOLDEN.parent)} differs; if the change is intended, rerun with "
        "--update-golden and review the diff")


def test_enough_cases() -> None:
    assert len(CASES) >= 22


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, update_golden: bool) -> None:
    ir_text, envoy_text = render_case(case)
    _check(GOLDEN / case / "ir.yaml", ir_text, update_golden)
    _check(GOLDEN / case / "envoy.yaml", envoy_text, update_golden)


@pytest.mark.parametrize("case", CASES)
def test_golden_order_independent(case: str) -> None:
    """Shuffling the input objects (and problems) never changes a byte of the output."""
    objects, problems = load_case_objects(case)
    expected = render_case(case, objects, problems)
    rng = random.Random(case)
    for _ in range(3):
        rng.shuffle(objects)
        rng.shuffle(problems)
        assert render_case(case, list(objects), list(problems)) == expected


@pytest.mark.parametrize("case", CASES)
def test_golden_consistent(case: str) -> None:
    objects, problems = load_case_objects(case)
    config, node = case_settings(case)
    result = run(ClusterState.from_objects(objects, problems), config, node)
    assert consistency_problems(result.ir) == []
    model = result.ir
    for kind, names in [
        ("cluster", [c.name for c in model.clusters]),
        ("load assignment", [a.cluster for a in model.load_assignments]),
        ("listener", [lis.name for lis in model.listeners]),
        ("route table", [t.name for t in model.route_tables]),
        ("secret", [s.name for s in model.secrets]),
        *((f"virtual host (in {t.name})", [v.name for v in t.virtual_hosts])
          for t in model.route_tables),
    ]:
        assert len(names) == len(set(names)), f"duplicate {kind} names: {sorted(names)}"


@pytest.mark.skipif(find_envoy() is None, reason="envoy binary not installed")
@pytest.mark.parametrize("case", CASES)
def test_golden_envoy_accepts(case: str) -> None:
    """Envoy itself accepts every generated configuration (``envoy --mode validate``)."""
    objects, problems = load_case_objects(case)
    config, node = case_settings(case)
    result = run(ClusterState.from_objects(objects, problems), config, node)
    ok, output = validate_with_envoy(build_resources(result.ir))
    assert ok, output[-4000:]
