"""Parsed Ingress annotations -> the IR's route policies (protocol-neutral).

:func:`ingress_policy` turns one Ingress's :class:`~kxds.translators.annotations.Parsed`
annotations into what its routes carry: the forwarding options (timeouts,
rewrites, host rewrite, sticky cookie), the :class:`~kxds.ir.RoutePolicy`
(header changes, CORS, body size, rate limit, logging), a redirect that
replaces forwarding, and how its paths match (``use-regex``). The ingress
translator applies it to each route with :meth:`IngressPolicy.apply`.

Semantics follow ingress-nginx
(https://kubernetes.github.io/ingress-nginx/user-guide/nginx-configuration/annotations/):

* ``rewrite-target`` makes the path a case-insensitive regex anchored at the
  start, and the whole path is replaced by the target with ``$1``.. filled
  from the path's groups (nginx ``rewrite``): capture what must be kept;
* ``use-regex`` makes Prefix and ImplementationSpecific paths such regexes
  (RE2: what RE2 cannot compile is reported and that path not served);
* ``permanent-redirect`` (301, or ``permanent-redirect-code``) and
  ``temporal-redirect`` (302) answer every path with a redirect to the URL;
* ``app-root`` redirects exactly ``/`` (302) to the given path;
* timeouts: see :mod:`kxds.translators.annotations.registry`.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from kxds import ir
from kxds.diagnostics import Diagnostic, Reason, show
from kxds.kube.models import ConfigMap, Ingress, Key, Secret
from kxds.translators import annotations as ann
from kxds.translators.annotations import registry as r
from kxds.translators.annotations.values import re2_problem
from kxds.translators.auth_basic import allow_set_names, basic_auth, relax_access
from kxds.translators.cors_limits import cors_policy, rate_limit
from kxds.translators.custom_headers import custom_headers, with_custom_headers
from kxds.translators.upstream_lb import with_upstream

DEFAULT_TIMEOUT_MS = 60_000
"""ingress-nginx's proxy-read-timeout and proxy-send-timeout default (60 s)."""
DEFAULT_COOKIE = "INGRESSCOOKIE"


@dataclass(frozen=True, slots=True)
class IngressPolicy:
    """What one Ingress's annotations ask of each of its routes."""

    parsed: ann.Parsed
    forward: ir.Forward
    """Forwarding options (no backends): copied into every Forward action."""
    policy: ir.RoutePolicy | None
    redirect: ir.Redirect | None
    """Replaces forwarding on every path (permanent or temporal redirect)."""
    app_root: str | None
    regex_paths: bool
    """Prefix and ImplementationSpecific paths are regexes."""
    rewrite: str | None
    """The RE2 substitution for the path (``rewrite-target``), groups as ``\\1``."""
    diagnostics: tuple[Diagnostic, ...]
    refused: Diagnostic | None = None
    """Authentication asked for that cannot be honoured: every route answers 503."""
    relaxed: frozenset[str] = frozenset()
    """With ``satisfy: any``: the allow-list client sets that authentication replaces."""

    def regex_for(self, path: str) -> str | None:
        """The route regex for ``path`` when paths are regexes, else None."""
        if not self.regex_paths:
            return None
        return path_regex(path)

    def apply(self, route: ir.Route) -> ir.Route:
        """``route`` with this Ingress's forwarding options, policy and redirect."""
        action = route.action
        if self.redirect is not None:
            action = self.redirect
        elif isinstance(action, ir.Forward):
            rewrite = None
            if self.rewrite is not None:
                rewrite = ir.PathRewrite(pattern=path_regex(route.match.path),
                                         substitution=self.rewrite)
            action = dataclasses.replace(self.forward, backends=action.backends,
                                         rewrite=rewrite)
        if action is route.action and self.policy is None:
            return route
        if self.relaxed:
            route = relax_access(route, self.relaxed)
        return dataclasses.replace(route, action=action, policy=self.policy)

    def apply_default(self, route: ir.Route) -> ir.Route:
        """The default backend's route: only the timeouts and the access log apply
        (ingress-nginx serves it outside the Ingress's locations)."""
        if not isinstance(route.action, ir.Forward):
            return route
        action = dataclasses.replace(route.action, timeout_ms=self.forward.timeout_ms,
                                     idle_timeout_ms=self.forward.idle_timeout_ms)
        log = self.policy is not None and not self.policy.access_log
        auth = self.policy.auth if self.policy is not None else None
        policy = ir.RoutePolicy(access_log=not log, auth=auth)
        if self.relaxed:
            route = relax_access(route, self.relaxed)
        return dataclasses.replace(route, action=action,
                                   policy=None if policy == ir.RoutePolicy() else policy)


def path_regex(path: str) -> str:
    """ingress-nginx's regex location for ``path``: case-insensitive, anchored at the
    start; Envoy matches the whole path, so anything may follow."""
    return f"(?i)^(?:{path}).*"


