"""deploy/: the manifests parse into the ``kubernetes`` client's models, and RBAC covers kxds."""

from __future__ import annotations

import asyncio
import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from fakeapi import RESOURCES, FakeApi, SourceRunner
from test_api_gateway_crds import gateway_objects
from test_api_source import FAST, OTHERS, ingress, secret, svc

from kxds.cli import _parser, cmd_bootstrap
from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.gateway_status_writer import GatewayStatusWriter
from kxds.kube.api import ApiOptions, ApiSource
from kxds.kube.client import KubeClient
from kxds.kube.events import EventRecorder
from kxds.kube.leader import LeaderElector
from kxds.kube.status import StatusConfig, StatusWriter
from kxds.translators.edge import translate

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
FILES = sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def documents() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{p.name}:{d['kind']}/{d['metadata']['name']}", d)
            for p in FILES for d in yaml.safe_load_all(p.read_text()) if d]


DOCS = documents()


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in DOCS if d["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in by_kind(kind) if d["metadata"]["name"] == name]
    return doc


@pytest.mark.parametrize("doc", [d for _, d in DOCS], ids=[i for i, _ in DOCS])
def test_manifest_parses_into_the_client_model_without_losing_fields(doc: dict[str, Any]) -> None:
    from kubernetes import client

    api = client.ApiClient()
    model = f"V1{doc['kind']}"  # every kind here is at version v1 of its group
    assert doc["apiVersion"].endswith("/v1") or doc["apiVersion"] == "v1"
    # Typed validation (required fields, types) happens in deserialize; a field
    # the model does not know (a typo) is dropped, so the round trip shows it.
    parsed = api.deserialize(json.dumps(doc), model, "application/json")
    assert api.sanitize_for_serialization(parsed) == doc


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in FILES]


@pytest.mark.parametrize("name", ["kxds-edge-bootstrap", "kxds-node-bootstrap"])
def test_bootstrap_configmaps_are_what_kxds_bootstrap_renders(name: str, tmp_path: Path) -> None:
    text = one("ConfigMap", name)["data"]["bootstrap.yaml"]
    [command] = [line.split("Rendered by: ", 1)[1] for line in text.splitlines()
                 if "Rendered by: " in line]
    out = tmp_path / "bootstrap.yaml"
    args = _parser().parse_args([*shlex.split(command)[1:], "-o", str(out)])
    assert cmd_bootstrap(args) == 0
    assert out.read_text() == text


