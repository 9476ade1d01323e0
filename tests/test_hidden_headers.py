"""--hide-response-headers: the flag's parser and the connection manager it shapes."""

from __future__ import annotations

import argparse

import pytest
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from kxds import ir
from kxds.envoy.filter_names import HEADER_MUTATION, ROUTER
from kxds.envoy.listeners import build_http_connection_manager
from kxds.flags import _hidden_headers


@pytest.mark.parametrize(("text", "expected"), [
    ("Server", ("server",)),
    ("server, x-envoy-*,server", ("server", "x-envoy-*")),
])
def test_parse(text: str, expected: tuple[str, ...]) -> None:
    assert _hidden_headers(text) == expected


@pytest.mark.parametrize("text", ["", "*", "a b", "content-length", "content-*", "t*",
                                  ":status"])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _hidden_headers(text)


def _hcm(names: tuple[str, ...]) -> hcm_pb2.HttpConnectionManager:
    f = build_http_connection_manager("http/8080", "http/8080", ir.ClientIPConfig(),
                                      ir.HttpOptions(hide_response_headers=names))
    out = hcm_pb2.HttpConnectionManager()
    f.typed_config.Unpack(out)
    return out


def test_connection_manager() -> None:
    plain = _hcm(())
    assert HEADER_MUTATION not in [f.name for f in plain.http_filters]
    assert plain.server_header_transformation == hcm_pb2.HttpConnectionManager.OVERWRITE
    hcm = _hcm(("server", "x-envoy-*"))
    names = [f.name for f in hcm.http_filters]
    assert names[-2:] == [HEADER_MUTATION, ROUTER]
    config = header_mutation_pb2.HeaderMutation()
    hcm.http_filters[-2].typed_config.Unpack(config)
    mutations = config.mutations.response_mutations
    assert mutations[0].remove == "server"
    assert mutations[1].remove_on_match.key_matcher.prefix == "x-envoy-"
    assert hcm.server_header_transformation == hcm_pb2.HttpConnectionManager.PASS_THROUGH
    assert _hcm(("x-powered-by",)).server_header_transformation == (
        hcm_pb2.HttpConnectionManager.OVERWRITE)
