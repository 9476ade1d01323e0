"""The IR YAML reader: strict about hand-written input, exact about the writer's output.

The golden tests read back every expected ``ir.yaml``; these tables check
what a person gets for a mistake, and the corners the golden data may not
reach.
"""

from __future__ import annotations

import pytest

from kxds import ir
from kxds.diagnostics import ObjectRef
from kxds.ir_yaml import IRYamlError, dump_ir, from_plain, load_ir, parse_ref, tagged_classes

WEB = ObjectRef("Service", "default", "web")


def test_tagged_classes_are_the_union_members() -> None:
    assert tagged_classes() == {
        ir.HttpListener, ir.TlsListener, ir.TcpListener, ir.UdpListener,
        ir.HealthCheckListener, ir.TerminatedChain, ir.PassthroughChain, ir.Forward,
        ir.DirectResponse, ir.Redirect, ir.TLSCertificate, ir.ValidationContext}


def test_round_trip_with_every_default_and_none() -> None:
    model = ir.IR(
        clusters=(ir.Cluster(name="c", ref=WEB, kind=ir.ClusterKind.STRICT_DNS,
                             dns_host="a.example", dns_port=443, proxy_protocol="v2",
                             upstream_tls=ir.UpstreamTLS()),),
        listeners=(ir.HttpListener(name="h", address="::", port=80, route_table="r",
                                   client_ip=ir.ClientIPConfig(source="xff")),),
        route_tables=(ir.RouteTable(name="r", virtual_hosts=(ir.VirtualHost(
            name="*", domains=("*",), routes=(ir.Route(
                name="x", ref=ObjectRef("Namespace", "", "shop"),
                match=ir.PathMatch(kind=ir.MatchKind.PREFIX, path="/"),
                action=ir.Redirect()),)),)),),
    )
    text = dump_ir(model)
    assert "Redirect: {}" in text and "upstream_tls: {}" in text
    assert load_ir(text) == model
    assert repr(load_ir(text)) == repr(model)


@pytest.mark.parametrize(("text", "ref"), [
    ("Service default/web", WEB),
    ("Namespace shop", ObjectRef("Namespace", "", "shop")),
])
def test_parse_ref(text: str, ref: ObjectRef) -> None:
    assert parse_ref(text) == ref
    assert str(ref) == text


def test_a_ref_without_a_text_form_is_not_written() -> None:
    bad = ir.IR(clusters=(ir.Cluster(name="c", ref=ObjectRef("File", "", "input/a.yaml")),))
    with pytest.raises(IRYamlError, match="reads back"):
        dump_ir(bad)


CLUSTER = "ir:\n  clusters:\n  - name: c\n    ref: Service default/web\n"


@pytest.mark.parametrize(("text", "message"), [
    ("clusters: []\n", "expected a mapping with the key `ir`"),
    ("ir: {}\nextra: 1\n", "unknown key 'extra'"),
    ("ir: {}\ndiagnostics: [1]\n", "diagnostics: expected a list of strings"),
    ("ir: []\n", "ir: expected a mapping of IR fields"),
    ("ir:\n  clusters: {}\n", "ir.clusters: expected a list, got a mapping"),
    (CLUSTER + "    colour: red\n", "ir.clusters[0]: Cluster has no field 'colour'"),
    ("ir:\n  clusters:\n  - name: c\n", "ir.clusters[0]: Cluster needs ref"),
    (CLUSTER + "    kind: EDS\n", "ir.clusters[0].kind: expected one of 'eds', 'strict_dns'"),
    (CLUSTER + "    connect_timeout_ms: '250'\n",
     "ir.clusters[0].connect_timeout_ms: expected an integer, got '250' (str)"),
    (CLUSTER + "    connect_timeout_ms: true\n", "expected an integer, got True (bool)"),
    (CLUSTER + "    proxy_protocol: v3\n", "expected one of 'v1', 'v2', got 'v3'"),
    ("ir:\n  clusters:\n  - {name: c, ref: web}\n", "ir.clusters[0].ref: expected an object"),
    (CLUSTER + "    upstream_tls: {sni: 1}\n",
     "ir.clusters[0].upstream_tls.sni: expected a string"),
    ("ir:\n  listeners:\n  - {name: h, port: 80}\n", "ir.listeners[0]: expected a mapping "
                                                     "with one key, the kind ('HttpListener'"),
    ("ir:\n  listeners:\n  - HTTPListener: {}\n",
     "expected the kind ('HttpListener', 'TlsListener', 'TcpListener', 'UdpListener', "
     "'HealthCheckListener') as the key, got 'HTTPListener'"),
    ("ir:\n  listeners:\n  - HttpListener: {name: h, address: 0.0.0.0, port: 80}\n",
     "ir.listeners[0].HttpListener: HttpListener needs route_table"),
    ("ir:\n  listeners:\n  - TlsListener: {name: t, address: '::', port: 443, chains: [\n"
     "      {Forward: {backends: []}}]}\n", "ir.listeners[0].TlsListener.chains[0]: expected "
                                          "the kind ('TerminatedChain', 'PassthroughChain')"),
    ("ir:\n  listeners:\n  - TlsListener: {name: t, address: '::', port: 443, chains: [\n"
     "      {TerminatedChain: {name: c, server_names: [], secret: s, route_table: r,\n"
     "                         min_tls_version: 1.3}}]}\n",
     "min_tls_version: expected one of '1.0', '1.1', '1.2', '1.3', got 1.3 (float)"),
    ("ir:\n  secrets:\n  - TLSCertificate: null\n", "expected a mapping of TLSCertificate"),
    ("ir: {clusters: [\n", "not YAML"),
])
def test_bad_ir_yaml(text: str, message: str) -> None:
    with pytest.raises(IRYamlError) as caught:
        load_ir(text, "case/ir.yaml")
    assert str(caught.value).startswith("case/ir.yaml: ")
    assert message in str(caught.value)


def test_hand_written_defaults_and_nulls_are_accepted() -> None:
    model = load_ir(CLUSTER + "    dns_port: null\n    kind: eds\n    connect_timeout_ms: 5000\n")
    assert model == ir.IR(clusters=(ir.Cluster(name="c", ref=WEB),))


def test_from_plain_reads_any_part() -> None:
    assert from_plain(ir.RouteAction, {"DirectResponse": {"status": 404}}) == \
        ir.DirectResponse(status=404)
    assert from_plain(tuple[ir.WeightedBackend, ...], [{"cluster": "a"}]) == \
        (ir.WeightedBackend(cluster="a"),)
