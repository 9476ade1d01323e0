"""Canary Ingresses: alternatives added to the main Ingress's routes, never rivals.

An Ingress with ``canary: "true"`` claims no path of its own. Each of its
paths names a host and path that another (the main) Ingress serves; the
canary's backend becomes an alternative on the main route, as ingress-nginx
does (https://kubernetes.github.io/ingress-nginx/user-guide/nginx-configuration/annotations/#canary):

* ``canary-by-header: H``: a request with ``H: always`` goes to the canary,
  ``H: never`` to the main backend; with ``canary-by-header-value`` (or
  ``-pattern``) only that value (or a match) goes to the canary;
* ``canary-by-cookie: C``: the same with the cookie ``C`` (``always``/``never``);
* ``canary-weight: W`` (of ``canary-weight-total``, default 100): the rest
  are split, W to the canary.

Precedence is header, then cookie, then weight: in Envoy, routes with the
same path and header conditions placed before the main route (first match
wins), and the main route's backends split by weight. Everything else comes
from the main route (its policies, timeouts, rewrites and TLS), as
ingress-nginx makes a canary inherit the main Ingress's annotations. A canary
path no main Ingress serves is reported and serves nothing; a second canary
for the same path is reported and left out.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass

from kxds import ir
from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.translators import annotations as ann
from kxds.translators.access import all_admit
from kxds.translators.annotations import registry as r

DEFAULT_TOTAL = 100


@dataclass(frozen=True, slots=True)
class CanaryRule:
    """How requests choose a canary Ingress's backend over the main one."""

    weight: int = 0
    total: int = DEFAULT_TOTAL
    header: str | None = None
    header_value: str | None = None
    header_pattern: str | None = None
    cookie: str | None = None


@dataclass(frozen=True, slots=True)
class CanaryPath:
    """One path of a canary Ingress: where it applies and its own route (for its backend)."""

    host: str
    route: ir.Route
    field_path: str
    diagnostics: tuple[Diagnostic, ...]
    """Problems of its backend, reported when it applies."""
    target: tuple[tuple[str, str], str] | None = None
    """The Service cluster its backend is (None: it answers directly); built only
    when the canary applies."""


def canary_rule(parsed: ann.Parsed, diags: list[Diagnostic]) -> CanaryRule | None:
    """The canary rule of an Ingress, or None when it is not a canary."""
    if not parsed.get(r.CANARY):
        return None
    total = parsed.get(r.CANARY_WEIGHT_TOTAL) or DEFAULT_TOTAL
    weight = parsed.get(r.CANARY_WEIGHT) or 0
    if weight > total:
        diags.append(parsed.problem(r.CANARY_WEIGHT, f"{weight} is more than the total "
                                    f"{total}; no request is sent to the canary by weight"))
        weight = 0
    header = parsed.get(r.CANARY_BY_HEADER)
    return CanaryRule(weight=weight, total=total, header=header,
                      header_value=parsed.get(r.CANARY_BY_HEADER_VALUE) if header else None,
                      header_pattern=parsed.get(r.CANARY_BY_HEADER_PATTERN) if header else None,
                      cookie=parsed.get(r.CANARY_BY_COOKIE))


def _cookie(name: str, value: str) -> ir.HeaderMatch:
    """The ``cookie`` header carries ``name=value`` (RE2 over the whole header)."""
    pattern = f"(.*;\\s*)?{re.escape(name)}={value}(;.*)?"
    return ir.HeaderMatch(name="cookie", kind=ir.HeaderMatchKind.REGEX, value=pattern)


def _to(route: ir.Route, suffix: str, backends: tuple[ir.WeightedBackend, ...],
        headers: tuple[ir.HeaderMatch, ...], access: ir.AccessPolicy | None) -> ir.Route:
    assert isinstance(route.action, ir.Forward)
    return dataclasses.replace(route, name=f"{route.name}/canary/{suffix}",
                               action=dataclasses.replace(route.action, backends=backends),
                               headers=headers, access=access)


