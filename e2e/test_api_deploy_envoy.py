"""deploy/: the Envoy containers' arguments, run by the real Envoy, give kxds the node it expects.

The DaemonSet passes the node name (downward API) as ``--service-node`` and as
node metadata through ``--config-yaml``, which Envoy merges over the bootstrap
from the ConfigMap; the merge must keep ``role: node``. The edge Deployment
passes the pod name as node id. Envoy's ``/server_info`` shows the result.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.harness import Process, envoy_binary, wait_for
from kxds.certs.make import make_ca, make_client

pytestmark = pytest.mark.e2e

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _container(file: str, kind: str) -> tuple[dict[str, Any], str]:
    """The Envoy container of the workload in ``file`` and its bootstrap ConfigMap's text."""
    docs = [d for d in yaml.safe_load_all((DEPLOY / file).read_text()) if d]
    [workload] = [d for d in docs if d["kind"] == kind]
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap"]
    [container] = [c for c in workload["spec"]["template"]["spec"]["containers"]
                   if c["name"] == "envoy"]
    return container, config_map["data"]["bootstrap.yaml"]


def _local_certificates(bootstrap: dict[str, Any], tmp_path: Path) -> None:
    """Point the xds_cluster's TLS files (mounted Secrets in the cluster) at files made here."""
    ca = make_ca("deploy test CA")
    pair = make_client(ca, "spiffe://kxds/edge/default")
    tls = bootstrap["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    context = tls["common_tls_context"]
    for key, data in (("certificate_chain", pair.cert_pem), ("private_key", pair.key_pem)):
        path = tmp_path / key
        path.write_bytes(data)
        context["tls_certificates"][0][key] = {"filename": str(path)}
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    context["validation_context"]["trusted_ca"] = {"filename": str(tmp_path / "ca.crt")}


def _server_node(tmp_path: Path, file: str, kind: str, env: dict[str, str]) -> dict[str, Any]:
    container, text = _container(file, kind)
    bootstrap = yaml.safe_load(text)
    bootstrap["admin"]["address"]["socket_address"]["port_value"] = 0  # a free port
    _local_certificates(bootstrap, tmp_path)
    (tmp_path / "bootstrap.yaml").write_text(yaml.safe_dump(bootstrap))
    # The kubelet expands $(VAR) references to the container's env in args.
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
    args[args.index("-c") + 1] = str(tmp_path / "bootstrap.yaml")
    addr = tmp_path / "admin-address"
    envoy = Process("envoy", [envoy_binary(), *args, "--use-dynamic-base-id",
                              "--admin-address-path", str(addr)], tmp_path / "envoy.log")
    try:
        address = wait_for(lambda: addr.exists() and addr.read_text().strip(),
                           what="envoy admin address")
        info = wait_for(lambda: json.loads(_get(f"http://{address}/server_info")),
                        what="/server_info")
        return dict(info["node"])
    except BaseException:
        print(envoy.diagnostics())
        raise
    finally:
        envoy.stop()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as r:
        return str(r.read().decode())


def test_daemonset_envoy_names_its_node_in_node_metadata(tmp_path: Path) -> None:
    node = _server_node(tmp_path, "node.yaml", "DaemonSet", {"NODE_NAME": "worker-7"})
    assert node["id"] == "worker-7"
    assert node["metadata"] == {"role": "node", "node_name": "worker-7"}


def test_edge_envoy_is_named_after_its_pod(tmp_path: Path) -> None:
    node = _server_node(tmp_path, "edge.yaml", "Deployment", {"POD_NAME": "kxds-edge-abc12"})
    assert node["id"] == "kxds-edge-abc12"
    assert node["metadata"]["role"] == "edge"
