"""IR route tables -> Envoy ``RouteConfiguration`` (the RDS resource).

Path matches map one to one: EXACT -> ``path``, PATH_PREFIX ->
``path_separated_prefix`` (whole path elements, what Kubernetes ``Prefix``
means), PREFIX -> ``prefix`` (only ``/``). Envoy picks the virtual host by
domain (exact, then longest ``*.`` suffix, then ``*``), case-insensitively,
and, with ``ignore_port_in_host_matching``, whatever port the Host header
names; within a virtual host the first matching route wins, so the IR gives
routes in precedence order. A request no virtual host or route matches is
answered 404 by Envoy.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from kxds import ir
from kxds.envoy import basic_auth, ext_authz, http_policy, rbac, satisfy_any
from kxds.envoy.client_cert import client_cert_headers, require_subject, unverified_route
from kxds.envoy.common import pack
from kxds.envoy.filter_names import (
    BASIC_AUTH,
    BUFFER,
    CORS,
    CUSTOM_RESPONSE,
    EXT_AUTHZ,
    HTTP_RBAC,
    LOCAL_RATE_LIMIT,
    STATEFUL_SESSION,
)
from kxds.envoy.tracing import fill_route_tracing

NO_LOG = "kxds.nolog"
"""Present in a route's metadata when its requests are not logged."""

_REDIRECT_CODES = {
    301: rc_pb2.RedirectAction.MOVED_PERMANENTLY,
    302: rc_pb2.RedirectAction.FOUND,
    303: rc_pb2.RedirectAction.SEE_OTHER,
    307: rc_pb2.RedirectAction.TEMPORARY_REDIRECT,
    308: rc_pb2.RedirectAction.PERMANENT_REDIRECT,
}



def wildcard_host_regex(host: str) -> str:
    """An RE2 pattern for the ``:authority`` of a one-label ``*.`` host, any port, any case."""
    suffix = host[1:].replace(".", r"\.")
    return rf"(?i)^[^.:]+{suffix}(:[0-9]+)?$"


def build_match(route: ir.Route) -> rc_pb2.RouteMatch:
    """The path (and, for ``*.`` hosts, authority) match of ``route``."""
    match = rc_pb2.RouteMatch()
    _fill_match(match, route)
    return match


def _fill_match(match: rc_pb2.RouteMatch, route: ir.Route) -> None:
    match.SetInParent()
    path = route.match.path
    if route.match.kind is ir.MatchKind.EXACT:
        match.path = path
    elif route.match.kind is ir.MatchKind.PATH_PREFIX:
        match.path_separated_prefix = path
    elif route.match.kind is ir.MatchKind.REGEX:
        match.safe_regex.regex = _path_regex(path)
    elif route.match.kind is ir.MatchKind.FULL_REGEX:
        match.safe_regex.regex = path
    else:
        match.prefix = path
    for h in route.headers:
        match.headers.append(_header_matcher(h))
    for q in route.query:
        param = match.query_parameters.add(name=q.name)
        if q.kind is ir.HeaderMatchKind.REGEX:
            param.string_match.safe_regex.regex = q.value
        else:
            param.string_match.exact = q.value
    if route.wildcard_host is not None:
        match.headers.append(_one_label_matcher(route.wildcard_host, invert=False))
    if route.below_wildcard_host is not None:
        # Deeper subdomains only: the one-label hosts belong to the wildcard's own rules.
        match.headers.append(_one_label_matcher(route.below_wildcard_host, invert=True))


def _path_regex(path: str) -> str:
    """The regex of a REGEX match (a case-insensitive start anchored ingress-nginx regex)."""
    return f"(?i)^(?:{path}).*"


def _header_matcher(h: ir.HeaderMatch) -> rc_pb2.HeaderMatcher:
    out = rc_pb2.HeaderMatcher(name=h.name, invert_match=h.invert)
    if h.kind is ir.HeaderMatchKind.PRESENT:
        out.present_match = True
    elif h.kind is ir.HeaderMatchKind.REGEX:
        out.string_match.safe_regex.regex = h.value
    else:
        out.string_match.exact = h.value
    return out


def _one_label_matcher(host: str, *, invert: bool) -> rc_pb2.HeaderMatcher:
    """``:authority`` is (or, inverted, is not) one label followed by ``host``'s suffix."""
    regex = regex_pb2.RegexMatcher(regex=wildcard_host_regex(host))
    return rc_pb2.HeaderMatcher(name=":authority", invert_match=invert,
                                string_match=string_pb2.StringMatcher(safe_regex=regex))


def build_forward(action: ir.Forward) -> rc_pb2.RouteAction:
    """Forward to one cluster, or split by weight between several."""
    out = rc_pb2.RouteAction()
    _fill_forward(out, action)
    return out


