"""Ingress and IngressClass documents -> models (``networking.k8s.io/v1``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kxds.diagnostics import Reason
from kxds.kube import models as m
from kxds.kube.fields import (
    fail,
    get_int,
    get_list,
    get_map,
    get_str,
    items,
    one_of,
    parse_meta,
    scalar,
    str_list,
)
from kxds.kube.limits import Limits

DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
_PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")


def parse_backend(raw: Mapping[str, Any], path: str) -> m.IngressBackend:
    """A Service backend; a ``resource`` backend is kept as such (the translator reports
    it and its path alone answers 503: the rest of the Ingress still serves)."""
    if raw.get("resource") is not None:
        res = get_map(raw, "resource", path)
        what = (f'{get_str(res, "kind", f"{path}.resource") or "?"} '
                f'{get_str(res, "name", f"{path}.resource") or "?"}')
        return m.IngressBackend(service="", resource=what)
    svc = get_map(raw, "service", path)
    spath = f"{path}.service"
    name = get_str(svc, "name", spath, required=True)
    port = get_map(svc, "port", spath)
    number = get_int(port, "number", f"{spath}.port")
    port_name = get_str(port, "name", f"{spath}.port")
    if (number is None) == (port_name is None):
        fail(f"{spath}.port", "must set exactly one of number or name", Reason.MISSING_FIELD)
    assert name is not None
    return m.IngressBackend(service=name, port_number=number, port_name=port_name)


def parse_path(raw: Mapping[str, Any], path: str) -> m.IngressPath:
    path_type = get_str(raw, "pathType", path, required=True)
    one_of(path_type, _PATH_TYPES, f"{path}.pathType", "")
    value = get_str(raw, "path", path) or "/"
    if not value.startswith("/"):
        fail(f"{path}.path", f"{value!r} must start with '/'")
    backend = get_map(raw, "backend", path)
    if not backend:
        fail(f"{path}.backend", "is required", Reason.MISSING_FIELD)
    return m.IngressPath(
        path=value, path_type=path_type, backend=parse_backend(backend, f"{path}.backend")  # type: ignore[arg-type]
    )


def parse_host(value: str | None, field: str) -> str:
    """Validate an Ingress host: a DNS name, or ``*.`` followed by one; no port, no IP."""
    if value is None:
        return ""
    host = value.lower()
    labels = host[2:].split(".") if host.startswith("*.") else host.split(".")
    if not all(lbl and len(lbl) <= 63 and all(c.isalnum() or c == "-" for c in lbl)
               for lbl in labels) or (host.startswith("*.") and "*" in host[2:]):
        fail(field, f"{value!r} is not a valid host name (a DNS name, optionally '*.' first)")
    return host


def parse_rule(raw: Mapping[str, Any], path: str) -> m.IngressRule:
    http = get_map(raw, "http", path)
    return m.IngressRule(
        host=parse_host(get_str(raw, "host", path), f"{path}.host"),
        paths=items(http, "paths", f"{path}.http", parse_path),
    )


def parse_tls(raw: Mapping[str, Any], path: str) -> m.IngressTLS:
    return m.IngressTLS(
        hosts=tuple(h.lower() for h in str_list(raw, "hosts", path)),
        secret_name=get_str(raw, "secretName", path),
    )


def parse_ingress(doc: Mapping[str, Any], limits: Limits) -> m.Ingress:
    meta = parse_meta(doc, "Ingress", namespaced=True)
    spec = get_map(doc, "spec", "")
    default = get_map(spec, "defaultBackend", "spec")
    lb = get_map(get_map(doc, "status", ""), "loadBalancer", "status")
    return m.Ingress(
        meta=meta,
        ingress_class_name=get_str(spec, "ingressClassName", "spec"),
        default_backend=parse_backend(default, "spec.defaultBackend") if default else None,
        rules=items(spec, "rules", "spec", parse_rule),
        tls=items(spec, "tls", "spec", parse_tls),
        load_balancer_ingress=tuple(
            scalar(i.get("ip") or i.get("hostname"), f"status.loadBalancer.ingress[{n}]")
            for n, i in enumerate(get_list(lb, "ingress", "status.loadBalancer"))
            if isinstance(i, Mapping) and (i.get("ip") or i.get("hostname"))
        ),
    )


def parse_ingress_class(doc: Mapping[str, Any], limits: Limits) -> m.IngressClass:
    meta = parse_meta(doc, "IngressClass", namespaced=False)
    controller = get_str(get_map(doc, "spec", ""), "controller", "spec", required=True)
    assert controller is not None
    return m.IngressClass(
        meta=meta,
        controller=controller,
        is_default=meta.annotations.get(DEFAULT_CLASS_ANNOTATION, "").lower() == "true",
    )
