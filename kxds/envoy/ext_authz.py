"""External authentication: Envoy's ext_authz filter, per route, through a relay.

Every connection manager carries one ext_authz filter, disabled unless a route
enables it with its ``ExtAuthzPerRoute`` (:func:`per_route`): adding or
changing an ``auth-url`` is an RDS change only.

Envoy's HTTP ext_authz asks ``path_prefix`` + the request's own path, whereas
ingress-nginx asks exactly the ``auth-url`` (oauth2-proxy's ``/oauth2/auth``,
with its query). So the check goes to the *relay*: an internal listener in the
edge bootstrap (:func:`relay_listener`, :func:`relay_cluster`; no socket, only
Envoy itself reaches it) whose Lua filter puts the path, Host and method the
route's config asks for (``x-kxds-auth-*`` headers, which clients cannot send:
the filter drops theirs) on the check request, and whose route forwards it to
the cluster named in ``x-kxds-auth-cluster``. On the way back it maps the answer
to ingress-nginx's outcome: 2xx admits (Envoy admits only 200), 401 and 403
refuse with that status (a 401 becomes a 302 to ``auth-signin`` when set),
anything else, and a service that cannot be reached, refuses with 500.
The relay is static (the same for every route), so it lives in the bootstrap.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2, http_uri_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2 as ea_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import any_pb2

from kxds import ir
from kxds.envoy.common import pack
from kxds.envoy.ext_authz_relay import HEADER as _HEADER
from kxds.envoy.ext_authz_relay import RELAY
from kxds.envoy.filter_names import EXT_AUTHZ
from kxds.envoy.satisfy_any import skippable

CHECK_TIMEOUT_S = 60
"""How long a check may take (nginx's default proxy read timeout)."""
ERROR_STATUS = 500
"""What a refused check answers when the service gave no usable answer (as nginx)."""
_SPOOFABLE = ("x-original-url", "x-original-method", "x-sent-from", "x-real-ip",
              "x-auth-request-redirect")
"""Headers the check request carries with kxds's values, never the client's."""


def _exact(name: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(exact=name)


def _list(names: tuple[str, ...] | list[str]) -> string_pb2.ListStringMatcher:
    return string_pb2.ListStringMatcher(patterns=[_exact(n) for n in names])


def _service(headers: list[base_pb2.HeaderValue]) -> ea_pb2.HttpService:
    uri = http_uri_pb2.HttpUri(uri=f"http://{RELAY}", cluster=RELAY)
    uri.timeout.FromSeconds(CHECK_TIMEOUT_S)
    return ea_pb2.HttpService(
        server_uri=uri, authorization_request=ea_pb2.AuthorizationRequest(
            headers_to_add=headers))


def ext_authz_filter() -> hcm_pb2.HttpFilter:
    """The connection manager's ext_authz filter: disabled until a route enables it.

    Every request header goes to the service (as nginx's auth subrequest), but
    none of the ones kxds sets itself; never the body; no failure mode allow."""
    msg = ea_pb2.ExtAuthz(
        http_service=_service([]),
        status_on_error=http_status_pb2.HttpStatus(code=ERROR_STATUS),
        allowed_headers=string_pb2.ListStringMatcher(patterns=[string_pb2.StringMatcher(
            safe_regex=regex_pb2.RegexMatcher(regex=".*"))]),
        disallowed_headers=string_pb2.ListStringMatcher(patterns=[
            string_pb2.StringMatcher(prefix=_HEADER, ignore_case=True),
            *(_exact(n) for n in _SPOOFABLE)]))
    # Off unless a route enables it, and skipped for a client ``satisfy: any`` admitted.
    return skippable(EXT_AUTHZ, pack(msg))


def _literal(value: str) -> str:
    """``value`` as a header value Envoy's formatter keeps as it is."""
    return value.replace("%", "%%")


def _check_headers(auth: ir.ExternalAuth) -> list[base_pb2.HeaderValue]:
    pairs = [
        (f"{_HEADER}cluster", _literal(auth.cluster)),
        (f"{_HEADER}path", _literal(auth.path)),
        (f"{_HEADER}host", _literal(auth.host)),
        ("x-original-url", "%REQ(x-forwarded-proto)%://%REQ(:authority)%%REQ(:path)%"),
        ("x-original-method", "%REQ(:method)%"),
        ("x-sent-from", "nginx-ingress-controller"),
        ("x-real-ip", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
        ("x-auth-request-redirect", _literal(auth.request_redirect)
         if auth.request_redirect is not None else "%REQ(:path)%"),
    ]
    if auth.method is not None:
        pairs.append((f"{_HEADER}method", auth.method))
    if auth.signin is not None:
        pairs += [(f"{_HEADER}signin", _literal(auth.signin)),
                  (f"{_HEADER}signin-param", _literal(auth.signin_param))]
    pairs += [(h.name, "".join(_part(p) for p in h.parts)) for h in auth.check_headers]
    return [base_pb2.HeaderValue(key=k, value=v) for k, v in pairs]


_REQUEST_VALUES = {
    ir.RequestValue.CLIENT_ADDRESS: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    ir.RequestValue.CLIENT_PORT: "%DOWNSTREAM_REMOTE_PORT%",
    ir.RequestValue.AUTHORITY: "%REQ(:authority)%",
    ir.RequestValue.PATH: "%REQ(:path)%",
    ir.RequestValue.METHOD: "%REQ(:method)%",
    ir.RequestValue.SCHEME: "%REQ(x-forwarded-proto)%",
}
"""Envoy's formatter commands for the request values (the scheme as the connection
manager sets it: it overwrites a client's x-forwarded-proto at the edge)."""


def _part(part: ir.ValuePart) -> str:
    if part.value is not None:
        return _REQUEST_VALUES[part.value]
    if part.request_header is not None:
        return f"%REQ({part.request_header})%"
    return _literal(part.text)


def per_route(auth: ir.ExternalAuth) -> any_pb2.Any:
    """The route's ``ExtAuthzPerRoute``: its check, sent through the relay."""
    service = _service(_check_headers(auth))
    response = service.authorization_response
    # Envoy refuses an empty list: name a header no service sends when none is asked for.
    response.allowed_upstream_headers.CopyFrom(
        _list(auth.response_headers or (f"{_HEADER}none",)))
    # Listing one header adds WWW-Authenticate and Location (auth-signin) to a refusal.
    response.allowed_client_headers.CopyFrom(
        _list(["www-authenticate", *(["set-cookie"] if auth.always_set_cookie else [])]))
    response.allowed_client_headers_on_success.CopyFrom(_list(["set-cookie"]))
    return pack(ea_pb2.ExtAuthzPerRoute(check_settings=ea_pb2.CheckSettings(
        http_service=service)))