def test_workloads_are_wired_as_documented() -> None:
    kxds = one("Deployment", "kxds")
    assert kxds["spec"]["replicas"] == 2
    [c] = kxds["spec"]["template"]["spec"]["containers"]
    args = _parser().parse_args(c["args"])  # every flag exists in kxds serve
    assert args.in_cluster and args.leader_elect and args.publish_service == "kxds/kxds-edge"
    # /debug on loopback only; metrics and probes on the pod's address.
    assert args.admin_address.startswith("127.0.0.1:")
    metrics_port = int(args.metrics_address.rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert "admin" not in ports and ports["metrics"] == metrics_port
    assert ports["xds"] == int(args.xds_address.rsplit(":", 1)[1])
    assert ports["node-cert"] == int(args.node_cert_address.rsplit(":", 1)[1])
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert kxds["spec"]["template"]["spec"]["serviceAccountName"] == "kxds"

    edge_svc = one("Service", "kxds-edge")
    assert edge_svc["spec"]["type"] == "LoadBalancer"
    assert edge_svc["spec"]["externalTrafficPolicy"] == "Local"
    xds = {p["name"]: p["port"] for p in one("Service", "kxds")["spec"]["ports"]}["xds"]
    for name in ("kxds-edge-bootstrap", "kxds-node-bootstrap"):
        assert "kxds.kxds.svc.cluster.local\n" in one("ConfigMap", name)["data"]["bootstrap.yaml"]
        assert f"port_value: {xds}\n" in one("ConfigMap", name)["data"]["bootstrap.yaml"]

    node = one("DaemonSet", "kxds-node")["spec"]["template"]["spec"]
    assert node["hostNetwork"] is True
    [envoy] = [c for c in node["containers"] if c["name"] == "envoy"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in envoy["env"]}
    assert env == {"NODE_NAME": "spec.nodeName"}
    merged = json.loads(envoy["args"][envoy["args"].index("--config-yaml") + 1])
    assert merged == {"node": {"metadata": {"node_name": "$(NODE_NAME)"}}}

    [cls] = by_kind("IngressClass")
    assert cls["metadata"]["name"] == "kxds"
    assert cls["spec"]["controller"] == "kxds.io/ingress-controller"


# --- RBAC: every request kxds makes is allowed -----------------------------------------


def requests_made(api: FakeApi) -> list[tuple[str, str]]:
    """Run every API client kxds has (source, status, events, leader, the LoadBalancer
    pool's status writer, the node certificate TokenReview) against the fake."""
    for obj in [svc("web"), ingress("shop", tls_secret="tls"), secret("tls"), *OTHERS,
                {"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": "kxds-edge", "namespace": "kxds"},
                 "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}]:
        api.apply(obj)
    client = KubeClient.for_url(api.url)

    async def main() -> None:
        source = ApiSource(client, ApiOptions(**FAST))
        writer = StatusWriter(client, StatusConfig(publish_service=("kxds", "kxds-edge")),
                              "kxds")
        elector = LeaderElector(client, "kxds", "kxds", "me", lease_duration=2,
                                renew_deadline=1.5, retry_period=0.2)
        ready = asyncio.Event()
        source.subscribe(lambda s: ready.set())
        source.subscribe(writer.update)
        tasks = [asyncio.create_task(source.run(lambda s: None)),
                 asyncio.create_task(writer.run()), asyncio.create_task(elector.run())]
        await asyncio.wait_for(ready.wait(), 10)
        while api.count("PUT", "/apis/networking.k8s.io/v1/namespaces/default/ingresses") < 1:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # a few renewals
        recorder = EventRecorder(client)
        diag = Diagnostic(ObjectRef("Ingress", "default", "shop"), "", Reason.CONFLICT, "x")
        await asyncio.to_thread(recorder.emit, diag)
        await asyncio.to_thread(recorder.emit, diag)  # the PATCH
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # the release PUT

    asyncio.run(main())
    from kxds.diagnostics import ObjectRef as Ref
    from kxds.kube.lbpool import ApiStatusWriter
    from kxds.nodecert.review import review_token

    ApiStatusWriter(client).write_load_balancer(Ref("Service", "default", "web"), ("192.0.2.9",))
    # Gateway API status, written by the leader for the objects of our class.
    for obj in [*gateway_objects(), {
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
            "metadata": {"name": "g", "namespace": "default"},
            "spec": {"parentRefs": [{"name": "gw"}],
                     "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}}, *[{
            "apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": kind,
            "metadata": {"name": "l4", "namespace": "default"},
            "spec": {"parentRefs": [{"name": "gw"}],
                     "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}}
            for kind in ("TLSRoute", "TCPRoute", "UDPRoute")], {
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "BackendTLSPolicy",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "web"}],
                     "validation": {"hostname": "web.example.com",
                                    "wellKnownCACertificates": "System"}}}]:
        api.apply(obj)
    with SourceRunner(ApiSource(client, ApiOptions(**FAST))) as run:
        state = run.wait(lambda s: s.http_routes and s.grpc_routes and s.gateways
                         and s.tls_routes and s.tcp_routes and s.udp_routes
                         and s.backend_tls_policies, what="Gateway API objects")
    assert GatewayStatusWriter(client).reconcile(translate(state).gateway_status) == 8
    review_token(client, "some-token", "kxds")
    with api.lock:
        return list(api.requests)


def to_attributes(method: str, path: str) -> tuple[str, str, str, str]:
    """(apiGroup, resource[/subresource], verb, namespace) as the authorizer sees them."""
    url = urlsplit(path)
    parts = [p for p in url.path.split("/") if p]
    n = 2 if parts[0] == "api" else 3
    group = "" if parts[0] == "api" else parts[1]
    rest, ns = parts[n:], ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        ns, rest = rest[1], rest[2:]
    assert any(rest[0] == r[1] for r in RESOURCES), path
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    named = len(rest) > 1
    query = parse_qs(url.query)
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
        method, "get" if named else "watch" if query.get("watch") else "list")
    return group, resource, verb, ns


