"""What the backend of a host checking client certificates is told about the client's.

ingress-nginx passes the verified client certificate's details to the backend
in request headers (``ssl-client-verify``, ``ssl-client-subject-dn``,
``ssl-client-issuer-dn``, and with ``auth-tls-pass-certificate-to-upstream``
the URL-encoded PEM in ``ssl-client-cert``). Envoy's header formatters give
the same values: ``%DOWNSTREAM_PEER_CERT%`` is the URL-encoded PEM (nginx's
``$ssl_client_escaped_cert``), ``%DOWNSTREAM_PEER_SUBJECT%`` and
``%DOWNSTREAM_PEER_ISSUER%`` are RFC 2253 names, like ``$ssl_client_s_dn``
(https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_conn_man/headers#custom-request-response-headers).

They are set on the virtual hosts of the chain's own route table. Whatever a
client sends under those names is removed by every connection manager before
routing (:func:`early_sanitizer`), so a backend never sees a forged value, on
a checked host or any other. ``ssl-client-verify`` is ``SUCCESS`` only where the handshake
required a valid certificate; where it was optional Envoy has no formatter
telling whether one was presented, so the header is removed, not guessed.
The ``x-forwarded-client-cert`` header is dropped by the connection manager
(its default ``SANITIZE``).

With an error page (ingress-nginx ``auth-tls-error-page``, nginx's
``error_page 495 496``), the chain takes any certificate and the first route of
each virtual host redirects the requests whose certificate Envoy did not
validate (``tls_context`` route match), before any other route is tried.

``auth-tls-match-cn`` (nginx: ``if ($ssl_client_s_dn !~ PATTERN) { return 403; }``)
becomes one more DENY policy in each route's RBAC config, with a CEL condition
on the connection's peer certificate subject, which Envoy gives in RFC 2253
form as nginx does
(https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/advanced/attributes#connection-attributes).
The condition denies when no certificate was presented, so that a missing
attribute (an error in CEL, which would make the policy not apply) never
lets a request through.
"""

from __future__ import annotations

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import base_pb2, extension_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import (
    header_mutation_pb2,
)
from google.api.expr.v1alpha1 import syntax_pb2  # type: ignore[import-untyped]
from google.protobuf import wrappers_pb2

from kxds import ir
from kxds.envoy.common import pack
from kxds.envoy.filter_names import EARLY_HEADER_MUTATION, HTTP_RBAC

HEADERS = ("ssl-client-cert", "ssl-client-verify", "ssl-client-subject-dn",
           "ssl-client-issuer-dn")
"""The headers ingress-nginx sets for the backend of a host checking certificates."""


def early_sanitizer() -> extension_pb2.TypedExtensionConfig:
    """The connection manager's early header mutation removing the ``ssl-client-*``
    headers a client sent, before any route is chosen or any header added."""
    config = header_mutation_pb2.HeaderMutation(mutations=[
        mutation_rules_pb2.HeaderMutation(remove=name) for name in HEADERS])
    return extension_pb2.TypedExtensionConfig(name=EARLY_HEADER_MUTATION,
                                              typed_config=pack(config))


def _set(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)


def client_cert_headers(vhost: rc_pb2.VirtualHost, client: ir.ClientCertificate) -> None:
    """Remove the client's own ``ssl-client-*`` headers and set Envoy's values instead."""
    vhost.request_headers_to_remove.extend(HEADERS)
    if client.forward_certificate:
        vhost.request_headers_to_add.append(_set("ssl-client-cert", "%DOWNSTREAM_PEER_CERT%"))
    if client.required:
        vhost.request_headers_to_add.append(_set("ssl-client-verify", "SUCCESS"))
    vhost.request_headers_to_add.extend([
        _set("ssl-client-subject-dn", "%DOWNSTREAM_PEER_SUBJECT%"),
        _set("ssl-client-issuer-dn", "%DOWNSTREAM_PEER_ISSUER%")])


def unverified_route(vhost: str, client: ir.ClientCertificate,
                     redirect: rc_pb2.RedirectAction) -> rc_pb2.Route:
    """The route sending a request without a validated certificate to the error page.

    Required: any request whose certificate was not validated (none, or one
    that failed); optional: only one whose presented certificate failed.
    """
    match = rc_pb2.RouteMatch(prefix="/", tls_context=rc_pb2.RouteMatch.TlsContextMatchOptions(
        validated=wrappers_pb2.BoolValue(value=False)))
    if not client.required:
        match.tls_context.presented.value = True
    return rc_pb2.Route(name=f"{vhost}/client-certificate-error", match=match,
                        redirect=redirect)


SUBJECT_POLICY = "client-certificate-subject"
"""The RBAC policy refusing a certificate whose subject does not match (its stats name)."""


def _subject_refused(pattern: str) -> syntax_pb2.Expr:
    """CEL: ``!connection.mtls || !connection.subject_peer_certificate.matches(pattern)``."""
    ids = iter(range(1, 100))

    def select(field: str) -> syntax_pb2.Expr:
        return syntax_pb2.Expr(id=next(ids), select_expr=syntax_pb2.Expr.Select(
            operand=syntax_pb2.Expr(id=next(ids), ident_expr=syntax_pb2.Expr.Ident(
                name="connection")), field=field))

    def call(function: str, *args: syntax_pb2.Expr,
             target: syntax_pb2.Expr | None = None) -> syntax_pb2.Expr:
        out = syntax_pb2.Expr(id=next(ids), call_expr=syntax_pb2.Expr.Call(
            function=function, args=list(args)))
        if target is not None:
            out.call_expr.target.CopyFrom(target)
        return out

    literal = syntax_pb2.Expr(id=next(ids), const_expr=syntax_pb2.Constant(string_value=pattern))
    matches = call("matches", literal, target=select("subject_peer_certificate"))
    return call("_||_", call("!_", select("mtls")), call("!_", matches))


def require_subject(route: rc_pb2.Route, pattern: str) -> None:
    """Add to ``route``'s RBAC config (its client-IP rules, if any) a DENY policy for a
    request whose client certificate's subject has no match of ``pattern``."""
    config = http_rbac_pb2.RBACPerRoute()
    if HTTP_RBAC in route.typed_per_filter_config:
        route.typed_per_filter_config[HTTP_RBAC].Unpack(config)
    rules = config.rbac.rules
    rules.action = rbac_pb2.RBAC.DENY  # what build_rules gives: one more way to be refused
    policy = rules.policies[SUBJECT_POLICY]
    policy.permissions.add().any = True
    policy.principals.add().any = True
    policy.condition.CopyFrom(_subject_refused(pattern))
    config.rbac.track_per_rule_stats = True
    route.typed_per_filter_config[HTTP_RBAC].Pack(config, deterministic=True)
