"""``satisfy: any``: clients in a route's set are admitted without authenticating.

Generic over the authentication kind, in two parts:

* :func:`marker_filter`, placed before every authentication filter, is a second
  HTTP RBAC filter (disabled unless a route configures it) whose per-route
  config (:func:`marker`) holds only *shadow* rules: "the client address is in
  the set". It never refuses; it writes its verdict into dynamic metadata
  (``envoy.filters.http.rbac`` / ``satisfy_any_shadow_engine_result``:
  ``allowed`` or ``denied``). The client cannot forge dynamic metadata.
* :func:`skippable` wraps an authentication filter in Envoy's matcher
  delegate (``ExtensionWithMatcher``) with one listener-level matcher: when
  that metadata says ``allowed``, the filter is skipped (``SkipFilter``);
  otherwise (no verdict: a route without ``satisfy: any``, or ``denied``) the
  filter runs with its own per-route config, still keyed by the wrapper's
  name. Any authentication kind wrapped so (basic auth, ext_authz) honours
  the same per-route marker.

Why not a per-route matcher on the source IP: Envoy's per-route matcher
override (``ExtensionWithMatcherPerRoute``) only accepts request header and CEL
inputs, and a tree it cannot build means "skip the filter" (fail open). The
marker keeps the per-route part in plain RBAC, whose address matching is the
one the access rules use (``remote_ip``: the client as the listener derives it).
"""

from __future__ import annotations

from envoy.config.core.v3 import extension_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.common.matching.v3 import extension_matcher_pb2 as em_pb2
from envoy.extensions.filters.common.matcher.action.v3 import skip_action_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.matching.common_inputs.network.v3 import network_inputs_pb2
from envoy.extensions.matching.input_matchers.metadata.v3 import metadata_pb2
from google.protobuf import any_pb2

from kxds import ir
from kxds.envoy import rbac
from kxds.envoy.common import pack
from kxds.envoy.filter_names import HTTP_RBAC, SATISFY_ANY

PREFIX = "satisfy_any_"
"""The marker's shadow stat prefix, which also prefixes its dynamic metadata keys."""
METADATA_NAMESPACE = HTTP_RBAC
"""Every RBAC filter instance writes its verdicts under this filter name."""
VERDICT_KEY = f"{PREFIX}shadow_engine_result"
POLICY = "admitted-without-authentication"


def marker_filter() -> hcm_pb2.HttpFilter:
    """The marker: an RBAC filter without rules, off unless a route configures it."""
    config = http_rbac_pb2.RBAC(shadow_rules_stat_prefix=PREFIX)
    return hcm_pb2.HttpFilter(name=SATISFY_ANY, disabled=True, typed_config=pack(config))


def marker(clients: ir.ClientSet) -> any_pb2.Any | None:
    """The per-route marker of ``clients``; None when the set admits nobody (every
    client must then authenticate)."""
    if not clients.ranges:
        return None
    rules = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW)
    policy = rules.policies[POLICY]
    policy.permissions.add().any = True
    for r in clients.ranges:
        policy.principals.append(rbac.range_principal(r))
    config = http_rbac_pb2.RBAC(shadow_rules=rules, shadow_rules_stat_prefix=PREFIX)
    return pack(http_rbac_pb2.RBACPerRoute(rbac=config))


def _skip_when_marked() -> em_pb2.ExtensionWithMatcher:
    msg = em_pb2.ExtensionWithMatcher()
    entry = msg.xds_matcher.matcher_list.matchers.add()
    single = entry.predicate.single_predicate
    single.input.name = "satisfy-any-verdict"
    single.input.typed_config.CopyFrom(pack(network_inputs_pb2.DynamicMetadataInput(
        filter=METADATA_NAMESPACE,
        path=[network_inputs_pb2.DynamicMetadataInput.PathSegment(key=VERDICT_KEY)])))
    matcher = metadata_pb2.Metadata()
    matcher.value.string_match.exact = "allowed"
    single.custom_match.name = "satisfy-any-allowed"
    single.custom_match.typed_config.CopyFrom(pack(matcher))
    entry.on_match.action.name = "skip"
    entry.on_match.action.typed_config.CopyFrom(pack(skip_action_pb2.SkipFilter()))
    return msg


def skippable(name: str, config: any_pb2.Any) -> hcm_pb2.HttpFilter:
    """The authentication filter ``name`` (its ``config``), off unless a route
    configures it (its per-route config under ``name``), and skipped for a client
    the route's marker admitted."""
    msg = _skip_when_marked()
    msg.extension_config.CopyFrom(extension_pb2.TypedExtensionConfig(name=name,
                                                                     typed_config=config))
    return hcm_pb2.HttpFilter(name=name, disabled=True, typed_config=pack(msg))


def per_route(auth: ir.RouteAuth) -> dict[str, any_pb2.Any]:
    """The marker's per-route config for ``auth`` (none without ``satisfy: any``)."""
    if auth.satisfy_any is None:
        return {}
    found = marker(auth.satisfy_any)
    return {} if found is None else {SATISFY_ANY: found}
