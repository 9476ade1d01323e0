"""Fixtures for end-to-end tests with the real Envoy, and failure diagnostics.

On a failing test every process still running (Envoy, kxds, echo backends)
has its log tail, and each Envoy its ``/config_dump``, attached to the report.
Every process a fixture starts is stopped by pid when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e import harness
from e2e.harness import EchoBackend, Gateway, Process


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        for proc in list(harness.RUNNING):
            report.sections.append((f"{proc.name} ({call.when})", proc.diagnostics()))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    harness.stop_all()


@pytest.fixture
def manifests_dir(tmp_path: Path) -> Path:
    """An empty directory for kxds to watch."""
    path = tmp_path / "manifests"
    path.mkdir()
    return path


@pytest.fixture
def started(request: pytest.FixtureRequest) -> Iterator[list[Process | Gateway]]:
    """Processes (and gateways) a test started; all stopped at teardown, newest first."""
    items: list[Process | Gateway] = []
    yield items
    for item in reversed(items):
        item.stop()


@pytest.fixture
def echo(tmp_path: Path, started: list[Process | Gateway]) -> Callable[..., EchoBackend]:
    """Factory: ``echo("web")`` starts an HTTP echo backend; kwargs go to EchoBackend."""
    def start(name: str, **kwargs: Any) -> EchoBackend:
        backend = EchoBackend(name, tmp_path, **kwargs)
        started.append(backend)
        return backend
    return start


@pytest.fixture
def kxds_envoy(tmp_path: Path, started: list[Process | Gateway]) -> Callable[..., Gateway]:
    """Factory: ``kxds_envoy(manifests_dir, extra_args)`` -> a ready :class:`Gateway`.

    kxds watches ``manifests_dir``; one edge Envoy is connected and its HTTP
    listener is accepting (pass ``wait=False`` when no Ingress exists yet).
    """
    def start(manifests: Path, extra_args: tuple[str, ...] | list[str] = (),
              **kwargs: Any) -> Gateway:
        gw = Gateway(tmp_path, manifests, extra_args, **kwargs)
        started.append(gw)
        return gw
    return start
