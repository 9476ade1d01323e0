"""Resource versions depend on the cluster alone, never on the process that computes them.

A restarted kxds must compute the very versions its proxies hold, or every proxy gets
everything again (SotW ``version_info`` and delta ``initial_resource_versions`` are
compared with them). Python randomizes string hashing per process, so anything built
by iterating a set of strings, or keyed by ``id()``, would differ between processes:
the input of every golden case (Ingresses and their annotations, Gateway API, TLS,
policies, Services of every type), for the edge and for a node, is translated in
processes with different hash seeds, and every version must be the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import json, sys
from pathlib import Path
from kxds import cli
from kxds.envoy.build import build_resources

out = {}
for case in sorted(Path(sys.argv[1]).iterdir()):
    source = case / "input.yaml" if (case / "input.yaml").exists() else case / "input"
    if not source.exists():
        continue
    for label, extra in (("edge", []), ("node", ["--node", "node-a"])):
        args = cli._parser().parse_args(["translate", "-f", str(source), *extra])
        resources = build_resources(cli._translation(args, cli._load(args)).ir)
        out[f"{case.name}/{label}"] = {t: {n: r.version for n, r in by_name.items()}
                                       for t, by_name in resources.items()}
print(json.dumps(out, sort_keys=True))
"""


def versions(seed: str) -> dict[str, dict[str, dict[str, str]]]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "tests" / "golden")], env=env,
                          capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, dict[str, dict[str, str]]] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("seed", ["2", "12345"])
def test_versions_are_the_same_in_another_process(seed: str) -> None:
    first = versions("1")
    assert sum(len(v) for by_type in first.values() for v in by_type.values()) > 500
    assert versions(seed) == first
