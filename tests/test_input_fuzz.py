"""Generated Kubernetes objects -- valid, nearly valid and hostile -- through the whole path.

YAML text -> load -> parse -> ClusterState -> edge and per-node translation -> Envoy resources:
no exception escapes, every rejection names its object and field, and no object
ever fails with an ``InternalError`` (that would be a parser bug). Values that
appear twice in a generated object are emitted by the YAML dumper as an anchor
and aliases, so aliases are exercised too.
"""

from __future__ import annotations

import zlib
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kxds.diagnostics import Reason
from kxds.envoy.build import build_resources
from kxds.envoy.validate import validate_with_envoy
from kxds.kube.loader import load_text
from kxds.translators.config import NodeInfo, TranslateConfig
from kxds.translators.edge import translate
from kxds.translators.node import translate_node


def _deep(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from(["²", "٣", "\uff18", "a\nb", "\u2028", "../x", "*.", "-", "A" * 300,
                     "x" * 5000, "80", "0", "-1", "65536", "http", "Prefix", "prefix"]),
    st.just(_deep(300)), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly valid values, sometimes hostile ones."""
    return st.one_of(valid, valid, valid, HOSTILE)


NAMES = maybe(st.sampled_from(["web", "cart", "a", "web-2", "x1"]))
PORTS = maybe(st.integers(min_value=1, max_value=65535))
PORT_NAMES = maybe(st.sampled_from(["http", "https", "grpc", "p1"]))


@st.composite
def services(draw: st.DrawFn) -> dict[str, Any]:
    ports = draw(st.lists(st.fixed_dictionaries(
        {"name": PORT_NAMES, "port": PORTS},
        optional={"targetPort": maybe(st.one_of(PORTS, PORT_NAMES)),
                  "nodePort": maybe(st.integers(min_value=30000, max_value=32767)),
                  "protocol": maybe(st.sampled_from(["TCP", "UDP", "SCTP"]))}), max_size=4))
    spec = {"ports": ports,
            "type": draw(maybe(st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"])))}
    if draw(st.booleans()):
        spec["selector"] = draw(maybe(st.just({"app": "web"})))
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": draw(NAMES)},
            "spec": draw(maybe(st.just(spec)))}


@st.composite
def slices(draw: st.DrawFn) -> dict[str, Any]:
    endpoint = st.fixed_dictionaries(
        {"addresses": maybe(st.lists(st.sampled_from(["10.0.0.1", "10.0.0.2", "::1"]),
                                     min_size=1, max_size=2))},
        optional={"conditions": maybe(st.fixed_dictionaries({"ready": maybe(st.booleans())})),
                  "nodeName": NAMES})
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": draw(NAMES),
                         "labels": {"kubernetes.io/service-name": draw(NAMES)}},
            "addressType": draw(maybe(st.just("IPv4"))),
            "ports": draw(maybe(st.lists(st.fixed_dictionaries(
                {"name": PORT_NAMES, "port": PORTS}), max_size=2))),
            "endpoints": draw(maybe(st.lists(endpoint, max_size=3)))}


@st.composite
def ingresses(draw: st.DrawFn) -> dict[str, Any]:
    backend = st.fixed_dictionaries({"service": maybe(st.fixed_dictionaries(
        {"name": NAMES, "port": maybe(st.one_of(
            st.fixed_dictionaries({"number": PORTS}),
            st.fixed_dictionaries({"name": PORT_NAMES})))}))})
    path = st.fixed_dictionaries(
        {"path": maybe(st.sampled_from(["/", "/a", "/a/", "/a/b"])),
         "pathType": maybe(st.sampled_from(["Prefix", "Exact", "ImplementationSpecific"])),
         "backend": backend})
    rule = st.fixed_dictionaries(
        {"http": maybe(st.fixed_dictionaries({"paths": maybe(st.lists(path, max_size=3))}))},
        optional={"host": maybe(st.sampled_from(["a.example.com", "*.example.com"]))})
    api = draw(st.sampled_from(["networking.k8s.io/v1"] * 3 + ["extensions/v1beta1"]))
    spec: dict[str, Any] = {"ingressClassName": draw(maybe(st.just("kxds"))),
                            "rules": draw(maybe(st.lists(rule, max_size=3)))}
    if draw(st.booleans()):
        spec["defaultBackend"] = draw(backend)
    if draw(st.booleans()):
        spec["tls"] = draw(maybe(st.just([{"hosts": ["a.example.com"], "secretName": "t"}])))
    return {"apiVersion": api, "kind": "Ingress", "metadata": {"name": draw(NAMES)},
            "spec": spec}


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    peer = st.one_of(st.fixed_dictionaries({"ipBlock": maybe(st.fixed_dictionaries(
        {"cidr": maybe(st.sampled_from(["10.0.0.0/8", "0.0.0.0/0", "::/0"]))}))}),
        st.fixed_dictionaries({"podSelector": maybe(st.just({"matchLabels": {"a": "b"}}))}))
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": draw(NAMES)},
            "spec": {"podSelector": draw(maybe(st.just({}))),
                     "ingress": draw(maybe(st.lists(st.fixed_dictionaries(
                         {"from": maybe(st.lists(peer, max_size=2))}), max_size=2)))}}


OBJECTS = st.lists(st.one_of(services(), slices(), ingresses(), policies(), HOSTILE),
                   max_size=6)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(objects=OBJECTS, shared=st.booleans())
def test_generated_objects_never_break_load_translate_build(objects: list[Any],
                                                            shared: bool) -> None:
    if shared and objects:
        objects = [*objects, objects[0]]  # the same value twice: dumped as an alias
    text = yaml.safe_dump_all(objects, allow_unicode=True)
    state = load_text(text, "fuzz.yaml")
    for p in state.problems:
        assert p.reason is not Reason.INTERNAL_ERROR, p
        assert p.ref.kind and p.ref.name, p
        assert p.field, p
        assert "\n" not in str(p)
    for result in (translate(state),
                   translate_node(state, TranslateConfig(), NodeInfo(name="x1"))):
        resources = build_resources(result.ir)
        for d in result.diagnostics:
            assert d.ref.kind and d.field and "\n" not in str(d), d
        # A sample of what was built goes through Envoy's own validation: kxds
        # never sends Envoy a configuration it would reject (about one in twelve,
        # chosen by the input, to keep the test within seconds).
        if any(resources.values()) and zlib.crc32(text.encode()) % 12 == 0:
            accepted, output = validate_with_envoy(resources)
            assert accepted, output
