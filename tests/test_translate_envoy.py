"""IR -> Envoy resources: message shapes, memoized serialization, dump, Envoy validation."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kxds import ir
from kxds.diagnostics import ObjectRef
from kxds.envoy import clusters, endpoints
from kxds.envoy.build import BuildCache, SharedBuilds, build_resources
from kxds.envoy.dump import decode, resources_to_yaml
from kxds.envoy.resource import CLUSTER, ENDPOINT, LISTENER, ROUTE
from kxds.envoy.validate import find_envoy, validate_with_envoy
from kxds.translators.annotations.values import re2_problem

SVC = ObjectRef("Service", "default", "web")
ING = ObjectRef("Ingress", "default", "shop")


def _model(endpoint_ip: str = "10.0.0.1", path: str = "/api",
           kind: ir.MatchKind = ir.MatchKind.PATH_PREFIX) -> ir.IR:
    match = ir.PathMatch(kind=kind, path=path)
    route = ir.Route(name="r", ref=ING, match=match,
                     action=ir.Forward(backends=(ir.WeightedBackend(cluster="default/web/80"),)),
                     wildcard_host="*.example.com")
    return ir.IR(
        clusters=(ir.Cluster(name="default/web/80", ref=SVC, protocol=ir.UpstreamProtocol.HTTP2),
                  ir.Cluster(name="default/ext/443", ref=SVC, kind=ir.ClusterKind.STRICT_DNS,
                             dns_host="api.example.net", dns_port=443)),
        load_assignments=(ir.LoadAssignment(cluster="default/web/80", ref=SVC, endpoints=(
            ir.Endpoint(address=endpoint_ip, port=8080, zone="a"),
            ir.Endpoint(address="10.0.0.2", port=8080, zone="b", draining=True))),),
        listeners=(ir.HttpListener(name="http/8080", address="0.0.0.0", port=8080,
                                   route_table="http/8080"),),
        route_tables=(ir.RouteTable(name="http/8080", virtual_hosts=(ir.VirtualHost(
            name="*.example.com", domains=("*.example.com",),
            routes=(route,)),)),),
    )


def test_shapes() -> None:
    res = build_resources(_model())
    eds = decode(res[CLUSTER]["default/web/80"])
    assert eds.type == eds.EDS
    assert eds.eds_cluster_config.eds_config.HasField("ads")
    assert "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" in \
        eds.typed_extension_protocol_options
    dns = decode(res[CLUSTER]["default/ext/443"])
    assert dns.type == dns.STRICT_DNS
    host = dns.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (host.address, host.port_value) == ("api.example.net", 443)
    assert set(res[ENDPOINT]) == {"default/web/80"}  # DNS clusters carry theirs inline
    cla = decode(res[ENDPOINT]["default/web/80"])
    assert [loc.locality.zone for loc in cla.endpoints] == ["a", "b"]
    assert cla.endpoints[1].lb_endpoints[0].health_status == 3  # DRAINING
    table = decode(res[ROUTE]["http/8080"])
    match = table.virtual_hosts[0].routes[0].match
    assert match.path_separated_prefix == "/api"
    assert match.headers[0].name == ":authority"
    assert table.ignore_port_in_host_matching
    assert res[LISTENER]["http/8080"].version == build_resources(_model())[LISTENER][
        "http/8080"].version
    assert res[ROUTE]["http/8080"].refs == (ING,)


def test_unchanged_nodes_are_not_rebuilt(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, int] = {"cluster": 0, "cla": 0}
    real_cluster, real_cla = clusters.build_cluster, endpoints.build_load_assignment

    def count_cluster(*args: Any) -> Any:
        calls["cluster"] += 1
        return real_cluster(*args)

    def count_cla(*args: Any) -> Any:
        calls["cla"] += 1
        return real_cla(*args)

    monkeypatch.setattr(clusters, "build_cluster", count_cluster)
    monkeypatch.setattr(endpoints, "build_load_assignment", count_cla)
    # Two views sharing builds: equal IR nodes (new objects each time) are found by value.
    shared = SharedBuilds()
    first = build_resources(_model(), BuildCache(shared))
    assert calls == {"cluster": 2, "cla": 1}
    second = build_resources(_model(endpoint_ip="10.0.0.7"), BuildCache(shared))
    assert calls == {"cluster": 2, "cla": 2}  # only the changed assignment was rebuilt
    assert second[CLUSTER]["default/web/80"] is first[CLUSTER]["default/web/80"]
    assert second[ENDPOINT]["default/web/80"].version != first[ENDPOINT]["default/web/80"].version


def test_build_caches_hold_only_what_the_last_builds_used() -> None:
    shared = SharedBuilds()
    view = BuildCache(shared)
    for i in range(20):
        build_resources(_model(endpoint_ip=f"10.1.0.{i + 1}"), view)
    # The view keeps its last build's nodes: two clusters, one load assignment, a
    # listener, a route table and its virtual hosts; not the twenty assignments.
    assert len(view) <= 8
    assert len(shared) > 20
    shared.sweep()  # the controller sweeps after every rebuild: all twenty were asked for
    build_resources(_model(endpoint_ip="10.1.0.99"), BuildCache(shared))
    shared.sweep()
    assert len(shared) <= 8
    shared.sweep()  # nothing asked since: everything goes
    assert len(shared) == 0


def test_dump_is_config_dump_shaped_and_stable() -> None:
    text = resources_to_yaml(build_resources(_model()))
    assert text == resources_to_yaml(build_resources(_model()))
    data = yaml.safe_load(text)
    assert list(data) == ["clusters", "endpoints", "listeners", "routes"]
    assert [c["name"] for c in data["clusters"]] == ["default/ext/443", "default/web/80"]
    hcm = data["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["@type"].endswith("HttpConnectionManager")
    assert hcm["rds"]["route_config_name"] == "http/8080"


@pytest.mark.skipif(find_envoy() is None, reason="envoy binary not installed")
def test_envoy_validation_rejects_what_envoy_would_nack() -> None:
    ok, output = validate_with_envoy(build_resources(_model()))
    assert ok, output
    ok, output = validate_with_envoy(build_resources(_model(path="/api/")))
    assert not ok
    assert "PathSeparatedPrefix" in output


@pytest.mark.skipif(find_envoy() is None, reason="envoy binary not installed")
def test_regex_size_limit_is_envoys() -> None:
    """The RE2 program size kxds refuses is the one Envoy refuses (the whole route
    table with it), so no regex kxds lets through gets a table NACKed."""
    largest, over = "/x{95}", "/x{96}"
    assert re2_problem(largest) is None
    assert "too long" in (re2_problem(over) or "")
    for pattern, takes in ((largest, True), (over, False)):
        ok, output = validate_with_envoy(build_resources(
            _model(path=pattern, kind=ir.MatchKind.FULL_REGEX)))
        assert ok is takes, output