def _fill_forward(out: rc_pb2.RouteAction, action: ir.Forward) -> None:
    out.SetInParent()
    if len(action.backends) == 1 and not _backend_headers(action.backends[0]):
        out.cluster = action.backends[0].cluster
    else:
        out.weighted_clusters.clusters.extend(
            _cluster_weight(b) for b in action.backends)
    for m in action.mirrors:
        mirror = out.request_mirror_policies.add(cluster=m.cluster)
        if m.percent < 100:
            mirror.runtime_fraction.default_value.numerator = round(m.percent * 10_000)
            mirror.runtime_fraction.default_value.denominator = (
                percent_pb2.FractionalPercent.MILLION)
        if m.host is not None:
            mirror.host_rewrite_literal = m.host
        # The copy keeps the request's Host, or the one asked (Envoy would append "-shadow").
        mirror.disable_shadow_host_suffix_append = True
    if action.timeout_ms is not None:
        out.timeout.CopyFrom(_duration(action.timeout_ms))
    if action.idle_timeout_ms is not None:
        out.idle_timeout.CopyFrom(_duration(action.idle_timeout_ms))
    # WebSockets (enabled on every connection manager) are allowed on every route.
    if action.rewrite is not None:
        if action.rewrite.prefix is not None:
            out.prefix_rewrite = action.rewrite.prefix
        elif action.rewrite.pattern is not None:
            out.regex_rewrite.pattern.regex = action.rewrite.pattern
            out.regex_rewrite.substitution = action.rewrite.substitution
    if action.host_rewrite is not None:
        out.host_rewrite_literal = action.host_rewrite
    if action.retry is not None:
        out.retry_policy.CopyFrom(build_retry_policy(action.retry))
    if action.per_try_timeout_ms is not None:
        out.retry_policy.per_try_timeout.CopyFrom(_duration(action.per_try_timeout_ms))
    for h in action.hash_on:
        out.hash_policy.append(_hash_policy(h))


def _backend_headers(b: ir.WeightedBackend) -> bool:
    return b.request_headers is not None or b.response_headers is not None


def _cluster_weight(b: ir.WeightedBackend) -> rc_pb2.WeightedCluster.ClusterWeight:
    """One backend of a split, with the header changes of its requests and responses."""
    out = rc_pb2.WeightedCluster.ClusterWeight(
        name=b.cluster, weight=wrappers_pb2.UInt32Value(value=b.weight))
    _set_header_changes(out, b.request_headers, b.response_headers)
    return out


def _set_header_changes(msg: rc_pb2.Route | rc_pb2.WeightedCluster.ClusterWeight,
                        request: ir.HeaderChanges | None,
                        response: ir.HeaderChanges | None) -> None:
    """Headers set (replacing), added (appending) and removed, on a route or a backend."""
    if request is not None:
        msg.request_headers_to_add.extend(
            http_policy.header_options(request.set, overwrite=True)
            + http_policy.header_options(request.add, overwrite=False))
        msg.request_headers_to_remove.extend(request.remove)
    if response is not None:
        msg.response_headers_to_add.extend(
            http_policy.header_options(response.set, overwrite=True)
            + http_policy.header_options(response.add, overwrite=False))
        msg.response_headers_to_remove.extend(response.remove)


