"""The README's promises: a two-command set-up, and curl lines the sandbox really serves.

The curl lines themselves are exercised against a running sandbox by
``e2e/test_sandbox.py`` (which parses what the sandbox prints); this checks
that the README shows exactly those lines, at the sandbox's default ports, and
that CI and ``make`` do what the README says they do.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from kxds.sandbox import https, run

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def code_blocks(text: str) -> list[list[str]]:
    """Every fenced code block of ``text``, as its lines."""
    return [block.splitlines() for block in re.findall(r"^```[^\n]*\n(.*?)^```", text,
                                                       flags=re.M | re.S)]


def command(line: str) -> str:
    """A shell line without its trailing comment and surplus spaces."""
    return " ".join(shlex.split(line, comments=True))


def test_setup_is_exactly_two_commands() -> None:
    """The README opens with the whole set-up: ``make sandbox`` and ``make test``."""
    before_first_section = README.split("\n## ", 1)[0]
    first = code_blocks(before_first_section)[0]
    assert [command(line) for line in first if command(line)] == ["make sandbox", "make test"]


def _sandbox_defaults() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    run.add_sandbox_flags(p)
    return p.parse_args([])


def _without_ca_path(line: str) -> str:
    """The CA file lives in a temporary directory whose name changes every run."""
    return re.sub(r"--cacert \S+", "--cacert CA", command(line))


def test_readme_curl_lines_are_what_the_sandbox_prints() -> None:
    defaults = _sandbox_defaults()
    printed = run.curl_lines(defaults.http_port) + https.curl_lines(
        defaults.http_port, defaults.https_port, Path("ca.crt"))
    section = README.split("\n## The sandbox\n", 1)[1].split("\n## ", 1)[0]
    shown = [line for block in code_blocks(section) for line in block
             if line.startswith("curl ")]
    assert [_without_ca_path(s) for s in shown] == [_without_ca_path(p) for p in printed]
    # The comments name the backend that answers, as the sandbox's own checks require.
    for line, example in zip(shown, run.EXAMPLES, strict=False):
        assert f"# {example.backend}:" in line


def test_readme_admin_and_metrics_ports_are_the_sandbox_defaults() -> None:
    defaults = _sandbox_defaults()
    assert f"http://127.0.0.1:{defaults.envoy_admin_port}/" in README
    assert f"http://127.0.0.1:{defaults.admin_port}/metrics" in README


def test_ci_runs_make_test_and_nothing_else() -> None:
    lines = [command(line) for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    steps = [line for line in lines
             if line and not line.startswith(("set ", "cd ", "#!"))]
    assert steps == ["make test"]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(("target", "runs"), [
    ("sandbox", "/bin/kxds sandbox"),
    ("test", "/bin/pytest -n 2"),
])
def test_make_target_creates_the_venv_then_runs(target: str, runs: str, tmp_path: Path) -> None:
    """``make -n`` with a missing virtualenv: create it, install, then run (nothing executed)."""
    venv = tmp_path / "venv"
    result = subprocess.run(["make", "-n", "-C", str(ROOT), target, f"VENV={venv}"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    create = out.index(f"-m venv {venv}")
    install = out.index(f"{venv}/bin/pip install --quiet -e '.[test]'")
    run = out.index(f"{venv}{runs}")
    assert create < install < run, out


def test_readme_node_set_up_is_what_node_routing_prints() -> None:
    """The README's transparent-source set-up is exactly ``kxds node-routing print``."""
    from kxds import noderouting

    section = README.split("\n### Transparent source addresses\n", 1)[1].split("\n#", 1)[0]
    [block] = code_blocks(section)
    assert [line + "\n" for line in block] == noderouting.script().splitlines(keepends=True)
