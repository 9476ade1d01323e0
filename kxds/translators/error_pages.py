"""``custom-http-errors`` and ``default-backend``: error responses answered by another Service.

As in ingress-nginx
(https://kubernetes.github.io/ingress-nginx/user-guide/nginx-configuration/annotations/#custom-http-errors):
when a path's backend answers one of the listed statuses, the ``default-backend``
Service answers instead, told what happened by the ``X-Code``, ``X-Format``
(the request's ``Accept``), ``X-Original-URI``, ``X-Namespace``,
``X-Ingress-Name``, ``X-Service-Name`` and ``X-Service-Port`` headers; the
``default-backend`` alone answers for a backend without ready endpoints (503).

In Envoy: every host of the Ingress gets one more route, the error route
(``/.kxds/errors/<namespace>/<ingress>``, exact, forwarded to the error Service
with the path rewritten to ``/``), and each path's route a custom response
policy that redirects those statuses there internally; the path's route also
sets ``X-Original-URI`` (which the redirect keeps, and the path's backend sees
too). The error route is reachable directly as well: it serves only the error
Service, which the Ingress exposes anyway.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from kxds import ir
from kxds.kube.models import ClusterState, Ingress, IngressBackend, IngressPath
from kxds.translators import annotations as ann
from kxds.translators.annotations import registry as r

NO_ENDPOINTS = 503
"""What Envoy answers for a backend without ready endpoints."""


@dataclass(frozen=True, slots=True)
class ErrorBackend:
    """Where an Ingress's error pages come from, and which statuses they replace."""

    backend: IngressBackend
    """The ``default-backend`` Service on its first port."""
    codes: tuple[int, ...]
    path: str
    """The error route's path."""


def error_path(ing: Ingress) -> str:
    """The path of ``ing``'s error route (one per Ingress, on each of its hosts)."""
    return f"/.kxds/errors/{ing.meta.namespace}/{ing.meta.name}"


def error_backend(state: ClusterState, ing: Ingress, parsed: ann.Parsed,
                  problems: list[tuple[ann.Annotation[Any], str]]) -> ErrorBackend | None:
    """The error pages ``ing`` asks for; what cannot be honoured is added to ``problems``
    (annotation, message), and nothing is replaced then."""
    codes = parsed.get(r.CUSTOM_HTTP_ERRORS) or ()
    name = parsed.get(r.DEFAULT_BACKEND)
    if name is None:
        if codes:
            problems.append((r.CUSTOM_HTTP_ERRORS, "needs the default-backend annotation "
                             "(kxds has no global default backend): the backend's own "
                             "responses are passed on"))
        return None
    service = state.services.get((ing.meta.namespace, name))
    if service is None or not service.ports:
        why = "not found" if service is None else "has no ports"
        problems.append((r.DEFAULT_BACKEND, f"Service {ing.meta.namespace}/{name} {why}: "
                         "errors are not replaced"))
        return None
    port = service.ports[0].port
    wanted = tuple(sorted({*codes, NO_ENDPOINTS}))
    return ErrorBackend(IngressBackend(service=name, port_number=port), wanted, error_path(ing))


def with_error_pages(route: ir.Route, ing: Ingress, errors: ErrorBackend,
                     backend: IngressPath | None) -> ir.Route:
    """``route`` (forwarding to ``backend``'s Service) with its errors replaced."""
    if not isinstance(route.action, ir.Forward):
        return route
    headers = [ir.Header(name="x-namespace", value=ing.meta.namespace),
               ir.Header(name="x-ingress-name", value=ing.meta.name)]
    if backend is not None and backend.backend.service:
        port = backend.backend.port_number or backend.backend.port_name
        headers += [ir.Header(name="x-service-name", value=backend.backend.service),
                    ir.Header(name="x-service-port", value=str(port))]
    pages = ir.ErrorPages(codes=errors.codes, path=errors.path, headers=tuple(headers))
    policy = route.policy or ir.RoutePolicy()
    return dataclasses.replace(route, policy=dataclasses.replace(policy, error_pages=pages))


def error_route(name: str, ref_route: ir.Route, errors: ErrorBackend,
                action: ir.RouteAction, access: ir.AccessPolicy | None) -> ir.Route:
    """The error route of one host: ``errors.path`` exactly, forwarded to the error
    Service (``action``, with that Service's client rules ``access``) as ``/``, with
    the host's wildcard condition."""
    if isinstance(action, ir.Forward):
        action = dataclasses.replace(action, rewrite=ir.PathRewrite(prefix="/"))
    return ir.Route(name=name, ref=ref_route.ref,
                    match=ir.PathMatch(kind=ir.MatchKind.EXACT, path=errors.path),
                    action=action, access=access, wildcard_host=ref_route.wildcard_host)
