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
from kxds.envoy.bootstrap import client_sds_yaml

pytestmark = pytest.mark.e2e

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _merge(base: Any, patch: Any) -> Any:
    """A Kubernetes strategic merge patch, as far as deploy/ uses it: mappings merge,
    lists of named items (containers) merge by name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in patch.items()}}
    if (isinstance(base, list) and isinstance(patch, list)
            and all(isinstance(i, dict) and "name" in i for i in [*base, *patch])):
        patches = {i["name"]: i for i in patch}
        merged = [_merge(i, patches.pop(i["name"])) if i["name"] in patches else i
                  for i in base]
        return merged + [i for i in patch if i["name"] in patches]
    return patch


def _workloads(file: str) -> list[dict[str, Any]]:
    """The documents of ``file``; ``transparent/...`` is deploy/node.yaml with that patch."""
    if file.startswith("transparent/"):
        kustomization = yaml.safe_load((DEPLOY / "transparent/kustomization.yaml").read_text())
        assert kustomization["resources"] == [".."]
        assert kustomization["patches"] == [{"path": file.split("/", 1)[1]}]
        patch = yaml.safe_load((DEPLOY / file).read_text())
        docs = _workloads("node.yaml")
        return [_merge(d, patch) if (d["kind"], d["metadata"]["name"]) ==
                (patch["kind"], patch["metadata"]["name"]) else d for d in docs]
    return [d for d in yaml.safe_load_all((DEPLOY / file).read_text()) if d]


def _container(file: str, kind: str) -> tuple[dict[str, Any], str]:
    """The Envoy container of the workload in ``file`` and its bootstrap ConfigMap's text."""
    docs = _workloads(file)
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
        (tmp_path / key).write_bytes(data)
    if "tls_certificates" in context:  # the edge: its mounted Secret's files
        for key in ("certificate_chain", "private_key"):
            context["tls_certificates"][0][key] = {"filename": str(tmp_path / key)}
    else:  # a node: the SDS file node-cert writes beside its files
        [sds] = context["tls_certificate_sds_secret_configs"]
        sds_file = tmp_path / "sds.yaml"
        sds_file.write_text(client_sds_yaml(str(tmp_path / "certificate_chain"),
                                            str(tmp_path / "private_key")))
        sds["sds_config"]["path_config_source"]["path"] = str(sds_file)
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


def test_transparent_daemonset_sets_the_node_up_and_says_so(tmp_path: Path) -> None:
    """deploy/transparent/: the patched DaemonSet is a valid one, its init container runs
    `kxds node-routing apply`, and its Envoy announces the set-up in its node metadata."""
    from kubernetes import client

    from kxds.cli import _parser

    [daemonset] = [d for d in _workloads("transparent/node-transparent.yaml")
                   if d["kind"] == "DaemonSet"]
    api = client.ApiClient()
    parsed = api.deserialize(json.dumps(daemonset), "V1DaemonSet", "application/json")
    assert api.sanitize_for_serialization(parsed) == daemonset
    spec = daemonset["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["node-cert-init", "node-routing"]
    routing = spec["initContainers"][1]
    assert _parser().parse_args(routing["args"]).action == "apply"
    [envoy] = [c for c in spec["containers"] if c["name"] == "envoy"]
    assert "NET_ADMIN" in envoy["securityContext"]["capabilities"]["add"]
    assert envoy["env"] and envoy["volumeMounts"]  # kept from node.yaml
    node = _server_node(tmp_path, "transparent/node-transparent.yaml", "DaemonSet",
                        {"NODE_NAME": "worker-7"})
    assert node["metadata"] == {"role": "node", "node_name": "worker-7",
                                "source_ip_mode": "transparent"}