def _duration(ms: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def _hash_policy(h: ir.HashOn) -> rc_pb2.RouteAction.HashPolicy:
    out = rc_pb2.RouteAction.HashPolicy()
    if h.kind is ir.HashKind.CLIENT_IP:
        out.connection_properties.source_ip = True
    elif h.kind is ir.HashKind.HEADER:
        out.header.header_name = h.name
    elif h.kind is ir.HashKind.COOKIE:
        out.cookie.name = h.name
    elif h.kind is ir.HashKind.QUERY_PARAMETER:
        out.query_parameter.name = h.name
    else:
        out.header.header_name = ":path"
    return out


def build_redirect(action: ir.Redirect) -> rc_pb2.RedirectAction:
    """A redirect, to HTTPS when asked, with the IR's status code."""
    out = rc_pb2.RedirectAction(response_code=_REDIRECT_CODES[action.status])
    if action.https:
        out.https_redirect = True
    elif action.scheme is not None:
        out.scheme_redirect = action.scheme
    if action.port is not None:
        out.port_redirect = action.port
    if action.host is not None:
        out.host_redirect = action.host
    if action.path is not None:
        out.path_redirect = action.path
    elif action.rewrite is not None and action.rewrite.prefix is not None:
        out.prefix_rewrite = action.rewrite.prefix
    elif action.rewrite is not None and action.rewrite.pattern is not None:
        out.regex_rewrite.pattern.regex = action.rewrite.pattern
        out.regex_rewrite.substitution = action.rewrite.substitution
    out.strip_query = action.strip_query
    return out


def build_route(route: ir.Route) -> rc_pb2.Route:
    """One Envoy route: match plus forward, direct response or redirect."""
    # Filled in place: with upb, setting the fields of a message already in its
    # parent is several times faster than building sub-messages and copying them in.
    msg = rc_pb2.Route(name=route.name)
    _fill_match(msg.match, route)
    action = route.action
    if isinstance(action, ir.Forward):
        _fill_forward(msg.route, action)
    elif isinstance(action, ir.DirectResponse):
        msg.direct_response.status = action.status
        if action.body:
            msg.direct_response.body.inline_string = action.body
    else:
        msg.redirect.CopyFrom(build_redirect(action))
    if route.access is not None:
        _set_access(msg, route.access)
    if isinstance(action, ir.Forward) and action.session_cookie is not None:
        msg.typed_per_filter_config[STATEFUL_SESSION].CopyFrom(
            http_policy.session(action.session_cookie))
    if route.policy is not None:
        _set_policy(msg, route.policy)
    # No metadata naming the Ingress: Envoy's apply of a table of 3,000 routes took a
    # third longer with it (README "The edge route table"); the route's name says it.
    return msg


def _set_policy(msg: rc_pb2.Route, policy: ir.RoutePolicy) -> None:
    """Header changes, and the per-route configs of the policy filters."""
    _set_header_changes(msg, policy.request_headers, policy.response_headers)
    per_filter = msg.typed_per_filter_config
    if policy.cors is not None:
        per_filter[CORS].CopyFrom(http_policy.cors(policy.cors))
    if policy.max_request_bytes is not None:
        per_filter[BUFFER].CopyFrom(http_policy.body_limit(policy.max_request_bytes))
    if policy.rate_limit is not None:
        per_filter[LOCAL_RATE_LIMIT].CopyFrom(http_policy.rate_limit(policy.rate_limit))
    if policy.auth is not None:
        _set_auth(per_filter, policy.auth)
    if policy.error_pages is not None:
        per_filter[CUSTOM_RESPONSE].CopyFrom(http_policy.error_pages(policy.error_pages))
        msg.request_headers_to_add.extend(http_policy.header_options(
            (ir.Header(name=http_policy.ORIGINAL_URI, value="%REQ(:PATH)%"),), overwrite=True))
    if not policy.access_log:
        msg.metadata.filter_metadata[NO_LOG].SetInParent()
    if policy.tracing is not None:
        fill_route_tracing(msg, policy.tracing)


def _set_auth(per_filter: Any, auth: ir.RouteAuth) -> None:
    """The route's authentication filters, and the ``satisfy: any`` marker."""
    if auth.basic is not None:
        per_filter[BASIC_AUTH].CopyFrom(basic_auth.per_route(auth.basic))
    if auth.external is not None:
        per_filter[EXT_AUTHZ].CopyFrom(ext_authz.per_route(auth.external))
    for name, config in satisfy_any.per_route(auth).items():
        per_filter[name].CopyFrom(config)


def _set_access(msg: rc_pb2.Route, policy: ir.AccessPolicy) -> None:
    """Hook for access control: the route's policy as per-route RBAC filter config."""
    # Deterministic: the RBAC policies are a map, and the resource version hashes these bytes.
    msg.typed_per_filter_config[HTTP_RBAC].Pack(rbac.build_route_rbac(policy), deterministic=True)


def build_virtual_host(vhost: ir.VirtualHost) -> rc_pb2.VirtualHost:
    """A virtual host: its domains and its routes in match order."""
    routes = [build_route(r) for r in vhost.routes]
    client = vhost.client_certificate
    if client is not None and client.subject_pattern is not None:
        for route in routes:
            require_subject(route, client.subject_pattern)
    if client is not None and client.error_redirect is not None:
        routes.insert(0, unverified_route(vhost.name, client,
                                          build_redirect(client.error_redirect)))
    msg = rc_pb2.VirtualHost(name=vhost.name, domains=list(vhost.domains), routes=routes)
    if client is not None:
        client_cert_headers(msg, client)
    return msg


def build_route_table(table: ir.RouteTable) -> route_pb2.RouteConfiguration:
    """The ``RouteConfiguration`` of ``table``."""
    return route_pb2.RouteConfiguration(
        name=table.name,
        virtual_hosts=[build_virtual_host(v) for v in table.virtual_hosts],
        # A Host header's port (``foo.com:8080``) must not stop it matching ``foo.com``.
        ignore_port_in_host_matching=True,
        request_headers_to_add=[_real_ip_header()],
    )


def _real_ip_header() -> base_pb2.HeaderValueOption:
    """X-Real-IP to the backend: the client address as the listener derived it."""
    return rbac.real_ip_header()


def build_retry_policy(retry: ir.RetryPolicy) -> rc_pb2.RetryPolicy:
    """Retry on another endpoint (``previous_hosts``): always when nothing reached the
    backend (connect failure, refused stream, a reset before the request was sent), and
    as ``retry`` says when something did."""
    on = ["connect-failure", "refused-stream", "reset-before-request"]
    if retry.reset:
        on.append("reset")
    if retry.status_codes:
        on.append("retriable-status-codes")
    out = rc_pb2.RetryPolicy(retry_on=",".join(on),
                             retriable_status_codes=list(retry.status_codes),
                             host_selection_retry_max_attempts=3)
    out.num_retries.value = retry.attempts - 1
    if retry.per_try_timeout_ms is not None:
        out.per_try_timeout.CopyFrom(_duration(retry.per_try_timeout_ms))
    if retry.backoff_ms:
        out.retry_back_off.base_interval.CopyFrom(_duration(retry.backoff_ms))
    out.retry_host_predicate.add(
        name="envoy.retry_host_predicates.previous_hosts",
        typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate()))
    return out