def _split(main: tuple[ir.WeightedBackend, ...], canary: tuple[ir.WeightedBackend, ...],
           rule: CanaryRule) -> tuple[ir.WeightedBackend, ...]:
    """The main backends with ``total - weight`` and the canary's with ``weight``."""
    weights: dict[str, int] = {}
    for backends, share in ((main, rule.total - rule.weight), (canary, rule.weight)):
        for b in backends:
            if share > 0:
                weights[b.cluster] = weights.get(b.cluster, 0) + share * b.weight
    return tuple(ir.WeightedBackend(cluster=c, weight=w) for c, w in weights.items())


def expand(main: ir.Route, canary: ir.Route, rule: CanaryRule) -> list[ir.Route]:
    """The routes replacing ``main``: header and cookie routes first, then ``main`` split."""
    assert isinstance(main.action, ir.Forward) and isinstance(canary.action, ir.Forward)
    to_canary = canary.action.backends
    to_main = main.action.backends
    out: list[ir.Route] = []
    if rule.header is not None:
        if rule.header_value is not None:
            cond = ir.HeaderMatch(name=rule.header, value=rule.header_value)
        elif rule.header_pattern is not None:
            cond = ir.HeaderMatch(name=rule.header, kind=ir.HeaderMatchKind.REGEX,
                                  value=rule.header_pattern)
        else:
            cond = ir.HeaderMatch(name=rule.header, value="always")
            never = ir.HeaderMatch(name=rule.header, value="never")
            out.append(_to(main, "header-never", to_main, (*main.headers, never), main.access))
        out.insert(0, _to(main, "header", to_canary, (*main.headers, cond), canary.access))
    if rule.cookie is not None:
        out.append(_to(main, "cookie", to_canary, (*main.headers, _cookie(rule.cookie, "always")),
                       canary.access))
        out.append(_to(main, "cookie-never", to_main,
                       (*main.headers, _cookie(rule.cookie, "never")), main.access))
    if rule.weight > 0:
        split = _split(to_main, to_canary, rule)
        access = canary.access if rule.weight == rule.total else all_admit(
            (main.access, canary.access))
        main = dataclasses.replace(main, action=dataclasses.replace(main.action, backends=split),
                                   access=access)
    out.append(main)
    return out


def apply_canaries(by_host: dict[str, list[ir.Route]],
                   canaries: Sequence[tuple[ObjectRef, CanaryRule, Sequence[CanaryPath]]],
                   diagnostics: list[Diagnostic],
                   backends: set[tuple[tuple[str, str], str]]) -> None:
    """Put each canary path beside the main route of its host and path, in place;
    the Service clusters of the canaries applied are added to ``backends``."""
    taken: set[str] = set()
    for ref, rule, paths in canaries:
        for p in paths:
            routes = by_host.get(p.host, [])
            at = next((i for i, x in enumerate(routes)
                       if x.match == p.route.match and not x.headers), None)
            if at is None:
                diagnostics.append(Diagnostic(
                    ref, p.field_path, Reason.BACKEND_NOT_FOUND,
                    f"canary: no main Ingress serves host {p.host or '*'!r} path "
                    f"{p.route.match.path!r}; this canary path serves nothing"))
                continue
            main = routes[at]
            if main.name in taken:
                diagnostics.append(Diagnostic(
                    ref, p.field_path, Reason.CONFLICT,
                    f"canary: host {p.host or '*'!r} path {p.route.match.path!r} already "
                    "has a canary; this one is ignored"))
                continue
            diagnostics.extend(p.diagnostics)
            if not isinstance(main.action, ir.Forward) or not isinstance(p.route.action,
                                                                         ir.Forward):
                continue  # a main that redirects or fails, or a canary backend that fails
            taken.add(main.name)
            if p.target is not None:
                backends.add(p.target)
            routes[at:at + 1] = expand(main, p.route, rule)
