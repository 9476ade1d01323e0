"""The benchmark's scenario generator makes valid, deterministic Kubernetes objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import scenario
from bench.scenario import Spec
from kxds.kube.loader import load_path


@pytest.mark.parametrize("services", [1, 7, 40], ids=lambda n: f"N={n}")
def test_manifests_load_without_diagnostics(tmp_path: Path, services: int) -> None:
    spec = Spec(services=services, endpoints=3)
    files = scenario.write_manifests(spec, tmp_path, per_file=25)
    assert files
    state = load_path(tmp_path)
    assert state.problems == ()
    assert len(state.services) == services
    assert len(state.endpoint_slices) == services
    assert len(state.ingresses) == spec.ingresses
    assert len(state.network_policies) == len(range(0, services, spec.policy_every))
    assert all(len(s.endpoints) == 3 for s in state.endpoint_slices.values())
    # Every Service is routed by exactly one path, in an Ingress of its own namespace.
    routed = {
        (ing.meta.namespace, p.backend.service)
        for ing in state.ingresses.values() for r in ing.rules for p in r.paths
    }
    assert routed == set(state.services)


def test_in_memory_state_equals_loaded_manifests(tmp_path: Path) -> None:
    spec = Spec(services=30, endpoints=2)
    scenario.write_manifests(spec, tmp_path)
    loaded = load_path(tmp_path)
    built = scenario.build_state(spec)
    assert dict(built.services) == dict(loaded.services)
    assert dict(built.endpoint_slices) == dict(loaded.endpoint_slices)
    assert dict(built.ingresses) == dict(loaded.ingresses)
    assert dict(built.network_policies) == dict(loaded.network_policies)


def test_mutations_change_only_what_they_name() -> None:
    spec = Spec(services=20, endpoints=2)
    state = scenario.build_state(spec)
    new = scenario.parse(scenario.slice_doc(spec, 3, generation=1))
    changed = scenario.with_slice(state, new)  # type: ignore[arg-type]
    assert changed.endpoint_slices[new.meta.key] == new
    assert changed.endpoint_slices[new.meta.key] != state.endpoint_slices[new.meta.key]
    diff = [k for k, v in state.endpoint_slices.items() if changed.endpoint_slices[k] != v]
    assert diff == [new.meta.key]
    assert changed.slices_by_service[(new.meta.namespace, new.service_name)] == (new,)
    assert changed.services == state.services


def test_scenario_translates_without_diagnostics() -> None:
    from kxds.translators.config import TranslateConfig
    from kxds.translators.edge import translate

    spec = Spec(services=12, endpoints=2)
    result = translate(scenario.build_state(spec), TranslateConfig())
    assert result.diagnostics == ()
    assert len(result.ir.clusters) == 12
    routes = [r for t in result.ir.route_tables for vh in t.virtual_hosts for r in vh.routes]
    assert len(routes) == 12
    # Every tenth Service's NetworkPolicy becomes an access policy on its route.
    assert sum(1 for r in routes if r.access is not None) == len(range(0, 12, spec.policy_every))