def allowed(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
               for r in rules)


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi(bookmark_interval=0.1).start()
    yield fake
    fake.stop()


def test_rbac_allows_every_request_kxds_makes(api: FakeApi) -> None:
    cluster_rules = one("ClusterRole", "kxds")["rules"]
    role = one("Role", "kxds-leader-election")
    seen = {to_attributes(m, p) for m, p in requests_made(api)}
    assert {v for _, _, v, _ in seen} >= {"get", "list", "watch", "create", "update", "patch"}
    for group, resource, verb, ns in sorted(seen):
        ok = allowed(cluster_rules, group, resource, verb) or (
            ns == role["metadata"]["namespace"] and allowed(role["rules"], group, resource, verb))
        assert ok, f"RBAC does not allow {verb} {group or 'core'}/{resource} in {ns or '-'}"
    # Least privilege: nothing granted that kxds never uses; reading (get, list,
    # watch) is granted as a whole, but only on what kxds reads.
    used = {(g, r, v) for g, r, v, _ in seen}
    read = {(g, r) for g, r, v, _ in seen if v in ("get", "list", "watch")}
    for rule in [*cluster_rules, *role["rules"]]:
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                for v in rule["verbs"]:
                    assert (g, r, v) in used or (
                        v in ("get", "list", "watch") and (g, r) in read), (g, r, v)


def test_bindings_name_the_service_account() -> None:
    sa = one("ServiceAccount", "kxds")
    for kind, name in (("ClusterRoleBinding", "kxds"), ("RoleBinding", "kxds-leader-election")):
        binding = one(kind, name)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                        "namespace": sa["metadata"]["namespace"]}]


# --- hardening ----------------------------------------------------------------------


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"])
            for d in DOCS_BY_WORKLOAD]


DOCS_BY_WORKLOAD = [d for _, d in DOCS if d["kind"] in ("Deployment", "DaemonSet", "Job")]


@pytest.mark.parametrize(("name", "spec"), pod_specs(), ids=[n for n, _ in pod_specs()])
def test_every_container_is_locked_down(name: str, spec: dict[str, Any]) -> None:
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert set(sc["capabilities"].get("add", [])) <= {"NET_BIND_SERVICE"}, c["name"]
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]), c["name"]
        assert {"cpu", "memory"} <= set(c["resources"]["limits"]), c["name"]