def ingress_policy(ing: Ingress, limit_status: int = 429,
                   secrets: Mapping[Key, Secret] | None = None,
                   config_maps: Mapping[Key, ConfigMap] | None = None) -> IngressPolicy:
    """Read ``ing``'s annotations once into what its routes carry; a rate limit refuses
    with ``limit_status``; authentication reads its users from ``secrets``;
    ``custom-headers`` its headers from ``config_maps``."""
    parsed = ann.parse(ing)
    diags = list(parsed.diagnostics)
    if parsed.get(r.NEXT_UPSTREAM_TIMEOUT) and _retry(parsed) is None:
        diags.append(parsed.problem(r.NEXT_UPSTREAM_TIMEOUT, "no effect: requests are tried "
                                    "once (kxds retries only as proxy-next-upstream asks)",
                                    Reason.UNSUPPORTED))
    rewrite = _rewrite(parsed, diags)
    regex_paths = parsed.get(r.USE_REGEX) is True or rewrite is not None
    policy = route_policy(parsed, diags, limit_status)
    # (not ``config_maps or {}``: truth-testing the mapping would record a read of
    # every ConfigMap, and any ConfigMap change would then rerun this Ingress)
    maps = config_maps if config_maps is not None else {}
    policy = with_custom_headers(policy, custom_headers(parsed, ing.meta.namespace, maps, diags))
    auth = basic_auth(ing, parsed, secrets)
    diags += auth.diagnostics
    relaxed: frozenset[str] = frozenset()
    if auth.auth is not None:
        policy = dataclasses.replace(policy or ir.RoutePolicy(), auth=auth.auth)
        if auth.auth.satisfy_any is not None:
            relaxed = allow_set_names(ing)
    return IngressPolicy(
        parsed=parsed, forward=with_upstream(_forward(parsed), parsed, diags), policy=policy,
        redirect=_redirect(parsed, diags), app_root=_app_root(parsed, diags),
        regex_paths=regex_paths, rewrite=rewrite, diagnostics=tuple(diags),
        refused=auth.refused, relaxed=relaxed)


def _forward(parsed: ann.Parsed) -> ir.Forward:
    # The stream idle timeout counts silence both ways: the read timeout (what
    # nginx waits for the backend) is the one users tune for slow answers.
    read = parsed.get(r.READ_TIMEOUT) or DEFAULT_TIMEOUT_MS
    host = parsed.get(r.UPSTREAM_VHOST)
    return ir.Forward(backends=(), timeout_ms=0, idle_timeout_ms=read,
                      host_rewrite=host, session_cookie=_session_cookie(parsed),
                      retry=_retry(parsed))


DEFAULT_TRIES = 3
"""``proxy-next-upstream-tries``'s default in ingress-nginx."""


def _retry(parsed: ann.Parsed) -> ir.RetryPolicy | None:
    """``proxy-next-upstream`` (+ ``-tries``) as a retry policy; None when not asked for."""
    words = parsed.get(r.NEXT_UPSTREAM)
    if not words or "off" in words:
        return None
    tries = parsed.get(r.NEXT_UPSTREAM_TRIES) or DEFAULT_TRIES
    if tries < 2:
        return None
    codes = tuple(sorted(int(w[5:]) for w in words if w.startswith("http_")))
    return ir.RetryPolicy(attempts=tries, reset="non_idempotent" in words, status_codes=codes,
                          per_try_timeout_ms=parsed.get(r.NEXT_UPSTREAM_TIMEOUT) or None)


def _session_cookie(parsed: ann.Parsed) -> ir.SessionCookie | None:
    if parsed.get(r.AFFINITY) != "cookie":
        return None
    ttl = parsed.get(r.SESSION_COOKIE_MAX_AGE) or parsed.get(r.SESSION_COOKIE_EXPIRES)
    return ir.SessionCookie(name=parsed.get(r.SESSION_COOKIE_NAME) or DEFAULT_COOKIE,
                            path=parsed.get(r.SESSION_COOKIE_PATH) or "/", ttl_s=ttl,
                            same_site=parsed.get(r.SESSION_COOKIE_SAMESITE),
                            secure=parsed.get(r.SESSION_COOKIE_SECURE) is True)


_GROUP = re.compile(r"\$(\d)|\$\{(\d)\}")


def _rewrite(parsed: ann.Parsed, diags: list[Diagnostic]) -> str | None:
    """The Envoy substitution for ``rewrite-target``: ``$1`` -> ``\\1``."""
    target = parsed.get(r.REWRITE_TARGET)
    if target is None:
        return None
    rest = _GROUP.sub("", target)
    if "$" in rest or any(c in target for c in "\r\n\x00 ") or not target.startswith("/"):
        diags.append(parsed.problem(
            r.REWRITE_TARGET, f"{show(target)} must be a path starting with '/' using only "
            "$1..$9 (no nginx variables); the annotation is not applied"))
        return None
    escaped = target.replace("\\", "\\\\")
    return _GROUP.sub(lambda m: "\\" + (m.group(1) or m.group(2)), escaped)


