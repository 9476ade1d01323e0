"""Golden tests: every case gives exactly its expected files.

Two tiers (``tests/golden/README.md``): Kubernetes objects -> IR -> Envoy
resources under ``tests/golden/``, and hand-written IR -> Envoy resources
under ``tests/golden-ir/``. The expected files are reviewed like code;
``pytest --update-golden`` rewrites them and deletes stale ones. Also checked
here: the output does not depend on input order, the expected IR reads back
into the very IR it was written from, every case's IR is consistent, every
case named as bad input says so with a diagnostic, and Envoy accepts every
case's resources (``envoy --mode validate``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
import yaml
from golden_support import (
    ENVOY_FILES,
    GOLDEN,
    GOLDEN_IR,
    TIERS,
    cases,
    ir_cases,
    load_case_objects,
    read_expected_ir,
    read_ir_case,
    render_case,
    render_envoy,
    render_ir_case,
    stale_files,
    translate_case,
)

from kxds import ir
from kxds.envoy.build import build_resources
from kxds.envoy.validate import find_envoy, validate_with_envoy
from kxds.ir import consistency_problems
from kxds.ir_yaml import dump_ir, load_ir, to_plain

CASES = cases()
IR_CASES = ir_cases()
UPDATE_HINT = "if the change is intended, rerun with --update-golden and review the diff"


def _shown(path: Path) -> str:
    return str(path.relative_to(GOLDEN.parent))


def check_files(case_dir: Path, expected: Mapping[str, str], optional: Iterable[str],
                update: bool) -> None:
    """``case_dir`` holds exactly ``expected``; of ``optional``, only those in it.

    With ``update``, make it so: write what differs, delete what is not expected.
    """
    problems = []
    for name, text in expected.items():
        path = case_dir / name
        if update:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")
        elif not path.exists():
            problems.append(f"{_shown(path)} is missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{_shown(path)} differs")
    for name in optional:
        path = case_dir / name
        if name not in expected and path.exists():
            if update:
                path.unlink()
            else:
                problems.append(f"{_shown(path)} is stale: the case has no such resources")
    if problems:
        pytest.fail("; ".join(problems) + f" ({UPDATE_HINT})")


# --- Kubernetes -> IR -> Envoy ---------------------------------------------


def test_enough_cases() -> None:
    assert len(CASES) >= 22
    assert len(IR_CASES) >= 6


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, update_golden: bool) -> None:
    ir_text, envoy_files = render_case(case)
    check_files(GOLDEN / case, {"ir.yaml": ir_text, **envoy_files}, ENVOY_FILES, update_golden)


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
def test_expected_ir_reads_back(case: str) -> None:
    """The expected ``ir.yaml``, read back, is the translation's IR: same values and
    types (an enum, not its string; a tuple, not a list), and the same Envoy output."""
    result = translate_case(case)
    model = read_expected_ir(case)
    text = (GOLDEN / case / "ir.yaml").read_text(encoding="utf-8")
    assert to_plain(model) == yaml.safe_load(text)["ir"], "reading lost or added a field"
    assert repr(model) == repr(result.ir), (
        f"{case}/ir.yaml does not read back as the translation's IR ({UPDATE_HINT})")
    assert (render_envoy(build_resources(model))
            == render_envoy(build_resources(result.ir)))


@pytest.mark.parametrize("case", CASES)
def test_golden_consistent(case: str) -> None:
    assert_consistent(translate_case(case).ir)


def _named_as_bad_input(case: str) -> bool:
    return bool({"invalid", "bad"} & set(case.split("-")))


BAD_INPUT_CASES = [c for c in CASES if _named_as_bad_input(c)]


def test_bad_input_cases_exist() -> None:
    assert any(c.startswith("invalid-") for c in BAD_INPUT_CASES)


@pytest.mark.parametrize("case", BAD_INPUT_CASES)
def test_bad_input_case_has_diagnostics(case: str) -> None:
    """A case named ``invalid-*`` (or with ``bad``/``invalid`` as a word) must be reported:
    otherwise its input no longer shows what its name promises."""
    assert translate_case(case).diagnostics, f"{case}: the translation reported no problem"


# --- hand-written IR -> Envoy ----------------------------------------------


@pytest.mark.parametrize("case", IR_CASES)
def test_golden_ir(case: str, update_golden: bool) -> None:
    check_files(GOLDEN_IR / case, render_ir_case(case), ENVOY_FILES, update_golden)


@pytest.mark.parametrize("case", IR_CASES)
def test_golden_ir_round_trip(case: str) -> None:
    """Writing a hand-written IR and reading it back gives the same IR."""
    model = read_ir_case(case)
    assert repr(load_ir(dump_ir(model))) == repr(model)


@pytest.mark.parametrize("case", IR_CASES)
def test_golden_ir_consistent(case: str) -> None:
    assert_consistent(read_ir_case(case))


# --- both tiers ------------------------------------------------------------


def assert_consistent(model: ir.IR) -> None:
    """Everything ``model`` names exists, and no two things of a kind share a name."""
    assert consistency_problems(model) == []
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


def test_no_stale_files(update_golden: bool) -> None:
    """Outputs whose input is gone are stale: ``--update-golden`` deletes them (and the
    directory they leave empty). Files that are neither input nor output fail either way."""
    stale = [p for t in TIERS for p in stale_files(t)[0]]
    unexpected = [p for t in TIERS for p in stale_files(t)[1]]
    if update_golden:
        for path in stale:
            path.unlink()
            if not any(path.parent.iterdir()):
                path.parent.rmdir()
        stale = []
    problems = []
    if stale:
        problems.append("stale golden files (their input is gone, or they are no longer "
                        "written; --update-golden deletes them): " + ", ".join(map(_shown, stale)))
    if unexpected:
        problems.append("neither input nor expected output of a golden case (a misspelt input? "
                        "an input without its case?): " + ", ".join(map(_shown, unexpected)))
    if problems:
        pytest.fail("; ".join(problems))


ENVOY_CHECKS = [pytest.param("golden", c, id=c) for c in CASES] + \
    [pytest.param("golden-ir", c, id=f"ir-{c}") for c in IR_CASES]


@pytest.mark.skipif(find_envoy() is None, reason="envoy binary not installed")
@pytest.mark.parametrize(("tier", "case"), ENVOY_CHECKS)
def test_golden_envoy_accepts(tier: str, case: str) -> None:
    """Envoy itself accepts every case's configuration (``envoy --mode validate``)."""
    model = translate_case(case).ir if tier == "golden" else read_ir_case(case)
    ok, output = validate_with_envoy(build_resources(model))
    assert ok, output[-4000:]