def _mounts(spec: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """mount path -> the Secret or ConfigMap (or volume kind) behind it."""
    volumes = {v["name"]: v for v in spec["volumes"]}
    out = {}
    for m in container["volumeMounts"]:
        v = volumes[m["name"]]
        kind = next(iter(set(v) - {"name"}))
        out[m["mountPath"]] = (v.get("secret", {}).get("secretName")
                               or v.get("configMap", {}).get("name") or kind)
    return out


def test_the_xds_channel_is_mtls_end_to_end() -> None:
    kxds_spec = one("Deployment", "kxds")["spec"]["template"]["spec"]
    [c] = kxds_spec["containers"]
    args = _parser().parse_args(c["args"])
    assert not args.xds_insecure
    mounts = _mounts(kxds_spec, c)
    for path, secret_name in ((args.xds_tls_cert, "kxds-xds-tls"),
                              (args.xds_client_ca, "kxds-xds-tls"),
                              (args.node_ca_key, "kxds-ca")):
        assert mounts[str(Path(path).parent)] == secret_name
    gen = _parser().parse_args(one("Job", "kxds-certgen")["spec"]["template"]["spec"]
                               ["containers"][0]["args"])
    assert gen.apply and gen.namespace == "kxds" and gen.edge_group == ["default"]

    edge_spec = one("Deployment", "kxds-edge")["spec"]["template"]["spec"]
    boot = yaml.safe_load(one("ConfigMap", "kxds-edge-bootstrap")["data"]["bootstrap.yaml"])
    tls = boot["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    cert = tls["common_tls_context"]["tls_certificates"][0]["certificate_chain"]["filename"]
    assert _mounts(edge_spec, edge_spec["containers"][0])[str(Path(cert).parent)] == \
        "kxds-edge-default"
    assert tls["sni"] in [f"kxds.kxds{s}" for s in ("", ".svc", ".svc.cluster.local")]

    node_spec = one("DaemonSet", "kxds-node")["spec"]["template"]["spec"]
    token = next(v for v in node_spec["volumes"] if v["name"] == "kxds-token")
    [source] = token["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == args.node_cert_audience == "kxds"
    assert node_spec["serviceAccountName"] == "kxds-node"
    assert f"kxds/{node_spec['serviceAccountName']}" in (
        args.node_cert_service_account or ["kxds/kxds-node"])
    [init] = node_spec["initContainers"]
    client = _parser().parse_args(init["args"])
    assert client.once and client.url.endswith(f":{args.node_cert_address.rsplit(':', 1)[1]}")
    [envoy] = [c for c in node_spec["containers"] if c["name"] == "envoy"]
    boot = yaml.safe_load(one("ConfigMap", "kxds-node-bootstrap")["data"]["bootstrap.yaml"])
    tls = boot["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    # The node's certificate comes through the SDS file node-cert writes, so Envoy
    # reloads it when renewed.
    [sds] = tls["common_tls_context"]["tls_certificate_sds_secret_configs"]
    sds_file = Path(sds["sds_config"]["path_config_source"]["path"])
    assert sds_file == client.out_dir / "sds.yaml"
    assert _mounts(node_spec, envoy)[str(client.out_dir)] == "emptyDir"


def test_the_network_policy_admits_only_proxies_to_the_xds_port() -> None:
    policy = one("NetworkPolicy", "kxds")["spec"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "kxds"}
    edge_labels = one("Deployment", "kxds-edge")["spec"]["template"]["metadata"]["labels"]
    xds_rules = [r for r in policy["ingress"] if {"port": "xds"} in r.get("ports", [])]
    for rule in xds_rules:
        assert rule.get("from"), "a rule without from admits everyone"
        for peer in rule["from"]:
            selector = peer.get("podSelector", {}).get("matchLabels")
            assert selector is None or selector.items() <= edge_labels.items()
            assert "namespaceSelector" not in peer
    open_rules = [r for r in policy["ingress"] if not r.get("from")]
    assert all(r["ports"] == [{"port": "metrics"}] for r in open_rules)


def test_certgen_role_allows_what_certgen_does(api: FakeApi, tmp_path: Path) -> None:
    from fakeapi import kubeconfig

    from kxds.certgen import run_certgen

    config = kubeconfig(api.url, str(tmp_path / "kubeconfig"))
    for extra in ([], ["--overwrite"]):
        run_certgen(_parser().parse_args(["certgen", "--apply", "--kubeconfig", config,
                                          *extra]))
    role = one("Role", "kxds-certgen")
    with api.lock:
        seen = {to_attributes(m, p) for m, p in api.requests}
    assert {v for _, _, v, _ in seen} == {"get", "create", "update"}
    for group, resource, verb, ns in seen:
        assert ns == "kxds" and allowed(role["rules"], group, resource, verb)
