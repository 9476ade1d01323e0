"""Per-route HTTP features from :class:`~kxds.ir.RoutePolicy` and :class:`~kxds.ir.Forward`.

Each feature is an HTTP filter present in every connection manager
(:func:`policy_filters`) that does nothing until a route carries its
per-route config: CORS (``CorsPolicy``), request body limits (the buffer
filter, disabled by default, enabled per route with ``BufferPerRoute``), rate
limits (local rate limit with one token bucket per client address: a
wildcard ``remote_address`` descriptor), sticky sessions (the stateful
session filter with a cookie, per route), and error pages (the custom response
filter, which redirects listed statuses internally to another route). A policy
change is then an RDS change only, and never touches a listener.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2, extension_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.extensions.filters.http.buffer.v3 import buffer_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.custom_response.v3 import custom_response_pb2 as cr_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as lrl_pb2
from envoy.extensions.filters.http.stateful_session.v3 import stateful_session_pb2 as ss_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.http.custom_response.redirect_policy.v3 import redirect_policy_pb2 as rp_pb2
from envoy.extensions.http.stateful_session.cookie.v3 import cookie_pb2
from envoy.type.matcher.v3 import regex_pb2, status_code_input_pb2, string_pb2
from envoy.type.v3 import http_status_pb2, token_bucket_pb2
from google.protobuf import any_pb2
from xds.core.v3 import extension_pb2 as xds_extension_pb2
from xds.type.matcher.v3 import matcher_pb2 as xds_matcher_pb2
from xds.type.matcher.v3 import string_pb2 as xds_string_pb2

from kxds import ir
from kxds.envoy.common import pack
from kxds.envoy.filter_names import (
    BUFFER,
    COOKIE_SESSION_STATE,
    CORS,
    CUSTOM_RESPONSE,
    LOCAL_RATE_LIMIT,
    STATEFUL_SESSION,
)

RATE_LIMIT_STAT = "client_rate_limit"
MAX_CLIENTS = 20_000
"""Client addresses whose buckets a route keeps (Envoy ``max_dynamic_descriptors``);
the least recently seen is forgotten first."""


def policy_filters() -> list[hcm_pb2.HttpFilter]:
    """The HTTP filters routes configure, each inert without per-route config."""
    return [
        hcm_pb2.HttpFilter(name=CORS, typed_config=pack(cors_pb2.Cors())),
        hcm_pb2.HttpFilter(name=LOCAL_RATE_LIMIT, typed_config=pack(
            lrl_pb2.LocalRateLimit(stat_prefix=RATE_LIMIT_STAT))),
        # Disabled unless a route enables it: only routes with a body limit buffer bodies.
        hcm_pb2.HttpFilter(name=BUFFER, disabled=True, typed_config=pack(
            buffer_pb2.Buffer(max_request_bytes={"value": 1}))),
        hcm_pb2.HttpFilter(name=STATEFUL_SESSION, typed_config=pack(
            ss_pb2.StatefulSession())),
        hcm_pb2.HttpFilter(name=CUSTOM_RESPONSE, typed_config=pack(cr_pb2.CustomResponse())),
    ]


def _exact_or_regex(value: str, regex: bool) -> string_pb2.StringMatcher:
    if regex:
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=value))
    return string_pb2.StringMatcher(exact=value)


def cors(policy: ir.CorsPolicy) -> any_pb2.Any:
    """The per-route ``CorsPolicy``."""
    msg = cors_pb2.CorsPolicy(
        allow_origin_string_match=[
            *(_exact_or_regex(".*", True) if o == "*" else _exact_or_regex(o, False)
              for o in policy.origins),
            *(_exact_or_regex(p, True) for p in policy.origin_patterns)],
        allow_methods=",".join(policy.methods), allow_headers=",".join(policy.headers),
        expose_headers=",".join(policy.expose_headers))
    msg.allow_credentials.value = policy.credentials
    if policy.max_age_s is not None:
        msg.max_age = str(policy.max_age_s)
    return pack(msg)


def body_limit(max_bytes: int) -> any_pb2.Any:
    """The buffer filter enabled for this route: a larger body is answered 413."""
    return pack(buffer_pb2.BufferPerRoute(buffer=buffer_pb2.Buffer(
        max_request_bytes={"value": max_bytes})))


def _bucket(limit: ir.RateLimit) -> token_bucket_pb2.TokenBucket:
    bucket = token_bucket_pb2.TokenBucket(max_tokens=limit.burst)
    bucket.tokens_per_fill.value = limit.tokens_per_fill
    bucket.fill_interval.FromMilliseconds(limit.fill_interval_ms)
    return bucket


def rate_limit(limit: ir.RateLimit) -> any_pb2.Any:
    """A token bucket per client address (a wildcard ``remote_address`` descriptor).

    Every request yields that descriptor, so the route's own bucket (which a request
    matching no descriptor would use) is never the one that refuses."""
    big = token_bucket_pb2.TokenBucket(max_tokens=1_000_000_000)
    big.tokens_per_fill.value = 1_000_000_000
    big.fill_interval.FromSeconds(1)
    msg = lrl_pb2.LocalRateLimit(
        stat_prefix=RATE_LIMIT_STAT, token_bucket=big,
        status=http_status_pb2.HttpStatus(code=limit.status),
        max_dynamic_descriptors={"value": MAX_CLIENTS})
    for which, key in ((msg.filter_enabled, "enabled"), (msg.filter_enforced, "enforced")):
        which.runtime_key = f"{RATE_LIMIT_STAT}_{key}"
        which.default_value.numerator = 100
    msg.descriptors.append(ratelimit_pb2.LocalRateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="remote_address")],
        token_bucket=_bucket(limit)))
    action = rc_pb2.RateLimit.Action()
    action.remote_address.SetInParent()
    msg.rate_limits.append(rc_pb2.RateLimit(actions=[action]))
    return pack(msg)


def session(cookie: ir.SessionCookie) -> any_pb2.Any:
    """Sticky sessions by cookie: the chosen host is kept in ``cookie`` (not strict: a
    client whose host is gone is balanced again)."""
    state = cookie_pb2.CookieBasedSessionState()
    c = state.cookie
    c.name = cookie.name
    c.path = cookie.path
    if cookie.ttl_s is not None:
        c.ttl.FromSeconds(cookie.ttl_s)
    if cookie.same_site is not None:
        c.attributes.add(name="SameSite", value=cookie.same_site)
    if cookie.secure:
        c.attributes.add(name="Secure")
    msg = ss_pb2.StatefulSessionPerRoute(stateful_session=ss_pb2.StatefulSession(
        session_state=extension_pb2.TypedExtensionConfig(name=COOKIE_SESSION_STATE,
                                                         typed_config=pack(state))))
    return pack(msg)


ORIGINAL_URI = "x-original-uri"
"""The request's path and query, set by a route with error pages (the internal
redirect keeps it, so the error Service learns what was asked)."""


def error_pages(pages: ir.ErrorPages) -> any_pb2.Any:
    """The per-route custom response config: each code redirected to ``pages.path`` on
    the same host, with ``X-Code`` and the pages' headers added."""
    matchers = []
    for code in pages.codes:
        redirect = rp_pb2.RedirectPolicy(
            redirect_action=rc_pb2.RedirectAction(path_redirect=pages.path),
            request_headers_to_add=header_options(
                (ir.Header(name="x-code", value=str(code)),
                 ir.Header(name="x-format", value="%REQ(accept)%"), *pages.headers),
                overwrite=True))
        matchers.append(xds_matcher_pb2.Matcher.MatcherList.FieldMatcher(
            predicate=xds_matcher_pb2.Matcher.MatcherList.Predicate(
                single_predicate=xds_matcher_pb2.Matcher.MatcherList.Predicate.SinglePredicate(
                    input=xds_extension_pb2.TypedExtensionConfig(
                        name="status", typed_config=pack(
                            status_code_input_pb2.HttpResponseStatusCodeMatchInput())),
                    value_match=xds_string_pb2.StringMatcher(exact=str(code)))),
            on_match=xds_matcher_pb2.Matcher.OnMatch(action=xds_extension_pb2.TypedExtensionConfig(
                name=f"error-{code}", typed_config=pack(redirect)))))
    msg = cr_pb2.CustomResponse()
    msg.custom_response_matcher.matcher_list.matchers.extend(matchers)
    return pack(msg)


def header_options(headers: tuple[ir.Header, ...], overwrite: bool
                   ) -> list[base_pb2.HeaderValueOption]:
    """Headers to add, replacing (``overwrite``) or appending to those present."""
    action = (base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD if overwrite
              else base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD)
    return [base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=h.name, value=h.value),
                                       append_action=action) for h in headers]
