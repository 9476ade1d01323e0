"""``--hide-response-headers``: headers removed from every response of the edge.

A header mutation filter just before the router removes them on the way out,
after the router has added its own (``x-envoy-upstream-service-time``) and for
Envoy's local replies too; a name ending in ``*`` removes every header with that
prefix. Hiding ``server`` also stops the connection manager from writing its
own (``server_header_transformation: PASS_THROUGH``), so the backend's, which the
filter removed, is not replaced by ``envoy``.
"""

from __future__ import annotations

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import string_pb2

from kxds.envoy.common import pack
from kxds.envoy.filter_names import HEADER_MUTATION


def _hides(names: tuple[str, ...], header: str) -> bool:
    return any(n == header or (n.endswith("*") and header.startswith(n[:-1])) for n in names)


def _mutation(name: str) -> mutation_rules_pb2.HeaderMutation:
    if name.endswith("*"):
        matcher = string_pb2.StringMatcher(prefix=name[:-1], ignore_case=True)
        return mutation_rules_pb2.HeaderMutation(
            remove_on_match=mutation_rules_pb2.HeaderMutation.RemoveOnMatch(key_matcher=matcher))
    return mutation_rules_pb2.HeaderMutation(remove=name)


def hide_response_headers(hcm: hcm_pb2.HttpConnectionManager, names: tuple[str, ...]) -> None:
    """Make ``hcm`` remove ``names`` (lower case; ``*`` ends a prefix) from every response."""
    if not names:
        return
    mutations = header_mutation_pb2.Mutations(response_mutations=[_mutation(n) for n in names])
    config = header_mutation_pb2.HeaderMutation(mutations=mutations)
    hcm.http_filters.insert(len(hcm.http_filters) - 1, hcm_pb2.HttpFilter(
        name=HEADER_MUTATION, typed_config=pack(config)))
    if _hides(names, "server"):
        hcm.server_header_transformation = (
            hcm_pb2.HttpConnectionManager.ServerHeaderTransformation.PASS_THROUGH)