def _url(parsed: ann.Parsed, which: ann.Annotation[str], status: int,
         diags: list[Diagnostic]) -> ir.Redirect | None:
    raw = parsed.get(which)
    if raw is None:
        return None
    u = urllib.parse.urlsplit(raw)
    if u.scheme not in ("http", "https") or not u.hostname or any(c in raw for c in " \r\n"):
        diags.append(parsed.problem(which, f"{show(raw)} is not an absolute http(s) URL; "
                                    "the annotation is not applied"))
        return None
    path = u.path or "/"
    if u.query:
        path += "?" + u.query
    try:
        port = u.port
    except ValueError:
        port = None
    return ir.Redirect(https=u.scheme == "https", scheme="http" if u.scheme == "http" else None,
                       host=u.hostname, port=port, status=status, path=path, strip_query=True)


def _redirect(parsed: ann.Parsed, diags: list[Diagnostic]) -> ir.Redirect | None:
    code = int(parsed.get(r.PERMANENT_REDIRECT_CODE) or 301)
    found = _url(parsed, r.PERMANENT_REDIRECT, code, diags)
    if found is not None:
        return found
    return _url(parsed, r.TEMPORAL_REDIRECT, int(parsed.get(r.TEMPORAL_REDIRECT_CODE) or 302),
                diags)


def _app_root(parsed: ann.Parsed, diags: list[Diagnostic]) -> str | None:
    root = parsed.get(r.APP_ROOT)
    if root is None:
        return None
    if not root.startswith("/") or root == "/" or any(c in root for c in " \r\n\x00"):
        diags.append(parsed.problem(r.APP_ROOT, f"{show(root)} must be a path other than "
                                    "'/'; the annotation is not applied"))
        return None
    return root


def app_root_route(policy: IngressPolicy, name: str, route_ref: ir.Route) -> ir.Route | None:
    """The 302 from exactly ``/`` to ``app-root``, beside ``route_ref`` (same host)."""
    if policy.app_root is None:
        return None
    return dataclasses.replace(
        route_ref, name=name, match=ir.PathMatch(kind=ir.MatchKind.EXACT, path="/"),
        action=ir.Redirect(https=False, status=302, path=policy.app_root), headers=(),
        policy=policy.policy)


def _headers(lines: tuple[tuple[str, str], ...] | None) -> tuple[ir.Header, ...]:
    return tuple(ir.Header(name=n, value=v) for n, v in lines or ())


def _changes(set_: tuple[tuple[str, str], ...] | None, add: tuple[tuple[str, str], ...] | None,
             remove: tuple[str, ...] | None) -> ir.HeaderChanges | None:
    if not (set_ or add or remove):
        return None
    return ir.HeaderChanges(set=_headers(set_), add=_headers(add), remove=remove or ())


def route_policy(parsed: ann.Parsed, diags: list[Diagnostic],
                 limit_status: int = 429) -> ir.RoutePolicy | None:
    """The route policy of ``parsed``, or None when it asks for nothing."""
    request = _changes(parsed.get(r.REQUEST_HEADERS_SET), parsed.get(r.REQUEST_HEADERS_ADD),
                       parsed.get(r.REQUEST_HEADERS_REMOVE))
    prefix = parsed.get(r.X_FORWARDED_PREFIX)
    if prefix is not None:
        extra = ir.Header(name="x-forwarded-prefix", value=prefix)
        base = request or ir.HeaderChanges()
        request = dataclasses.replace(base, set=(*base.set, extra))
    response = _changes(parsed.get(r.RESPONSE_HEADERS_SET), parsed.get(r.RESPONSE_HEADERS_ADD),
                        parsed.get(r.RESPONSE_HEADERS_REMOVE))
    size = parsed.get(r.BODY_SIZE)
    log = parsed.get(r.ENABLE_ACCESS_LOG)
    limit = rate_limit(parsed, diags)
    if limit is not None:
        limit = dataclasses.replace(limit, status=limit_status)
    policy = ir.RoutePolicy(
        request_headers=request, response_headers=response, cors=cors_policy(parsed, diags),
        max_request_bytes=size or None, rate_limit=limit,
        access_log=log is not False)
    return None if policy == ir.RoutePolicy() else policy


def regex_problem(ing: Ingress, field_path: str, path: str) -> Diagnostic | None:
    """A diagnostic when the regex path ``path`` cannot be served (RE2 refuses it)."""
    why = re2_problem(path_regex(path))
    if why is None:
        return None
    return Diagnostic(ing.meta.ref, f"{field_path}.path", Reason.INVALID_VALUE,
                      f"{show(path)} as a regex: {why}; this path is not served")
