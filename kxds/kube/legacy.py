"""Old Ingress API versions, converted to ``networking.k8s.io/v1`` as the API server did.

``extensions/v1beta1`` and ``networking.k8s.io/v1beta1`` Ingresses were served
until Kubernetes 1.22. The API server converted them to v1 like this
(``pkg/apis/networking/v1beta1`` conversion and defaults):

* ``spec.backend`` is ``spec.defaultBackend``;
* a backend's ``serviceName`` and ``servicePort`` are ``service.name`` and
  ``service.port`` (a number as ``number``, a string as ``name``: servicePort is
  an IntOrString, so ``"80"`` is a port *name*, as it was for the API server);
* a path without ``pathType`` is ``ImplementationSpecific``.

Everything else (rules, hosts, tls, ``ingressClassName``, ``resource`` backends)
is the same in both versions. Values are moved, not interpreted: the v1 parser
then checks them, so a wrong type is reported at its v1 field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LEGACY_INGRESS_VERSIONS = ("extensions/v1beta1", "networking.k8s.io/v1beta1")


def _backend(raw: Any) -> Any:
    if not isinstance(raw, Mapping) or ("serviceName" not in raw and "servicePort" not in raw):
        return raw
    port = raw.get("servicePort")
    out = {k: v for k, v in raw.items() if k not in ("serviceName", "servicePort")}
    out["service"] = {"name": raw.get("serviceName"),
                      "port": {"name" if isinstance(port, str) else "number": port}}
    return out


def _path(raw: Any) -> Any:
    if not isinstance(raw, Mapping):
        return raw
    out = dict(raw)
    out.setdefault("pathType", "ImplementationSpecific")
    if "backend" in out:
        out["backend"] = _backend(out["backend"])
    return out


def _rule(raw: Any) -> Any:
    http = raw.get("http") if isinstance(raw, Mapping) else None
    if not isinstance(http, Mapping) or not isinstance(http.get("paths"), list):
        return raw
    return {**raw, "http": {**http, "paths": [_path(p) for p in http["paths"]]}}


def ingress_to_v1(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A v1beta1 Ingress document as the v1 document the API server would have served."""
    out = {**doc, "apiVersion": "networking.k8s.io/v1"}
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        return out
    new_spec = {k: v for k, v in spec.items() if k != "backend"}
    if spec.get("backend") is not None and spec.get("defaultBackend") is None:
        new_spec["defaultBackend"] = _backend(spec["backend"])
    if isinstance(spec.get("rules"), list):
        new_spec["rules"] = [_rule(r) for r in spec["rules"]]
    out["spec"] = new_spec
    return out
